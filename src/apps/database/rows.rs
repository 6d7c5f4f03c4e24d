//! A row of the apps table as an app: Herald's own columns (named like the `[[apps]]` settings)
//! and Soketi's (read as-is, so a Soketi deployment switches without a migration).
//!
//! Values arrive as text (see [`super::source`]); a value that does not parse makes the row an
//! error naming the column, and the store skips that row alone.

use std::collections::HashMap;

use crate::config::{AppConfig, ClientEventsFrom, WebhookConfig, WebhookFilter};

/// A row's non-NULL values by column name.
pub type Record = HashMap<&'static str, String>;

/// Every column Herald reads; any other column of the table is left alone.
pub const KNOWN_COLUMNS: &[&str] = &[
    // Herald's layout.
    "id",
    "key",
    "secret",
    "enabled",
    "allowed_origins",
    "ping_interval",
    "activity_timeout",
    "max_message_size",
    "max_connections",
    "enable_client_messages",
    "accept_client_events_from",
    "client_event_rate_limit",
    "max_presence_members",
    "max_presence_user_info_size",
    "max_watchlist_size",
    "subscription_count_events",
    "api_rate_limit",
    "webhooks",
    "jwt_secret",
    "plain_query_token",
    "webhook_batch_ms",
    "webhook_delay_ms",
    // Soketi's names for what Herald also has (id, key, secret, enabled, max_connections,
    // enable_client_messages and webhooks are the same in both).
    "max_client_events_per_sec",
    "max_backend_events_per_sec",
    "max_presence_members_per_channel",
    "max_presence_member_size_in_kb",
    "max_event_payload_in_kb",
];

/// The app a row describes; `None` when the row says the app is disabled.
pub fn app_from_record(record: &Record) -> Result<Option<AppConfig>, String> {
    let get = |column: &str| record.get(column).map(|v| v.trim()).filter(|v| !v.is_empty());
    let required = |column: &'static str| get(column).ok_or_else(|| format!("{column} is empty"));
    let (id, key, secret) = (required("id")?, required("key")?, required("secret")?);
    if let Some(enabled) = get("enabled") {
        if !boolean("enabled", enabled)? {
            return Ok(None);
        }
    }
    let mut app = AppConfig::new(id, key, secret);
    // Soketi's names first, so that Herald's own column wins where a table has both.
    if let Some(v) = get("max_client_events_per_sec") {
        app.client_event_rate_limit = per_second("max_client_events_per_sec", v)?;
    }
    if let Some(v) = get("max_backend_events_per_sec") {
        app.api_rate_limit = per_second("max_backend_events_per_sec", v)?;
    }
    if let Some(v) = get("max_presence_members_per_channel") {
        app.max_presence_members = whole("max_presence_members_per_channel", v)?;
    }
    if let Some(v) = get("max_presence_member_size_in_kb") {
        app.max_presence_user_info_size = kilobytes("max_presence_member_size_in_kb", v)?;
    }
    if let Some(v) = get("max_event_payload_in_kb") {
        app.max_message_size = kilobytes("max_event_payload_in_kb", v)?;
    }

    if let Some(v) = get("allowed_origins") {
        app.allowed_origins = list("allowed_origins", v)?;
    }
    if let Some(v) = get("ping_interval") {
        app.ping_interval = whole("ping_interval", v)?;
    }
    if let Some(v) = get("activity_timeout") {
        app.activity_timeout = whole("activity_timeout", v)?;
    }
    if let Some(v) = get("max_message_size") {
        app.max_message_size = whole("max_message_size", v)?;
    }
    if let Some(v) = get("max_connections") {
        // Soketi writes -1 for "no limit".
        let n = integer("max_connections", v)?;
        app.max_connections = u64::try_from(n).ok();
    }
    if let Some(v) = get("enable_client_messages") {
        app.enable_client_messages = boolean("enable_client_messages", v)?;
    }
    if let Some(v) = get("accept_client_events_from") {
        app.accept_client_events_from = match v.to_ascii_lowercase().as_str() {
            "members" => ClientEventsFrom::Members,
            "all" => ClientEventsFrom::All,
            _ => return Err(format!("accept_client_events_from: expected members or all, got {v:?}")),
        };
    }
    if let Some(v) = get("client_event_rate_limit") {
        app.client_event_rate_limit = whole("client_event_rate_limit", v)?;
    }
    if let Some(v) = get("max_presence_members") {
        app.max_presence_members = whole("max_presence_members", v)?;
    }
    if let Some(v) = get("max_presence_user_info_size") {
        app.max_presence_user_info_size = whole("max_presence_user_info_size", v)?;
    }
    if let Some(v) = get("max_watchlist_size") {
        app.max_watchlist_size = whole("max_watchlist_size", v)?;
    }
    if let Some(v) = get("subscription_count_events") {
        app.subscription_count_events = boolean("subscription_count_events", v)?;
    }
    if let Some(v) = get("api_rate_limit") {
        app.api_rate_limit = whole("api_rate_limit", v)?;
    }
    if let Some(v) = get("webhooks") {
        app.webhooks = webhooks(v)?;
    }
    app.jwt_secret = get("jwt_secret").map(str::to_owned);
    if let Some(v) = get("plain_query_token") {
        app.plain_query_token = boolean("plain_query_token", v)?;
    }
    if let Some(v) = get("webhook_batch_ms") {
        app.webhook_batch_ms = whole("webhook_batch_ms", v)?;
    }
    if let Some(v) = get("webhook_delay_ms") {
        app.webhook_delay_ms = whole("webhook_delay_ms", v)?;
    }
    app.validate()?;
    Ok(Some(app))
}

fn boolean(column: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "off" => Ok(false),
        _ => Err(format!("{column}: expected a boolean, got {v:?}")),
    }
}

