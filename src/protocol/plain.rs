//! The plain WebSocket endpoint's wire format, for clients without a Pusher library.
//!
//! A room `R` is the hub channel `private-room-R`: plain clients and Pusher clients (which must
//! authorise like for any private channel) share it, and the HTTP API publishes to it. Everything a
//! plain client receives has the Pusher shape `{"event","channel","data"}`, so one frame serves
//! both kinds of client; a plain client's own message `{"type": T, "payload": P}` reaches the others
//! as event `client-T` (`T` itself when it already starts with `client-`) with data
//! `{"payload": P, "from": <user id>, "ts": <server ms>}`.
//!
//! The `client-` name is what keeps a plain client from speaking for the server: a Pusher client
//! in the room treats `pusher:` and `pusher_internal:` events as the server's own (a forged
//! `member_added` would add a member), and any other name as a channel event the app's server
//! published. A `client-` event is, to pusher-js, exactly what it is: sent by another client.
//! Those prefixes are also refused outright, so the mistake is told to the sender.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::channel::{validate_event_name, MAX_CHANNEL_NAME_LEN};
use super::frame::{push_json_string, Frame};

/// The channel prefix rooms live under.
pub const ROOM_PREFIX: &str = "private-room-";

/// Why a room name or a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("room names are 1-{max} characters from A-Z a-z 0-9 _ - = @ , . ;", max = MAX_CHANNEL_NAME_LEN - ROOM_PREFIX.len())]
    BadRoom,
    #[error("messages are JSON objects: {{\"type\": \"...\", \"payload\": ...}}")]
    NotAnObject,
    #[error("`type` must be a non-empty string, at most 200 characters with the client- prefix it is delivered under, not starting with pusher:, pusher_internal: or herald:")]
    BadType,
    #[error("`payload` is required (any JSON but null)")]
    MissingPayload,
}

/// The hub channel of a room.
pub fn room_channel(room: &str) -> Result<super::Channel, PlainError> {
    let channel = format!("{ROOM_PREFIX}{room}");
    match super::ChannelName::parse(&channel) {
        Ok(name) if !room.is_empty() => Ok(name.to_channel()),
        _ => Err(PlainError::BadRoom),
    }
}

/// The prefix every plain message is delivered under (see the module doc).
pub const CLIENT_PREFIX: &str = "client-";

/// Types a plain client may not use: the server's own namespaces.
const RESERVED_PREFIXES: [&str; 3] = ["pusher:", "pusher_internal:", "herald:"];

/// A validated message from a plain client.
#[derive(Debug)]
pub struct PlainMessage<'a> {
    /// The event name the room gets: `client-` and the `type`.
    pub event: String,
    pub payload: &'a RawValue,
}

#[derive(Deserialize)]
struct Raw<'a> {
    /// A `Cow`, not a `&str`: a `type` with JSON escapes (`"caf\u00e9"`, `"a\"b"`) cannot be
    /// borrowed from the text and must be unescaped into a string of its own.
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

