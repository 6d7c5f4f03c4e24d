//! `GET {path}/sse/{app_key}?channels=a,b`: Server-Sent Events, for consumers that only listen
//! (dashboards, tickers, notifications) with nothing but `new EventSource(url)`.
//!
//! Checked in this order, each refusal a JSON `{"error": ...}`: the app exists (404), every `Origin`
//! is allowed (403), the channels are valid (400: at most 100, no `private-encrypted-`), the
//! credential is valid (401) and opens every private and presence channel named (403), a ticket is
//! unused (401, claimed in the cluster state so it is single-use across nodes; 503 while that state
//! cannot be reached), the app has room for the connection (403). Then the socket is taken back
//! from hyper (see `takeover`) and the stream is served by `crate::connection::sse`.
//!
//! Private and presence channels need a JWT with a `channels` claim: `Authorization: Bearer` for
//! clients that can set headers, or `?ticket=` from `POST /apps/{id}/sse_tickets` (see
//! `sse_tickets`) for browsers. Neither is ever logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::oneshot;

use super::limits::{ConnInfo, Permit};
use super::takeover::{RawStream, Takeover};
use super::websocket::{checked_origin, OpenSocket};
use super::AppState;
use crate::apps::App;
use crate::connection::sse::{self as transport, SseSettings};
use crate::protocol::position::StreamPosition;
use crate::protocol::presence::MemberData;
use crate::protocol::signature::{decode_query, verify_with_any};
use crate::protocol::sse_auth::{self, AuthError, Grant, TICKET_TTL_SECS};
use crate::protocol::{Channel, ChannelKind, ChannelName, ErrorCode};
use crate::session::{Exit, SseHandshake, SseSession, MAX_SSE_CHANNELS};

/// `EventSource` reconnects after a random wait in this range, so that the clients of a restarted
/// node do not all come back in the same instant.
const RETRY_MS: std::ops::Range<u64> = 1000..3000;

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refusal decided before the answer is made.
type Refusal = (StatusCode, String);

fn no(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

/// The channels a stream (or a ticket) names: valid, without duplicates, at most
/// [`MAX_SSE_CHANNELS`], and none `private-encrypted-`: their payloads are readable only with the
/// channel's shared secret, which pusher-js gets from the app's auth endpoint and an `EventSource`
/// never does, so they are not served here (the WebSocket endpoint serves them).
pub(crate) fn parse_channels<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Channel>, String> {
    let mut channels: Vec<Channel> = Vec::new();
    for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
        let parsed = ChannelName::parse(name).map_err(|e| {
            let shown: String = name.chars().take(64).collect();
            format!("Invalid channel {shown:?}: {e}")
        })?;
        if parsed.kind == ChannelKind::PrivateEncrypted {
            return Err(format!(
                "{name}: private-encrypted- channels are not served over SSE (only a client holding the \
                 channel's shared secret can read them): use the WebSocket endpoint"
            ));
        }
        if channels.iter().any(|c| c.name == name) {
            continue;
        }
        if channels.len() == MAX_SSE_CHANNELS {
            return Err(format!("A stream may name at most {MAX_SSE_CHANNELS} channels"));
        }
        channels.push(parsed.to_channel());
    }
    if channels.is_empty() {
        return Err("Name at least one channel: ?channels=a,b".into());
    }
    Ok(channels)
}

/// The presence member a user id and `user_info` make, with the app's size cap on the info. The
/// stream counts as that user signed in, so the id must be one a sign-in accepts: else
/// `terminate_connections` could not name it.
pub(super) fn member(app: &App, user_id: &str, user_info: Option<&str>) -> Result<MemberData, String> {
    if !crate::protocol::presence::valid_user_id(user_id) {
        return Err(format!(
            "Invalid user id: 1 to {} characters of A-Z a-z 0-9 _ - = @ , . ;",
            crate::protocol::channel::MAX_USER_ID_LEN
        ));
    }
    let info = user_info.unwrap_or("null");
    let mut channel_data = String::from(r#"{"user_id":"#);
    crate::protocol::frame::push_json_string(&mut channel_data, user_id);
    channel_data.push_str(r#","user_info":"#);
    channel_data.push_str(info);
    channel_data.push('}');
    MemberData::parse(Some(&channel_data), app.max_presence_user_info_size).map_err(|e| e.to_string())
}

enum Credential<'a> {
    Bearer(&'a str),
    Ticket(&'a str),
}

fn credential<'a>(headers: &'a HeaderMap, query: &'a [(String, String)]) -> Result<Option<Credential<'a>>, Refusal> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if param("token").is_some() {
        return Err(no(StatusCode::BAD_REQUEST, "?token= is not accepted (URLs are logged): use ?ticket="));
    }
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) => Some(token.trim()),
            None => return Err(no(StatusCode::UNAUTHORIZED, "Authorization must be `Bearer <token>`")),
        },
    };
    match (bearer, param("ticket")) {
        (Some(_), Some(_)) => Err(no(StatusCode::BAD_REQUEST, "Give a bearer token or a ticket, not both")),
        (Some(token), None) => Ok(Some(Credential::Bearer(token))),
        (None, Some(ticket)) => Ok(Some(Credential::Ticket(ticket))),
        (None, None) => Ok(None),
    }
}

