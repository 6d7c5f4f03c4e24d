//! HMAC-SHA256 signatures: channel auth, user sign-in, the HTTP API and webhooks (docs/protocol.md §6).
//!
//! Every comparison of a client-supplied signature goes through `Mac::verify_slice`, which is
//! constant-time, so a forger learns nothing from response timing.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far `auth_timestamp` may be from now before a request is refused as a replay.
pub const MAX_TIMESTAMP_SKEW_SECS: i64 = 600;

/// Checks a credential against each secret in turn (the current one first, then one still in its
/// rotation grace): the first that verifies it wins. Otherwise the most telling refusal: one whose
/// signature held but whose claims did not (expired, another room) over a bare `forged`. `None`
/// when there is no secret at all.
pub fn verify_with_any<'s, T, E>(
    secrets: impl IntoIterator<Item = &'s str>,
    check: impl Fn(&str) -> Result<T, E>,
    forged: impl Fn(&E) -> bool,
) -> Option<Result<T, E>> {
    let mut refusal: Option<E> = None;
    for secret in secrets {
        match check(secret) {
            Ok(verified) => return Some(Ok(verified)),
            Err(e) if refusal.as_ref().is_none_or(|r| forged(r) && !forged(&e)) => refusal = Some(e),
            Err(_) => {}
        }
    }
    refusal.map(Err)
}

/// Lower-case hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC of `message` under `secret`, compared in constant time.
pub fn verify(secret: &str, message: &str, signature_hex: &str) -> bool {
    let Ok(given) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// The string a private or presence channel's `auth` signs.
pub fn channel_auth_message(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The string a `pusher:signin`'s `auth` signs.
pub fn signin_message(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Checks an `auth` of the form `key:signature` for `message`.
pub fn verify_auth(app_key: &str, secret: &str, message: &str, auth: &str) -> bool {
    let Some((key, signature)) = auth.split_once(':') else {
        return false;
    };
    let key_ok: bool = key.as_bytes().ct_eq(app_key.as_bytes()).into();
    // Always compute the HMAC so that a wrong key costs the same time as a wrong signature.
    let sig_ok = verify(secret, message, signature);
    key_ok & sig_ok
}

/// Builds `key:signature` for `message` (what an app's auth endpoint returns).
pub fn make_auth(app_key: &str, secret: &str, message: &str) -> String {
    format!("{app_key}:{}", sign(secret, message))
}

/// Lower-case hex MD5, as `body_md5` carries it.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Why an HTTP API request's signature was refused (all answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiAuthError {
    #[error("missing query parameter `{0}`")]
    Missing(&'static str),
    #[error("auth_key does not match the app")]
    WrongKey,
    #[error("auth_version must be 1.0")]
    WrongVersion,
    #[error("auth_timestamp is not a number")]
    BadTimestamp,
    #[error("auth_timestamp is more than 600 s from the server's clock")]
    Expired,
    #[error("body_md5 does not match the body")]
    BodyMd5Mismatch,
    #[error("a request with a body must carry body_md5")]
    BodyMd5Missing,
    #[error("invalid auth_signature")]
    BadSignature,
}

/// One HTTP API request, as far as signing is concerned.
pub struct ApiRequest<'a> {
    pub method: &'a str,
    /// `/apps/{id}/...`, without any deployment prefix: the SDKs sign the bare path.
    pub path: &'a str,
    /// The raw query string (without `?`), still percent-encoded.
    pub query: &'a str,
    pub body: &'a [u8],
}

/// Decodes a query string into (lower-cased key, value) pairs, percent- and `+`-decoded.
pub fn decode_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (decode_component(k).to_lowercase(), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy().into_owned()
}

/// The string an HTTP API request signs: `METHOD\nPATH\nk=v&...` with every parameter except
/// `auth_signature`, decoded, sorted by key.
pub fn api_string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "auth_signature").collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}\n{}\n{}", method.to_uppercase(), path, query.join("&"))
}

