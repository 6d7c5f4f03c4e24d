//! The wire format of pusher-js's HTTP fallbacks (`xhr_streaming`, `xhr_polling`), as pure data.
//!
//! A session's receive responses carry one frame per line: `o` (the session is open; sent once per
//! session, because a second `o` tells the client the server lost its session), `a[...]` (a JSON
//! array of Pusher messages, each a JSON *string* holding the serialised message), `h` (heartbeat)
//! and `c[code,"reason"]` (the session is closed, with a Pusher or WebSocket close code). The
//! client sends with `xhr_send`: a JSON array of serialised messages, `[]` being its ping.
//!
//! See docs/protocol.md §9 for the URLs and the session lifecycle.

use super::frame::push_json_string;

/// The first line of a session's first receive response.
pub const OPEN: &[u8] = b"o\n";
/// Keeps a stream (or a long poll) alive and tells the client the server is there.
pub const HEARTBEAT: &[u8] = b"h\n";

/// Most messages one `xhr_send` body may carry (pusher-js sends one per request).
pub const MAX_MESSAGES_PER_SEND: usize = 100;

/// An `a[...]` line carrying `messages` (each a serialised Pusher message), or `None` for none.
pub fn messages_line<'a>(messages: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut line = String::from("a[");
    for message in messages {
        if line.len() > 2 {
            line.push(',');
        }
        push_json_string(&mut line, message);
    }
    if line.len() == 2 {
        return None;
    }
    line.push_str("]\n");
    Some(line)
}

/// The `a[...]` line of one message (what a broadcast's frame caches for every session).
pub fn message_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len() + message.len() / 8 + 8);
    line.push_str("a[");
    push_json_string(&mut line, message);
    line.push_str("]\n");
    line
}

/// One `a[...]` line carrying the messages of several one-message lines (each as
/// [`message_line`] makes it), without escaping anything again; `None` for none.
pub fn join_message_lines(lines: &[&[u8]]) -> Option<Vec<u8>> {
    let mut joined = Vec::with_capacity(lines.iter().map(|l| l.len()).sum::<usize>() + 3);
    for line in lines {
        let Some(message) = line.strip_prefix(b"a[").and_then(|l| l.strip_suffix(b"]\n")) else { continue };
        joined.push(if joined.is_empty() { b'[' } else { b',' });
        joined.extend_from_slice(message);
    }
    if joined.is_empty() {
        return None;
    }
    joined.insert(0, b'a');
    joined.extend_from_slice(b"]\n");
    Some(joined)
}

/// The `c[code,"reason"]` line that ends a session.
pub fn close_line(code: u16, reason: &str) -> String {
    let mut line = format!("c[{code},");
    push_json_string(&mut line, reason);
    line.push_str("]\n");
    line
}

/// Why an `xhr_send` body was refused (answered with 400, or 413 for [`SendBodyError::TooLarge`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendBodyError {
    #[error("the body must be a JSON array of strings: {0}")]
    Malformed(String),
    #[error("the body carries more than {MAX_MESSAGES_PER_SEND} messages")]
    TooMany,
    #[error("a message is larger than {0} bytes")]
    TooLarge(usize),
}

/// Decodes an `xhr_send` body: a JSON array of serialised messages, each at most
/// `max_message_size` bytes (as a WebSocket text message would be). `[]` is a ping and yields none.
pub fn parse_send_body(body: &[u8], max_message_size: usize) -> Result<Vec<String>, SendBodyError> {
    let messages: Vec<String> = serde_json::from_slice(body).map_err(|e| SendBodyError::Malformed(e.to_string()))?;
    if messages.len() > MAX_MESSAGES_PER_SEND {
        return Err(SendBodyError::TooMany);
    }
    if messages.iter().any(|m| m.len() > max_message_size) {
        return Err(SendBodyError::TooLarge(max_message_size));
    }
    Ok(messages)
}

/// Whether a client-chosen session path (`{server}/{session}`) has pusher-js's shape: a number
/// below 1000 and 1-32 characters of `[0-9a-z]` (pusher-js picks 8). Anything else is refused
/// before any state is made for it.
pub fn valid_session_path(server: &str, session: &str) -> bool {
    let server_ok = (1..=3).contains(&server.len()) && server.bytes().all(|b| b.is_ascii_digit());
    let session_ok =
        (1..=32).contains(&session.len()) && session.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    server_ok && session_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_line_is_an_array_of_json_strings_that_decodes_to_the_messages() {
        let frames = [r#"{"event":"e","data":"{\"x\":1}"}"#, "plain \n line"];
        let line = messages_line(frames).unwrap();
        assert!(line.starts_with("a[") && line.ends_with("]\n"));
        assert_eq!(line.matches('\n').count(), 1, "a frame is one line: newlines inside are escaped");
        let decoded: Vec<String> = serde_json::from_str(&line[1..]).unwrap();
        assert_eq!(decoded, frames);
        assert_eq!(messages_line([]), None);
    }

    #[test]
    fn one_message_lines_join_into_the_line_of_all_of_them() {
        let frames = [r#"{"event":"e","data":"{\"x\":1}"}"#, "second", "third \n"];
        let singles: Vec<String> = frames.iter().map(|f| message_line(f)).collect();
        assert_eq!(singles[0], messages_line([frames[0]]).unwrap());
        let parts: Vec<&[u8]> = singles.iter().map(|s| s.as_bytes()).collect();
        let joined = join_message_lines(&parts).unwrap();
        assert_eq!(String::from_utf8(joined).unwrap(), messages_line(frames).unwrap());
        assert_eq!(join_message_lines(&parts[..1]).unwrap(), singles[0].as_bytes());
        assert_eq!(join_message_lines(&[]), None);
    }

    #[test]
    fn a_close_line_carries_code_and_escaped_reason() {
        let line = close_line(4200, r#"Server "restarting""#);
        let decoded: (u16, String) = serde_json::from_str(&line[1..]).unwrap();
        assert_eq!(decoded, (4200, r#"Server "restarting""#.to_owned()));
    }

    #[test]
    fn send_bodies_are_checked() {
        assert_eq!(parse_send_body(b"[]", 10), Ok(vec![]));
        assert_eq!(parse_send_body(br#"["{\"event\":\"pusher:ping\"}"]"#, 100).unwrap().len(), 1);
        assert!(matches!(parse_send_body(b"not json", 10), Err(SendBodyError::Malformed(_))));
        assert!(matches!(parse_send_body(b"[1,2]", 10), Err(SendBodyError::Malformed(_))));
        assert!(matches!(parse_send_body(br#"{"a":1}"#, 10), Err(SendBodyError::Malformed(_))));
        assert_eq!(parse_send_body(br#"["12345678901"]"#, 10), Err(SendBodyError::TooLarge(10)));
        let many = format!("[{}]", vec!["\"x\""; MAX_MESSAGES_PER_SEND + 1].join(","));
        assert_eq!(parse_send_body(many.as_bytes(), 10), Err(SendBodyError::TooMany));
    }

    #[test]
    fn session_paths_have_pusher_js_shape() {
        assert!(valid_session_path("123", "abcdef12"));
        assert!(valid_session_path("0", "z"));
        assert!(!valid_session_path("1000", "abcdef12"));
        assert!(!valid_session_path("", "abcdef12"));
        assert!(!valid_session_path("12", ""));
        assert!(!valid_session_path("12", "ABC"));
        assert!(!valid_session_path("12", &"a".repeat(33)));
        assert!(!valid_session_path("1a", "abc"));
    }
}
