//! Presence `channel_data` and sign-in `user_data`: who a connection says it is.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::channel::MAX_USER_ID_LEN;
use super::frame::push_json_string;

/// A presence member as signed into a subscription's `channel_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberData {
    /// Sent back as a string whatever the client sent (string or number).
    pub user_id: String,
    /// The raw JSON of `user_info`, if any.
    pub user_info: Option<String>,
}

/// Why `channel_data` or `user_data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserData {
    #[error("channel_data is required for presence channels")]
    Missing,
    #[error("channel_data must be a JSON object")]
    NotAnObject,
    #[error("user_id must be a non-empty string or a number")]
    BadUserId,
    #[error("user info is larger than {0} bytes")]
    InfoTooLarge(usize),
    #[error("user_data must be a JSON object with a non-empty string `id`")]
    BadSigninData,
    #[error("user_data's watchlist must be an array of user id strings")]
    BadWatchlist,
    #[error("user_data's watchlist has more than {0} user ids")]
    WatchlistTooLong(usize),
}

#[derive(Deserialize)]
struct RawChannelData<'a> {
    user_id: Option<Value>,
    #[serde(borrow)]
    user_info: Option<&'a RawValue>,
}

impl MemberData {
    /// Parses presence `channel_data`, refusing user info larger than `max_info_size` bytes.
    pub fn parse(channel_data: Option<&str>, max_info_size: usize) -> Result<MemberData, InvalidUserData> {
        let text = channel_data.ok_or(InvalidUserData::Missing)?;
        let raw: RawChannelData = serde_json::from_str(text).map_err(|_| InvalidUserData::NotAnObject)?;
        let user_id = match raw.user_id {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_USER_ID_LEN => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(InvalidUserData::BadUserId),
        };
        let user_info = raw.user_info.map(|r| r.get().to_owned()).filter(|info| info != "null");
        if user_info.as_ref().is_some_and(|info| info.len() > max_info_size) {
            return Err(InvalidUserData::InfoTooLarge(max_info_size));
        }
        Ok(MemberData { user_id, user_info })
    }

    /// `member_added`'s data: `{"user_id":"7","user_info":{...}}`.
    pub fn added_json(&self) -> String {
        let mut out = String::from(r#"{"user_id":"#);
        push_json_string(&mut out, &self.user_id);
        if let Some(info) = &self.user_info {
            out.push_str(r#","user_info":"#);
            out.push_str(info);
        }
        out.push('}');
        out
    }
}

/// `member_removed`'s data: `{"user_id":"7"}`.
pub fn removed_json(user_id: &str) -> String {
    let mut out = String::from(r#"{"user_id":"#);
    push_json_string(&mut out, user_id);
    out.push('}');
    out
}

/// `subscription_succeeded`'s data on a presence channel: `{"presence":{"ids":[..],"hash":{..},"count":n}}`.
pub fn presence_succeeded_json<'a>(members: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut ids = String::from("[");
    let mut hash = String::from("{");
    let mut count = 0;
    for (id, info) in members {
        if count > 0 {
            ids.push(',');
            hash.push(',');
        }
        push_json_string(&mut ids, id);
        push_json_string(&mut hash, id);
        hash.push(':');
        hash.push_str(info.unwrap_or("null"));
        count += 1;
    }
    ids.push(']');
    hash.push('}');
    format!(r#"{{"presence":{{"ids":{ids},"hash":{hash},"count":{count}}}}}"#)
}

/// The signed-in user's id from sign-in `user_data` (`{"id":"7",...}`).
pub fn signin_user_id(user_data: &str) -> Result<String, InvalidUserData> {
    signin_data(user_data, usize::MAX).map(|d| d.id)
}

/// Who signed in, and whose comings and goings they want to hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigninData {
    pub id: String,
    /// The `watchlist` user ids, each once, in the order given.
    pub watchlist: Vec<String>,
}

/// Parses sign-in `user_data`: its `id`, and its optional `watchlist` of at most `max_watchlist`
/// user ids. A watchlist of the wrong shape refuses the whole sign-in: reporting some watched
/// users and silently not others would look like they were offline.
pub fn signin_data(user_data: &str, max_watchlist: usize) -> Result<SigninData, InvalidUserData> {
    #[derive(Deserialize)]
    struct UserData {
        id: Option<Value>,
        watchlist: Option<Value>,
    }
    let data: UserData = serde_json::from_str(user_data).map_err(|_| InvalidUserData::BadSigninData)?;
    let id = match data.id {
        Some(Value::String(id)) if valid_user_id(&id) => id,
        _ => return Err(InvalidUserData::BadSigninData),
    };
    let watchlist = match data.watchlist {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            // Duplicates count once (the list is as long as `max_message_size` lets it be).
            let mut seen = std::collections::HashSet::with_capacity(items.len().min(max_watchlist + 1));
            let mut ids: Vec<String> = Vec::new();
            for item in items {
                match item {
                    Value::String(watched) if valid_user_id(&watched) => {
                        if seen.insert(watched.clone()) {
                            if ids.len() == max_watchlist {
                                return Err(InvalidUserData::WatchlistTooLong(max_watchlist));
                            }
                            ids.push(watched);
                        }
                    }
                    _ => return Err(InvalidUserData::BadWatchlist),
                }
            }
            ids
        }
        Some(_) => return Err(InvalidUserData::BadWatchlist),
    };
    Ok(SigninData { id, watchlist })
}

/// Whether `id` may be a signed-in user's id: what `pusher:signin` accepts, and what
/// `terminate_connections` and `sendToUser` can then name.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID_LEN && id.bytes().all(is_user_id_char)
}

