//! Pusher's signed HTTP API (docs/protocol.md §7): publish events, query channels.
//!
//! Every request is checked in the same order: the app exists (404), the body fits (413), the auth
//! parameters are there and fresh (401, before the body is read), the body arrives in time (408),
//! the signature is valid (401), the input makes sense (400). Errors are JSON `{"error": "..."}`; success
//! is exactly 200, which the PHP SDK (and so Laravel) requires. A question about the cluster that
//! cannot be answered (Redis away) is a 503, never a 200 with partial data.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::apps::App;
use crate::cluster::ClusterError;
use crate::protocol::channel::validate_event_name;
use crate::protocol::signature::{check_api_params, decode_query, verify_api_request, ApiAuthError, ApiRequest};
use crate::protocol::{Channel, ChannelKind, ChannelName, SocketId};

/// Most channels one `events` request may name (Pusher's limit).
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Most events in one `batch_events` request (Pusher's limit).
pub const MAX_BATCH_EVENTS: usize = 10;

/// An HTTP API failure: a status and a message, sent as JSON; `close` also ends the connection.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    close: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), close: false }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A refusal sent before the body was read (or while it was still arriving): the connection is
    /// closed rather than kept alive, so the rest of the body is never read, nor taken for the
    /// next request.
    fn closing(self) -> Self {
        ApiError { close: true, ..self }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Cluster state is unavailable, try again: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

/// A request that passed the app, size and signature checks.
pub(super) struct Authorized {
    pub(super) app: App,
    pub(super) body: Bytes,
    query: Vec<(String, String)>,
}

impl Authorized {
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The comma-separated `info` attributes asked for.
    fn info(&self) -> Vec<&str> {
        self.param("info").map(|i| i.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    }
}

/// Checks a request in this order: the app exists (404), the announced body fits (413), the query
/// carries fresh auth parameters for this app (401), all before a byte of the body is read; then the
/// body arrives within `handshake_timeout_ms` (408) and fits (413), and the signature is valid (401).
/// An unsigned request so holds no body buffer, and a signed-looking one holds at most
/// `max_request_size` bytes for at most the deadline.
pub(super) async fn authorize(state: &AppState, app_id: &str, request: Request) -> Result<Authorized, ApiError> {
    let app = state
        .hub
        .app_by_id(app_id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Unknown app id {app_id}")).closing())?;
    let (parts, body) = request.into_parts();
    let limit = state.config.server.max_request_size;
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("Request body is larger than {limit} bytes"));
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large().closing());
    }
    let query = parts.uri.query().unwrap_or("");
    let params = decode_query(query);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let unauthorized = |e: ApiAuthError| ApiError::new(StatusCode::UNAUTHORIZED, format!("Authentication failed: {e}"));
    check_api_params(&app.key, &params, now).map_err(|e| unauthorized(e).closing())?;
    let announces_body = declared.is_some_and(|len| len > 0)
        || (declared.is_none() && parts.headers.contains_key(header::TRANSFER_ENCODING));
    if announces_body && !params.iter().any(|(k, _)| k == "body_md5") {
        return Err(unauthorized(ApiAuthError::BodyMd5Missing).closing());
    }
    let deadline = std::time::Duration::from_millis(state.config.server.handshake_timeout_ms);
    let body = match tokio::time::timeout(deadline, to_bytes(Body::new(body), limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return Err(too_large().closing()),
        Err(_) => {
            let message = format!("The request body did not arrive within {} ms", deadline.as_millis());
            return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, message).closing());
        }
    };
    // Nested routers see the path without the deployment prefix: exactly what the SDKs sign.
    let request = ApiRequest { method: parts.method.as_str(), path: parts.uri.path(), query, body: &body };
    // The current secret first: its error is the one reported. A rotated-out secret counts only
    // during its grace.
    let verified = verify_api_request(&app.key, &app.secret, &request, now).or_else(|e| {
        let previous = app.accepted_secrets().skip(1);
        previous.map(|secret| verify_api_request(&app.key, secret, &request, now)).find(Result::is_ok).unwrap_or(Err(e))
    });
    verified.map_err(unauthorized)?;
    // After the signature: only the app's own (signed) requests count, so forged floods, which cost
    // one HMAC each, cannot use up the app's budget and block its broadcasts.
    if !state.api_limits.allow(&app) {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("Too many requests for app {}", app.id)));
    }
    Ok(Authorized { query: params, app, body })
}

