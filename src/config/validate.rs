//! Start-up validation: every rule here names the setting it is about.

use std::collections::HashSet;

/// The largest `max_message_size` an app may set: a message is held whole before it is handled.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 16 << 20;

/// Most events one history rule keeps per channel.
pub const MAX_HISTORY_SIZE: usize = 10_000;
/// Longest a history keeps an event: a week.
pub const MAX_HISTORY_TTL_S: u64 = 7 * 24 * 3600;
/// Most `[[apps.history]]` rules per app (each channel's rule is found by trying them in order).
pub const MAX_HISTORY_RULES: usize = 32;

/// The shortest `dashboard_password` accepted: it guards triggering events on every channel.
pub const MIN_DASHBOARD_PASSWORD_CHARS: usize = 16;

use super::{AppConfig, Config};

/// An IP address (`10.1.2.3`, `::1`) or network (`10.0.0.0/8`, `fd00::/8`) as (address, prefix length).
pub fn parse_network(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
        None => max,
    };
    Some((addr, prefix))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config file: {0}")]
    File(String),
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let path = &self.server.path;
        if !path.is_empty() && (!path.starts_with('/') || path.ends_with('/')) {
            return invalid(format!(
                "server.path {path:?} must start with '/' and not end with one (e.g. \"/ws\"), or be empty"
            ));
        }
        if let Some(echo) = &self.server.echo_path {
            if !echo.starts_with('/') || echo.len() < 2 || echo.starts_with("/app") || echo.starts_with("/up") {
                return invalid(format!(
                    "server.echo_path {echo:?} must start with '/' and not clash with /app or /up"
                ));
            }
        }
        if self.server.max_request_size == 0 {
            return invalid("server.max_request_size must be at least 1".into());
        }
        if !(1..=3600).contains(&self.server.sse_heartbeat_seconds) {
            return invalid("server.sse_heartbeat_seconds must be 1 to 3600".into());
        }
        if self.server.max_outbound_buffer < 1024 {
            return invalid("server.max_outbound_buffer must be at least 1024 bytes".into());
        }
        if let Some(password) = &self.server.dashboard_password {
            if password.chars().count() < MIN_DASHBOARD_PASSWORD_CHARS {
                return invalid(format!(
                    "server.dashboard_password must be at least {MIN_DASHBOARD_PASSWORD_CHARS} characters long"
                ));
            }
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections must be at least 1".into());
        }
        if self.server.max_connections_per_ip == 0 {
            return invalid("server.max_connections_per_ip must be at least 1".into());
        }
        if let Some(bad) = self.server.per_ip_limit_exempt.iter().find(|n| parse_network(n).is_none()) {
            return invalid(format!(
                "server.per_ip_limit_exempt: {bad:?} is not an IP address or network (e.g. \"10.0.0.0/8\", \"::1\")"
            ));
        }
        if self.scaling.enabled {
            let urls = self.scaling.urls();
            if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://"))) {
                return invalid(
                    "scaling.redis_url must be redis://host:port (several, comma-separated, for a cluster)".into(),
                );
            }
            if self.scaling.node_timeout().as_millis() < 500 {
                return invalid("scaling.node_timeout_ms must be at least 500".into());
            }
        }
        self.apps_store.validate().map_err(ConfigError::Invalid)?;
        if self.apps_store.driver.is_database() && !self.apps.is_empty() {
            return invalid("[[apps]] and a database apps_store both declare apps: serve them from one place".into());
        }
        if self.apps.is_empty() && !self.apps_store.driver.is_database() {
            return invalid("no app is configured".into());
        }
        let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
        for app in &self.apps {
            app.validate().map_err(ConfigError::Invalid)?;
            let name = format!("app {:?}", app.id);
            if !ids.insert(&app.id) {
                return invalid(format!("{name}: two apps have this id"));
            }
            if !keys.insert(&app.key) {
                return invalid(format!("{name}: two apps have the key {:?}", app.key));
            }
        }
        Ok(())
    }
}

impl AppConfig {
    /// The rules for one app, wherever it comes from (a file, a database row).
    pub fn validate(&self) -> Result<(), String> {
        let app = self;
        let name = format!("app {:?}", app.id);
        if app.id.is_empty() || app.key.is_empty() {
            return Err(format!("{name}: id and key must not be empty"));
        }
        if app.secret.is_empty() {
            return Err(format!("{name}: secret must not be empty"));
        }
        if !app.key.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?') {
            return Err(format!("{name}: key may only contain printable ASCII without '/' or '?'"));
        }
        if app.ping_interval == 0 {
            return Err(format!("{name}: ping_interval must be at least 1 second"));
        }
        if app.activity_timeout == 0 {
            return Err(format!("{name}: activity_timeout must be at least 1 second"));
        }
        if !(128..=MAX_MESSAGE_SIZE_LIMIT).contains(&app.max_message_size) {
            return Err(format!(
                "{name}: max_message_size must be between 128 bytes and {} MiB",
                MAX_MESSAGE_SIZE_LIMIT >> 20
            ));
        }
        if app.rate_limiting.enabled && (app.rate_limiting.max_attempts == 0 || app.rate_limiting.decay_seconds == 0) {
            return Err(format!("{name}: rate_limiting needs max_attempts and decay_seconds of at least 1"));
        }
        for hook in &app.webhooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(format!("{name}: webhook url {:?} must start with http:// or https://", hook.url));
            }
            if let Some(bad) = hook.event_types.iter().find(|t| !super::WEBHOOK_EVENT_TYPES.contains(&t.as_str())) {
                return Err(format!(
                    "{name}: unknown webhook event type {bad:?} (expected any of {})",
                    super::WEBHOOK_EVENT_TYPES.join(", ")
                ));
            }
        }
        if app.history.len() > MAX_HISTORY_RULES {
            return Err(format!("{name}: at most {MAX_HISTORY_RULES} history rules"));
        }
        for rule in &app.history {
            let pattern = &rule.channels;
            let valid = |b: u8| b == b'*' || crate::protocol::channel::is_channel_char(b);
            if pattern.is_empty() || pattern.len() > 200 || !pattern.bytes().all(valid) {
                return Err(format!(
                    "{name}: history channels {pattern:?} must be a channel name in which * stands for any characters"
                ));
            }
            if !(1..=MAX_HISTORY_SIZE).contains(&rule.size) {
                return Err(format!("{name}: history size for {pattern:?} must be 1 to {MAX_HISTORY_SIZE}"));
            }
            if !(1..=MAX_HISTORY_TTL_S).contains(&rule.ttl_s) {
                return Err(format!("{name}: history ttl_s for {pattern:?} must be 1 to {MAX_HISTORY_TTL_S}"));
            }
        }
        if app.max_presence_members == 0 {
            return Err(format!("{name}: max_presence_members must be at least 1"));
        }
        if app.allowed_origins.is_empty() {
            return Err(format!("{name}: allowed_origins must not be empty (use [\"*\"] to allow any)"));
        }
        Ok(())
    }
}
