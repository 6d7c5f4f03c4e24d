//! The records nodes exchange on the Redis pub/sub channel, and how they are written.
//!
//! ## Format
//!
//! A **record** is one line of JSON (the header), a `\n`, then the body: for a broadcast, the frame's
//! bytes exactly as they go out on the sockets, so a receiving node delivers without re-serialising.
//!
//! | header field | meaning | present |
//! | --- | --- | --- |
//! | `n` | the publishing node's id; a node skips its own records | always |
//! | `k` | record kind: `b` broadcast, `t` terminate a user's connections | always |
//! | `a` | app id | always |
//! | `c` | channel name, validated again on receipt | `b` |
//! | `e` | broadcast kind: `e` event, `i` internal, `c` client event; absent means `e` | `b`, optional |
//! | `x` | socket id (`node.seq`) that must not receive the broadcast | `b`, optional |
//! | `u` | user id whose connections close | `t` |
//! | `p` | the history position (Redis Stream id) of a broadcast on a history channel; its frame already carries it, and every node, the publishing one too, delivers it from the bus | `b`, optional; last |
//!
//! A **message** on the channel is either one record (it starts with `{`), or several: the byte
//! `M`, then each record as a 4-byte big-endian length and its bytes ([`encode_many`]). A batch of
//! ten events costs one PUBLISH. A malformed record is skipped and reported; the rest of its
//! message is still read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::{Broadcast, BroadcastKind, Record};
use crate::protocol::position::Position;
use crate::protocol::{Channel, Frame, SocketId};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Header {
    n: u32,
    k: String,
    a: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

fn kind_code(kind: BroadcastKind) -> Option<String> {
    match kind {
        // The common case costs nothing on the wire.
        BroadcastKind::Event => None,
        BroadcastKind::Internal => Some("i".into()),
        BroadcastKind::ClientEvent => Some("c".into()),
    }
}

fn kind_of(code: Option<&str>) -> Option<BroadcastKind> {
    match code {
        None | Some("e") => Some(BroadcastKind::Event),
        Some("i") => Some(BroadcastKind::Internal),
        Some("c") => Some(BroadcastKind::ClientEvent),
        Some(_) => None,
    }
}

/// One record, from `node`.
pub fn encode(node: u32, record: &Record) -> Vec<u8> {
    let (header, body): (Header, &[u8]) = match record {
        Record::Broadcast(b) => (
            Header {
                n: node,
                k: "b".into(),
                a: b.app_id.clone(),
                c: Some(b.channel.name.clone()),
                e: kind_code(b.kind),
                x: b.except.map(|s| s.to_string()),
                u: None,
                p: None,
            },
            b.frame.bytes(),
        ),
        Record::Terminate { app_id, user_id } => (
            Header {
                n: node,
                k: "t".into(),
                a: app_id.clone(),
                c: None,
                e: None,
                x: None,
                u: Some(user_id.clone()),
                p: None,
            },
            b"",
        ),
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// A history broadcast's record in two heads, for the script that learns its position: the
/// header up to its `p` value (`..,"p":"`), and the frame without its closing brace. The script
/// writes `head + id + "\"}\n" + frame + ",\"position\":\"" + id + "\"}"`.
pub fn encode_history_heads(node: u32, broadcast: &Broadcast) -> (Vec<u8>, Vec<u8>) {
    let mut head = encode(node, &Record::Broadcast(Broadcast { frame: Frame::empty_object(), ..broadcast.clone() }));
    // `{header}\n{}`: the header without its closing brace, then the open `p`.
    head.truncate(head.len().saturating_sub(4));
    head.extend_from_slice(br#","p":""#);
    let text = broadcast.frame.as_bytes();
    let frame = text.strip_suffix(b"}").unwrap_or(text).to_vec();
    (head, frame)
}

/// Marks a message of several records; a single record starts with its JSON header (`{`).
const MANY: u8 = b'M';

/// Several encoded records as one message.
pub fn encode_many(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + records.iter().map(|r| 4 + r.len()).sum::<usize>());
    out.push(MANY);
    for record in records {
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(record);
    }
    out
}

/// Every record of a message, in order; `None` for each malformed one (never fatal).
pub fn decode_all(payload: &[u8]) -> Vec<Option<(u32, Record)>> {
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

/// Decodes one record with the node it came from; `None` for anything malformed.
pub fn decode(payload: &[u8]) -> Option<(u32, Record)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..split]).ok()?;
    let record = match header.k.as_str() {
        "b" => Record::Broadcast(Broadcast {
            app_id: header.a,
            channel: Channel::parse_from_peer(header.c.as_deref()?).ok()?,
            kind: kind_of(header.e.as_deref())?,
            frame: {
                let text = Bytes::copy_from_slice(&payload[split + 1..]);
                match &header.p {
                    Some(p) => Frame::kept_at(text, header.c.as_deref()?, Position::parse(p)?)?,
                    None => Frame::from_text_bytes(text)?,
                }
            },
            except: match header.x {
                Some(x) => Some(x.parse::<SocketId>().ok()?),
                None => None,
            },
        }),
        "t" => Record::Terminate { app_id: header.a, user_id: header.u? },
        _ => return None,
    };
    Some((header.n, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(kind: BroadcastKind, except: Option<SocketId>) -> Record {
        Record::Broadcast(Broadcast {
            app_id: "app-1".into(),
            channel: Channel::parse("presence-room").unwrap(),
            kind,
            frame: Frame::event("e", "presence-room", "d\nwith newline"),
            except,
        })
    }

    fn header_of(record: &[u8]) -> serde_json::Value {
        let line = record.split(|b| *b == b'\n').next().unwrap();
        serde_json::from_slice(line).unwrap()
    }

    fn decoded_broadcast(bytes: &[u8]) -> Broadcast {
        match decode(bytes) {
            Some((_, Record::Broadcast(b))) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn field_n_is_the_publishing_node() {
        let bytes = encode(9, &broadcast(BroadcastKind::Event, None));
        assert_eq!(header_of(&bytes)["n"], 9);
        assert_eq!(decode(&bytes).unwrap().0, 9);
    }

    #[test]
    fn field_k_is_the_record_kind() {
        assert_eq!(header_of(&encode(1, &broadcast(BroadcastKind::Event, None)))["k"], "b");
        let t = encode(1, &Record::Terminate { app_id: "a".into(), user_id: "42".into() });
        assert_eq!(header_of(&t)["k"], "t");
        let mut unknown = header_of(&t);
        unknown["k"] = "z".into();
        assert!(decode(format!("{unknown}\n").as_bytes()).is_none(), "an unknown kind is refused");
    }

    #[test]
    fn field_a_is_the_app() {
        let bytes = encode(1, &broadcast(BroadcastKind::Event, None));
        assert_eq!(header_of(&bytes)["a"], "app-1");
        assert_eq!(decoded_broadcast(&bytes).app_id, "app-1");
    }

    #[test]
    fn field_c_is_the_channel_parsed_again() {
        let bytes = encode(1, &broadcast(BroadcastKind::Event, None));
        assert_eq!(header_of(&bytes)["c"], "presence-room");
        assert_eq!(decoded_broadcast(&bytes).channel, Channel::parse("presence-room").unwrap());
        assert!(decode(b"{\"n\":1,\"k\":\"b\",\"a\":\"1\"}\n{}").is_none(), "a broadcast needs a channel");
        assert!(decode(b"{\"n\":1,\"k\":\"b\",\"a\":\"1\",\"c\":\"a b\"}\n{}").is_none(), "an invalid name is refused");
    }

    #[test]
    fn field_e_is_the_broadcast_kind() {
        let event = encode(1, &broadcast(BroadcastKind::Event, None));
        assert!(header_of(&event).get("e").is_none(), "events leave it out");
        assert_eq!(decoded_broadcast(&event).kind, BroadcastKind::Event);
        for (kind, code) in [(BroadcastKind::Internal, "i"), (BroadcastKind::ClientEvent, "c")] {
            let bytes = encode(1, &broadcast(kind, None));
            assert_eq!(header_of(&bytes)["e"], code);
            assert_eq!(decoded_broadcast(&bytes).kind, kind);
        }
        assert!(decode(b"{\"n\":1,\"k\":\"b\",\"a\":\"1\",\"c\":\"x\",\"e\":\"?\"}\n{}").is_none());
    }

    #[test]
    fn field_x_is_the_excluded_socket() {
        let sid = SocketId { node: 5, seq: 6 };
        let bytes = encode(1, &broadcast(BroadcastKind::Event, Some(sid)));
        assert_eq!(header_of(&bytes)["x"], "5.6");
        assert_eq!(decoded_broadcast(&bytes).except, Some(sid));
        assert_eq!(decoded_broadcast(&encode(1, &broadcast(BroadcastKind::Event, None))).except, None);
        assert!(decode(b"{\"n\":1,\"k\":\"b\",\"a\":\"1\",\"c\":\"x\",\"x\":\"nope\"}\n{}").is_none());
    }

    #[test]
    fn field_u_is_the_terminated_user() {
        let t = encode(3, &Record::Terminate { app_id: "a".into(), user_id: "42".into() });
        assert_eq!(header_of(&t)["u"], "42");
        assert!(matches!(decode(&t), Some((3, Record::Terminate { user_id, .. })) if user_id == "42"));
        assert!(decode(b"{\"n\":1,\"k\":\"t\",\"a\":\"1\"}\n").is_none(), "terminate needs a user");
    }

    #[test]
    fn the_body_is_the_frame_byte_for_byte() {
        let Record::Broadcast(original) = broadcast(BroadcastKind::Event, None) else { unreachable!() };
        let bytes = encode(1, &Record::Broadcast(original.clone()));
        assert_eq!(decoded_broadcast(&bytes).frame, original.frame);
        let mut bad = bytes.clone();
        bad.push(0xff);
        assert!(decode(&bad).is_none(), "a body that is not UTF-8 is refused");
        assert!(decode(b"garbage").is_none());
    }

    #[test]
    fn field_p_is_the_history_position_and_the_frame_carries_it() {
        let Record::Broadcast(b) = broadcast(BroadcastKind::Event, None) else { unreachable!() };
        let (head, frame) = encode_history_heads(4, &b);
        // What the publish script writes with the id Redis gave.
        let mut record = head.clone();
        record.extend_from_slice(b"17-2\"}\n");
        record.extend_from_slice(&frame);
        record.extend_from_slice(b",\"position\":\"17-2\"}");
        let decoded = decoded_broadcast(&record);
        assert_eq!(header_of(&record)["p"], "17-2");
        assert_eq!(decoded.frame.history(), Some(("presence-room", Position { ms: 17, seq: 2 })));
        assert_eq!(decoded.frame, b.frame.at_position("presence-room", Position { ms: 17, seq: 2 }));
        assert_eq!(decoded.except, b.except);
        record[head.len()] = b'x';
        assert!(decode(&record).is_none(), "a position that is not one is refused");
    }

    #[test]
    fn several_records_travel_as_one_message() {
        let t = encode(1, &Record::Terminate { app_id: "1".into(), user_id: "42".into() });
        let many = encode_many(&[t.clone(), b"garbage".to_vec(), t.clone()]);
        assert_eq!(many[0], b'M');
        let all = decode_all(&many);
        assert_eq!(all.len(), 3);
        assert!(all[0].is_some() && all[1].is_none() && all[2].is_some(), "a bad record does not hide the rest");
        assert!(matches!(decode_all(&t)[..], [Some((1, Record::Terminate { .. }))]), "a single record");
        let mut cut = encode_many(std::slice::from_ref(&t));
        cut.truncate(cut.len() - 1);
        assert!(matches!(decode_all(&cut)[..], [None]), "a truncated record is reported, not read past");
    }
}
