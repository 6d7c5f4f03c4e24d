//! Fuzz entry points: one function per input parser a peer reaches, each calling exactly what
//! production calls and checking what must hold for any input (no panic, no hang, limits kept,
//! what Herald writes is valid JSON, what it signs it also accepts).
//!
//! The `fuzz/` crate (cargo-fuzz, nightly) drives them with libFuzzer; `tests/fuzz_corpus.rs`
//! replays every file of `fuzz/corpus/<target>/` through [`TARGETS`] on stable, so the corpora
//! guard regressions in every `cargo test`. Not part of Herald's API.

use serde_json::Value;

use crate::protocol::channel::{user_channel, validate_event_name};
use crate::protocol::presence::{presence_succeeded_json, removed_json, signin_user_id, MemberData};
use crate::protocol::signature::{
    check_api_params, decode_query, sign_api_request, verify_api_request, ApiAuthError, ApiRequest,
};
use crate::protocol::{Channel, ChannelName, ClientMessage, Frame};
use crate::transport::codec::{Decoded, Decoder, Message, ReadError};

/// A fuzz entry point: any bytes in, a panic on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name: the name is its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("websocket_frames", websocket_frames),
    ("client_message", client_message),
    ("api_request", api_request),
    ("presence_channel_data", presence_channel_data),
    ("plain_message", plain_message),
    ("bus_record", bus_record),
    ("deflate_offer", deflate_offer),
    ("inflate", inflate),
    ("jwt", jwt),
    ("xhr_send_body", xhr_send_body),
    ("sse_render", sse_render),
    ("sse_request", sse_request),
];

/// What a JSON text Herald builds must be: valid JSON (RFC 8259). Returned as a `Value` to check its
/// fields, unless it holds a number outside what an f64 holds (`3e802`): the grammar allows it, Herald
/// relays client payloads as they came, and JavaScript reads it as Infinity, but serde's `Value` refuses it.
fn assert_json(text: &str) -> Option<Value> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        panic!("Herald wrote invalid JSON ({e}): {text}");
    }
    serde_json::from_str(text).ok()
}

/// What the reader of one socket makes of a byte stream arriving in pieces of `chunk` bytes: the
/// messages, then the error that ended it (if any), with the decoder's contract checked at each step.
fn read_stream(stream: &[u8], chunk: usize, max_message: usize, deflate: bool) -> (Vec<Message>, Option<ReadError>) {
    let mut decoder = Decoder::new(max_message);
    if deflate {
        decoder.enable_deflate();
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut messages = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            match decoder.decode(&pending) {
                Err(e) => return (messages, Some(e)),
                // The socket reads until it has `need` bytes: asking for what is already there
                // would spin for ever.
                Ok(Decoded::NeedMore(need)) => {
                    assert!(need > pending.len(), "NeedMore({need}) with {} bytes buffered", pending.len());
                    break;
                }
                Ok(Decoded::Fragment { consumed }) => {
                    assert!(consumed > 0 && consumed <= pending.len(), "fragment consumed {consumed}");
                    pending.drain(..consumed);
                }
                Ok(Decoded::Message { consumed, message }) => {
                    assert!(consumed > 0 && consumed <= pending.len(), "message consumed {consumed}");
                    pending.drain(..consumed);
                    match &message {
                        Message::Text(t) => assert!(t.len() <= max_message, "{} > {max_message}", t.len()),
                        Message::Binary(b) => assert!(b.len() <= max_message, "{} > {max_message}", b.len()),
                        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
                        Message::Close(_) => {
                            messages.push(message);
                            return (messages, None);
                        }
                    }
                    messages.push(message);
                }
            }
        }
    }
    (messages, None)
}

/// The WebSocket frame decoder (`transport::codec`), as the socket reader drives it, with
/// permessage-deflate on or off. Byte 0 picks the options, the rest is the client's stream; it is
/// read whole and in small pieces, which must come to the same messages and the same error.
pub fn websocket_frames(data: &[u8]) {
    let Some((&options, stream)) = data.split_first() else { return };
    let max_message = [125, 1000, 10_000, 65_536][usize::from(options & 3)];
    let deflate = options & 4 != 0;
    let chunk = 1 + usize::from(options >> 3);
    let whole = read_stream(stream, stream.len(), max_message, deflate);
    let pieces = read_stream(stream, chunk, max_message, deflate);
    assert_eq!(whole, pieces, "the same bytes decode differently in pieces of {chunk}");
}

