//! The WebSocket upgrade on `{path}/app/{key}`.
//!
//! The handshake is checked here so that a bad request gets a plain HTTP answer (426 with
//! `Sec-WebSocket-Version: 13` for a wrong version) instead of a hang. After the 101, the raw TCP
//! stream is taken back from hyper and handed to the connection task.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use super::limits::{ConnInfo, Permit};
use super::takeover::Detachable;
use super::AppState;
use crate::connection::{self, Limits};
use crate::protocol::origin::origin_allowed;
use crate::protocol::signature::decode_query;
use crate::session::{PlainHandshake, PusherHandshake};
use crate::transport::{deflate, Deflate, WebSocket};

/// Message size limit for a key no app has: the connection is refused right after the handshake.
const UNKNOWN_APP_MESSAGE_LIMIT: usize = 4096;

/// What an upgraded socket is for.
pub(super) enum Endpoint {
    Pusher(PusherHandshake),
    Echo,
    Plain(PlainHandshake),
}

/// `GET {path}/app/{key}`: the Pusher endpoint.
pub async fn upgrade(State(state): State<AppState>, Path(key): Path<String>, request: Request) -> Response {
    let protocol =
        request.uri().query().and_then(|q| decode_query(q).into_iter().find(|(k, _)| k == "protocol")).map(|(_, v)| v);
    let app = state.hub.app_by_key(&key);
    let max_message_size = app.as_ref().map_or(UNKNOWN_APP_MESSAGE_LIMIT, |app| app.max_message_size);
    let allowed = app.as_ref().map_or(&[][..], |app| &app.allowed_origins[..]);
    // A refused Origin becomes one no allow-list matches, so the connection code refuses it with 4009.
    let origin = checked_origin(request.headers(), allowed).unwrap_or_else(|()| Some(REFUSED_ORIGIN.to_owned()));
    let limits = Limits { max_outbound_buffer: state.config.server.max_outbound_buffer };
    let endpoint = Endpoint::Pusher(PusherHandshake { app_key: key, protocol, origin });
    accept(state, request, max_message_size, limits, endpoint, None)
}

/// `GET {echo_path}`: the conformance echo endpoint (Autobahn's large-message cases need 16 MiB).
pub async fn echo(State(state): State<AppState>, request: Request) -> Response {
    const ECHO_MAX_MESSAGE: usize = 16 * 1024 * 1024;
    let limits = Limits { max_outbound_buffer: 4 * ECHO_MAX_MESSAGE };
    accept(state, request, ECHO_MAX_MESSAGE, limits, Endpoint::Echo, None)
}

/// Checks the handshake, answers `101`, and hands the upgraded stream to its connection task.
pub(super) fn accept(
    state: AppState,
    mut request: Request,
    max_message_size: usize,
    limits: Limits,
    endpoint: Endpoint,
    subprotocol: Option<HeaderValue>,
) -> Response {
    let headers = request.headers();
    if !is_websocket_upgrade(headers) {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "This endpoint only speaks WebSocket: send an Upgrade: websocket request",
        );
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        let mut response = refuse(StatusCode::UPGRADE_REQUIRED, "Unsupported WebSocket version: only 13 is supported");
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(accept) =
        headers.get(header::SEC_WEBSOCKET_KEY).filter(|k| k.len() == 24).map(|k| derive_accept_key(k.as_bytes()))
    else {
        return refuse(StatusCode::BAD_REQUEST, "Missing or invalid Sec-WebSocket-Key");
    };
    // permessage-deflate, when the server allows it and the client offers an acceptable form.
    let agreed = if state.config.server.compression.is_on() {
        deflate::negotiate(headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().filter_map(|v| v.to_str().ok()))
    } else {
        None
    };
    let compression = agreed.as_ref().map(|a| Deflate {
        server_window_bits: a.server_window_bits,
        threshold: state.config.server.compression_threshold,
    });
    let on_upgrade = hyper::upgrade::on(&mut request);
    // The connection's permit (see `limits`) stays with the socket for its whole life.
    let permit = request.extensions_mut().remove::<ConnInfo>().map(|info| info.permit);

    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                debug!(error = %e, "upgrade failed");
                return;
            }
        };
        // Counted from the upgrade, so that a shutdown also waits for sockets still being checked.
        let _open = OpenSocket::new(&state);
        serve_upgraded(upgraded, state.clone(), max_message_size, compression, limits, endpoint, permit).await;
    });

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some(extension) = agreed.and_then(|a| HeaderValue::from_str(&a.response).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, extension);
    }
    response
}

