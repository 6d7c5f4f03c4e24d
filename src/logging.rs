//! What debug logs may carry. By default they name things (app ids, socket ids, channels, event
//! names) and measure them (bytes), but never carry what clients and publishers send: event
//! data, sign-in `user_data`, presence `channel_data`, signatures, tokens. Logs travel to places
//! with weaker access control than the traffic (log shippers, support tickets), so a payload in a
//! log line is a leak. `herald start --log-payloads` (`HERALD_LOG_PAYLOADS=1`) turns payloads back
//! on for debugging a development server; never in production.

use std::sync::atomic::{AtomicBool, Ordering};

static PAYLOADS: AtomicBool = AtomicBool::new(false);

/// Set once at start-up, before any connection is served.
pub fn set_payloads(on: bool) {
    PAYLOADS.store(on, Ordering::Relaxed);
}

/// Whether debug lines may include payloads (the explicit, unsafe-for-production opt-in).
pub fn payloads() -> bool {
    PAYLOADS.load(Ordering::Relaxed)
}

/// The payload itself when opted in, else an empty string (the field stays, so log parsers see
/// one shape either way).
pub fn payload(text: &str) -> &str {
    if payloads() {
        text
    } else {
        ""
    }
}

/// The `event` name of a frame Herald built (`{"event":"NAME",...}`), for logging what was sent
/// without its data; empty for anything else. Names are cut at the first escape so nothing after
/// the name can be pulled into the log.
pub fn frame_event(text: &str) -> &str {
    text.strip_prefix(r#"{"event":""#).and_then(|rest| rest.find(['"', '\\']).map(|end| &rest[..end])).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::frame_event;

    #[test]
    fn frame_event_takes_the_name_only() {
        assert_eq!(
            frame_event(r#"{"event":"orders.shipped","channel":"c","data":"{\"secret\":1}"}"#),
            "orders.shipped"
        );
        assert_eq!(frame_event(r#"{"event":"a\"b","data":"x"}"#), "a");
        assert_eq!(frame_event(r#"{"channel":"c","event":"e"}"#), "");
        assert_eq!(frame_event(r#"{"event":"unterminated"#), "");
        assert_eq!(frame_event(""), "");
    }
}