/// The Pusher client message parser, and the frame a client event becomes.
pub fn client_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(message) = ClientMessage::parse(text) else { return };
    match message {
        ClientMessage::ClientEvent { event, channel, data } => {
            // What the session relays once the names are valid, with and without a presence user.
            if validate_event_name(&event).is_ok() && ChannelName::parse(&channel).is_ok() {
                for user_id in [None, Some("7")] {
                    let frame = Frame::client_event(&event, &channel, data, user_id);
                    if let Some(value) = assert_json(frame.as_str()) {
                        assert_eq!(value["event"].as_str(), Some(event.as_ref()));
                        assert_eq!(value["channel"].as_str(), Some(channel.as_ref()));
                    }
                }
            }
        }
        ClientMessage::Subscribe(s) => {
            if let Ok(name) = ChannelName::parse(&s.channel) {
                assert_eq!(name.name, s.channel);
            }
        }
        ClientMessage::Signin { user_data, .. } => {
            let _ = signin_user_id(&user_data);
        }
        ClientMessage::Unsubscribe { .. }
        | ClientMessage::Ping
        | ClientMessage::Pong
        | ClientMessage::Unknown { .. } => {}
    }
}

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";
const NOW: i64 = 1_700_000_000;

/// HTTP API request signing: the query as the API decodes it, the checks made before the body is
/// read, and the full verification. Input: `METHOD\nPATH\nQUERY\nBODY`. Whatever the parameters,
/// a request Herald signs itself (as `herald trigger` does) verifies.
pub fn api_request(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let (Some(method), Some(path), Some(query)) = (parts.next(), parts.next(), parts.next()) else { return };
    let body = parts.next().unwrap_or_default();
    let (Ok(method), Ok(path), Ok(query)) =
        (std::str::from_utf8(method), std::str::from_utf8(path), std::str::from_utf8(query))
    else {
        return;
    };
    let params = decode_query(query);
    for (k, _) in &params {
        assert_eq!(k, &k.to_lowercase(), "keys are compared lower-cased");
    }
    let early = check_api_params(KEY, &params, NOW);
    let full = verify_api_request(KEY, SECRET, &ApiRequest { method, path, query, body }, NOW);
    // The early checks are a subset of the full ones: nothing they refuse may verify.
    if early.is_err() {
        assert!(full.is_err());
    }
    // Signing the decoded parameters (the `info`, `channel` ... a tool adds) and verifying it.
    let extra: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signed = sign_api_request(KEY, SECRET, method, path, body, &extra, NOW);
    let request = ApiRequest { method, path, query: &signed, body };
    let verdict = verify_api_request(KEY, SECRET, &request, NOW);
    assert!(verdict.is_ok(), "Herald's own signature refused ({verdict:?}): {signed}");
    assert!(!matches!(
        verify_api_request(KEY, "another-secret", &request, NOW),
        Ok(()) | Err(ApiAuthError::BodyMd5Mismatch)
    ));
}

/// Presence `channel_data` (`{"user_id":..,"user_info":..}`) and sign-in `user_data`, and the
/// member events Herald builds from them.
pub fn presence_channel_data(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    const MAX_INFO: usize = 1000;
    if let Ok(member) = MemberData::parse(Some(text), MAX_INFO) {
        assert!(!member.user_id.is_empty());
        assert!(member.user_info.as_ref().is_none_or(|info| info.len() <= MAX_INFO));
        if let Some(added) = assert_json(&member.added_json()) {
            assert_eq!(added["user_id"].as_str(), Some(member.user_id.as_str()));
        }
        let removed = assert_json(&removed_json(&member.user_id));
        assert_eq!(removed.as_ref().and_then(|r| r["user_id"].as_str()), Some(member.user_id.as_str()));
        let members = [(member.user_id.as_str(), member.user_info.as_deref()), ("other", None)];
        if let Some(succeeded) = assert_json(&presence_succeeded_json(members.into_iter())) {
            assert!(succeeded["presence"]["hash"].get(member.user_id.as_str()).is_some());
        }
    }
    if let Ok(id) = signin_user_id(text) {
        // Events reach a signed-in user through this channel: the API must accept its name.
        let channel = user_channel(&id);
        assert!(Channel::parse(&channel).is_ok(), "user {id:?} signs in but {channel:?} cannot be published to");
    }
}

