//! The live dashboard at `/dashboard`: per app, its connections, channels, presence members and a
//! stream of recent activity (like Pusher's debug console), and a form to trigger an event.
//!
//! Served only when `[server] dashboard` is on (404 otherwise). With a `dashboard_password`, every
//! route (page, assets, API) needs HTTP Basic auth with that password (any user name), compared in
//! constant time; after 5 wrong passwords an address waits (429, `Retry-After`) before it may try
//! again, for a time doubling from 1 s to 5 min (see [`AuthBackoff`]). The page is plain HTML,
//! CSS and JavaScript embedded in the binary; it polls the
//! JSON endpoints under `/dashboard/api/`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::limits::ConnInfo;
use super::AppState;
use crate::protocol::channel::validate_event_name;
use crate::protocol::{Channel, ChannelKind};

const PAGE: &str = include_str!("assets/dashboard.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Most channels listed per poll (the busiest deployments have many more).
const MAX_CHANNELS: usize = 500;
/// Presence channels whose members are listed per poll.
const MAX_MEMBER_CHANNELS: usize = 50;
/// Members listed per presence channel.
const MAX_MEMBERS: usize = 100;

/// The dashboard's routes; each checks that the dashboard is on and the caller authorised.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/assets/dashboard.js", get(script))
        .route("/dashboard/assets/dashboard.css", get(style))
        .route("/dashboard/api/apps", get(apps))
        .route("/dashboard/api/state", get(app_state))
        .route("/dashboard/api/events", get(events))
        .route("/dashboard/api/trigger", post(trigger))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (status, Json(json!({ "error": message.into() }))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Proof that the dashboard is on and the request may see it.
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !state.config.server.dashboard {
            return Err(error(StatusCode::NOT_FOUND, "Not found"));
        }
        let Some(expected) = &state.config.server.dashboard_password else {
            // No password: `--debug` only; for this machine's browser, not the network's.
            if super::demo::loopback_host(parts) {
                return Ok(Authorized);
            }
            return Err(error(
                StatusCode::FORBIDDEN,
                "Without a dashboard_password the dashboard answers only on localhost",
            ));
        };
        let ip = parts.extensions.get::<ConnInfo>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip());
        let now = Instant::now();
        // A blocked address is not even compared: guessing gets no answer until the wait is over.
        if let Some(wait) = state.dashboard_backoff.blocked(ip, now) {
            return Err(too_many_attempts(wait));
        }
        if basic_password_matches(&parts.headers, expected) {
            state.dashboard_backoff.succeeded(ip);
            return Ok(Authorized);
        }
        // A request without credentials (a browser's first) is not a guess.
        if parts.headers.contains_key(header::AUTHORIZATION) {
            if let Some(wait) = state.dashboard_backoff.failed(ip, now) {
                return Err(too_many_attempts(wait));
            }
        }
        let mut response = error(StatusCode::UNAUTHORIZED, "The dashboard needs a password (HTTP Basic auth)");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="Herald""#));
        Err(response)
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up), counted.
fn too_many_attempts(wait: Duration) -> Response {
    crate::metrics::dashboard_auth_refused();
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Too many wrong dashboard passwords from this address: retry in {seconds} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Wrong passwords an address may send before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The first wait; it doubles with each further failure, up to [`MAX_BLOCK`].
const FIRST_BLOCK: Duration = Duration::from_secs(1);
const MAX_BLOCK: Duration = Duration::from_secs(300);
/// An address with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Most addresses remembered; past it the stalest are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Failed dashboard logins per client address: after [`FREE_FAILURES`] wrong passwords, every
/// further one blocks the address for a time doubling from 1 s to 5 min, during which its requests
/// get 429 without their password being compared. Memory is bounded by [`MAX_TRACKED`] entries.
#[derive(Default)]
pub struct AuthBackoff {
    entries: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl AuthBackoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `ip` must still wait, if it is blocked.
    fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let entries = self.lock();
        let until = entries.get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a wrong password; returns the wait when the address is now blocked.
    fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut entries = self.lock();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
            forget_stale(&mut entries, now);
        }
        let entry = entries.entry(ip).or_insert(Failures { count: 0, last: now, blocked_until: None });
        if now.duration_since(entry.last) > FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let over = entry.count.checked_sub(FREE_FAILURES + 1)?;
        let wait = FIRST_BLOCK.saturating_mul(1u32 << over.min(16)).min(MAX_BLOCK);
        entry.blocked_until = Some(now + wait);
        Some(wait)
    }

    fn succeeded(&self, ip: IpAddr) {
        let mut entries = self.lock();
        if !entries.is_empty() {
            entries.remove(&ip);
        }
    }
}