/// The checks of an HTTP API request that need no body and no secret: the auth parameters are all
/// there, the key is the app's, the version 1.0 and the timestamp fresh. Run before a body is read,
/// so that a request that cannot be valid costs no body buffer.
pub fn check_api_params(app_key: &str, params: &[(String, String)], now_secs: i64) -> Result<(), ApiAuthError> {
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let key = get("auth_key").ok_or(ApiAuthError::Missing("auth_key"))?;
    let timestamp = get("auth_timestamp").ok_or(ApiAuthError::Missing("auth_timestamp"))?;
    let version = get("auth_version").ok_or(ApiAuthError::Missing("auth_version"))?;
    get("auth_signature").ok_or(ApiAuthError::Missing("auth_signature"))?;
    if !bool::from(key.as_bytes().ct_eq(app_key.as_bytes())) {
        return Err(ApiAuthError::WrongKey);
    }
    if version != "1.0" {
        return Err(ApiAuthError::WrongVersion);
    }
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| ApiAuthError::BadTimestamp)?;
    // `abs_diff`: a subtraction would overflow for extreme values (and wrap to a "fresh" skew).
    if now_secs.abs_diff(timestamp) > MAX_TIMESTAMP_SKEW_SECS.unsigned_abs() {
        return Err(ApiAuthError::Expired);
    }
    Ok(())
}

/// Verifies an HTTP API request against the app's key and secret at time `now_secs`.
pub fn verify_api_request(
    app_key: &str,
    secret: &str,
    req: &ApiRequest<'_>,
    now_secs: i64,
) -> Result<(), ApiAuthError> {
    let params = decode_query(req.query);
    check_api_params(app_key, &params, now_secs)?;
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let signature = get("auth_signature").ok_or(ApiAuthError::Missing("auth_signature"))?;
    match get("body_md5") {
        Some(given) if !given.eq_ignore_ascii_case(&md5_hex(req.body)) => return Err(ApiAuthError::BodyMd5Mismatch),
        None if !req.body.is_empty() => return Err(ApiAuthError::BodyMd5Missing),
        _ => {}
    }
    let to_sign = api_string_to_sign(req.method, req.path, &params);
    if verify(secret, &to_sign, &signature.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(ApiAuthError::BadSignature)
    }
}

