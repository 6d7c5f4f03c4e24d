//! Who may listen to private and presence channels over Server-Sent Events.
//!
//! Two credentials, both HS256 JWTs with a `channels` claim listing what they open:
//! - a **bearer token** (`Authorization: Bearer`, for clients that can set headers), signed by the
//!   app's backend with the app's `jwt_secret` (or its secret), as on the plain endpoint;
//! - a **ticket** (`?ticket=`, for `EventSource`, which cannot set headers), made by Herald itself
//!   for a signed HTTP API call. A ticket lives 60 s and is redeemed once, so the URL it travels in
//!   (and the logs of every proxy on the way) never holds anything reusable. It is self-contained,
//!   so any node can check it; that it is used once is the cluster's business (a claim of its `jti`).
//!
//! Tickets are signed with a key derived from the app secret, never the secret itself: a ticket is
//! therefore never a valid bearer token (which would skip the single-use claim), and a bearer token
//! is never a ticket.

use hmac::{Hmac, Mac};
use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

/// How long a ticket may wait before it is redeemed.
pub const TICKET_TTL_SECS: u64 = 60;

/// What a valid credential allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The channels it opens (public channels need none).
    pub channels: Vec<String>,
    /// Who the listener is: its presence member id.
    pub user_id: Option<String>,
    /// The member's `user_info`, raw JSON.
    pub user_info: Option<String>,
    /// For a ticket: its id, to be claimed once, and its expiry (seconds since 1970).
    pub ticket: Option<(String, u64)>,
}

impl Grant {
    pub fn allows(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }
}

/// Why a credential was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("expired")]
    Expired,
    #[error("invalid")]
    Invalid,
}

#[derive(Deserialize)]
struct BearerClaims {
    sub: String,
    channels: Vec<String>,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

/// A ticket's claims, as Herald writes and reads them.
#[derive(Serialize, Deserialize)]
struct TicketClaims {
    jti: String,
    exp: u64,
    channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_info: Option<Box<RawValue>>,
}

/// What a ticket is made for (checked by the API call that asks for it).
pub struct TicketRequest<'a> {
    pub channels: &'a [String],
    pub user_id: Option<&'a str>,
    /// Raw JSON.
    pub user_info: Option<&'a RawValue>,
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation
}

fn refused(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid,
    }
}

fn info_of(raw: Option<Box<RawValue>>) -> Option<String> {
    raw.map(|r| r.get().to_owned()).filter(|info| info != "null")
}

/// Checks a bearer token signed with `secret`: signature, `exp` (required, no leeway), `sub`, `channels`.
pub fn verify_bearer(token: &str, secret: &str) -> Result<Grant, AuthError> {
    let mut validation = validation();
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = decode::<BearerClaims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .map_err(refused)?
        .claims;
    if claims.sub.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(Grant {
        channels: claims.channels,
        user_id: Some(claims.sub),
        user_info: info_of(claims.user_info),
        ticket: None,
    })
}

/// The key tickets are signed with: derived from the app secret, so it is neither the secret nor
/// anything the app's backend signs its own tokens with.
fn ticket_key(secret: &str) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return Vec::new() };
    mac.update(b"herald sse ticket v1");
    mac.finalize().into_bytes().to_vec()
}

/// Makes a ticket with id `jti` that expires at `exp` (seconds since 1970).
pub fn issue_ticket(secret: &str, jti: &str, exp: u64, request: &TicketRequest<'_>) -> String {
    let claims = TicketClaims {
        jti: jti.to_owned(),
        exp,
        channels: request.channels.to_vec(),
        sub: request.user_id.map(str::to_owned),
        user_info: request.user_info.map(|r| r.to_owned()),
    };
    encode(&Header::default(), &claims, &EncodingKey::from_secret(&ticket_key(secret))).unwrap_or_default()
}

