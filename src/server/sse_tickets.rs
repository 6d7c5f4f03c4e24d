//! `POST {path}/apps/{app_id}/sse_tickets`: a single-use ticket for an SSE stream, asked for by the
//! app's backend (signed like every HTTP API call) and handed to its page, which opens
//! `new EventSource(".../sse/{key}?channels=...&ticket=...")`. No long-lived secret is then ever in a
//! URL: the ticket expires after 60 s and is refused once used, on any node.
//!
//! Body: `{"channels": [...], "user_id": "7", "user_info": {...}}` (`user_id` required for presence
//! channels, `user_info` optional). Answer: `{"ticket": "...", "expires_in": 60}`.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::http_api::{authorize, ApiError, ApiResult};
use super::sse::{member, parse_channels};
use super::AppState;
use crate::protocol::sse_auth::{issue_ticket, TicketRequest, TICKET_TTL_SECS};
use crate::protocol::ChannelKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketBody {
    channels: Vec<String>,
    /// A string or a number, as in presence `channel_data`.
    #[serde(default)]
    user_id: Option<Value>,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

pub async fn issue(State(state): State<AppState>, Path(app_id): Path<String>, request: Request) -> ApiResult {
    let req = authorize(&state, &app_id, request).await?;
    let body: TicketBody =
        serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let channels = parse_channels(body.channels.iter().map(String::as_str)).map_err(ApiError::bad_request)?;
    let user_id = match body.user_id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(ApiError::bad_request("user_id must be a string or a number")),
    };
    let user_info = body.user_info.filter(|info| info.get() != "null");
    match &user_id {
        // The same checks a presence subscription's channel_data gets (id length, info size).
        Some(id) => {
            member(&req.app, id, user_info.as_deref().map(RawValue::get)).map_err(ApiError::bad_request)?;
        }
        None if channels.iter().any(|c| c.kind == ChannelKind::Presence) => {
            return Err(ApiError::bad_request("user_id is required for presence channels"));
        }
        None if user_info.is_some() => return Err(ApiError::bad_request("user_info needs a user_id")),
        None => {}
    }
    let names: Vec<String> = channels.into_iter().map(|c| c.name).collect();
    let jti = hex::encode(rand::random::<[u8; 16]>());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let ticket_for = TicketRequest { channels: &names, user_id: user_id.as_deref(), user_info: user_info.as_deref() };
    let ticket = issue_ticket(&req.app.secret, &jti, now + TICKET_TTL_SECS, &ticket_for);
    Ok(Json(json!({ "ticket": ticket, "expires_in": TICKET_TTL_SECS })).into_response())
}
