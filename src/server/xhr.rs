//! `POST {path}/pusher/app/{key}/{server}/{session}/{xhr_streaming | xhr | xhr_send}`: pusher-js's
//! HTTP fallbacks, served where its default `httpPath` (`/pusher`) looks for them.
//!
//! Receive requests (`xhr_streaming`, `xhr`) open their session on first sight and answer with a
//! streamed body; `xhr_send` hands a session the client's messages. Browsers call these from the
//! app's page, so every answer carries CORS headers for an allowed `Origin`, and preflights are
//! answered here. The sessions themselves live in `crate::connection::http_fallback`.
//!
//! Behind a load balancer without sticky sessions, a session's requests reach any node. The node
//! that opened a session records in the cluster state that it holds it (with its `node_url`); a
//! node that gets a request for a session it does not hold relays the request to the holder and
//! streams the answer back (see [`Relay`]).

use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::limits::ConnInfo;
use super::takeover::Takeover;
use super::websocket::{checked_origin, OpenSocket, REFUSED_ORIGIN};
use super::AppState;
use crate::connection::http_fallback::{response, Receiver, SessionContext, SessionError};
use crate::protocol::http_fallback::{parse_send_body, valid_session_path, SendBodyError};
use crate::protocol::signature::decode_query;
use crate::session::PusherHandshake;

/// The path parameters of every fallback request.
type SessionPath = Path<(String, String, String)>;

/// Marks a request one node relayed to another: it is served where it arrives, never relayed again.
const RELAYED: &str = "x-herald-relayed";
/// How long the node holding a session may take to answer a relayed request's head. Every answer's
/// head is written at once (a stream's and a poll's body follow later), so a node that says nothing
/// for this long is stalled: the client gets a 504 rather than a request that hangs.
const RELAY_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Relaying requests to the node that holds their session.
pub struct Relay {
    /// This node's URL, as the others reach it.
    url: String,
    client: reqwest::Client,
    /// How long the cluster's record of a held session lasts unless renewed.
    ttl: Duration,
}

impl Relay {
    pub fn new(url: String, session_timeout: Duration) -> anyhow::Result<Relay> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Relay { url, client, ttl: (session_timeout * 2).max(Duration::from_secs(60)) })
    }

    /// The node holding `session` when it is another one (and this request was not relayed already).
    async fn holder_elsewhere(&self, state: &AppState, session: &str, headers: &HeaderMap) -> Option<String> {
        if headers.contains_key(RELAYED) {
            return None;
        }
        match state.hub.cluster().http_session_holder(session).await {
            Ok(Some(url)) if url != self.url => Some(url),
            _ => None,
        }
    }

    /// Sends the request on to `holder` and streams its answer back; `None` when the holder cannot
    /// be reached (the request is then served here: a session that is gone is opened anew).
    async fn forward(&self, holder: &str, path_and_query: &str, headers: &HeaderMap, body: Bytes) -> Option<Response> {
        let mut request = self.client.post(format!("{holder}{path_and_query}")).header(RELAYED, "1").body(body);
        for name in [header::ORIGIN, header::CONTENT_TYPE] {
            for value in headers.get_all(&name) {
                request = request.header(&name, value);
            }
        }
        let answer = match tokio::time::timeout(RELAY_HEAD_TIMEOUT, request.send()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "relay to the session's node failed: serving here");
                return None;
            }
            Err(_) => {
                tracing::warn!(node = holder, "the session's node did not answer a relayed request in time");
                let message = "The node holding this session did not answer in time";
                return Some(refuse(StatusCode::GATEWAY_TIMEOUT, message, None));
            }
        };
        let status = answer.status();
        let mut kept = HeaderMap::new();
        for (name, value) in answer.headers() {
            if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                kept.append(name, value.clone());
            }
        }
        let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
        *response.status_mut() = status;
        *response.headers_mut() = kept;
        Some(response)
    }

    /// Tells the cluster this node holds `session`, now and then while it is in use.
    fn renew(&self, state: &AppState, key: &str, session_path: &str) {
        if state.http_sessions.renewal_due(key, session_path, self.ttl / 4) {
            self.hold(state, format!("{key}/{session_path}"));
        }
    }

    fn hold(&self, state: &AppState, session: String) {
        let (hub, url, ttl) = (state.hub.clone(), self.url.clone(), self.ttl);
        tokio::spawn(async move {
            if let Err(e) = hub.cluster().hold_http_session(&session, &url, ttl).await {
                tracing::debug!(error = %e, "could not record the http session's node");
            }
        });
    }
}