/// Takes the plain (or TLS) stream back from hyper, with any bytes it had already read, and serves
/// it. Each stream type's connection gets a task of its own type, so a plain TCP connection's task
/// is not sized for a TLS session.
async fn serve_upgraded(
    upgraded: hyper::upgrade::Upgraded,
    state: AppState,
    max_message_size: usize,
    compression: Option<Deflate>,
    limits: Limits,
    endpoint: Endpoint,
    permit: Option<Arc<Permit>>,
) {
    let upgraded = match upgraded.downcast::<TokioIo<Detachable<TcpStream>>>() {
        Ok(parts) => {
            // The socket copies the few bytes hyper read ahead, so hyper's whole read buffer is
            // let go of here: held for the connection's life, it would cost kilobytes per idle socket.
            let hyper::upgrade::Parts { io, read_buf: ahead, .. } = parts;
            let Some(io) = io.into_inner().into_inner() else { return };
            let mut ws = WebSocket::new(io, &ahead, max_message_size);
            ws.set_deflate(compression);
            drop(ahead);
            return run(ws, &state, limits, endpoint, permit).await;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<Detachable<TlsStream<TcpStream>>>>() {
        Ok(parts) => {
            let hyper::upgrade::Parts { io, read_buf: ahead, .. } = parts;
            let Some(io) = io.into_inner().into_inner() else { return };
            let mut ws = WebSocket::new(io, &ahead, max_message_size);
            ws.set_deflate(compression);
            drop(ahead);
            run(ws, &state, limits, endpoint, permit).await
        }
        Err(upgraded) => {
            let mut ws = WebSocket::new(TokioIo::new(upgraded), &[], max_message_size);
            ws.set_deflate(compression);
            run(ws, &state, limits, endpoint, permit).await
        }
    }
}

/// Runs the endpoint's checks in the upgrade task, then serves an accepted connection in a task of
/// its own: the upgrade's state (hyper's handshake, this function's locals) is freed, and the
/// long-lived task holds only the connection.
async fn run<S>(ws: WebSocket<S>, state: &AppState, limits: Limits, endpoint: Endpoint, permit: Option<Arc<Permit>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hub = state.hub.clone();
    // Each session kind gets a task of its own type: no connection's task is sized for another's.
    let hold = (OpenSocket::new(state), permit);
    match endpoint {
        Endpoint::Pusher(handshake) => {
            if let Some(conn) = connection::open_pusher(ws, hub, handshake, limits).await {
                tokio::spawn(conn.serve(state.shutdown.clone(), hold));
            }
        }
        Endpoint::Echo => {
            if let Some(conn) = connection::open_echo(ws, hub, limits).await {
                tokio::spawn(conn.serve(state.shutdown.clone(), hold));
            }
        }
        Endpoint::Plain(handshake) => {
            if let Some(conn) = connection::open_plain(ws, hub, handshake, limits).await {
                tokio::spawn(conn.serve(state.shutdown.clone(), hold));
            }
        }
    }
}

/// An `Origin` no allow-list matches: it has no scheme and so no host (see `origin_allowed`), and
/// only `["*"]`, which checks nothing, lets it through.
pub(super) const REFUSED_ORIGIN: &str = "invalid-or-conflicting-origin";

/// The `Origin` to check against `allowed`: `Err` when a value is not visible ASCII (which used to
/// pass as no Origin at all) or when one of several values is not allowed (all must be); with `*`
/// in the list nothing is checked.
pub(super) fn checked_origin(headers: &HeaderMap, allowed: &[String]) -> Result<Option<String>, ()> {
    if allowed.iter().any(|a| a == "*") {
        return Ok(None);
    }
    let mut first = None;
    for value in headers.get_all(header::ORIGIN) {
        let value = value.to_str().map_err(|_| ())?;
        if !origin_allowed(allowed, Some(value)) {
            return Err(());
        }
        first.get_or_insert_with(|| value.to_owned());
    }
    Ok(first)
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Counts an open WebSocket (HTTP fallback session, SSE stream) for the lifetime of its task, so
/// that a shutdown waits for its goodbye.
pub(super) struct OpenSocket(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl OpenSocket {
    pub(super) fn new(state: &AppState) -> Self {
        state.open_sockets.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenSocket(state.open_sockets.clone())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
