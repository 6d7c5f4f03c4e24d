//! The send-time stamp carried in each event's `data`, and reading it back.
//!
//! Publisher and subscribers live in one process, so a process-local monotonic clock (nanoseconds since a
//! shared `Instant`) is exact: no clock sync, no wall-clock jumps. The stamp is plain text rather than JSON
//! so the receiver finds it with one substring search instead of parsing every frame twice (the frame, then
//! the JSON string in `data`): the bench must cost far less per delivery than the server it measures.
//!
//! Format: `hb1:{nanos}:{seq}:` then `x` padding up to the requested payload size. `hb1:` never appears in
//! a channel or event name (`:` is not allowed there), so a match is always the stamp.

use std::sync::OnceLock;
use std::time::Instant;

const MARKER: &str = "hb1:";

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's bench epoch.
pub fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Starts the clock; call once before any stamp is made so that early stamps are small numbers.
pub fn start_clock() {
    let _ = epoch();
}

/// The `data` string for one event: the stamp, padded with `x` to `payload` bytes (never shorter than the
/// stamp itself).
pub fn make_data(nanos: u64, seq: u64, payload: usize) -> String {
    let mut data = format!("{MARKER}{nanos}:{seq}:");
    if data.len() < payload {
        data.extend(std::iter::repeat_n('x', payload - data.len()));
    }
    data
}

/// The send time found in a received frame, if the frame carries a stamp.
pub fn find_stamp(frame: &str) -> Option<u64> {
    let at = frame.find(MARKER)? + MARKER.len();
    let digits = &frame[at..];
    let end = digits.find(':')?;
    digits[..end].parse().ok()
}

/// Every stamp in `text`, in order: the send times of the events of a line that carries several
/// (an `xhr_streaming` `a[...]` line), where the stamps sit escaped but intact.
pub fn each_stamp(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.match_indices(MARKER).filter_map(|(at, _)| find_stamp(&text[at..]))
}

/// Latency in microseconds of a frame received now, if it carries a stamp.
pub fn latency_micros(frame: &str, now: u64) -> Option<u64> {
    find_stamp(frame).map(|sent| now.saturating_sub(sent) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_a_frame() {
        let data = make_data(123_456_789, 7, 100);
        assert_eq!(data.len(), 100);
        let frame = format!(r#"{{"event":"bench","channel":"bench-fanout","data":"{data}"}}"#);
        assert_eq!(find_stamp(&frame), Some(123_456_789));
        assert_eq!(latency_micros(&frame, 125_456_789), Some(2_000));
    }

    #[test]
    fn short_payload_keeps_the_whole_stamp() {
        assert_eq!(make_data(5, 1, 0), "hb1:5:1:");
    }

    #[test]
    fn frames_without_a_stamp_are_ignored() {
        assert_eq!(find_stamp(r#"{"event":"pusher:pong","data":"{}"}"#), None);
        assert_eq!(find_stamp("hb1:notanumber:"), None);
        assert_eq!(find_stamp("hb1:12"), None);
    }
}