/// One event to publish, as the SDKs send it.
#[derive(Deserialize)]
struct EventRequest {
    name: Option<String>,
    data: Option<Value>,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
    info: Option<String>,
}

/// An event that passed validation.
struct ValidEvent {
    name: String,
    data: String,
    channels: Vec<Channel>,
    except: Option<SocketId>,
    info: Vec<String>,
}

fn validate_event(app: &App, e: EventRequest) -> Result<ValidEvent, ApiError> {
    let name = e.name.ok_or_else(|| ApiError::bad_request("Missing event name"))?;
    validate_event_name(&name).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let data = match e.data {
        Some(Value::String(s)) => s,
        // The SDKs send a string; anything else is passed on as its JSON text.
        Some(other) => other.to_string(),
        None => return Err(ApiError::bad_request("Missing data")),
    };
    if data.len() > app.max_message_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Event data is larger than {} bytes", app.max_message_size),
        ));
    }
    let channels = match (e.channels, e.channel) {
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        (Some(_), Some(_)) => return Err(ApiError::bad_request("Give either channel or channels, not both")),
        (None, None) => return Err(ApiError::bad_request("Missing channel or channels")),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_EVENT {
        return Err(ApiError::bad_request(format!("An event goes to 1 to {MAX_CHANNELS_PER_EVENT} channels")));
    }
    // A channel named twice gets the event once (and counts once in the info answer).
    let mut named = std::collections::HashSet::with_capacity(channels.len());
    let channels = channels
        .iter()
        .filter(|channel| named.insert(channel.as_str()))
        .map(|channel| {
            Channel::parse(channel).map_err(|err| ApiError::bad_request(format!("Invalid channel {channel:?}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let except = match e.socket_id.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse().map_err(|_| ApiError::bad_request("Invalid socket_id"))?),
    };
    let info: Vec<String> = e
        .info
        .map(|i| i.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    // Checked before anything is published: a request refused with 400 must have sent nothing.
    if info.iter().any(|i| i == "user_count") && channels.iter().any(|c| c.kind != ChannelKind::Presence) {
        return Err(ApiError::bad_request("user_count is only available for presence channels"));
    }
    Ok(ValidEvent { name, data, channels, except, info })
}

async fn publish(state: &AppState, app: &App, event: &ValidEvent) {
    tracing::debug!(
        app_id = %app.id,
        event = %event.name,
        channels = event.channels.len(),
        data_bytes = event.data.len(),
        data = crate::logging::payload(&event.data),
        "API publish"
    );
    for channel in &event.channels {
        state.hub.publish_event(&app.id, channel.clone(), &event.name, &event.data, event.except).await;
    }
}

/// The `info` attributes of the channels an event went to.
async fn channels_info(
    state: &AppState,
    app: &App,
    channels: &[Channel],
    info: &[String],
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for channel in channels {
        out.insert(channel.name.clone(), channel_attributes(state, app, &channel.name, info).await?);
    }
    Ok(out)
}

async fn channel_attributes<S: AsRef<str>>(
    state: &AppState,
    app: &App,
    channel: &str,
    info: &[S],
) -> Result<Value, ApiError> {
    let mut attributes = Map::new();
    for attribute in info {
        match attribute.as_ref() {
            "subscription_count" => {
                let count = state.hub.cluster().subscription_count(&app.id, channel).await?;
                attributes.insert("subscription_count".into(), count.into());
            }
            "user_count" => {
                if ChannelName::parse(channel).map(|c| c.kind) != Ok(ChannelKind::Presence) {
                    return Err(ApiError::bad_request("user_count is only available for presence channels"));
                }
                let count = state.hub.cluster().members(&app.id, channel).await?.len();
                attributes.insert("user_count".into(), count.into());
            }
            _ => {}
        }
    }
    Ok(Value::Object(attributes))
}

pub async fn events(State(state): State<AppState>, Path(app_id): Path<String>, request: Request) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    let event: EventRequest =
        serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let event = validate_event(&req.app, event)?;
    publish(&state, &req.app, &event).await;
    if event.info.is_empty() {
        return Ok(Json(json!({})).into_response());
    }
    let channels = channels_info(&state, &req.app, &event.channels, &event.info).await?;
    Ok(Json(json!({ "channels": channels })).into_response())
}

#[derive(Deserialize)]
struct BatchRequest {
    batch: Vec<EventRequest>,
}

pub async fn batch_events(State(state): State<AppState>, Path(app_id): Path<String>, request: Request) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    let batch: BatchRequest =
        serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(format!("A batch holds at most {MAX_BATCH_EVENTS} events")));
    }
    // Validate all first: a batch is published whole or not at all.
    let mut events = Vec::with_capacity(batch.batch.len());
    for event in batch.batch {
        if event.channels.is_some() {
            return Err(ApiError::bad_request("Batch events take one channel each"));
        }
        events.push(validate_event(&req.app, event)?);
    }
    let mut results = Vec::with_capacity(events.len());
    for event in &events {
        publish(&state, &req.app, event).await;
    }
    for event in &events {
        if event.info.is_empty() {
            results.push(json!({}));
        } else {
            results.push(channel_attributes(&state, &req.app, &event.channels[0].name, &event.info).await?);
        }
    }
    Ok(Json(json!({ "batch": results })).into_response())
}

pub async fn channels(State(state): State<AppState>, Path(app_id): Path<String>, request: Request) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    let prefix = req.param("filter_by_prefix").unwrap_or("").to_owned();
    let info = req.info();
    if info.contains(&"user_count") && ChannelKind::of(&prefix) != ChannelKind::Presence {
        return Err(ApiError::bad_request("info=user_count requires filter_by_prefix=presence-"));
    }
    let mut listed = BTreeMap::new();
    for channel in state.hub.cluster().channels(&req.app.id).await? {
        if !channel.name.starts_with(&prefix) {
            continue;
        }
        let mut attributes = Map::new();
        if info.contains(&"subscription_count") {
            attributes.insert("subscription_count".into(), channel.subscriptions.into());
        }
        if info.contains(&"user_count") {
            attributes.insert("user_count".into(), channel.users.into());
        }
        listed.insert(channel.name, Value::Object(attributes));
    }
    Ok(Json(json!({ "channels": listed })).into_response())
}