/// Makes room: drops the entries neither blocked nor recent; if none is, the least recent one.
fn forget_stale(entries: &mut HashMap<IpAddr, Failures>, now: Instant) {
    entries.retain(|_, f| now.duration_since(f.last) <= FORGET_AFTER || f.blocked_until.is_some_and(|u| u > now));
    if entries.len() >= MAX_TRACKED {
        if let Some(oldest) = entries.iter().min_by_key(|(_, f)| f.last).map(|(ip, _)| *ip) {
            entries.remove(&oldest);
        }
    }
}

/// Whether the request carries `Authorization: Basic` with `expected` as the password (any user).
fn basic_password_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = decode_base64(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    // Hash both sides so the comparison takes the same time whatever the lengths.
    let given = Sha256::digest(&decoded[colon + 1..]);
    let wanted = Sha256::digest(expected.as_bytes());
    given.ct_eq(&wanted).into()
}

/// Standard base64 (padding optional), as HTTP Basic auth uses it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn page(_: Authorized) -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script(_: Authorized) -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style(_: Authorized) -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn api(value: Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(value)).into_response()
}

/// The served apps, in configuration order (ids and keys; never secrets).
async fn apps(_: Authorized, State(state): State<AppState>) -> Response {
    let apps: Vec<Value> = state.hub.apps().iter().map(|a| json!({ "id": a.id, "key": a.key })).collect();
    api(json!({ "apps": apps, "feed": state.hub.feed.enabled() }))
}

#[derive(Deserialize)]
struct AppQuery {
    app: Option<String>,
    since: Option<u64>,
}

impl AppQuery {
    /// The asked-for app if it is served; the first app when none is named. Errs with a 404.
    fn app_id(&self, state: &AppState) -> Result<String, String> {
        match &self.app {
            Some(id) if state.hub.app_by_id(id).is_some() => Ok(id.clone()),
            Some(id) => Err(format!("Unknown app {id:?}")),
            None => state.hub.apps().first().map(|a| a.id.clone()).ok_or_else(|| "No app is served".to_owned()),
        }
    }
}

/// The query and the app it names: 400 for a malformed query, 404 for an app not served.
fn resolve(
    query: Result<Query<AppQuery>, axum::extract::rejection::QueryRejection>,
    state: &AppState,
) -> Result<(AppQuery, String), Box<Response>> {
    let Ok(Query(query)) = query else { return Err(Box::new(error(StatusCode::BAD_REQUEST, "Invalid query"))) };
    match query.app_id(state) {
        Ok(id) => Ok((query, id)),
        Err(message) => Err(Box::new(error(StatusCode::NOT_FOUND, message))),
    }
}

/// An app's live state: connections, occupied channels, presence members.
async fn app_state(
    _: Authorized,
    State(state): State<AppState>,
    query: Result<Query<AppQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (_, app_id) = match resolve(query, &state) {
        Ok(resolved) => resolved,
        Err(response) => return *response,
    };
    match live_state(&state, &app_id).await {
        Ok(body) => api(body),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("Cluster state is unavailable: {e}")),
    }
}

async fn live_state(state: &AppState, app_id: &str) -> Result<Value, crate::cluster::ClusterError> {
    let cluster = state.hub.cluster();
    let connections = cluster.connection_count(app_id).await?;
    let mut channels = cluster.channels(app_id).await?;
    channels.sort_by(|a, b| a.name.cmp(&b.name));
    let total = channels.len();
    channels.truncate(MAX_CHANNELS);
    let mut listed = Vec::with_capacity(channels.len());
    let mut member_channels = 0;
    for crate::cluster::ChannelCounts { name, subscriptions, users } in channels {
        let presence = ChannelKind::of(&name) == ChannelKind::Presence;
        let mut channel = json!({ "name": name, "subscriptions": subscriptions, "users": users, "presence": presence });
        if presence && member_channels < MAX_MEMBER_CHANNELS {
            member_channels += 1;
            let members: Vec<Value> = cluster
                .members(app_id, &name)
                .await?
                .into_iter()
                .take(MAX_MEMBERS)
                .map(|(id, info)| {
                    let info = info.and_then(|i| serde_json::from_str::<Value>(&i).ok()).unwrap_or(Value::Null);
                    json!({ "id": id, "info": info })
                })
                .collect();
            channel["members"] = Value::Array(members);
        }
        listed.push(channel);
    }
    Ok(json!({ "app": app_id, "connections": connections, "channel_count": total, "channels": listed }))
}

/// The frame of a published event, as far as the feed kept it.
#[derive(Deserialize)]
struct PublishedFrame {
    event: String,
    data: Option<Value>,
}

