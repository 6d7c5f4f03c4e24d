//! Server-to-client messages, serialised once into shareable bytes.
//!
//! A [`Frame`] is the complete JSON text of one message. A broadcast builds one frame and every
//! subscriber's queue holds a reference-counted clone of the same bytes: fan-out never serialises or
//! copies per subscriber. Its compressed form (permessage-deflate) is made at most once, when the
//! first compressing subscriber needs it, and shared the same way; so are its Server-Sent Events form
//! and its HTTP-fallback line (`a[...]`).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::error::ErrorCode;
use super::position::Position;
use super::socket_id::SocketId;

/// One ready-to-send text message. Always valid UTF-8 (it is only ever built from `String`s).
///
/// Cloning is one reference-count increment: the text and its compressed form live behind one `Arc`.
#[derive(Clone)]
pub struct Frame(Arc<Shared>);

struct Shared {
    text: Bytes,
    /// The compressed payload, made on first need; `None` inside when compressing does not pay.
    deflated: OnceLock<Option<Bytes>>,
    /// The `event:`/`data:` lines for SSE streams, made on first need; `None` inside when it has none.
    sse: OnceLock<Option<Bytes>>,
    /// The `a["..."]` line for `xhr_streaming` / `xhr_polling` sessions, made on first need.
    http_line: OnceLock<Bytes>,
    /// The channel and position of an event kept in a history channel (`None` for every other).
    history: Option<Box<(Box<str>, Position)>>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for Frame {}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Frame").field(&self.as_str()).finish()
    }
}

impl Frame {
    fn from_string(s: String) -> Self {
        Self::new(Bytes::from(s))
    }

    fn new(text: Bytes) -> Self {
        Self::with_history(text, None)
    }

    fn with_history(text: Bytes, history: Option<Box<(Box<str>, Position)>>) -> Self {
        let (deflated, sse, http_line) = (OnceLock::new(), OnceLock::new(), OnceLock::new());
        Frame(Arc::new(Shared { text, deflated, sse, http_line, history }))
    }

    /// This event as kept at `position` of `channel`'s history: the same message with a
    /// `"position"` member added, so every kind of client sees where it is (pusher-js ignores
    /// members it does not know). Built once per publish, before the fan-out.
    pub fn at_position(&self, channel: &str, position: Position) -> Frame {
        let text = self.as_str();
        let body = text.strip_suffix('}').unwrap_or(text);
        let mut out = String::with_capacity(text.len() + 36);
        out.push_str(body);
        out.push_str(r#","position":""#);
        out.push_str(&position.to_string());
        out.push_str("\"}");
        Self::with_history(Bytes::from(out), Some(Box::new((channel.into(), position))))
    }

    /// The same text and history position, without the forms rendered from it so far (compressed,
    /// SSE, `xhr_streaming`): what a history keeps, so that a kept event costs its text only,
    /// whatever transports it was sent on.
    pub fn bare_copy(&self) -> Frame {
        Self::with_history(self.0.text.clone(), self.0.history.clone())
    }

    /// A frame read back from the cluster's history (its text already has its `"position"`).
    pub fn kept_at(text: Bytes, channel: &str, position: Position) -> Option<Frame> {
        std::str::from_utf8(&text).ok()?;
        Some(Self::with_history(text, Some(Box::new((channel.into(), position)))))
    }

    /// `{}`: a placeholder body.
    pub fn empty_object() -> Frame {
        Self::from_string("{}".to_owned())
    }

    /// `herald:position` or `herald:reset` for a history channel a client resumes: where the
    /// client is now in `channel` (the events after it follow), or that events it asked for are
    /// gone (it reloads; live events follow). Marked with that position, for an SSE stream's `id:`.
    pub fn history_marker(reset: bool, channel: &str, position: Position) -> Frame {
        let mut out = String::with_capacity(80 + channel.len());
        out.push_str(if reset {
            r#"{"event":"herald:reset","channel":"#
        } else {
            r#"{"event":"herald:position","channel":"#
        });
        push_json_string(&mut out, channel);
        out.push_str(r#","data":{"position":""#);
        out.push_str(&position.to_string());
        out.push_str("\"}}");
        Self::with_history(Bytes::from(out), Some(Box::new((channel.into(), position))))
    }

    /// The history channel and position this event has, if it was kept in a history.
    pub fn history(&self) -> Option<(&str, Position)> {
        self.0.history.as_deref().map(|(channel, position)| (&**channel, *position))
    }

    /// The frame compressed by `compress`, computed by the first caller and shared with every later
    /// one (other threads wait for it rather than compress again); `None` when it does not pay.
    pub fn deflated(&self, compress: impl FnOnce(&[u8]) -> Option<Bytes>) -> Option<&Bytes> {
        self.0.deflated.get_or_init(|| compress(&self.0.text)).as_ref()
    }

    /// The frame's Server-Sent Events lines, rendered by `render` for the first SSE subscriber and
    /// shared with every later one, as the compressed form is.
    pub fn sse(&self, render: impl FnOnce(&str) -> Option<Bytes>) -> Option<&Bytes> {
        self.0.sse.get_or_init(|| render(self.as_str())).as_ref()
    }

    /// The frame as an HTTP-fallback line, rendered by `render` for the first such session and shared
    /// with every later one: escaping the text into a JSON string per subscriber would cost more than
    /// the rest of a delivery.
    pub fn http_line(&self, render: impl FnOnce(&str) -> Bytes) -> &Bytes {
        self.0.http_line.get_or_init(|| render(self.as_str()))
    }

    /// A frame from bytes that must be UTF-8 text (a message to echo back, say); `None` otherwise.
    pub fn from_text_bytes(bytes: Bytes) -> Option<Self> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Self::new(bytes))
    }

