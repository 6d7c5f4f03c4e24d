//! `GET /apps/{id}/channels/{name}/history?since=&limit=`: a history channel's kept events, for
//! backends (a Laravel app fetching what a reconnected pusher-js client missed) and tools.
//!
//! Signed and checked like every other API call. The answer lists events oldest first (newest
//! last), each with its position; `since` reads the events after a position (page on with the last
//! one while `more` is true), no `since` reads the newest `limit`. A `since` older than what is
//! kept answers `reset: true` with the newest events: the caller has missed some for good.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::http_api::{authorize, ApiError, ApiResult};
use super::AppState;
use crate::cluster::history::MAX_READ;
use crate::protocol::position::Position;
use crate::protocol::{ChannelName, Frame};

/// Events in an answer when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// The parts of a kept frame an answer shows.
#[derive(Deserialize)]
struct KeptEvent<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
}

fn event_json(frame: &Frame) -> Option<Value> {
    let (_, position) = frame.history()?;
    let kept: KeptEvent = serde_json::from_str(frame.as_str()).ok()?;
    let mut item = json!({
        "position": position.to_string(),
        "event": serde_json::from_str::<Value>(kept.event.get()).ok()?,
        "data": kept.data.and_then(|d| serde_json::from_str::<Value>(d.get()).ok()).unwrap_or(Value::Null),
    });
    if let Some(user_id) = kept.user_id.and_then(|u| serde_json::from_str::<Value>(u.get()).ok()) {
        item["user_id"] = user_id;
    }
    Some(item)
}

pub async fn history(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    ChannelName::parse(&channel).map_err(|e| ApiError::bad_request(format!("Invalid channel: {e}")))?;
    let Some(rule) = state.hub.history_rule(&req.app.id, &channel) else {
        let message = format!("Channel {channel:?} keeps no history: no [[apps.history]] rule matches it");
        return Err(ApiError::new(StatusCode::NOT_FOUND, message));
    };
    let since =
        match req.param("since").filter(|s| !s.is_empty()) {
            Some(text) => Some(Position::parse(text).ok_or_else(|| {
                ApiError::bad_request("since must be a position from this channel's history (ms-seq)")
            })?),
            None => None,
        };
    let limit = match req.param("limit") {
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_READ).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_READ}"))),
        },
        None => DEFAULT_LIMIT,
    };
    let replay = state.hub.history(&req.app.id, &channel, &rule, since, limit).await?;
    let events: Vec<Value> = replay.events.iter().filter_map(event_json).collect();
    let body = json!({
        "channel": channel,
        "events": events,
        "reset": replay.reset,
        "more": replay.more,
        "head": replay.head.to_string(),
    });
    Ok(Json(body).into_response())
}
