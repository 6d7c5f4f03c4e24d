//! Server-Sent Events: how a Pusher message is written on a `text/event-stream`.
//!
//! A [`super::Frame`] holds `{"event":..,"channel":..,"data":..}`. On an event stream it becomes
//!
//! ```text
//! event: order.shipped
//! data: {"channel":"orders","data":{"id":42}}
//! id: 7
//!
//! ```
//!
//! so that `new EventSource(url)` with `addEventListener("order.shipped", ...)` is all a browser needs.
//! The event and data lines are the same for every subscriber of a broadcast and are rendered once
//! ([`render`]); only the `id:` line ([`EventIds`]) belongs to one stream.
//!
//! What a pusher-js user sees is mirrored: `pusher_internal:` events are named `pusher:` (as
//! pusher-js renames them), and a `data` string that holds JSON is sent as that JSON (as pusher-js
//! parses it), so `JSON.parse(e.data).data` is the object that was published.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::frame::push_json_string;
use super::position::StreamPosition;

/// A comment line: proxies see traffic, `EventSource` ignores it.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// The `event:` and `data:` lines of one message (without its `id:` and the blank line that ends
/// it); `None` for a frame that cannot be one: not a Pusher message, or an event name holding a line
/// break, which would let a publisher write lines of its own into every stream.
pub fn render(frame_json: &str) -> Option<Bytes> {
    let envelope: Envelope = serde_json::from_str(frame_json).ok()?;
    let name = envelope.event.as_ref();
    if name.is_empty() || name.contains(['\r', '\n']) {
        return None;
    }
    let mut data = String::with_capacity(frame_json.len() + 16);
    data.push('{');
    if let Some(channel) = &envelope.channel {
        data.push_str(r#""channel":"#);
        push_json_string(&mut data, channel);
        data.push(',');
    }
    data.push_str(r#""data":"#);
    push_payload(&mut data, envelope.data);
    if let Some(user_id) = &envelope.user_id {
        data.push_str(r#","user_id":"#);
        push_json_string(&mut data, user_id);
    }
    data.push('}');

    let mut out = String::with_capacity(data.len() + name.len() + 16);
    out.push_str("event: ");
    match name.strip_prefix("pusher_internal:") {
        Some(rest) => {
            out.push_str("pusher:");
            out.push_str(rest);
        }
        None => out.push_str(name),
    }
    out.push('\n');
    // A line break can only be whitespace between JSON tokens (inside strings it is escaped): each
    // line goes on a `data:` line of its own, and EventSource joins them with "\n" again.
    for line in data.split(['\r', '\n']).filter(|l| !l.is_empty()) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    Some(Bytes::from(out))
}

/// `data` as pusher-js would hand it to a callback: a string holding JSON is that JSON, any other
/// string stays a string, anything else (client events, errors) is passed as it is.
fn push_payload(out: &mut String, data: Option<&RawValue>) {
    let Some(raw) = data.map(RawValue::get) else {
        out.push_str("null");
        return;
    };
    if raw.starts_with('"') {
        if let Ok(text) = serde_json::from_str::<Cow<str>>(raw) {
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
                out.push_str(text.trim());
                return;
            }
        }
    }
    out.push_str(raw);
}

/// The `retry:` line: how long `EventSource` waits before reconnecting.
pub fn retry(millis: u64) -> String {
    format!("retry: {millis}\n\n")
}

/// The `id:` of each event on one stream.
///
/// On a stream with history channels, it is where the stream is in each of them (a
/// [`StreamPosition`]: `name:ms-seq` per channel, space-separated), updated by every event that
/// has a position; `EventSource` sends the last one back as `Last-Event-ID` when it reconnects,
/// which is all a resume needs. On a stream without any, a number counting up from 1, so a client
/// can see that nothing was skipped.
#[derive(Debug, Default)]
pub struct EventIds {
    last: u64,
    positions: StreamPosition,
}

impl EventIds {
    /// Appends the `id:` line of the next event (`frame`, when it is one) and the blank line
    /// that ends it.
    pub fn push_next(&mut self, frame: Option<&super::Frame>, out: &mut Vec<u8>) {
        if let Some((channel, position)) = frame.and_then(super::Frame::history) {
            self.positions.set(channel, position);
        }
        out.extend_from_slice(b"id: ");
        if self.positions.is_empty() {
            self.last += 1;
            out.extend_from_slice(self.last.to_string().as_bytes());
        } else {
            out.extend_from_slice(self.positions.to_string().as_bytes());
        }
        out.extend_from_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, Frame};

    fn text(frame: &Frame) -> String {
        String::from_utf8(render(frame.as_str()).expect("renders").to_vec()).unwrap()
    }

    /// What an EventSource would dispatch: (event name, data) of each complete event.
    fn parse(stream: &str) -> Vec<(String, String)> {
        let mut events = Vec::new();
        let (mut name, mut data): (String, Vec<&str>) = (String::new(), Vec::new());
        for line in stream.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    events.push((std::mem::take(&mut name), data.join("\n")));
                }
                data.clear();
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v);
            }
        }
        events
    }

    #[test]
    fn a_published_json_string_arrives_as_json_and_other_strings_as_strings() {
        let f = Frame::event("order.shipped", "orders", r#"{"id":42}"#);
        assert_eq!(text(&f), "event: order.shipped\ndata: {\"channel\":\"orders\",\"data\":{\"id\":42}}\n");
        let f = Frame::event("note", "orders", "plain words");
        assert_eq!(text(&f), "event: note\ndata: {\"channel\":\"orders\",\"data\":\"plain words\"}\n");
        let f = Frame::event("n", "c", "42");
        assert_eq!(text(&f), "event: n\ndata: {\"channel\":\"c\",\"data\":42}\n");
    }

    #[test]
    fn line_breaks_never_leave_the_data_lines() {
        // Published JSON with line breaks between its tokens, and a string with escaped ones.
        let f = Frame::event("e", "c", "{\r\n \"a\": \"x\\ny\",\n \"b\": 1\r}");
        let out = text(&f);
        let events = parse(&format!("{out}\n"));
        assert_eq!(events.len(), 1, "{out:?}");
        let data: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
        assert_eq!(data["data"], serde_json::json!({"a": "x\ny", "b": 1}));
        assert!(out.lines().all(|l| l.starts_with("event: ") || l.starts_with("data: ")), "{out:?}");
        // A string that is not JSON keeps its line breaks escaped.
        let f = Frame::event("e", "c", "two\nlines");
        assert_eq!(parse(&format!("{}\n", text(&f)))[0].1, r#"{"channel":"c","data":"two\nlines"}"#);
        // An event name with a line break could inject lines: it is not rendered at all.
        assert!(render(Frame::event("a\ndata: evil", "c", "1").as_str()).is_none());
        assert!(render(Frame::event("a\rb", "c", "1").as_str()).is_none());
    }

    #[test]
    fn internal_events_are_named_as_pusher_js_names_them() {
        let f = Frame::internal("pusher_internal:member_added", Some("presence-r"), r#"{"user_id":"7"}"#);
        assert_eq!(
            text(&f),
            "event: pusher:member_added\ndata: {\"channel\":\"presence-r\",\"data\":{\"user_id\":\"7\"}}\n"
        );
        let f = Frame::subscription_succeeded("news", "{}");
        assert_eq!(text(&f), "event: pusher:subscription_succeeded\ndata: {\"channel\":\"news\",\"data\":{}}\n");
        let f = Frame::error(ErrorCode::OverCapacity, "too slow");
        assert_eq!(text(&f), "event: pusher:error\ndata: {\"data\":{\"code\":4100,\"message\":\"too slow\"}}\n");
    }

    #[test]
    fn client_events_keep_their_raw_data_and_sender() {
        let raw = RawValue::from_string("{\"typing\":\n true}".to_owned()).unwrap();
        let f = Frame::client_event("client-typing", "presence-r", Some(&raw), Some("7"));
        let events = parse(&format!("{}\n", text(&f)));
        assert_eq!(events[0].0, "client-typing");
        let data: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
        assert_eq!(data, serde_json::json!({"channel": "presence-r", "data": {"typing": true}, "user_id": "7"}));
    }

    #[test]
    fn ids_count_up_per_stream() {
        let (mut a, mut b) = (EventIds::default(), EventIds::default());
        let mut out = Vec::new();
        a.push_next(None, &mut out);
        a.push_next(Some(&Frame::event("e", "x", "1")), &mut out);
        b.push_next(None, &mut out);
        assert_eq!(out, b"id: 1\n\nid: 2\n\nid: 1\n\n");
        assert!(render("not json").is_none());
        assert_eq!(retry(2500), "retry: 2500\n\n");
    }

    #[test]
    fn ids_are_positions_once_a_history_channel_speaks() {
        use crate::protocol::position::Position;
        let mut ids = EventIds::default();
        let mut out = Vec::new();
        let at = |ms| Position { ms, seq: 0 };
        ids.push_next(Some(&Frame::event("e", "chat-a", "1").at_position("chat-a", at(5))), &mut out);
        ids.push_next(Some(&Frame::event("e", "news", "1")), &mut out);
        ids.push_next(Some(&Frame::history_marker(false, "chat-b", at(3))), &mut out);
        ids.push_next(Some(&Frame::event("e", "chat-a", "2").at_position("chat-a", at(9))), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "id: chat-a:5-0\n\nid: chat-a:5-0\n\nid: chat-a:5-0 chat-b:3-0\n\nid: chat-a:9-0 chat-b:3-0\n\n"
        );
    }
}