/// The request's path and query as the client sent them (with any `[server] path` prefix).
fn path_and_query(request: &Request) -> String {
    let uri = request.extensions().get::<axum::extract::OriginalUri>().map_or(request.uri(), |o| &o.0);
    uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

pub async fn streaming(State(state): State<AppState>, Path(path): SessionPath, request: Request) -> Response {
    receive(state, path, false, request).await
}

pub async fn polling(State(state): State<AppState>, Path(path): SessionPath, request: Request) -> Response {
    receive(state, path, true, request).await
}

/// A receive request: attaches to its session, or opens it.
async fn receive(
    state: AppState,
    (key, server, session): (String, String, String),
    polling: bool,
    request: Request,
) -> Response {
    let cors = cors(&state, &key, request.headers());
    if !valid_session_path(&server, &session) {
        return refuse(StatusCode::BAD_REQUEST, "Invalid session path: expected /{server}/{session}", cors);
    }
    let session_path = format!("{server}/{session}");
    // A stream is served on the connection's own socket when it can be taken (see `take_over`).
    let takeover = if polling { None } else { request.extensions().get::<Takeover>().cloned() };
    let (receiver, body) = match &takeover {
        Some(takeover) => (take_over(&state, &request, takeover, cors.as_ref()), None),
        None => {
            let (receiver, body) = response(polling);
            (receiver, Some(body))
        }
    };
    let attached = state.http_sessions.attach(&key, &session_path, receiver);
    if let (Err(_), Some(relay)) = (&attached, &state.relay) {
        if let Some(holder) = relay.holder_elsewhere(&state, &format!("{key}/{session_path}"), request.headers()).await
        {
            let target = path_and_query(&request);
            if let Some(answer) = relay.forward(&holder, &target, request.headers(), Bytes::new()).await {
                return with_cors(answer, cors);
            }
        }
    }
    if let (Ok(()), Some(relay)) = (&attached, &state.relay) {
        relay.renew(&state, &key, &session_path);
    }
    if let Err(receiver) = attached {
        // Each session holds a connection permit, so the server's caps bound sessions too.
        let Some(info) = request.extensions().get::<ConnInfo>() else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "No connection information", cors);
        };
        let permit = match state.connection_limits.admit(info.peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                crate::metrics::connection_refused(refusal.label());
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "Too many connections, try again later", cors);
            }
        };
        let protocol = request
            .uri()
            .query()
            .and_then(|q| decode_query(q).into_iter().find(|(k, _)| k == "protocol"))
            .map(|(_, v)| v);
        let allowed = state.hub.app_by_key(&key).map(|app| app.allowed_origins.clone()).unwrap_or_default();
        // A refused Origin is one no allow-list matches: the session is refused with 4009.
        let origin = checked_origin(request.headers(), &allowed).unwrap_or_else(|()| Some(REFUSED_ORIGIN.to_owned()));
        let handshake = PusherHandshake { app_key: key, protocol, origin };
        let context = SessionContext {
            hub: state.hub.clone(),
            shutdown: state.shutdown.clone(),
            hold: (OpenSocket::new(&state), permit),
        };
        let sessions = state.http_sessions.clone();
        let relay = state.relay.clone();
        let cluster_state = state.clone();
        // In a task of its own: the session's first lines are written into the body returned here.
        // The cluster learns that this node holds the session before its client hears of it.
        tokio::spawn(async move {
            if let Some(relay) = relay {
                let session = format!("{}/{session_path}", handshake.app_key);
                let _ = cluster_state.hub.cluster().hold_http_session(&session, &relay.url, relay.ttl).await;
            }
            sessions.open(&session_path, handshake, receiver, context).await
        });
    }
    let Some(body) = body else {
        if let Some(takeover) = takeover {
            takeover.arm();
        }
        // Never written: hyper hands the socket over instead.
        return Response::new(Body::empty());
    };
    let mut response = Response::new(Body::from_stream(body.into_stream()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // nginx buffers responses unless told not to: a buffered stream delivers nothing.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_cors(response, cors)
}

/// A stream served on the connection's raw socket (see `takeover`): the session's driver writes
/// on it directly, so a held stream costs no hyper buffers, no task and no channel of its own. The
/// socket arrives once the handler has returned and armed the takeover. The connection's permit and
/// open-socket count stay with the stream, and a shutdown waits for its last line (`c[4200,...]`).
fn take_over(state: &AppState, request: &Request, takeover: &Takeover, cors: Option<&HeaderValue>) -> Receiver {
    let permit = request.extensions().get::<ConnInfo>().map(|info| info.permit.clone());
    let hold = (OpenSocket::new(state), permit);
    let deadline = Duration::from_millis(state.config.server.handshake_timeout_ms);
    Receiver::socket(takeover.prepare(), streaming_head(cors), deadline, hold)
}

/// A stream's response head, as the hyper path would write it, but close-delimited: nothing may
/// buffer the body, and it ends when the socket closes.
fn streaming_head(cors: Option<&HeaderValue>) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n\
x-content-type-options: nosniff\r\nx-accel-buffering: no\r\nconnection: close\r\nvary: Origin\r\n"
        .to_vec();
    // A HeaderValue holds no CR or LF, so it cannot break the head.
    if let Some(origin) = cors {
        head.extend_from_slice(b"access-control-allow-origin: ");
        head.extend_from_slice(origin.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `xhr_send`: a JSON array of serialised Pusher messages for a session.
pub async fn send(
    State(state): State<AppState>,
    Path((key, server, session)): SessionPath,
    request: Request,
) -> Response {
    let cors = cors(&state, &key, request.headers());
    if !valid_session_path(&server, &session) {
        return refuse(StatusCode::BAD_REQUEST, "Invalid session path: expected /{server}/{session}", cors);
    }
    let Some(app) = state.hub.app_by_key(&key) else {
        return refuse(StatusCode::NOT_FOUND, "Unknown app key", cors);
    };
    let (headers, target) = (request.headers().clone(), path_and_query(&request));
    // Room for one message at the size limit, JSON-escaped.
    let limit = app.max_message_size.saturating_mul(2).saturating_add(1024);
    let deadline = std::time::Duration::from_millis(state.config.server.handshake_timeout_ms);
    let body = match tokio::time::timeout(deadline, to_bytes(request.into_body(), limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "Body is larger than the message size limit", cors),
        Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT, "The body did not arrive in time", cors),
    };
    let messages = match parse_send_body(&body, app.max_message_size) {
        Ok(messages) => messages,
        Err(e @ SendBodyError::TooLarge(_)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string(), cors),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string(), cors),
    };
    let session_path = format!("{server}/{session}");
    let sent = state.http_sessions.send(&key, &session_path, messages);
    if let (Err(SessionError::Unknown), Some(relay)) = (&sent, &state.relay) {
        if let Some(holder) = relay.holder_elsewhere(&state, &format!("{key}/{session_path}"), &headers).await {
            if let Some(answer) = relay.forward(&holder, &target, &headers, body).await {
                return with_cors(answer, cors);
            }
        }
    }
    match sent {
        Ok(()) => {
            if let Some(relay) = &state.relay {
                relay.renew(&state, &key, &session_path);
            }
            with_cors(StatusCode::NO_CONTENT.into_response(), cors)
        }
        Err(SessionError::Unknown) => refuse(StatusCode::NOT_FOUND, "Unknown session: open a new one", cors),
        Err(SessionError::Busy) => {
            refuse(StatusCode::TOO_MANY_REQUESTS, "Too many messages waiting for this session", cors)
        }
    }
}

/// A CORS preflight: allowed for the app's `allowed_origins`, refused (403) for any other.
pub async fn preflight(State(state): State<AppState>, Path((key, _, _)): SessionPath, headers: HeaderMap) -> Response {
    if state.hub.app_by_key(&key).is_none() {
        return refuse(StatusCode::NOT_FOUND, "Unknown app key", None);
    }
    let Some(origin) = cors(&state, &key, &headers) else {
        return refuse(StatusCode::FORBIDDEN, "Origin not allowed", None);
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    with_cors(response, Some(origin))
}

/// The `Access-Control-Allow-Origin` an answer to this request carries: the request's `Origin`
/// when the app allows it, nothing otherwise (so a browser keeps the answer from the page).
fn cors(state: &AppState, key: &str, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let app = state.hub.app_by_key(key)?;
    match checked_origin(headers, &app.allowed_origins) {
        Ok(_) => Some(origin.clone()),
        Err(()) => None,
    }
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

fn refuse(status: StatusCode, message: &str, cors: Option<HeaderValue>) -> Response {
    with_cors((status, Json(json!({ "error": message }))).into_response(), cors)
}