/// The plain endpoint's messages (`{"type","payload"}`) and room names, and the frame a message becomes.
pub fn plain_message(data: &[u8]) {
    use crate::protocol::plain::{room_channel, PlainMessage};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (room, message) = text.split_once('\n').unwrap_or(("lobby", text));
    let Ok(channel) = room_channel(room) else { return };
    assert!(ChannelName::parse(&channel.name).is_ok());
    let Ok(message) = PlainMessage::parse(message) else { return };
    let frame = Frame::plain_message(&channel.name, &message, "user-1", 1);
    let Some(value) = assert_json(frame.as_str()) else { return };
    // Never a name a Pusher client would take for the server's or the app's own event.
    assert_eq!(value["event"].as_str(), Some(message.event.as_str()));
    assert!(message.event.starts_with(crate::protocol::plain::CLIENT_PREFIX), "{}", message.event);
    assert_eq!(value["channel"].as_str(), Some(channel.name.as_str()));
    assert_eq!(Some(&value["data"]["payload"]), assert_json(message.payload.get()).as_ref());
}

/// The records other nodes publish on Redis (Redis in): whatever decodes re-encodes to itself.
pub fn bus_record(data: &[u8]) {
    use crate::cluster::redis::bus::{decode, decode_all, encode};
    for (node, record) in decode_all(data).into_iter().flatten() {
        let encoded = encode(node, &record);
        let Some((again_node, again)) = decode(&encoded) else {
            panic!("a decoded record does not decode once re-encoded: {}", String::from_utf8_lossy(&encoded))
        };
        assert_eq!(again_node, node);
        assert_eq!(encode(again_node, &again), encoded);
    }
}

/// The `Sec-WebSocket-Extensions` offers (one header value per line): what Herald agrees to it
/// can honour, and its answer is itself an acceptable offer of the same window.
pub fn deflate_offer(data: &[u8]) {
    use crate::transport::deflate::negotiate;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(agreement) = negotiate(text.lines()) else { return };
    assert!((9..=15).contains(&agreement.server_window_bits), "{}", agreement.server_window_bits);
    assert!(agreement.response.starts_with("permessage-deflate"));
    let again = negotiate([agreement.response.as_str()]);
    assert_eq!(again.map(|a| a.server_window_bits), Some(agreement.server_window_bits));
}

/// The permessage-deflate inflater, with its output limit (byte 0 picks it), and a round trip
/// through the compressor for every window size.
pub fn inflate(data: &[u8]) {
    use crate::transport::deflate::{compress, inflate};
    let Some((&choice, payload)) = data.split_first() else { return };
    let max = [0, 1, 125, 1000, 10_000, 65_536][usize::from(choice) % 6];
    if let Ok(out) = inflate(payload, max) {
        assert!(out.len() <= max, "inflated {} bytes past a limit of {max}", out.len());
    }
    let bits = 9 + choice % 7;
    if let Some(packed) = compress(payload, bits) {
        assert!(packed.len() < payload.len());
        match inflate(&packed, payload.len()) {
            Ok(out) => assert!(out == payload, "compress then inflate changed the message"),
            Err(e) => panic!("Herald's own compressed message is refused: {e}"),
        }
    }
}

/// The plain endpoint's JWTs: `TOKEN\nROOM`. Only tokens signed with the secret pass, and they
/// keep their room; a token Herald issues verifies with its claims.
pub fn jwt(data: &[u8]) {
    use crate::protocol::token::{issue, verify, TokenError};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (token, room) = text.split_once('\n').unwrap_or((text, "lobby"));
    if let Ok(claims) = verify(token, SECRET, room) {
        assert!(!claims.sub.is_empty());
        assert!(claims.room.as_deref().is_none_or(|r| r == room));
        // The fuzzer cannot forge HS256: a token that passes must be one a corpus file carries whole.
        assert!(verify(token, "another-secret", room).is_err());
    }
    // A far-future expiry: the round trip must not depend on the clock.
    let exp = 4_000_000_000;
    let sub = if token.is_empty() { "u" } else { token };
    let issued = issue(SECRET, sub, exp, Some(room));
    match verify(&issued, SECRET, room) {
        Ok(claims) => assert_eq!((claims.sub.as_str(), claims.room.as_deref()), (sub, Some(room))),
        Err(e) => panic!("an issued token is refused: {e:?}"),
    }
    assert_eq!(verify(&issued, SECRET, &format!("{room}-other")), Err(TokenError::WrongRoom));
}

