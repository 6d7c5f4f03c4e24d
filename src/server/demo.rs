//! The chat demo at `/demo`: a page using pusher-js over the presence channel
//! `presence-demo-chat` (who is online, a typing indicator via whisper, messages as client events),
//! and the auth endpoint it needs, `POST /demo/auth`.
//!
//! Served only when `[server] demo` is on (404 otherwise). The auth endpoint signs a presence
//! subscription of that one channel, with the first app's secret, for whatever user the page says
//! it is: a development convenience, never something to expose in production. When it is on only
//! because of `--debug`, it answers only requests addressed to localhost, 127.0.0.1 or [::1].

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::config::AppConfig;
use crate::protocol::signature::{channel_auth_message, make_auth};
use crate::protocol::SocketId;

const PAGE: &str = include_str!("assets/demo.html");
const SCRIPT: &str = include_str!("assets/demo.js");
const STYLE: &str = include_str!("assets/demo.css");

/// The one channel the demo's auth endpoint signs.
pub const DEMO_CHANNEL: &str = "presence-demo-chat";
/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 32;
/// Longest user id, in bytes.
const MAX_USER_ID_LEN: usize = 64;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/assets/demo.js", get(script))
        .route("/demo/assets/demo.css", get(style))
        .route("/demo/auth", post(auth))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The app the demo uses (the first configured), when the demo is on.
struct DemoApp(AppConfig);

impl FromRequestParts<AppState> for DemoApp {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match state.config.apps.first() {
            Some(_) if state.config.demo_from_debug && !loopback_host(parts) => Err(error(
                StatusCode::FORBIDDEN,
                "With --debug the demo answers only on localhost; set [server] demo = true to serve it to other hosts",
            )),
            Some(app) if state.config.server.demo => Ok(DemoApp(app.clone())),
            _ => Err(error(StatusCode::NOT_FOUND, "Not found")),
        }
    }
}

/// Whether the request's `Host` is `localhost`, `127.0.0.1` or `[::1]` (any port). A page of
/// another site that rebinds its name to 127.0.0.1 still sends its own name, so it is refused; so
/// is anyone reaching a `--debug` server on another address.
pub(super) fn loopback_host(parts: &Parts) -> bool {
    let Some(host) = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]"
}

/// The page, with the app key and the WebSocket path prefix injected as JSON.
async fn page(DemoApp(app): DemoApp, State(state): State<AppState>) -> Response {
    let config = json!({ "key": app.key, "path": state.config.server.path, "channel": DEMO_CHANNEL });
    // `<` escaped so that no value can close the <script> element it sits in.
    let config = config.to_string().replace('<', "\\u003c");
    let body = PAGE.replace("{{HERALD_CONFIG}}", &config);
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn script(_: DemoApp) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SCRIPT)
        .into_response()
}

async fn style(_: DemoApp) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], STYLE).into_response()
}

/// What pusher-js posts (form-encoded), plus the `params` the page adds.
#[derive(Deserialize)]
struct AuthRequest {
    socket_id: String,
    channel_name: String,
    user_id: String,
    user_name: Option<String>,
}

/// Signs a presence subscription of [`DEMO_CHANNEL`] for the user the page names.
async fn auth(DemoApp(app): DemoApp, form: Result<Form<AuthRequest>, FormRejection>) -> Response {
    let Ok(Form(request)) = form else {
        return error(StatusCode::BAD_REQUEST, "Expected socket_id, channel_name and user_id (form-encoded)");
    };
    if request.channel_name != DEMO_CHANNEL {
        return error(StatusCode::FORBIDDEN, format!("The demo only authorises {DEMO_CHANNEL}"));
    }
    if request.socket_id.parse::<SocketId>().is_err() {
        return error(StatusCode::BAD_REQUEST, "Invalid socket_id");
    }
    let user_id = request.user_id.trim();
    if user_id.is_empty()
        || user_id.len() > MAX_USER_ID_LEN
        || !user_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return error(StatusCode::BAD_REQUEST, "user_id must be 1-64 characters of A-Z, a-z, 0-9, - and _");
    }
    let name: String = request.user_name.as_deref().unwrap_or("").trim().chars().take(MAX_NAME_CHARS).collect();
    let name = if name.is_empty() { "guest".to_owned() } else { name };
    let channel_data = json!({ "user_id": user_id, "user_info": { "name": name } }).to_string();
    let message = channel_auth_message(&request.socket_id, DEMO_CHANNEL, Some(&channel_data));
    let auth = make_auth(&app.key, &app.secret, &message);
    Json(json!({ "auth": auth, "channel_data": channel_data })).into_response()
}
