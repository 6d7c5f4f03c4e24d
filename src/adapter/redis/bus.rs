//! What travels on the Redis pub/sub channel between nodes.
//!
//! One record per event: a small JSON header line, then the frame's bytes as they go out on the
//! sockets, so a receiving node delivers without re-serialising anything. Records queued together
//! travel as one pub/sub message ([`encode_many`]): a batch of ten events costs one PUBLISH.

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

/// Marks a message of several records; a single record starts with its JSON header (`{`).
const MANY: u8 = b'M';

/// Several encoded records as one message: the marker, then each record as a 4-byte big-endian
/// length and its bytes.
pub fn encode_many(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + records.iter().map(|r| 4 + r.len()).sum::<usize>());
    out.push(MANY);
    for record in records {
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(record);
    }
    out
}

/// Every record of a message, in order; malformed ones are skipped (the caller logs, never fatal).
pub fn decode_all(payload: &[u8]) -> Vec<Option<(u32, Envelope)>> {
    let Some((&MANY, mut rest)) = payload.split_first() else { return vec![decode(payload)] };
    let mut records = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(record) = tail.get(..len) else {
            records.push(None);
            break;
        };
        records.push(decode(record));
        rest = &tail[len..];
    }
    records
}

/// Decodes one record; `None` for anything malformed.
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
        let many = encode_many(&[t.clone(), b"garbage".to_vec(), t.clone()]);
        let all = decode_all(&many);
        assert_eq!(all.len(), 3);
        assert!(matches!(all[0], Some((1, Envelope::Terminate { .. }))) && all[1].is_none() && all[2].is_some());
        assert!(matches!(decode_all(&t)[..], [Some((1, Envelope::Terminate { .. }))]), "a single record");
        let mut cut = encode_many(std::slice::from_ref(&t));
        cut.truncate(cut.len() - 1);
        assert!(matches!(decode_all(&cut)[..], [None]), "a truncated record is reported, not read past");
        assert!(decode(b"{\"n\":1,\"k\":\"b\",\"a\":\"1\"}\n{}").is_none(), "a broadcast needs a channel");
    }
}
