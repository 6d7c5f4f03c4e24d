//! JSON Web Tokens for the plain endpoint: HS256, signed with the app secret (or a configured key).

use serde::Deserialize;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub exp: u64,
    /// When present, the only room the token opens.
    #[serde(default)]
    pub room: Option<String>,
}

/// Why a token was refused (answered with 401, or a close 1008 for a first-message token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token is not valid for this room")]
    WrongRoom,
    #[error("invalid token")]
    Invalid,
}

/// Verifies an HS256 token with `secret`: signature, `exp` (required, no leeway), `sub`, `room`.
pub fn verify(token: &str, secret: &str, room: &str) -> Result<Claims, TokenError> {
    use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, DecodingKey, Validation};
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data =
        decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            }
        })?;
    let claims = data.claims;
    if claims.sub.is_empty() {
        return Err(TokenError::Invalid);
    }
    if claims.room.as_deref().is_some_and(|r| r != room) {
        return Err(TokenError::WrongRoom);
    }
    Ok(claims)
}

/// Makes a token (for tests and the docs' examples).
pub fn issue(secret: &str, sub: &str, exp: u64, room: Option<&str>) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let claims = serde_json::json!({ "sub": sub, "exp": exp, "room": room });
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn valid_expired_forged_and_room_bound_tokens() {
        let good = issue("s", "7", now() + 60, None);
        assert_eq!(verify(&good, "s", "lobby").unwrap().sub, "7");
        assert_eq!(verify(&good, "other", "lobby"), Err(TokenError::Invalid));
        assert_eq!(verify(&issue("s", "7", now() - 5, None), "s", "lobby"), Err(TokenError::Expired));
        let bound = issue("s", "7", now() + 60, Some("lobby"));
        assert!(verify(&bound, "s", "lobby").is_ok());
        assert_eq!(verify(&bound, "s", "kitchen"), Err(TokenError::WrongRoom));
        assert_eq!(verify("not.a.token", "s", "lobby"), Err(TokenError::Invalid));
        assert_eq!(verify(&issue("s", "", now() + 60, None), "s", "lobby"), Err(TokenError::Invalid));
    }
}