fn integer(column: &str, v: &str) -> Result<i64, String> {
    v.parse().map_err(|_| format!("{column}: expected a whole number, got {v:?}"))
}

fn whole<T: TryFrom<i64>>(column: &str, v: &str) -> Result<T, String> {
    let n = integer(column, v)?;
    T::try_from(n).map_err(|_| format!("{column}: {n} is out of range"))
}

/// Soketi's per-second limits, where a negative number means none (Herald's 0).
fn per_second(column: &str, v: &str) -> Result<u32, String> {
    let n = integer(column, v)?;
    if n < 0 {
        return Ok(0);
    }
    u32::try_from(n).map_err(|_| format!("{column}: {n} is out of range"))
}

/// Soketi's sizes in kilobytes (possibly fractional), as bytes.
fn kilobytes(column: &str, v: &str) -> Result<usize, String> {
    let kb: f64 = v.parse().map_err(|_| format!("{column}: expected a number of kilobytes, got {v:?}"))?;
    if !kb.is_finite() || kb <= 0.0 || kb > 16_384.0 {
        return Err(format!("{column}: {v} is out of range"));
    }
    Ok((kb * 1024.0) as usize)
}

/// A JSON array of strings, or a comma-separated list.
fn list(column: &str, v: &str) -> Result<Vec<String>, String> {
    if v.starts_with('[') {
        return serde_json::from_str(v).map_err(|e| format!("{column}: not a JSON array of strings: {e}"));
    }
    Ok(v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

/// The webhooks column: a JSON array of `{url, event_types, filter}` (Herald's and Soketi's
/// shape). Soketi's extra fields (`headers`) are ignored, and so is a hook that calls an AWS
/// Lambda instead of a URL, which Herald cannot do.
fn webhooks(v: &str) -> Result<Vec<WebhookConfig>, String> {
    #[derive(serde::Deserialize)]
    struct Hook {
        url: Option<String>,
        #[serde(default)]
        event_types: Vec<String>,
        #[serde(default)]
        filter: Option<WebhookFilter>,
        #[serde(default)]
        lambda: Option<serde_json::Value>,
        #[serde(default)]
        lambda_function: Option<serde_json::Value>,
    }
    let hooks: Vec<Hook> =
        serde_json::from_str(v).map_err(|e| format!("webhooks: not a JSON array of webhooks: {e}"))?;
    let mut out = Vec::new();
    for hook in hooks {
        match hook.url {
            Some(url) => out.push(WebhookConfig { url, event_types: hook.event_types, filter: hook.filter }),
            None if hook.lambda.is_some() || hook.lambda_function.is_some() => {}
            None => return Err("webhooks: a webhook has no url".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&'static str, &str)]) -> Record {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn soketis_row_is_read_as_is() {
        let row = record(&[
            ("id", "app-id"),
            ("key", "app-key"),
            ("secret", "app-secret"),
            ("max_connections", "-1"),
            ("enable_client_messages", "0"),
            ("enabled", "1"),
            ("max_backend_events_per_sec", "-1"),
            ("max_client_events_per_sec", "20"),
            (
                "webhooks",
                r#"[{"url":"http://127.0.0.1:9/hook","event_types":["channel_occupied"],"headers":{"x":"y"}},{"lambda_function":"f","event_types":[]}]"#,
            ),
            ("max_presence_members_per_channel", "50"),
            ("max_presence_member_size_in_kb", "2"),
        ]);
        let app = app_from_record(&row).unwrap().unwrap();
        assert_eq!((app.id.as_str(), app.key.as_str(), app.secret.as_str()), ("app-id", "app-key", "app-secret"));
        assert_eq!(app.max_connections, None, "-1 is no limit");
        assert!(!app.enable_client_messages);
        assert_eq!((app.api_rate_limit, app.client_event_rate_limit), (0, 20));
        assert_eq!((app.max_presence_members, app.max_presence_user_info_size), (50, 2048));
        assert_eq!(app.webhooks.len(), 1, "the Lambda hook is left out");
        assert_eq!(app.webhooks[0].event_types, ["channel_occupied"]);
    }

    #[test]
    fn herald_columns_win_and_disabled_rows_are_not_apps() {
        let row = record(&[
            ("id", "1"),
            ("key", "k"),
            ("secret", "s"),
            ("enabled", "true"),
            ("max_connections", "3"),
            ("allowed_origins", "https://a.example, https://b.example"),
            ("max_client_events_per_sec", "20"),
            ("client_event_rate_limit", "5"),
        ]);
        let app = app_from_record(&row).unwrap().unwrap();
        assert_eq!(app.max_connections, Some(3));
        assert_eq!(app.client_event_rate_limit, 5);
        assert_eq!(app.allowed_origins, ["https://a.example", "https://b.example"]);
        let off = record(&[("id", "1"), ("key", "k"), ("secret", "s"), ("enabled", "f")]);
        assert!(app_from_record(&off).unwrap().is_none());
    }

    #[test]
    fn a_bad_value_names_its_column() {
        let base = [("id", "1"), ("key", "k"), ("secret", "s")];
        let err = |extra: (&'static str, &str)| {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            app_from_record(&record(&pairs)).unwrap_err()
        };
        assert!(err(("max_connections", "lots")).contains("max_connections"));
        assert!(err(("enabled", "maybe")).contains("enabled"));
        assert!(err(("webhooks", "{not json")).contains("webhooks"));
        assert!(err(("ping_interval", "0")).contains("ping_interval"));
        assert!(err(("key", "a/b")).contains("key"));
        assert!(app_from_record(&record(&[("id", "1"), ("key", "k")])).unwrap_err().contains("secret"));
    }
}
