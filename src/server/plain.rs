//! `GET {path}/ws/{app_key}/{room}`: the plain WebSocket endpoint, for clients without a Pusher
//! library (`wscat`, a browser's bare `new WebSocket`, devices, games).
//!
//! Authentication happens at the handshake, in one of three ways, because the classic `?token=`
//! leaks into proxy and server logs:
//! 1. `Authorization: Bearer <JWT>` (non-browser clients);
//! 2. the `Sec-WebSocket-Protocol` header, offering `herald.v1` and `bearer.<JWT>` (browsers:
//!    `new WebSocket(url, ["herald.v1", "bearer." + token])`); the server answers `herald.v1`;
//! 3. no token at the handshake: the first message must be `{"type":"auth","token":"<JWT>"}`,
//!    within 5 s.
//!
//! `?token=` works only where the app sets `plain_query_token = true`, and is never logged.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::websocket::{accept, checked_origin, Endpoint};
use super::AppState;
use crate::connection::{verify_token, Limits};
use crate::protocol::plain::room_channel;
use crate::protocol::position::Position;
use crate::protocol::signature::decode_query;
use crate::protocol::token::TokenError;
use crate::session::PlainHandshake;

/// The subprotocol browsers offer beside their `bearer.<token>`, and the one the server answers.
pub const SUBPROTOCOL: &str = "herald.v1";

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Where the handshake's token came from, if anywhere.
fn handshake_token(
    headers: &HeaderMap,
    query: Option<&str>,
    query_allowed: bool,
) -> Result<Option<String>, (StatusCode, &'static str)> {
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return match auth.strip_prefix("Bearer ") {
            Some(token) => Ok(Some(token.trim().to_owned())),
            None => Err((StatusCode::UNAUTHORIZED, "Authorization must be `Bearer <token>`")),
        };
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(token) = offered.iter().find_map(|p| p.strip_prefix("bearer.")) {
        if !offered.contains(&SUBPROTOCOL) {
            return Err((StatusCode::BAD_REQUEST, "Offer the herald.v1 subprotocol beside bearer.<token>"));
        }
        return Ok(Some(token.to_owned()));
    }
    if let Some((_, token)) = query.and_then(|q| decode_query(q).into_iter().find(|(k, _)| k == "token")) {
        if !query_allowed {
            return Err((StatusCode::UNAUTHORIZED, "?token= is disabled for this app: use the Authorization header"));
        }
        return Ok(Some(token));
    }
    Ok(None)
}

pub async fn upgrade(
    State(state): State<AppState>,
    Path((key, room)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(app) = state.hub.app_by_key(&key) else {
        return refuse(StatusCode::NOT_FOUND, "Unknown app key");
    };
    let channel = match room_channel(&room) {
        Ok(channel) => channel,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // Every Origin value must be visible ASCII and allowed.
    if checked_origin(request.headers(), &app.allowed_origins).is_err() {
        return refuse(StatusCode::FORBIDDEN, "Origin not allowed");
    }
    // A reconnecting client's last position in a history room: what it missed is replayed first.
    let since = match request.uri().query().and_then(|q| decode_query(q).into_iter().find(|(k, _)| k == "since")) {
        Some((_, text)) if !text.is_empty() => match Position::parse(&text) {
            Some(position) => Some(position),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "since must be a position this room's messages carried (ms-seq)",
                )
            }
        },
        _ => None,
    };
    let token = match handshake_token(request.headers(), request.uri().query(), app.plain_query_token) {
        Ok(token) => token,
        Err((status, message)) => return refuse(status, message),
    };
    let user_id = match token {
        Some(token) => match verify_token(&app, &token, &room) {
            Ok(claims) => Some(claims.sub),
            Err(TokenError::Expired) => return refuse(StatusCode::UNAUTHORIZED, "Token expired"),
            Err(TokenError::WrongRoom) => return refuse(StatusCode::FORBIDDEN, "Token not valid for this room"),
            Err(TokenError::Invalid) => return refuse(StatusCode::UNAUTHORIZED, "Invalid token"),
        },
        None => None,
    };
    let offered_subprotocol = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == SUBPROTOCOL));
    let subprotocol = offered_subprotocol.then(|| HeaderValue::from_static(SUBPROTOCOL));
    let limits = Limits { max_outbound_buffer: state.config.server.max_outbound_buffer };
    let max_message_size = app.max_message_size;
    let handshake = PlainHandshake { app, room, channel, user_id, since };
    accept(state, request, max_message_size, limits, Endpoint::Plain(handshake), subprotocol)
}
