//! The route table: one glance shows every endpoint Herald serves.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{history_api, http_api, plain, sse, sse_tickets, websocket, xhr, AppState};

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/app/{key}", get(websocket::upgrade))
        .route("/ws/{key}/{room}", get(plain::upgrade))
        .route("/pusher/app/{key}/{server}/{session}/xhr_streaming", post(xhr::streaming).options(xhr::preflight))
        .route("/pusher/app/{key}/{server}/{session}/xhr", post(xhr::polling).options(xhr::preflight))
        .route("/pusher/app/{key}/{server}/{session}/xhr_send", post(xhr::send).options(xhr::preflight))
        .route("/sse/{key}", get(sse::stream))
        .route("/apps/{app_id}/sse_tickets", post(sse_tickets::issue))
        .route("/apps/{app_id}/events", post(http_api::events))
        .route("/apps/{app_id}/batch_events", post(http_api::batch_events))
        .route("/apps/{app_id}/channels", get(http_api::channels))
        .route("/apps/{app_id}/channels/{channel}", get(http_api::channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(http_api::users))
        .route("/apps/{app_id}/channels/{channel}/history", get(history_api::history))
        .route("/apps/{app_id}/users/{user_id}/terminate_connections", post(http_api::terminate_connections))
        .route("/users/{user_id}/terminate_connections", post(http_api::terminate_connections_by_key))
        .route("/apps/{app_id}/connections", get(http_api::connections))
        .route("/up", get(up))
        .merge(super::dashboard::routes())
        .merge(super::demo::routes());
    // The dashboard and the demo move with the rest: behind a proxy that forwards only the prefix,
    // pages at the bare path would be unreachable. Their pages link and call relative URLs.
    let path = state.config.server.path.clone();
    let mut routes = if path.is_empty() { routes } else { Router::new().nest(&path, routes).route("/up", get(up)) };
    if let Some(echo) = &state.config.server.echo_path {
        routes = routes.route(echo, get(websocket::echo));
    }
    routes
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

/// Prometheus metrics; with `[server] metrics_token`, only for `Authorization: Bearer <token>`.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.config.server.metrics_token {
        let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = format!("Bearer {token}");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes())) {
            return (StatusCode::UNAUTHORIZED, Json(json!({"error": "metrics need Authorization: Bearer <token>"})))
                .into_response();
        }
    }
    let body = crate::metrics::render(&snapshot(&state));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// What the metrics read at scrape time.
fn snapshot(state: &AppState) -> crate::metrics::Snapshot {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = &state.hub;
    let registry = hub.registry();
    let webhooks = &hub.webhooks().stats;
    crate::metrics::Snapshot {
        connections: hub.apps().iter().map(|app| (app.id.clone(), registry.connection_count_local(&app.id))).collect(),
        subscriptions: registry.total_subscriptions(),
        channels: registry.total_channels(),
        active_apps: registry.active_apps(),
        http_sessions: state.http_sessions.count(),
        cluster_healthy: hub.healthy(),
        apps_store_healthy: hub.apps_healthy(),
        apps_store_failed_refreshes: hub.failed_app_refreshes(),
        apps_served: hub.apps().len(),
        webhooks_delivered: webhooks.delivered.load(Relaxed),
        webhooks_failed_attempts: webhooks.failed_attempts.load(Relaxed),
        webhooks_given_up: webhooks.given_up.load(Relaxed),
        webhooks_dropped: webhooks.dropped.load(Relaxed),
    }
}

/// Counts HTTP requests by status (the WebSocket upgrades too, as 101).
async fn count_requests(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    crate::metrics::http_request(response.status().as_u16());
    response
}

/// Unsigned health check for load balancers. A node that cannot reach Redis still serves its own
/// sockets, so it answers 200, and says it is degraded.
/// Likewise a node whose app store cannot be read: it serves the last apps it read.
async fn up(State(state): State<AppState>) -> Response {
    let mut body = serde_json::Map::new();
    if !state.hub.healthy() {
        body.insert("redis".into(), json!("unreachable: serving local connections only"));
    }
    if !state.hub.apps_healthy() {
        body.insert("apps_store".into(), json!("unreachable: serving the last apps read"));
    }
    let health = if body.is_empty() { "OK" } else { "DEGRADED" };
    body.insert("health".into(), json!(health));
    Json(serde_json::Value::Object(body)).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response()
}

/// A known path asked with the wrong method: 405 with a JSON error, like every other refusal
/// (the `Allow` header is added by the router).
async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"error": "Method not allowed"}))).into_response()
}
