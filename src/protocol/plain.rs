//! The plain WebSocket endpoint's wire format, for clients without a Pusher library.
//!
//! A room `R` is the hub channel `private-room-R`: plain clients and Pusher clients (which must
//! authorise like for any private channel) share it, and the HTTP API publishes to it. Everything a
//! plain client receives has the Pusher shape `{"event","channel","data"}`, so one frame serves
//! both kinds of client; a plain client's own message `{"type": T, "payload": P}` reaches the others
//! as event `T` with data `{"payload": P, "from": <user id>, "ts": <server ms>}`.

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
    #[error("`type` must be a non-empty string of at most 200 characters, not starting with pusher: or herald:")]
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

/// A validated message from a plain client.
#[derive(Debug)]
pub struct PlainMessage<'a> {
    pub kind: &'a str,
    pub payload: &'a RawValue,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

impl<'a> PlainMessage<'a> {
    pub fn parse(text: &'a str) -> Result<PlainMessage<'a>, PlainError> {
        let raw: Raw<'a> = serde_json::from_str(text).map_err(|_| PlainError::NotAnObject)?;
        let kind = raw.kind.ok_or(PlainError::BadType)?;
        if validate_event_name(kind).is_err() || kind.starts_with("pusher:") || kind.starts_with("herald:") {
            return Err(PlainError::BadType);
        }
        let payload = raw.payload.ok_or(PlainError::MissingPayload)?;
        Ok(PlainMessage { kind, payload })
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
        Frame::client_event(message.kind, channel, raw.as_deref(), None)
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
        assert_eq!((m.kind, m.payload.get()), ("chat", r#"{"text":"hi"}"#));
        for (bad, err) in [
            ("nope", PlainError::NotAnObject),
            ("[]", PlainError::NotAnObject),
            (r#"{"payload":1}"#, PlainError::BadType),
            (r#"{"type":"","payload":1}"#, PlainError::BadType),
            (r#"{"type":5,"payload":1}"#, PlainError::NotAnObject),
            (r#"{"type":"pusher:subscribe","payload":1}"#, PlainError::BadType),
            (r#"{"type":"herald:joined","payload":1}"#, PlainError::BadType),
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
        assert_eq!(v["event"], "chat");
        assert_eq!(v["channel"], "private-room-a");
        assert_eq!(v["data"], serde_json::json!({"payload": {"text": "hi"}, "from": "u\"1", "ts": 42}));
        let v: Value = serde_json::from_str(Frame::plain_error("bad \"x\"").as_str()).unwrap();
        assert_eq!(v["data"]["message"], "bad \"x\"");
    }
}