/// Checks a ticket made by [`issue_ticket`] with the same `secret`: signature and expiry. Whether it
/// was used before is for the caller to find out, with [`Grant::ticket`].
pub fn verify_ticket(ticket: &str, secret: &str) -> Result<Grant, AuthError> {
    let mut validation = validation();
    validation.set_required_spec_claims(&["exp", "jti"]);
    let claims = decode::<TicketClaims>(ticket, &DecodingKey::from_secret(&ticket_key(secret)), &validation)
        .map_err(refused)?
        .claims;
    if claims.jti.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(Grant {
        channels: claims.channels,
        user_id: claims.sub.filter(|s| !s.is_empty()),
        user_info: info_of(claims.user_info),
        ticket: Some((claims.jti, claims.exp)),
    })
}

/// Makes a bearer token (for tests and the docs' examples).
pub fn issue_bearer(secret: &str, sub: &str, exp: u64, channels: &[&str], user_info: Option<&str>) -> String {
    let mut claims = serde_json::json!({ "sub": sub, "exp": exp, "channels": channels });
    if let Some(info) = user_info.and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok()) {
        claims["user_info"] = info;
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn bearer_tokens_carry_user_and_channels() {
        let token = issue_bearer("s", "7", now() + 60, &["private-a", "presence-b"], Some(r#"{"name":"Ada"}"#));
        let grant = verify_bearer(&token, "s").unwrap();
        assert_eq!(grant.user_id.as_deref(), Some("7"));
        assert_eq!(grant.user_info.as_deref(), Some(r#"{"name":"Ada"}"#));
        assert!(grant.allows("private-a") && grant.allows("presence-b") && !grant.allows("private-c"));
        assert_eq!(grant.ticket, None);
        assert_eq!(verify_bearer(&token, "other"), Err(AuthError::Invalid));
        assert_eq!(verify_bearer(&issue_bearer("s", "7", now() - 5, &[], None), "s"), Err(AuthError::Expired));
        assert_eq!(verify_bearer(&issue_bearer("s", "", now() + 60, &[], None), "s"), Err(AuthError::Invalid));
        // A token without `channels` opens nothing and is refused rather than read as "everything".
        let bare = crate::protocol::token::issue("s", "7", now() + 60, None);
        assert_eq!(verify_bearer(&bare, "s"), Err(AuthError::Invalid));
    }

    #[test]
    fn tickets_are_not_bearer_tokens_and_bearer_tokens_are_not_tickets() {
        let channels = vec!["private-a".to_owned()];
        let info = RawValue::from_string(r#"{"n":1}"#.to_owned()).unwrap();
        let request = TicketRequest { channels: &channels, user_id: Some("9"), user_info: Some(&info) };
        let ticket = issue_ticket("s", "abc", now() + 60, &request);
        let grant = verify_ticket(&ticket, "s").unwrap();
        assert_eq!(grant.ticket.as_ref().map(|t| t.0.as_str()), Some("abc"));
        assert_eq!((grant.user_id.as_deref(), grant.user_info.as_deref()), (Some("9"), Some(r#"{"n":1}"#)));
        assert!(grant.allows("private-a"));
        assert_eq!(verify_bearer(&ticket, "s"), Err(AuthError::Invalid), "a ticket is no bearer token");
        let token = issue_bearer("s", "9", now() + 60, &["private-a"], None);
        assert_eq!(verify_ticket(&token, "s"), Err(AuthError::Invalid), "a bearer token is no ticket");
        assert_eq!(verify_ticket(&ticket, "other"), Err(AuthError::Invalid));
        assert_eq!(verify_ticket(&issue_ticket("s", "x", now() - 1, &request), "s"), Err(AuthError::Expired));
        let anonymous = TicketRequest { channels: &channels, user_id: None, user_info: None };
        assert_eq!(verify_ticket(&issue_ticket("s", "y", now() + 60, &anonymous), "s").unwrap().user_id, None);
    }
}