/// Signs an HTTP API request the way the Pusher SDKs do; returns the query string to send.
/// Used by Herald's own `trigger` tool and the tests.
pub fn sign_api_request(
    app_key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    now_secs: i64,
) -> String {
    let mut params: Vec<(String, String)> = vec![
        ("auth_key".into(), app_key.into()),
        ("auth_timestamp".into(), now_secs.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        params.push(("body_md5".into(), md5_hex(body)));
    }
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let signature = sign(secret, &api_string_to_sign(method, path, &params));
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    query.push(format!("auth_signature={signature}"));
    query.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const TS: i64 = 1353088179;

    #[test]
    fn the_first_secret_that_verifies_wins_else_the_most_telling_refusal() {
        #[derive(Debug, PartialEq)]
        enum Refused {
            Forged,
            Expired,
        }
        let check = |valid: &'static str, expired: bool| {
            move |secret: &str| match (secret == valid, expired) {
                (true, false) => Ok(secret.to_owned()),
                (true, true) => Err(Refused::Expired),
                (false, _) => Err(Refused::Forged),
            }
        };
        let forged = |e: &Refused| *e == Refused::Forged;
        assert_eq!(verify_with_any(["new", "old"], check("old", false), forged), Some(Ok("old".to_owned())));
        assert_eq!(verify_with_any(["new", "old"], check("new", false), forged), Some(Ok("new".to_owned())));
        assert_eq!(verify_with_any(["new", "old"], check("other", false), forged), Some(Err(Refused::Forged)));
        // Signed with the old secret but expired: "expired" says more than "forged".
        assert_eq!(verify_with_any(["new", "old"], check("old", true), forged), Some(Err(Refused::Expired)));
        assert_eq!(verify_with_any([], check("old", false), forged), None);
    }

    #[test]
    fn private_channel_vector() {
        let msg = channel_auth_message("1234.1234", "private-foobar", None);
        assert_eq!(
            make_auth(KEY, SECRET, &msg),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(verify_auth(KEY, SECRET, &msg, &make_auth(KEY, SECRET, &msg)));
    }

    #[test]
    fn presence_channel_vectors() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let msg = channel_auth_message("1234.1234", "presence-foobar", Some(data));
        assert_eq!(sign(SECRET, &msg), "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80");
        let data = r#"{"user_id":"10","user_info":{"name":"Mr. Channels"}}"#;
        let msg = channel_auth_message("1234.1234", "presence-foobar", Some(data));
        assert_eq!(sign(SECRET, &msg), "4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800");
    }

    #[test]
    fn signin_vectors() {
        let msg = signin_message("1234.1234", r#"{"id":"12345","user_info":{"name":"Ann"}}"#);
        assert_eq!(sign(SECRET, &msg), "bfa914eeb7fd4d065731cf8e8aa3b9c4e3e6bd98f35474a1640f273824981425");
        let msg = signin_message("1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(sign(SECRET, &msg), "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba");
    }

    #[test]
    fn webhook_vector() {
        let body = r#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#;
        assert_eq!(sign(SECRET, body), "709fdb84c03664445f7698120b0edf0acc1ab1c8c6e93a0368c61841d6b998aa");
    }

    #[test]
    fn forged_auths_are_refused() {
        let msg = channel_auth_message("1234.1234", "private-foobar", None);
        let good = make_auth(KEY, SECRET, &msg);
        let sig = good.split_once(':').unwrap().1;
        assert!(!verify_auth(KEY, SECRET, &msg, sig), "no key part");
        assert!(!verify_auth(KEY, SECRET, &msg, &format!("otherkey:{sig}")));
        assert!(!verify_auth(KEY, SECRET, &msg, &format!("{KEY}:{}", &sig[..63])));
        assert!(!verify_auth(KEY, SECRET, &msg, &format!("{KEY}:zz{}", &sig[2..])));
        assert!(!verify_auth(KEY, "other-secret", &msg, &good));
        let other = channel_auth_message("1234.1235", "private-foobar", None);
        assert!(!verify_auth(KEY, SECRET, &other, &good), "bound to the socket id");
    }

    fn post_events() -> (String, &'static str) {
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(md5_hex(body.as_bytes()), "ec365a775a4cd0599faeb73354201b6f");
        let query = format!(
            "auth_key={KEY}&auth_timestamp={TS}&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        (query, body)
    }

    #[test]
    fn http_api_post_vector() {
        let (query, body) = post_events();
        let req = ApiRequest { method: "POST", path: "/apps/3/events", query: &query, body: body.as_bytes() };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS + 5), Ok(()));
        // The same request, parameters in another order.
        let reordered: Vec<&str> = query.split('&').rev().collect();
        let reordered = reordered.join("&");
        let req = ApiRequest { query: &reordered, ..req };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Ok(()));
    }

    #[test]
    fn http_api_refusals() {
        let (query, body) = post_events();
        let ok = ApiRequest { method: "POST", path: "/apps/3/events", query: &query, body: body.as_bytes() };
        assert_eq!(verify_api_request(KEY, SECRET, &ok, TS + 601), Err(ApiAuthError::Expired));
        assert_eq!(verify_api_request(KEY, SECRET, &ok, TS - 601), Err(ApiAuthError::Expired));
        assert_eq!(verify_api_request(KEY, "wrong", &ok, TS), Err(ApiAuthError::BadSignature));
        assert_eq!(verify_api_request("otherkey", SECRET, &ok, TS), Err(ApiAuthError::WrongKey));
        let tampered = body.replace("project-3", "project-4");
        let req = ApiRequest { body: tampered.as_bytes(), ..ok };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Err(ApiAuthError::BodyMd5Mismatch));
        let req = ApiRequest { path: "/apps/4/events", ..ok };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Err(ApiAuthError::BadSignature));
        let no_md5 = query.replace("&body_md5=ec365a775a4cd0599faeb73354201b6f", "");
        let req = ApiRequest { query: &no_md5, ..ok };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Err(ApiAuthError::BodyMd5Missing));
        let no_sig = query.split("&auth_signature").next().unwrap().to_owned();
        let req = ApiRequest { query: &no_sig, ..ok };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Err(ApiAuthError::Missing("auth_signature")));
        let v2 = query.replace("auth_version=1.0", "auth_version=2.0");
        let req = ApiRequest { query: &v2, ..ok };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Err(ApiAuthError::WrongVersion));
    }

    #[test]
    fn extreme_timestamps_are_expired_not_overflowed() {
        let now = TS;
        // `now - ts` would overflow for these (and wrap to a "fresh" skew for `now + i64::MIN`).
        for ts in [i64::MIN, i64::MIN + 1, now.wrapping_add(i64::MIN), -now, i64::MAX, i64::MAX - 1] {
            let q = sign_api_request(KEY, SECRET, "GET", "/apps/3/channels", b"", &[], ts);
            let req = ApiRequest { method: "GET", path: "/apps/3/channels", query: &q, body: b"" };
            assert_eq!(verify_api_request(KEY, SECRET, &req, now), Err(ApiAuthError::Expired), "ts {ts}");
            let q = sign_api_request(KEY, SECRET, "GET", "/apps/3/channels", b"", &[], now);
            let req = ApiRequest { query: &q, ..req };
            assert_eq!(verify_api_request(KEY, SECRET, &req, ts), Err(ApiAuthError::Expired), "now {ts}");
        }
    }

    #[test]
    fn http_api_get_vectors() {
        let cases = [
            (
                "/apps/3/channels",
                "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count",
                "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291",
            ),
            (
                // The PHP SDK percent-encodes the comma: it must be decoded before signing.
                "/apps/3/channels/presence-foobar",
                "info=user_count%2Csubscription_count&auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0",
                "377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d",
            ),
            (
                "/apps/3/channels/presence-foobar",
                "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&info=user_count,subscription_count",
                "377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d",
            ),
            (
                // Python sends the empty body's MD5 on GETs: it is signed and must pass.
                "/apps/3/channels/presence-foobar/users",
                "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=d41d8cd98f00b204e9800998ecf8427e",
                "3d68b512095fd42cb6741cc80616761b1c77d00fcc4d6d9740f09504a4b761b0",
            ),
        ];
        for (path, query, sig) in cases {
            let query = format!("{query}&auth_signature={sig}");
            let req = ApiRequest { method: "GET", path, query: &query, body: b"" };
            assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Ok(()), "{path} {query}");
        }
    }

    #[test]
    fn terminate_connections_vector() {
        let body = b"{}";
        assert_eq!(md5_hex(body), "99914b932bd37a50b983c5e7c90ae93b");
        let params = decode_query(&format!(
            "auth_key={KEY}&auth_timestamp={TS}&auth_version=1.0&body_md5=99914b932bd37a50b983c5e7c90ae93b"
        ));
        let s = api_string_to_sign("POST", "/apps/3/users/42/terminate_connections", &params);
        assert_eq!(sign(SECRET, &s), "2829710742ff5f799010258297d09016e2366257e3e954039eeda349073a2bcf");
    }

    #[test]
    fn our_signer_round_trips() {
        let body = br#"{"name":"e","channel":"c","data":"x y"}"#;
        let q = sign_api_request(KEY, SECRET, "POST", "/apps/3/events", body, &[("info", "a,b c")], TS);
        let req = ApiRequest { method: "POST", path: "/apps/3/events", query: &q, body };
        assert_eq!(verify_api_request(KEY, SECRET, &req, TS), Ok(()));
    }
}