pub async fn channel(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    ChannelName::parse_for_publish(&channel).map_err(|e| ApiError::bad_request(format!("Invalid channel: {e}")))?;
    let count = state.hub.cluster().subscription_count(&req.app.id, &channel).await?;
    let mut body = match channel_attributes(&state, &req.app, &channel, &req.info()).await? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("occupied".into(), (count > 0).into());
    Ok(Json(Value::Object(body)).into_response())
}

/// Reverb's connection count endpoint.
pub async fn connections(State(state): State<AppState>, Path(app_id): Path<String>, request: Request) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    let count = state.hub.cluster().connection_count(&req.app.id).await?;
    Ok(Json(json!({ "connections": count })).into_response())
}

/// The members of a presence channel: `{"users":[{"id":"7"}]}`.
pub async fn users(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    match ChannelName::parse(&channel) {
        Ok(c) if c.kind == ChannelKind::Presence => {}
        _ => return Err(ApiError::bad_request("Users can only be listed for presence channels")),
    }
    let mut ids: Vec<String> =
        state.hub.cluster().members(&req.app.id, &channel).await?.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    let users: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(Json(json!({ "users": users })).into_response())
}

/// Closes every connection of a signed-in user, on every node.
pub async fn terminate_connections(
    State(state): State<AppState>,
    Path((app_id, user_id)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    terminate(state, &app_id, &user_id, request).await
}

/// The same, at the path the official Python SDK uses (`/users/{id}/terminate_connections`, no
/// `/apps/{id}` prefix): the app is the one whose key signed the request.
pub async fn terminate_connections_by_key(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    request: Request,
) -> ApiResult {
    let key = request.uri().query().and_then(|q| decode_query(q).into_iter().find(|(k, _)| k == "auth_key"));
    let Some(app) = key.and_then(|(_, key)| state.hub.app_by_key(&key)) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Unknown or missing auth_key").closing());
    };
    let app_id = app.id.clone();
    terminate(state, &app_id, &user_id, request).await
}

async fn terminate(state: AppState, app_id: &str, user_id: &str, request: Request) -> ApiResult {
    let req = authorize(&state, app_id, request).await?;
    if user_id.is_empty() || ChannelName::parse(user_id).is_err() {
        return Err(ApiError::bad_request("Invalid user id"));
    }
    state.hub.terminate_user(&req.app.id, user_id).await;
    Ok(Json(json!({})).into_response())
}