impl<'a> PlainMessage<'a> {
    pub fn parse(text: &'a str) -> Result<PlainMessage<'a>, PlainError> {
        let raw: Raw<'a> = serde_json::from_str(text).map_err(|_| PlainError::NotAnObject)?;
        let kind = raw.kind.ok_or(PlainError::BadType)?;
        if kind.is_empty() || RESERVED_PREFIXES.iter().any(|p| kind.starts_with(p)) {
            return Err(PlainError::BadType);
        }
        let event = if kind.starts_with(CLIENT_PREFIX) { kind.into_owned() } else { format!("{CLIENT_PREFIX}{kind}") };
        validate_event_name(&event).map_err(|_| PlainError::BadType)?;
        let payload = raw.payload.ok_or(PlainError::MissingPayload)?;
        Ok(PlainMessage { event, payload })
    }
}

impl Frame {
    /// A plain client's message as the room's other members get it.
    pub fn plain_message(channel: &str, message: &PlainMessage<'_>, from: &str, ts_ms: u64) -> Frame {
        let mut data = String::from(r#"{"payload":"#);
        data.push_str(message.payload.get());
        data.push_str(r#","from":"#);
        push_json_string(&mut data, from);
        data.push_str(&format!(r#","ts":{ts_ms}}}"#));
        let raw = RawValue::from_string(data).ok();
        Frame::client_event(&message.event, channel, raw.as_deref(), None)
    }

    /// `herald:joined`, the first message a plain client gets.
    pub fn plain_joined(channel: &str, room: &str, user: &str, socket_id: &str) -> Frame {
        let mut data = String::from(r#"{"room":"#);
        push_json_string(&mut data, room);
        data.push_str(r#","user":"#);
        push_json_string(&mut data, user);
        data.push_str(r#","socket_id":"#);
        push_json_string(&mut data, socket_id);
        data.push('}');
        let raw = RawValue::from_string(data).ok();
        Frame::client_event("herald:joined", channel, raw.as_deref(), None)
    }

    /// `herald:error`: a refused message; the connection stays open.
    pub fn plain_error(message: &str) -> Frame {
        let mut data = String::from(r#"{"event":"herald:error","data":{"message":"#);
        push_json_string(&mut data, message);
        data.push_str("}}");
        Frame::from_text_bytes(bytes::Bytes::from(data)).unwrap_or_else(Frame::pong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn rooms_map_to_private_channels() {
        assert_eq!(room_channel("lobby").unwrap().name, "private-room-lobby");
        assert_eq!(room_channel(""), Err(PlainError::BadRoom));
        assert_eq!(room_channel("a b"), Err(PlainError::BadRoom));
        assert_eq!(room_channel(&"x".repeat(200)), Err(PlainError::BadRoom));
    }

    #[test]
    fn messages_are_validated() {
        let m = PlainMessage::parse(r#"{"type":"chat","payload":{"text":"hi"}}"#).unwrap();
        assert_eq!((m.event.as_str(), m.payload.get()), ("client-chat", r#"{"text":"hi"}"#));
        // Already a client event name: kept, not doubled.
        assert_eq!(PlainMessage::parse(r#"{"type":"client-move","payload":1}"#).unwrap().event, "client-move");
        // JSON escapes are unescaped, not refused.
        let m = PlainMessage::parse(r#"{"type":"caf\u00e9 \"x\"","payload":1}"#).unwrap();
        assert_eq!(m.event, "client-café \"x\"");
        // 200 characters with the prefix is the most.
        let longest = format!(r#"{{"type":"{}","payload":1}}"#, "x".repeat(200 - CLIENT_PREFIX.len()));
        assert!(PlainMessage::parse(&longest).is_ok());
        let too_long = format!(r#"{{"type":"{}","payload":1}}"#, "x".repeat(201 - CLIENT_PREFIX.len()));
        assert_eq!(PlainMessage::parse(&too_long).unwrap_err(), PlainError::BadType);
        for (bad, err) in [
            ("nope", PlainError::NotAnObject),
            ("[]", PlainError::NotAnObject),
            (r#"{"payload":1}"#, PlainError::BadType),
            (r#"{"type":"","payload":1}"#, PlainError::BadType),
            (r#"{"type":5,"payload":1}"#, PlainError::NotAnObject),
            (r#"{"type":"pusher:subscribe","payload":1}"#, PlainError::BadType),
            (r#"{"type":"herald:joined","payload":1}"#, PlainError::BadType),
            (r#"{"type":"pusher_internal:member_added","payload":1}"#, PlainError::BadType),
            (r#"{"type":"pusher_internal:subscription_succeeded","payload":1}"#, PlainError::BadType),
            (r#"{"type":"pusher\u003aping","payload":1}"#, PlainError::BadType),
            (r#"{"type":"chat"}"#, PlainError::MissingPayload),
            (r#"{"type":"chat","payload":null}"#, PlainError::MissingPayload),
        ] {
            assert_eq!(PlainMessage::parse(bad).unwrap_err(), err, "{bad}");
        }
    }

    #[test]
    fn frames_carry_sender_and_time() {
        let m = PlainMessage::parse(r#"{"type":"chat","payload":{"text":"hi"}}"#).unwrap();
        let v: Value = serde_json::from_str(Frame::plain_message("private-room-a", &m, "u\"1", 42).as_str()).unwrap();
        assert_eq!(v["event"], "client-chat");
        assert_eq!(v["channel"], "private-room-a");
        assert_eq!(v["data"], serde_json::json!({"payload": {"text": "hi"}, "from": "u\"1", "ts": 42}));
        let v: Value = serde_json::from_str(Frame::plain_error("bad \"x\"").as_str()).unwrap();
        assert_eq!(v["data"]["message"], "bad \"x\"");
    }
}