fn verified(app: &App, credential: Credential<'_>) -> Result<Grant, Refusal> {
    let forged = |e: &AuthError| *e == AuthError::Invalid;
    // A ticket is Herald's own, signed with the app secret; a bearer token is the app's.
    let (result, what) = match credential {
        Credential::Bearer(token) => (
            verify_with_any(app.accepted_jwt_secrets(), |secret| sse_auth::verify_bearer(token, secret), forged),
            "Token",
        ),
        Credential::Ticket(ticket) => (
            verify_with_any(app.accepted_secrets(), |secret| sse_auth::verify_ticket(ticket, secret), forged),
            "Ticket",
        ),
    };
    result.unwrap_or(Err(AuthError::Invalid)).map_err(|e| match e {
        AuthError::Expired => no(StatusCode::UNAUTHORIZED, format!("{what} expired")),
        AuthError::Invalid => no(StatusCode::UNAUTHORIZED, format!("Invalid {}", what.to_lowercase())),
    })
}

/// Who the listener is, after checking that the grant opens every private and presence channel.
fn authorised(app: &App, channels: &[Channel], grant: Option<&Grant>) -> Result<Option<MemberData>, Refusal> {
    for channel in channels.iter().filter(|c| c.kind.needs_auth()) {
        match grant {
            None => {
                return Err(no(
                    StatusCode::UNAUTHORIZED,
                    "Private and presence channels need a token (Authorization: Bearer) or a ticket (?ticket=)",
                ))
            }
            Some(grant) if !grant.allows(&channel.name) => {
                return Err(no(StatusCode::FORBIDDEN, format!("Not authorised for {}", channel.name)))
            }
            Some(_) => {}
        }
    }
    let Some(user_id) = grant.and_then(|g| g.user_id.as_deref()) else {
        if channels.iter().any(|c| c.kind == ChannelKind::Presence) {
            return Err(no(StatusCode::FORBIDDEN, "Presence channels need a user: the ticket has no user_id"));
        }
        return Ok(None);
    };
    let info = grant.and_then(|g| g.user_info.as_deref());
    member(app, user_id, info).map(Some).map_err(|e| no(StatusCode::BAD_REQUEST, e))
}

