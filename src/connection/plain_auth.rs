//! The plain endpoint's first-message authentication, for clients that could not put a token in
//! the handshake: read (bounded in time) `{"type":"auth","token":"..."}` and verify it.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::apps::App;
use crate::protocol::signature::verify_with_any;
use crate::protocol::token::{self, Claims, TokenError};
use crate::session::{Exit, PLAIN_AUTH_DEADLINE};
use crate::transport::{Message, WebSocket};

/// Returns the token's user. Refusals close with 1008; a frame that breaks the protocol closes
/// with its own code, and a peer's close is answered like anywhere else.
pub(super) async fn first_message_auth<S>(ws: &mut WebSocket<S>, app: &App, room: &str) -> Result<String, Exit>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    #[derive(serde::Deserialize)]
    struct Auth {
        #[serde(rename = "type")]
        kind: String,
        token: String,
    }
    let first = tokio::time::timeout(PLAIN_AUTH_DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Ping(payload))) => ws.send_pong(&payload).await.map_err(|_| Exit::Gone)?,
                Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => return Err(Exit::Policy("Authentication required")),
                Some(Ok(Message::Close(theirs))) => {
                    let _ = ws.answer_close(&theirs).await;
                    return Err(Exit::Gone);
                }
                Some(Err(e)) => return Err(Exit::Protocol(e.close_code(), e.reason())),
                None => return Err(Exit::Gone),
            }
        }
    })
    .await
    .map_err(|_| Exit::Policy("Authentication required: send {\"type\":\"auth\",\"token\":\"...\"} first"))??;
    let auth: Auth = serde_json::from_str(&first).map_err(|_| Exit::Policy("Authentication required"))?;
    if auth.kind != "auth" {
        return Err(Exit::Policy("Authentication required"));
    }
    verify_token(app, &auth.token, room).map(|c| c.sub).map_err(|e| {
        Exit::Policy(match e {
            TokenError::Expired => "Token expired",
            TokenError::WrongRoom => "Token not valid for this room",
            TokenError::Invalid => "Invalid token",
        })
    })
}

/// Verifies a plain-endpoint token for `room` against each secret it may be signed with (during
/// a rotation's grace, the previous one too); the most telling refusal otherwise.
pub fn verify_token(app: &App, token: &str, room: &str) -> Result<Claims, TokenError> {
    verify_with_any(
        app.accepted_jwt_secrets(),
        |secret| token::verify(token, secret, room),
        |e| *e == TokenError::Invalid,
    )
    .unwrap_or(Err(TokenError::Invalid))
}