/// A user id must fit into a `#server-to-user-{id}` channel name.
fn is_user_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_with_string_or_number_ids() {
        let m = MemberData::parse(Some(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#), 1000).unwrap();
        assert_eq!(m.user_id, "10");
        assert_eq!(m.user_info.as_deref(), Some(r#"{"name":"Mr. Channels"}"#));
        let m = MemberData::parse(Some(r#"{"user_id":"ann"}"#), 1000).unwrap();
        assert_eq!((m.user_id.as_str(), m.user_info.as_deref()), ("ann", None));
        let v: Value = serde_json::from_str(&m.added_json()).unwrap();
        assert_eq!(v, serde_json::json!({"user_id": "ann"}));
    }

    #[test]
    fn bad_channel_data_is_refused() {
        assert_eq!(MemberData::parse(None, 10), Err(InvalidUserData::Missing));
        assert_eq!(MemberData::parse(Some("nope"), 10), Err(InvalidUserData::NotAnObject));
        assert_eq!(MemberData::parse(Some("{}"), 10), Err(InvalidUserData::BadUserId));
        assert_eq!(MemberData::parse(Some(r#"{"user_id":""}"#), 10), Err(InvalidUserData::BadUserId));
        assert_eq!(MemberData::parse(Some(r#"{"user_id":[1]}"#), 10), Err(InvalidUserData::BadUserId));
        let big = format!(r#"{{"user_id":"1","user_info":"{}"}}"#, "x".repeat(20));
        assert_eq!(MemberData::parse(Some(&big), 10), Err(InvalidUserData::InfoTooLarge(10)));
    }

    #[test]
    fn presence_block_shape() {
        let json = presence_succeeded_json([("7", Some(r#"{"name":"Ann"}"#)), ("8", None)].into_iter());
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["presence"]["ids"], serde_json::json!(["7", "8"]));
        assert_eq!(v["presence"]["hash"]["7"]["name"], "Ann");
        assert_eq!(v["presence"]["count"], 2);
        let empty: Value = serde_json::from_str(&presence_succeeded_json(std::iter::empty())).unwrap();
        assert_eq!(empty["presence"]["count"], 0);
    }

    #[test]
    fn signin_watchlists() {
        let d = signin_data(r#"{"id":"1","watchlist":["2","3","2"]}"#, 3).unwrap();
        assert_eq!(d, SigninData { id: "1".into(), watchlist: vec!["2".into(), "3".into()] }, "deduplicated");
        assert_eq!(signin_data(r#"{"id":"1"}"#, 3).unwrap().watchlist, Vec::<String>::new());
        assert_eq!(signin_data(r#"{"id":"1","watchlist":null}"#, 3).unwrap().watchlist, Vec::<String>::new());
        assert_eq!(
            signin_data(r#"{"id":"1","watchlist":["2","3","4","5"]}"#, 3),
            Err(InvalidUserData::WatchlistTooLong(3))
        );
        // The cap counts distinct ids: a repeated id is not one more.
        let repeated = format!(r#"{{"id":"1","watchlist":[{}]}}"#, vec![r#""2""#; 101].join(","));
        assert_eq!(signin_data(&repeated, 100).map(|d| d.watchlist), Ok(vec!["2".to_owned()]));
        for bad in [r#""2""#, "2", r#"{"a":"2"}"#, "[2]", r#"[""]"#, r#"["a b"]"#, r#"[["2"]]"#, "[null]"] {
            let data = format!(r#"{{"id":"1","watchlist":{bad}}}"#);
            assert_eq!(signin_data(&data, 100), Err(InvalidUserData::BadWatchlist), "{bad}");
        }
    }

    #[test]
    fn signin_ids() {
        assert_eq!(signin_user_id(r#"{"id":"12345","user_info":{"name":"Ann"}}"#), Ok("12345".into()));
        for bad in ["{}", r#"{"id":5}"#, r#"{"id":""}"#, r#"{"id":"a b"}"#, "x"] {
            assert!(signin_user_id(bad).is_err(), "{bad}");
        }
    }
}
