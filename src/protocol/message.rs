//! Client-to-server messages.
//!
//! Only what routing needs is parsed (`event`, `channel`, the subscribe fields); a client event's
//! `data` stays raw JSON and is relayed without being re-encoded.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A parsed message from a client.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Ping,
    Pong,
    Subscribe(Subscribe),
    Unsubscribe {
        channel: String,
    },
    Signin {
        auth: String,
        user_data: String,
    },
    /// A `client-*` event to relay to the channel's other subscribers.
    ClientEvent {
        event: Cow<'a, str>,
        channel: Cow<'a, str>,
        data: Option<&'a RawValue>,
    },
    /// Any other event name; answered with an error.
    Unknown {
        event: Cow<'a, str>,
    },
}

/// The fields of `pusher:subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub channel: String,
    pub auth: Option<String>,
    /// The presence `channel_data` exactly as sent: the signature covers these bytes.
    pub channel_data: Option<String>,
}

/// Why a message could not be understood. Answered with `pusher:error`; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Invalid message format: {0}")]
    InvalidJson(String),
    #[error("Invalid message format: missing `{0}`")]
    MissingField(&'static str),
    #[error("Invalid message format: `{0}` must be {1}")]
    WrongType(&'static str, &'static str),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: Option<serde_json::Value>,
    auth: Option<serde_json::Value>,
    channel_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SigninData {
    auth: Option<String>,
    user_data: Option<String>,
}

impl<'a> ClientMessage<'a> {
    /// Parses one text frame.
    pub fn parse(text: &'a str) -> Result<Self, ProtocolError> {
        let envelope: Envelope<'a> =
            serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(short_reason(&e)))?;
        let event = envelope.event.ok_or(ProtocolError::MissingField("event"))?;
        Ok(match event.as_ref() {
            "pusher:ping" => ClientMessage::Ping,
            "pusher:pong" => ClientMessage::Pong,
            "pusher:subscribe" => {
                let data: SubscribeData = object_data(envelope.data)?;
                let channel = match data.channel {
                    Some(serde_json::Value::String(c)) => c,
                    Some(_) => return Err(ProtocolError::WrongType("channel", "a string")),
                    None => return Err(ProtocolError::MissingField("data.channel")),
                };
                let auth = match data.auth {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(a)) => Some(a),
                    Some(_) => return Err(ProtocolError::WrongType("auth", "a string")),
                };
                let channel_data = match data.channel_data {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(d)) => Some(d),
                    // Some clients send the object itself; its JSON text is what they would have signed.
                    Some(other) => Some(other.to_string()),
                };
                ClientMessage::Subscribe(Subscribe { channel, auth, channel_data })
            }
            "pusher:unsubscribe" => {
                let data: SubscribeData = object_data(envelope.data)?;
                match data.channel {
                    Some(serde_json::Value::String(channel)) => ClientMessage::Unsubscribe { channel },
                    Some(_) => return Err(ProtocolError::WrongType("channel", "a string")),
                    None => return Err(ProtocolError::MissingField("data.channel")),
                }
            }
            "pusher:signin" => {
                let data: SigninData = object_data(envelope.data)?;
                ClientMessage::Signin {
                    auth: data.auth.ok_or(ProtocolError::MissingField("data.auth"))?,
                    user_data: data.user_data.ok_or(ProtocolError::MissingField("data.user_data"))?,
                }
            }
            name if name.starts_with("client-") => ClientMessage::ClientEvent {
                channel: envelope.channel.ok_or(ProtocolError::MissingField("channel"))?,
                event,
                data: envelope.data,
            },
            _ => ClientMessage::Unknown { event },
        })
    }
}

/// Reads `data` as an object, accepting the JSON-string-holding-an-object form some clients send.
fn object_data<T: for<'de> Deserialize<'de>>(data: Option<&RawValue>) -> Result<T, ProtocolError> {
    let raw = data.ok_or(ProtocolError::MissingField("data"))?;
    let text = raw.get();
    let parsed = if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(short_reason(&e)))?;
        serde_json::from_str(&inner)
    } else {
        serde_json::from_str(text)
    };
    parsed.map_err(|_| ProtocolError::WrongType("data", "an object"))
}

fn short_reason(e: &serde_json::Error) -> String {
    // serde's message without echoing the client's bytes back.
    format!("{:?} at line {} column {}", e.classify(), e.line(), e.column()).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pusher_events() {
        assert!(matches!(ClientMessage::parse(r#"{"event":"pusher:ping","data":{}}"#), Ok(ClientMessage::Ping)));
        assert!(matches!(ClientMessage::parse(r#"{"event":"pusher:pong"}"#), Ok(ClientMessage::Pong)));
        match ClientMessage::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"presence-r","auth":"k:s","channel_data":"{\"user_id\":1}"}}"#,
        ) {
            Ok(ClientMessage::Subscribe(s)) => {
                assert_eq!(s.channel, "presence-r");
                assert_eq!(s.auth.as_deref(), Some("k:s"));
                assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":1}"#));
            }
            other => panic!("{other:?}"),
        }
        match ClientMessage::parse(r#"{"event":"pusher:unsubscribe","data":"{\"channel\":\"a\"}"}"#) {
            Ok(ClientMessage::Unsubscribe { channel }) => assert_eq!(channel, "a"),
            other => panic!("{other:?}"),
        }
        match ClientMessage::parse(r#"{"event":"client-typing","channel":"private-c","data":{"x":[1, 2]}}"#) {
            Ok(ClientMessage::ClientEvent { event, channel, data }) => {
                assert_eq!(event, "client-typing");
                assert_eq!(channel, "private-c");
                assert_eq!(data.unwrap().get(), r#"{"x":[1, 2]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientMessage::parse(r#"{"event":"pusher:signin","data":{"auth":"a","user_data":"{}"}}"#),
            Ok(ClientMessage::Signin { .. })
        ));
        assert!(matches!(ClientMessage::parse(r#"{"event":"whatever"}"#), Ok(ClientMessage::Unknown { .. })));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bad = [
            "",
            "not json",
            "[]",
            "{}",
            "null",
            r#"{"event":1}"#,
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":null}"#,
            r#"{"event":"pusher:subscribe","data":{}}"#,
            r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
            r#"{"event":"pusher:subscribe","data":"not an object"}"#,
            r#"{"event":"pusher:subscribe","data":{"channel":"a","auth":7}}"#,
            r#"{"event":"pusher:unsubscribe","data":[]}"#,
            r#"{"event":"pusher:signin","data":{"auth":"x"}}"#,
            r#"{"event":"client-x","data":{}}"#,
            "{\"event\":\"pusher:ping\"",
        ];
        for input in bad {
            assert!(ClientMessage::parse(input).is_err(), "{input:?} should be refused");
        }
    }

    #[test]
    fn errors_do_not_echo_client_bytes() {
        let err = ClientMessage::parse("{\"event\": SECRET-TOKEN").unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