    /// The frame's bytes, shared (cloning is a reference-count increment).
    pub fn bytes(&self) -> &Bytes {
        &self.0.text
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0.text
    }

    /// The frame as text.
    pub fn as_str(&self) -> &str {
        // Every constructor starts from a `String`, so the bytes are UTF-8.
        std::str::from_utf8(&self.0.text).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.text.is_empty()
    }

    /// `pusher:connection_established`, with `data` a JSON string as pusher-js expects.
    pub fn connection_established(socket_id: SocketId, activity_timeout_secs: u64) -> Self {
        let data = format!(r#"{{"socket_id":"{socket_id}","activity_timeout":{activity_timeout_secs}}}"#);
        Self::internal("pusher:connection_established", None, &data)
    }

    /// `pusher:error` with `data` as an object (pusher-js accepts an object or a string).
    pub fn error(code: ErrorCode, message: &str) -> Self {
        let mut out = String::with_capacity(64 + message.len());
        out.push_str(r#"{"event":"pusher:error","data":{"code":"#);
        out.push_str(&code.code().to_string());
        out.push_str(r#","message":"#);
        push_json_string(&mut out, message);
        out.push_str("}}");
        Self::from_string(out)
    }

    pub fn pong() -> Self {
        Self::from_string(r#"{"event":"pusher:pong","data":"{}"}"#.to_owned())
    }

    pub fn ping() -> Self {
        Self::from_string(r#"{"event":"pusher:ping","data":"{}"}"#.to_owned())
    }

    /// `pusher_internal:subscription_succeeded`; `data_json` is the JSON text that goes, string-encoded,
    /// into `data` (`{}` for public channels, the presence block for presence channels).
    pub fn subscription_succeeded(channel: &str, data_json: &str) -> Self {
        Self::internal("pusher_internal:subscription_succeeded", Some(channel), data_json)
    }

    /// `pusher:subscription_error`, channel-scoped so that Echo's `.error()` callback sees it.
    pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> Self {
        let mut out = String::with_capacity(96 + channel.len() + error.len());
        out.push_str(r#"{"event":"pusher:subscription_error","channel":"#);
        push_json_string(&mut out, channel);
        out.push_str(r#","data":{"type":"#);
        push_json_string(&mut out, kind);
        out.push_str(r#","error":"#);
        push_json_string(&mut out, error);
        out.push_str(r#","status":"#);
        out.push_str(&status.to_string());
        out.push_str("}}");
        Self::from_string(out)
    }

    /// `pusher:cache_miss`: a cache channel had no event to replay.
    pub fn cache_miss(channel: &str) -> Self {
        let mut out = String::from(r#"{"event":"pusher:cache_miss","channel":"#);
        push_json_string(&mut out, channel);
        out.push('}');
        Self::from_string(out)
    }

    /// `pusher_internal:subscription_count`, sent when a channel's count changes.
    pub fn subscription_count(channel: &str, count: usize) -> Self {
        Self::internal(
            "pusher_internal:subscription_count",
            Some(channel),
            &format!(r#"{{"subscription_count":{count}}}"#),
        )
    }

    /// `pusher_internal:watchlist_events`: which watched users are online and which offline (an
    /// empty list is left out). `data` is a JSON string, as in every other server event; pusher-js
    /// parses it back into `{"events":[{"name":"online","user_ids":[..]},..]}` and emits each
    /// entry on `pusher.user.watchlist` under its name.
    pub fn watchlist_events(online: &[&str], offline: &[&str]) -> Self {
        let mut data = String::from(r#"{"events":["#);
        let mut first = true;
        for (name, ids) in [("online", online), ("offline", offline)] {
            if ids.is_empty() {
                continue;
            }
            if !std::mem::take(&mut first) {
                data.push(',');
            }
            data.push_str(r#"{"name":""#);
            data.push_str(name);
            data.push_str(r#"","user_ids":["#);
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                push_json_string(&mut data, id);
            }
            data.push_str("]}");
        }
        data.push_str("]}");
        Self::internal("pusher_internal:watchlist_events", None, &data)
    }

    /// `pusher:signin_success`, echoing the signed `user_data`.
    pub fn signin_success(user_data: &str) -> Self {
        let mut data = String::from(r#"{"user_data":"#);
        push_json_string(&mut data, user_data);
        data.push('}');
        Self::internal("pusher:signin_success", None, &data)
    }

    /// An application event published through the HTTP API: `data` is the published string,
    /// passed through byte for byte (JSON-escaped into the envelope).
    pub fn event(event: &str, channel: &str, data: &str) -> Self {
        let mut out = String::with_capacity(40 + event.len() + channel.len() + data.len() * 9 / 8);
        out.push_str(r#"{"event":"#);
        push_json_string(&mut out, event);
        out.push_str(r#","channel":"#);
        push_json_string(&mut out, channel);
        out.push_str(r#","data":"#);
        push_json_string(&mut out, data);
        out.push('}');
        Self::from_string(out)
    }

    /// A client event (`client-*`) relayed to the channel's other subscribers: `data` is the raw JSON
    /// the client sent, untouched; `user_id` is added on presence channels.
    pub fn client_event(event: &str, channel: &str, data: Option<&RawValue>, user_id: Option<&str>) -> Self {
        let raw = data.map(RawValue::get).unwrap_or("null");
        let mut out = String::with_capacity(48 + event.len() + channel.len() + raw.len());
        out.push_str(r#"{"event":"#);
        push_json_string(&mut out, event);
        out.push_str(r#","channel":"#);
        push_json_string(&mut out, channel);
        out.push_str(r#","data":"#);
        out.push_str(raw);
        if let Some(user_id) = user_id {
            out.push_str(r#","user_id":"#);
            push_json_string(&mut out, user_id);
        }
        out.push('}');
        Self::from_string(out)
    }

    /// A `pusher:` / `pusher_internal:` event whose `data` is JSON text sent as a string.
    pub fn internal(event: &str, channel: Option<&str>, data_json: &str) -> Self {
        let mut out = String::with_capacity(48 + event.len() + data_json.len() * 9 / 8);
        out.push_str(r#"{"event":"#);
        push_json_string(&mut out, event);
        if let Some(channel) = channel {
            out.push_str(r#","channel":"#);
            push_json_string(&mut out, channel);
        }
        out.push_str(r#","data":"#);
        push_json_string(&mut out, data_json);
        out.push('}');
        Self::from_string(out)
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).expect("frames are valid JSON")
    }

    #[test]
    fn watchlist_events_carry_the_shape_pusher_js_reads() {
        let v = json(&Frame::watchlist_events(&["1", "a\"b"], &["2"]));
        assert_eq!(v["event"], "pusher_internal:watchlist_events");
        assert!(v.get("channel").is_none());
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"events":[{"name":"online","user_ids":["1","a\"b"]},{"name":"offline","user_ids":["2"]}]})
        );
        let v = json(&Frame::watchlist_events(&[], &["2"]));
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, serde_json::json!({"events":[{"name":"offline","user_ids":["2"]}]}));
    }

    #[test]
    fn connection_established_has_data_as_a_json_string() {
        let f = Frame::connection_established(SocketId { node: 12, seq: 34 }, 30);
        let v = json(&f);
        assert_eq!(v["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["socket_id"], "12.34");
        assert_eq!(data["activity_timeout"], 30);
    }

    #[test]
    fn event_data_passes_through_byte_for_byte() {
        let data = "{\"some\":\"data\",\"q\":\"\\\"\",\"nl\":\"a\nb\",\"ctl\":\"\u{1}\",\"u\":\"é😀\"}";
        let f = Frame::event("order.shipped", "orders", data);
        let v = json(&f);
        assert_eq!(v["event"], "order.shipped");
        assert_eq!(v["channel"], "orders");
        assert_eq!(v["data"].as_str().unwrap(), data);
    }

    #[test]
    fn error_and_subscription_error_shapes() {
        let v = json(&Frame::error(ErrorCode::AppNotFound, "App key \"x\" not found"));
        assert_eq!(v["event"], "pusher:error");
        assert_eq!(v["data"]["code"], 4001);
        assert_eq!(v["data"]["message"], "App key \"x\" not found");

        let v = json(&Frame::subscription_error("private-x", "AuthError", "bad", 401));
        assert_eq!(v["channel"], "private-x");
        assert_eq!(v["data"]["status"], 401);
        assert_eq!(v["data"]["type"], "AuthError");
    }

    #[test]
    fn client_event_keeps_raw_data_and_adds_user_id() {
        let raw = RawValue::from_string(r#"{"typing": true}"#.to_owned()).unwrap();
        let v = json(&Frame::client_event("client-typing", "presence-r", Some(&raw), Some("7")));
        assert_eq!(v["data"]["typing"], true);
        assert_eq!(v["user_id"], "7");
        assert!(Frame::client_event("client-x", "private-r", Some(&raw), None)
            .as_str()
            .contains(r#""data":{"typing": true}"#));
    }

    #[test]
    fn the_compressed_form_is_made_once_and_shared_by_clones() {
        let frame = Frame::event("e", "c", &"x".repeat(500));
        let copy = frame.clone();
        let mut calls = 0;
        let first = frame.deflated(|text| {
            calls += 1;
            Some(Bytes::copy_from_slice(&text[..10]))
        });
        assert_eq!(first.map(|b| b.len()), Some(10));
        let again = copy.deflated(|_| unreachable!("compressed twice")).map(|b| b.as_ptr());
        assert_eq!(again, first.map(|b| b.as_ptr()));
        assert_eq!(calls, 1);
        let small = Frame::pong();
        assert_eq!(small.deflated(|_| None), None);
        assert_eq!(small.deflated(|_| unreachable!()), None, "a refusal is remembered too");
    }

    #[test]
    fn the_sse_form_is_made_once_and_shared_by_clones() {
        let frame = Frame::event("e", "c", "1");
        let copy = frame.clone();
        let first = frame.sse(|text| Some(Bytes::from(text.to_uppercase()))).map(|b| b.as_ptr());
        assert_eq!(copy.sse(|_| unreachable!("rendered twice")).map(|b| b.as_ptr()), first);
        assert!(Frame::pong().sse(|_| None).is_none());
    }

    #[test]
    fn the_http_line_is_made_once_and_shared_by_clones() {
        let frame = Frame::event("e", "c", "1");
        let copy = frame.clone();
        let first = frame.http_line(|text| Bytes::from(text.to_uppercase())).as_ptr();
        assert_eq!(copy.http_line(|_| unreachable!("rendered twice")).as_ptr(), first);
        assert_ne!(Frame::pong().http_line(|_| Bytes::from_static(b"x")).as_ptr(), first, "per frame");
    }

    /// Fan-out clones a frame into every subscriber's queue: an `Arc` clone must cost no more than the
    /// `Bytes` clone it replaced (both one atomic increment; `Bytes` also goes through a vtable).
    /// `cargo test --release --lib frame_clone_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn frame_clone_cost() {
        use std::time::Instant;
        const N: usize = 1_000;
        const ROUNDS: usize = 2_000;
        let text = Frame::event("e", "c", &"x".repeat(300)).as_bytes().to_vec();
        let time = |f: &mut dyn FnMut()| {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                f();
            }
            started.elapsed().as_nanos() as f64 / (ROUNDS * N) as f64
        };
        let bytes = Bytes::from(text.clone());
        let frame = Frame::from_text_bytes(Bytes::from(text)).unwrap();
        let mut queue_b: Vec<Bytes> = Vec::with_capacity(N);
        let mut queue_f: Vec<Frame> = Vec::with_capacity(N);
        for _ in 0..3 {
            let b = time(&mut || {
                queue_b.extend((0..N).map(|_| bytes.clone()));
                queue_b.clear();
            });
            let f = time(&mut || {
                queue_f.extend((0..N).map(|_| frame.clone()));
                queue_f.clear();
            });
            println!("clone + drop: Bytes {b:.2} ns, Frame {f:.2} ns");
        }
        println!("size: Bytes {} B, Frame {} B", std::mem::size_of::<Bytes>(), std::mem::size_of::<Frame>());
    }

    #[test]
    fn json_strings_match_serde() {
        for s in ["", "plain", "q\"b\\s", "\u{0}\u{1f}\u{7f}", "tab\there", "ünï😀"] {
            let mut out = String::new();
            push_json_string(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }
}