/// Recent activity of an app after `since`, oldest first. Published events are split into their
/// name and data (a frame cut short by the feed is left whole in `detail`).
async fn events(
    _: Authorized,
    State(state): State<AppState>,
    query: Result<Query<AppQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (query, app_id) = match resolve(query, &state) {
        Ok(resolved) => resolved,
        Err(response) => return *response,
    };
    let items: Vec<Value> = state
        .hub
        .feed
        .since(&app_id, query.since.unwrap_or(0))
        .into_iter()
        .map(|item| {
            let mut value = serde_json::to_value(&item).unwrap_or(Value::Null);
            if matches!(item.kind, "message" | "client_event") {
                if let Ok(frame) = serde_json::from_str::<PublishedFrame>(&item.detail) {
                    let data = match frame.data {
                        Some(Value::String(s)) => s,
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    value["event"] = Value::String(frame.event);
                    value["data"] = Value::String(data);
                    value["detail"] = Value::String(String::new());
                }
            }
            value
        })
        .collect();
    api(json!({ "app": app_id, "events": items }))
}

#[derive(Deserialize)]
struct TriggerRequest {
    app: Option<String>,
    channel: String,
    event: String,
    data: Value,
}

/// Publishes an event from the dashboard's form, validated as the HTTP API validates it. The body
/// must be JSON (`Content-Type: application/json`), which a cross-site form cannot send.
async fn trigger(
    _: Authorized,
    State(state): State<AppState>,
    body: Result<Json<TriggerRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let app = match &request.app {
        Some(id) => state.hub.app_by_id(id),
        None => state.hub.apps().first().cloned(),
    };
    let Some(app) = app else { return error(StatusCode::BAD_REQUEST, "Unknown app") };
    let channel = match Channel::parse(&request.channel) {
        Ok(channel) => channel,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid channel {:?}: {e}", request.channel)),
    };
    if let Err(e) = validate_event_name(&request.event) {
        return error(StatusCode::BAD_REQUEST, format!("Invalid event name: {e}"));
    }
    // The form sends the JSON text it was given; an object is taken as its JSON text too.
    let data = match request.data {
        Value::String(text) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                return error(StatusCode::BAD_REQUEST, "Data must be valid JSON");
            }
            text
        }
        other => other.to_string(),
    };
    if data.len() > app.max_message_size {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("Data is larger than {} bytes", app.max_message_size));
    }
    state.hub.publish_event(&app.id, channel, &request.event, &data, None).await;
    api(json!({ "ok": true, "app": app.id, "channel": request.channel, "event": request.event }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn backoff_blocks_after_five_failures_doubling_to_a_cap_and_forgets() {
        let backoff = AuthBackoff::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(backoff.failed(ip, t), None);
        }
        assert_eq!(backoff.blocked(ip, t), None);
        assert_eq!(backoff.failed(ip, t), Some(Duration::from_secs(1)));
        assert_eq!(backoff.blocked(ip, t + Duration::from_millis(500)), Some(Duration::from_millis(500)));
        assert_eq!(backoff.blocked(ip, t + Duration::from_secs(1)), None);
        assert_eq!(backoff.failed(ip, t), Some(Duration::from_secs(2)));
        for _ in 0..40 {
            backoff.failed(ip, t);
        }
        assert_eq!(backoff.failed(ip, t), Some(MAX_BLOCK));
        // Another address is not affected; a success forgets the address.
        assert_eq!(backoff.blocked("10.0.0.2".parse().unwrap(), t), None);
        backoff.succeeded(ip);
        assert_eq!(backoff.blocked(ip, t), None);
        // Bounded: many addresses never grow the map past its cap.
        let later = t + FORGET_AFTER + MAX_BLOCK + Duration::from_secs(1);
        for i in 0..(MAX_TRACKED as u32 + 50) {
            backoff.failed(IpAddr::V4(Ipv4Addr::from(i)), if i < 100 { t } else { later });
        }
        assert!(backoff.lock().len() <= MAX_TRACKED);
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(decode_base64("YWRtaW46czNjcmV0").unwrap(), b"admin:s3cret");
        assert_eq!(decode_base64("Og==").unwrap(), b":");
        assert_eq!(decode_base64("YQ").unwrap(), b"a");
        assert_eq!(decode_base64("YWI=").unwrap(), b"ab");
        assert!(decode_base64("Y").is_none());
        assert!(decode_base64("a*b=").is_none());
    }

    #[test]
    fn basic_auth_checks_the_password_only() {
        // admin:s3cret, anyone:s3cret, admin:wrong, admin (no colon)
        assert!(basic_password_matches(&basic("Basic YWRtaW46czNjcmV0"), "s3cret"));
        assert!(basic_password_matches(&basic("basic YW55b25lOnMzY3JldA=="), "s3cret"));
        assert!(!basic_password_matches(&basic("Basic YWRtaW46d3Jvbmc="), "s3cret"));
        assert!(!basic_password_matches(&basic("Basic YWRtaW4="), "s3cret"));
        assert!(!basic_password_matches(&basic("Bearer s3cret"), "s3cret"));
        assert!(!basic_password_matches(&HeaderMap::new(), "s3cret"));
    }
}