/// The response head, written by the stream's task once it owns the socket. The body is
/// close-delimited; nothing may buffer it.
fn response_head(app: &App, origin: Option<&str>) -> Vec<u8> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         x-accel-buffering: no\r\nconnection: close\r\n",
    );
    // `EventSource` reads a stream from another origin only when the answer allows it.
    if app.allowed_origins.iter().any(|a| a == "*") {
        head.push_str("access-control-allow-origin: *\r\n");
    } else if let Some(origin) = origin {
        // Checked: visible ASCII and allowed, so it cannot break the head.
        head.push_str("access-control-allow-origin: ");
        head.push_str(origin);
        head.push_str("\r\nvary: origin\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn refusal(exit: Exit) -> Response {
    match exit {
        Exit::Pusher(ErrorCode::AppNotFound, message) => refuse(StatusCode::NOT_FOUND, &message),
        Exit::Pusher(ErrorCode::OverConnectionQuota, message) => refuse(StatusCode::FORBIDDEN, &message),
        Exit::Policy(message) => refuse(StatusCode::FORBIDDEN, message),
        _ => refuse(StatusCode::SERVICE_UNAVAILABLE, "The stream could not be opened"),
    }
}

pub async fn stream(State(state): State<AppState>, Path(key): Path<String>, mut request: Request) -> Response {
    let Some(app) = state.hub.app_by_key(&key) else {
        return refuse(StatusCode::NOT_FOUND, "Unknown app key");
    };
    // Every Origin value must be visible ASCII and allowed.
    let Ok(origin) = checked_origin(request.headers(), &app.allowed_origins) else {
        return refuse(StatusCode::FORBIDDEN, "Origin not allowed");
    };
    let query = decode_query(request.uri().query().unwrap_or(""));
    let names = query.iter().find(|(k, _)| k == "channels").map(|(_, v)| v.as_str()).unwrap_or("");
    let channels = match parse_channels(names.split(',')) {
        Ok(channels) => channels,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
    };
    let checked = credential(request.headers(), &query)
        .and_then(|given| given.map(|c| verified(&app, c)).transpose())
        .and_then(|grant| authorised(&app, &channels, grant.as_ref()).map(|user| (grant, user)));
    let (grant, user) = match checked {
        Ok(checked) => checked,
        Err((status, message)) => return refuse(status, &message),
    };
    if request.method() == Method::HEAD {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/event-stream")]).into_response();
    }
    // Claimed last, so that a request refused for another reason does not use the ticket up. Kept
    // a ticket lifetime past its expiry, so no clock difference between nodes can revive it.
    if let Some((id, exp)) = grant.as_ref().and_then(|g| g.ticket.as_ref()) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let keep = Duration::from_secs(exp.saturating_sub(now) + TICKET_TTL_SECS);
        match state.hub.cluster().claim_once(&format!("{}:{id}", app.id), keep).await {
            Ok(true) => {}
            Ok(false) => return refuse(StatusCode::UNAUTHORIZED, "Ticket already used"),
            Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "Tickets cannot be checked right now, try again"),
        }
    }
    let Some(takeover) = request.extensions().get::<Takeover>().cloned() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "This connection cannot stream");
    };
    // The connection's permit (see `limits`) stays with the stream for its whole life.
    let permit = request.extensions_mut().remove::<ConnInfo>().map(|info| info.permit);
    let head = response_head(&app, origin.as_deref());
    let socket = takeover.prepare();
    let (verdict_tx, verdict) = oneshot::channel();
    // The session opens in a task of its own: a client that leaves while it opens (hyper then drops
    // this handler) cannot leave its subscriptions behind.
    // What the client last saw, which `EventSource` sends by itself when it reconnects.
    let resume = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(StreamPosition::parse)
        .unwrap_or_default();
    let handshake = SseHandshake { app, channels, user, resume };
    tokio::spawn(open(state, handshake, socket, verdict_tx, head, permit));
    match verdict.await {
        Ok(Ok(())) => {
            takeover.arm();
            // Never written: hyper hands the socket over instead (see `takeover`).
            Response::new(Body::empty())
        }
        Ok(Err(exit)) => refusal(exit),
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "The stream could not be opened"),
    }
}

/// Opens the session, tells the handler whether it may take the socket, then starts the stream in
/// a task that holds only the stream (this one, with the opening's state, ends).
async fn open(
    state: AppState,
    handshake: SseHandshake,
    socket: oneshot::Receiver<RawStream>,
    verdict: oneshot::Sender<Result<(), Exit>>,
    head: Vec<u8>,
    permit: Option<Arc<Permit>>,
) {
    // Counted from here, so that a shutdown also waits for streams still opening.
    let _opening = OpenSocket::new(&state);
    let max_outbound_buffer = state.config.server.max_outbound_buffer;
    let (mut session, rx) = match SseSession::open(state.hub.clone(), handshake, max_outbound_buffer).await {
        Ok(opened) => opened,
        Err(exit) => {
            let _ = verdict.send(Err(exit));
            return;
        }
    };
    let deadline = Duration::from_millis(state.config.server.handshake_timeout_ms);
    let io = if verdict.send(Ok(())).is_ok() { tokio::time::timeout(deadline, socket).await.ok() } else { None };
    let Some(Ok(io)) = io else {
        use crate::session::Session;
        session.close(&Exit::Gone).await;
        crate::metrics::disconnected(None);
        return;
    };
    let settings = SseSettings {
        heartbeat: Duration::from_secs(state.config.server.sse_heartbeat_seconds),
        retry: Duration::from_millis(rand::random::<u64>() % (RETRY_MS.end - RETRY_MS.start) + RETRY_MS.start),
    };
    if let Some(stream) = transport::start(io, (session, rx), &head, settings).await {
        let hold = (OpenSocket::new(&state), permit);
        tokio::spawn(stream.serve(state.shutdown.clone(), hold));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_are_validated_deduplicated_and_capped() {
        let names: Vec<String> =
            parse_channels("a, b,,a,private-c".split(',')).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b", "private-c"]);
        assert!(parse_channels("".split(',')).unwrap_err().contains("at least one"));
        assert!(parse_channels("a b".split(',')).unwrap_err().contains("Invalid channel"));
        assert!(parse_channels("#server-to-user-1".split(',')).is_err());
        assert!(parse_channels(["private-encrypted-x"]).unwrap_err().contains("WebSocket"));
        let hundred: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        assert_eq!(parse_channels(hundred.iter().map(String::as_str)).unwrap().len(), 100);
        let more: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert!(parse_channels(more.iter().map(String::as_str)).unwrap_err().contains("at most 100"));
    }
}
