//! What travels on the Redis pub/sub channel between nodes.
//!
//! One message per event per node: a small JSON header line, then the frame's bytes as they go
//! out on the sockets, so a receiving node delivers without re-serialising anything.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::adapter::Broadcast;
use crate::protocol::{Frame, SocketId};

#[derive(Serialize, Deserialize)]
struct Header {
    /// The publishing node (its own messages come back to it and are skipped).
    n: u32,
    /// Kind: "b" broadcast, "t" terminate a user's connections.
    k: String,
    a: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
}

/// A message between nodes.
#[derive(Debug)]
pub enum Envelope {
    Broadcast(Broadcast),
    Terminate { app_id: String, user_id: String },
}

pub fn encode(node: u32, envelope: &Envelope) -> Vec<u8> {
    let (header, body): (Header, &[u8]) = match envelope {
        Envelope::Broadcast(b) => (
            Header {
                n: node,
                k: "b".into(),
                a: b.app_id.clone(),
                c: Some(b.channel.clone()),
                x: b.except.map(|s| s.to_string()),
                u: None,
            },
            b.frame.bytes(),
        ),
        Envelope::Terminate { app_id, user_id } => {
            (Header { n: node, k: "t".into(), a: app_id.clone(), c: None, x: None, u: Some(user_id.clone()) }, b"")
        }
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// Decodes a message; `None` for anything malformed (logged by the caller, never fatal).
pub fn decode(payload: &[u8]) -> Option<(u32, Envelope)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..split]).ok()?;
    let body = Bytes::copy_from_slice(&payload[split + 1..]);
    let envelope = match header.k.as_str() {
        "b" => Envelope::Broadcast(Broadcast {
            app_id: header.a,
            channel: header.c?,
            frame: Frame::from_text_bytes(body)?,
            except: header.x.and_then(|x| x.parse::<SocketId>().ok()),
        }),
        "t" => Envelope::Terminate { app_id: header.a, user_id: header.u? },
        _ => return None,
    };
    Some((header.n, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let frame = Frame::event("e", "c", "d\nwith newline");
        let b = Broadcast {
            app_id: "1".into(),
            channel: "c".into(),
            frame: frame.clone(),
            except: Some(SocketId { node: 5, seq: 6 }),
        };
        let (node, back) = decode(&encode(9, &Envelope::Broadcast(b))).unwrap();
        assert_eq!(node, 9);
        match back {
            Envelope::Broadcast(b) => {
                assert_eq!(b.frame, frame);
                assert_eq!(b.except, Some(SocketId { node: 5, seq: 6 }));
            }
            other => panic!("{other:?}"),
        }
        let t = encode(1, &Envelope::Terminate { app_id: "1".into(), user_id: "42".into() });
        assert!(matches!(decode(&t), Some((1, Envelope::Terminate { .. }))));
        assert!(decode(b"garbage").is_none());
        assert!(decode(b"{\"n\":1,\"k\":\"b\",\"a\":\"1\"}\n{}").is_none(), "a broadcast needs a channel");
    }
}