/// The HTTP fallbacks' `xhr_send` bodies (byte 0 picks the message size limit): what is accepted
/// keeps the limits, and goes back out as one `a[...]` line that decodes to the same messages.
pub fn xhr_send_body(data: &[u8]) {
    use crate::protocol::http_fallback::{messages_line, parse_send_body, MAX_MESSAGES_PER_SEND};
    let Some((&choice, body)) = data.split_first() else { return };
    let max = [0, 1, 16, 1000, 10_000][usize::from(choice) % 5];
    let Ok(messages) = parse_send_body(body, max) else { return };
    assert!(messages.len() <= MAX_MESSAGES_PER_SEND, "{} messages accepted", messages.len());
    assert!(messages.iter().all(|m| m.len() <= max), "a message past {max} bytes accepted");
    let Some(line) = messages_line(messages.iter().map(String::as_str)) else {
        assert!(messages.is_empty());
        return;
    };
    let body = line.strip_prefix('a').and_then(|l| l.strip_suffix('\n'));
    let Some(body) = body.filter(|b| !b.contains(['\n', '\r'])) else {
        panic!("an a[...] line that is not one line: {line:?}")
    };
    assert_json(body);
    assert_eq!(serde_json::from_str::<Vec<String>>(body).ok().as_ref(), Some(&messages));
}

/// A broadcast frame rendered for Server-Sent Events: only `event:` and `data:` lines, never a
/// blank line (which would end the event early and let a publisher write events of its own), and
/// the data lines put together are one JSON object.
pub fn sse_render(data: &[u8]) {
    use crate::protocol::sse::render;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(rendered) = render(text) else { return };
    let Ok(rendered) = std::str::from_utf8(&rendered) else { panic!("SSE rendering is not UTF-8") };
    let Some(body) = rendered.strip_suffix('\n') else { panic!("unterminated last line: {rendered:?}") };
    let mut lines = body.split('\n');
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("event: ") && first.len() > 7, "first line: {first:?}");
    assert!(!first.contains('\r'));
    let mut joined = String::new();
    for line in lines {
        let Some(part) = line.strip_prefix("data: ") else { panic!("a line that is not data: {line:?}") };
        assert!(!part.is_empty() && !part.contains('\r'), "data line {line:?}");
        joined.push_str(part);
        joined.push('\n');
    }
    if let Some(value) = assert_json(&joined) {
        assert!(value.is_object(), "data is not an object: {joined}");
    }
}

/// The SSE endpoint's inputs: `channels` (a comma list), then a bearer token or a ticket on the next
/// line. Accepted channel lists keep their limits; only credentials signed with the app's secret
/// pass; a ticket Herald issues verifies with its claims, and never as a bearer token.
pub fn sse_request(data: &[u8]) {
    use crate::protocol::sse_auth::{issue_ticket, verify_bearer, verify_ticket, TicketRequest};
    use crate::session::MAX_SSE_CHANNELS;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (names, token) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(channels) = crate::server::sse::parse_channels(names.split(',')) {
        assert!(!channels.is_empty() && channels.len() <= MAX_SSE_CHANNELS);
        for (i, channel) in channels.iter().enumerate() {
            assert!(ChannelName::parse(&channel.name).is_ok());
            assert!(!channel.name.starts_with("private-encrypted-"), "{} served over SSE", channel.name);
            assert!(channels[..i].iter().all(|c| c.name != channel.name), "{} twice", channel.name);
        }
    }
    for grant in [verify_bearer(token, SECRET), verify_ticket(token, SECRET)].into_iter().flatten() {
        // The fuzzer cannot forge HS256: what passes must be a whole token from a corpus file.
        assert!(verify_bearer(token, "another-secret").is_err() && verify_ticket(token, "another-secret").is_err());
        assert!(grant.user_id.as_deref() != Some(""));
    }
    // The same peer text as a `Last-Event-ID` (and a plain `since`): what parses prints back to
    // itself, so a resumed stream's next `id:` names the same positions.
    for candidate in [names, token] {
        let resume = crate::protocol::position::StreamPosition::parse(candidate);
        assert_eq!(crate::protocol::position::StreamPosition::parse(&resume.to_string()), resume);
        if let Some(p) = crate::protocol::position::Position::parse(candidate) {
            assert_eq!(crate::protocol::position::Position::parse(&p.to_string()), Some(p));
        }
    }
    let channels: Vec<String> = names.split(',').map(str::to_owned).collect();
    let user_id = (!token.is_empty()).then_some(token);
    let request = TicketRequest { channels: &channels, user_id, user_info: None };
    let ticket = issue_ticket(SECRET, "ticket-1", 4_000_000_000, &request);
    match verify_ticket(&ticket, SECRET) {
        Ok(grant) => {
            assert_eq!(grant.channels, channels);
            assert_eq!(grant.user_id.as_deref(), user_id);
            assert_eq!(grant.ticket, Some(("ticket-1".to_owned(), 4_000_000_000)));
        }
        Err(e) => panic!("an issued ticket is refused: {e:?}"),
    }
    assert!(verify_bearer(&ticket, SECRET).is_err(), "a ticket passes as a bearer token");
}
