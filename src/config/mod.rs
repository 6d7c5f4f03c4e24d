//! Configuration: a TOML file, then Reverb's environment variables, then command-line flags, each
//! overriding the one before; validated once at start-up so that a mistake stops the server with a
//! message naming the setting, instead of surfacing as odd behaviour later.

mod apps_store;
mod env;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use apps_store::{AppsDriver, AppsStoreConfig, DEFAULT_REFRESH_INTERVAL_MS};
pub use env::{apply_app_env, apply_env};
pub use validate::{parse_network, ConfigError};

/// The sample printed by `herald config`; also a test fixture (it must parse and validate).
pub const SAMPLE: &str = include_str!("sample.toml");

/// The embedded demo app served when no app is configured anywhere.
pub const DEFAULT_APP_ID: &str = "123456";
pub const DEFAULT_APP_KEY: &str = "app-key";
pub const DEFAULT_APP_SECRET: &str = "app-secret";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub scaling: ScalingConfig,
    #[serde(default)]
    pub apps_store: AppsStoreConfig,
    /// Set when nothing configured an app and the embedded demo app is served.
    #[serde(skip)]
    pub demo_app: bool,
    /// Set when the demo app is served and no host was given, so only 127.0.0.1 is listened on: its
    /// secret is published.
    #[serde(skip)]
    pub demo_loopback: bool,
    /// Set when the demo is on only because of `herald start --debug` (not `[server] demo = true`):
    /// it then answers only requests whose `Host` is this machine's loopback.
    #[serde(skip)]
    pub demo_from_debug: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// A prefix for every route (Reverb's `REVERB_SERVER_PATH`), e.g. `/ws`; empty for none.
    pub path: String,
    /// Largest HTTP API request body, in bytes (413 above it).
    pub max_request_size: usize,
    /// Time a client has to complete the HTTP/WebSocket handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Bytes a connection's outbound queue may hold before the client is dropped as a slow consumer.
    pub max_outbound_buffer: usize,
    /// Most open connections (HTTP and WebSocket) for the whole server; more are closed at accept.
    pub max_connections: usize,
    /// Most open connections from one client IP address; more are closed at accept.
    pub max_connections_per_ip: u32,
    /// Addresses or networks (`10.0.0.0/8`, `::1`) only `max_connections` applies to: every client
    /// behind a proxy shares its address. Loopback by default (a same-host proxy, local tools).
    pub per_ip_limit_exempt: Vec<String>,
    /// The live dashboard at `/dashboard`: on with `--debug`, or when set here. Needs
    /// `dashboard_password` (HTTP Basic, any user name) unless `--debug`.
    pub dashboard: bool,
    pub dashboard_password: Option<String>,
    /// The chat demo at `/demo` (with its own auth endpoint): on with `--debug`, or when set here.
    pub demo: bool,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// A WebSocket echo endpoint for conformance runs (Autobahn TestSuite), e.g. "/echo"; off when absent.
    pub echo_path: Option<String>,
    /// permessage-deflate (RFC 7692) for clients that offer it: `on` (the default) or `off`.
    pub compression: Switch,
    /// Messages shorter than this, in bytes, go out uncompressed even when compression is agreed.
    pub compression_threshold: usize,
    /// An HTTP fallback session (`xhr_streaming`, `xhr_polling`) that no receive request has
    /// reached for this long, in milliseconds, expires like a closed socket.
    pub http_session_timeout_ms: u64,
    /// Seconds of silence after which an SSE stream gets a comment line, so proxies keep it open.
    pub sse_heartbeat_seconds: u64,
    pub tls: Option<TlsConfig>,
}

/// An `"on"` / `"off"` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    #[default]
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// The default `compression_threshold`: below it a Pusher event saves too few bytes to be worth
/// the compressor's reset (see README, Compression).
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 256;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 8080,
            path: String::new(),
            max_request_size: 100_000,
            handshake_timeout_ms: 10_000,
            max_outbound_buffer: 4 * 1024 * 1024,
            max_connections: 50_000,
            max_connections_per_ip: 1000,
            per_ip_limit_exempt: vec!["127.0.0.0/8".into(), "::1".into()],
            echo_path: None,
            compression: Switch::On,
            compression_threshold: DEFAULT_COMPRESSION_THRESHOLD,
            http_session_timeout_ms: 30_000,
            sse_heartbeat_seconds: 15,
            metrics_token: None,
            dashboard: false,
            dashboard_password: None,
            demo: false,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    #[serde(default = "defaults::allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// Seconds of silence after which the server pings a client.
    #[serde(default = "defaults::ping_interval")]
    pub ping_interval: u64,
    /// Seconds announced to clients in `connection_established`: they ping after that much silence.
    #[serde(default = "defaults::activity_timeout")]
    pub activity_timeout: u64,
    /// Largest WebSocket message and event `data`, in bytes.
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: usize,
    /// Most simultaneous connections for the app; none when absent.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Client events (`client-*`, Echo's `whisper`) on private and presence channels; on by default,
    /// as in Reverb.
    #[serde(default = "defaults::yes")]
    pub enable_client_messages: bool,
    /// Who may send client events to a channel: `members` (subscribers of it, the default) or `all`
    /// (any connection of the app). Reverb's `REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM`.
    #[serde(default)]
    pub accept_client_events_from: ClientEventsFrom,
    /// Client events per second per connection (Pusher allows 10); 0 for no limit.
    #[serde(default = "defaults::client_event_rate_limit")]
    pub client_event_rate_limit: u32,
    /// Most members of one presence channel (Pusher: 100).
    #[serde(default = "defaults::max_presence_members")]
    pub max_presence_members: usize,
    /// Largest presence `user_info`, in bytes (Pusher: 1 KB).
    #[serde(default = "defaults::max_presence_user_info_size")]
    pub max_presence_user_info_size: usize,
    /// Most user ids in a sign-in's `watchlist` (Pusher allows 100); a longer one refuses the
    /// sign-in, so an application bug shows instead of some watched users silently never reported.
    #[serde(default = "defaults::max_watchlist_size")]
    pub max_watchlist_size: usize,
    /// Send `pusher_internal:subscription_count` to subscribers when a channel's count changes
    /// (opt-in, as on Pusher).
    #[serde(default)]
    pub subscription_count_events: bool,
    /// Signed HTTP API requests per second for the app (429 above); 0 for no limit.
    #[serde(default = "defaults::api_rate_limit")]
    pub api_rate_limit: u32,
    /// Reverb's message rate limiting: every message a connection sends counts.
    #[serde(default)]
    pub rate_limiting: RateLimiting,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Key for the plain endpoint's HS256 tokens; the app secret when absent.
    #[serde(default)]
    pub jwt_secret: Option<String>,
    /// Accept the plain endpoint's token as `?token=` (off: URLs leak into proxy logs).
    #[serde(default)]
    pub plain_query_token: bool,
    /// Webhook events are batched over this window, in milliseconds.
    #[serde(default = "defaults::webhook_batch_ms")]
    pub webhook_batch_ms: u64,
    /// `channel_vacated` and `member_removed` wait this long (ms), and are dropped if the channel
    /// fills or the member rejoins meanwhile (a page reload); 0 sends them at once.
    #[serde(default = "defaults::webhook_delay_ms")]
    pub webhook_delay_ms: u64,
    /// Channels that keep a history clients can resume from (`[[apps.history]]`); the first rule
    /// whose pattern matches a channel is its rule, and a channel no rule matches keeps none.
    #[serde(default)]
    pub history: Vec<HistoryRule>,
    /// The secret this app had before its last rotation, while it is still accepted (see
    /// `[apps_store] secret_grace_seconds`); set by the store, never read from a file.
    #[serde(skip)]
    pub previous_secret: Option<PreviousSecret>,
    /// The secret JWTs were signed with before the last rotation ([`AppConfig::jwt_signing_secret`]
    /// changed: a new `jwt_secret`, or a new app secret when there is none), while still accepted;
    /// set by the store, never read from a file.
    #[serde(skip)]
    pub previous_jwt_secret: Option<PreviousSecret>,
}

/// A rotated-out secret and the moment it stops being accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousSecret {
    pub secret: String,
    pub until: std::time::Instant,
}

/// One `[[apps.history]]` rule: channels matching `channels` keep their last `size` events, each
/// for `ttl_s` seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRule {
    /// A channel name in which `*` stands for any run of characters (`chat-*`, `*`, `orders`).
    pub channels: String,
    #[serde(default = "defaults::history_size")]
    pub size: usize,
    #[serde(default = "defaults::history_ttl_s")]
    pub ttl_s: u64,
}

impl AppConfig {
    /// An app with every optional setting at its default.
    pub fn new(id: &str, key: &str, secret: &str) -> Self {
        AppConfig {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            allowed_origins: defaults::allowed_origins(),
            ping_interval: defaults::ping_interval(),
            activity_timeout: defaults::activity_timeout(),
            max_message_size: defaults::max_message_size(),
            max_connections: None,
            enable_client_messages: true,
            accept_client_events_from: ClientEventsFrom::Members,
            client_event_rate_limit: defaults::client_event_rate_limit(),
            max_presence_members: defaults::max_presence_members(),
            max_presence_user_info_size: defaults::max_presence_user_info_size(),
            max_watchlist_size: defaults::max_watchlist_size(),
            subscription_count_events: false,
            api_rate_limit: defaults::api_rate_limit(),
            rate_limiting: RateLimiting::default(),
            webhooks: Vec::new(),
            jwt_secret: None,
            plain_query_token: false,
            webhook_batch_ms: defaults::webhook_batch_ms(),
            webhook_delay_ms: defaults::webhook_delay_ms(),
            previous_secret: None,
            previous_jwt_secret: None,
            history: Vec::new(),
        }
    }

    /// The secrets a signature may be made with now: the current one, then the previous one while
    /// its grace lasts. Whatever Herald signs itself uses `secret`.
    pub fn accepted_secrets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret.as_str()).chain(still_accepted(&self.previous_secret))
    }

    /// The secret the app's backend signs JWTs with (the plain endpoint's, an SSE bearer's): its
    /// own `jwt_secret` when it has one, else the app secret.
    pub fn jwt_signing_secret(&self) -> &str {
        self.jwt_secret.as_deref().unwrap_or(&self.secret)
    }

    /// The secrets a JWT may be signed with now: [`AppConfig::jwt_signing_secret`], then the one
    /// before it while its grace lasts, so a rotation (of `jwt_secret`, or of the secret standing
    /// in for it) does not refuse the tokens already handed out.
    pub fn accepted_jwt_secrets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.jwt_signing_secret()).chain(still_accepted(&self.previous_jwt_secret))
    }
}

fn still_accepted(previous: &Option<PreviousSecret>) -> Option<&str> {
    previous.as_ref().filter(|p| std::time::Instant::now() < p.until).map(|p| p.secret.as_str())
}

/// Who may send client events to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientEventsFrom {
    /// Only connections subscribed to the channel.
    #[default]
    Members,
    /// Any connection of the app.
    All,
}

/// Reverb's per-connection message rate limit (`REVERB_APP_RATE_LIMITING_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimiting {
    pub enabled: bool,
    /// Messages allowed per `decay_seconds`.
    pub max_attempts: u32,
    pub decay_seconds: u64,
    /// Close the connection (4301) instead of refusing the message.
    pub terminate: bool,
}

impl Default for RateLimiting {
    fn default() -> Self {
        RateLimiting { enabled: false, max_attempts: 60, decay_seconds: 60, terminate: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Any of channel_occupied, channel_vacated, member_added, member_removed, client_event,
    /// cache_miss, subscription_count; all of them when empty.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub filter: Option<WebhookFilter>,
}

/// Only events of channels whose names match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookFilter {
    pub channel_name_starts_with: Option<String>,
    pub channel_name_ends_with: Option<String>,
}

/// The webhook event types Pusher defines.
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    pub enabled: bool,
    /// `redis://[user:password@]host:port[/db]`; several, comma-separated, for a Redis Cluster's
    /// seed nodes. Default `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Prefix of Herald's Redis keys and its pub/sub channel (Reverb's `REVERB_SCALING_CHANNEL`),
    /// so several deployments can share a Redis. Default `reverb`.
    pub channel: Option<String>,
    /// A node silent this long (no heartbeat) is declared dead and its presence members removed.
    pub node_timeout_ms: Option<u64>,
    /// How the other nodes reach this one, e.g. `http://10.0.0.5:8080`: they relay requests of the
    /// HTTP fallback sessions this node holds to it. Default `http://{host}:{port}` when `[server]
    /// host` is a specific address; without one, a load balancer must keep each session on one node.
    pub node_url: Option<String>,
}

impl ScalingConfig {
    /// The Redis URLs to use.
    pub fn urls(&self) -> Vec<String> {
        let urls: Vec<String> = self
            .redis_url
            .as_deref()
            .unwrap_or("redis://127.0.0.1:6379")
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        urls
    }

    /// This node's URL for the others (see `node_url`), if it has one.
    pub fn node_url(&self, server: &ServerConfig) -> Option<String> {
        if let Some(url) = &self.node_url {
            return Some(url.trim_end_matches('/').to_owned());
        }
        let ip: std::net::IpAddr = server.host.parse().ok()?;
        if ip.is_unspecified() {
            return None;
        }
        let scheme = if server.tls.is_some() { "https" } else { "http" };
        let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
        Some(format!("{scheme}://{host}:{}", server.port))
    }

    pub fn prefix(&self) -> String {
        self.channel.clone().unwrap_or_else(|| "reverb".into())
    }

    pub fn node_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.node_timeout_ms.unwrap_or(30_000))
    }
}

mod defaults {
    pub fn allowed_origins() -> Vec<String> {
        vec!["*".into()]
    }
    pub fn ping_interval() -> u64 {
        60
    }
    pub fn activity_timeout() -> u64 {
        30
    }
    pub fn max_message_size() -> usize {
        10_000
    }
    pub fn client_event_rate_limit() -> u32 {
        10
    }
    pub fn webhook_batch_ms() -> u64 {
        100
    }
    pub fn webhook_delay_ms() -> u64 {
        3000
    }
    pub fn history_size() -> usize {
        100
    }
    pub fn history_ttl_s() -> u64 {
        3600
    }
    pub fn yes() -> bool {
        true
    }
    pub fn api_rate_limit() -> u32 {
        1000
    }
    pub fn max_presence_members() -> usize {
        100
    }
    pub fn max_presence_user_info_size() -> usize {
        1000
    }
    pub fn max_watchlist_size() -> usize {
        100
    }
}

/// Command-line settings that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File(e.to_string()))
    }

    /// Loads the whole configuration: file (optional), then `env`, then `overrides`; validates it.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut host_given =
            overrides.host.is_some() || env("REVERB_SERVER_HOST").is_some_and(|h| !h.trim().is_empty());
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File(format!("cannot read {}: {e}", path.display())))?;
                let config = Config::from_toml(&text).map_err(|e| match e {
                    ConfigError::File(msg) => ConfigError::File(format!("{}: {msg}", path.display())),
                    other => other,
                })?;
                let table: Option<toml::Table> = text.parse().ok();
                host_given |= table.as_ref().and_then(|t| t.get("server")).and_then(|s| s.get("host")).is_some();
                config
            }
            None => Config::default(),
        };
        apply_env(&mut config, env)?;
        if config.apps.is_empty() && !config.apps_store.driver.is_database() {
            config.apps.push(AppConfig::new(DEFAULT_APP_ID, DEFAULT_APP_KEY, DEFAULT_APP_SECRET));
            config.demo_app = true;
            // Its secret is published: reachable from this machine only, unless a host was asked for.
            if !host_given {
                config.server.host = "127.0.0.1".into();
                config.demo_loopback = true;
            }
        }
        apply_app_env(&mut config, env)?;
        if let Some(host) = &overrides.host {
            config.server.host = host.clone();
        }
        if let Some(port) = overrides.port {
            config.server.port = port;
        }
        config.validate()?;
        Ok(config)
    }

    /// Whether the embedded demo app is served because nothing configured one (start-up then says
    /// so loudly, and shows its well-known secret).
    pub fn uses_default_app(&self) -> bool {
        self.demo_app
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    fn load(file: Option<&str>, env: &[(&str, &str)], overrides: Overrides) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("herald-config-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let result = Config::load(file.map(|_| path.as_path()), &env_of(env), &overrides);
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    #[test]
    fn nothing_configured_serves_the_demo_app_on_loopback() {
        let c = load(None, &[], Overrides::default()).unwrap();
        assert_eq!(c.server.host, "127.0.0.1");
        assert!(c.demo_loopback);
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.apps.len(), 1);
        assert_eq!((c.apps[0].id.as_str(), c.apps[0].key.as_str()), ("123456", "app-key"));
        assert!(c.uses_default_app());
    }

    #[test]
    fn a_host_given_anywhere_is_kept_for_the_demo_app() {
        let flag = Overrides { host: Some("0.0.0.0".into()), port: None };
        let c = load(None, &[], flag).unwrap();
        assert_eq!((c.server.host.as_str(), c.demo_loopback), ("0.0.0.0", false));
        let c = load(None, &[("REVERB_SERVER_HOST", "0.0.0.0")], Overrides::default()).unwrap();
        assert_eq!((c.server.host.as_str(), c.demo_loopback), ("0.0.0.0", false));
        let c = load(Some("[server]\nhost = \"0.0.0.0\"\n"), &[], Overrides::default()).unwrap();
        assert_eq!((c.server.host.as_str(), c.demo_loopback), ("0.0.0.0", false));
        // A configured app keeps the usual default.
        let file = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let c = load(Some(file), &[], Overrides::default()).unwrap();
        assert_eq!((c.server.host.as_str(), c.demo_loopback), ("0.0.0.0", false));
    }

    #[test]
    fn an_app_from_the_file_is_not_the_demo_app_even_with_demo_credentials() {
        let file = "[[apps]]\nid = \"123456\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n";
        assert!(!load(Some(file), &[], Overrides::default()).unwrap().uses_default_app());
    }

    #[test]
    fn the_sample_parses_and_validates() {
        let c = load(Some(SAMPLE), &[], Overrides::default()).unwrap();
        assert!(!c.apps.is_empty());
        assert_eq!((c.server.compression, c.server.compression_threshold), (Switch::On, DEFAULT_COMPRESSION_THRESHOLD));
    }

    #[test]
    fn compression_is_on_or_off() {
        let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let c = load(Some(&format!("[server]\ncompression = \"off\"\n{app}")), &[], Overrides::default()).unwrap();
        assert!(!c.server.compression.is_on());
        assert!(load(Some(&format!("[server]\ncompression = \"yes\"\n{app}")), &[], Overrides::default()).is_err());
    }

    #[test]
    fn flags_override_env_which_overrides_the_file() {
        let file = "[server]\nhost = \"10.0.0.1\"\nport = 7000\npath = \"/file\"\n";
        let c =
            load(Some(file), &[("REVERB_SERVER_PORT", "7001"), ("REVERB_SERVER_PATH", "/env")], Overrides::default())
                .unwrap();
        assert_eq!((c.server.host.as_str(), c.server.port, c.server.path.as_str()), ("10.0.0.1", 7001, "/env"));
        let c = load(
            Some(file),
            &[("REVERB_SERVER_PORT", "7001")],
            Overrides { host: Some("127.0.0.1".into()), port: Some(7002) },
        )
        .unwrap();
        assert_eq!((c.server.host.as_str(), c.server.port), ("127.0.0.1", 7002));
    }

    #[test]
    fn reverb_env_defines_the_app() {
        let c = load(
            None,
            &[
                ("REVERB_APP_ID", "42"),
                ("REVERB_APP_KEY", "k"),
                ("REVERB_APP_SECRET", "s"),
                ("REVERB_APP_PING_INTERVAL", "15"),
                ("REVERB_APP_ACTIVITY_TIMEOUT", "20"),
                ("REVERB_APP_MAX_MESSAGE_SIZE", "2048"),
                ("REVERB_APP_MAX_CONNECTIONS", "5"),
                ("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM", "all"),
            ],
            Overrides::default(),
        )
        .unwrap();
        let app = &c.apps[0];
        assert_eq!((app.id.as_str(), app.key.as_str(), app.secret.as_str()), ("42", "k", "s"));
        assert_eq!((app.ping_interval, app.activity_timeout, app.max_message_size), (15, 20, 2048));
        assert_eq!(app.max_connections, Some(5));
        assert_eq!(app.accept_client_events_from, ClientEventsFrom::All);
        assert!(!c.uses_default_app());
    }

    #[test]
    fn per_app_env_applies_to_the_demo_app_too() {
        let c = load(None, &[("REVERB_APP_PING_INTERVAL", "5")], Overrides::default()).unwrap();
        assert!(c.uses_default_app());
        assert_eq!(c.apps[0].ping_interval, 5);
    }

    #[test]
    fn laravel_redis_settings_make_the_url() {
        let env = [("REDIS_HOST", "10.1.2.3"), ("REDIS_PORT", "6380"), ("REDIS_PASSWORD", "pw"), ("REDIS_DB", "2")];
        let c = load(None, &env, Overrides::default()).unwrap();
        assert_eq!(c.scaling.urls(), vec!["redis://:pw@10.1.2.3:6380/2".to_owned()]);
        let env = [("REDIS_HOST", "r"), ("REDIS_USERNAME", "u"), ("REDIS_PASSWORD", "p")];
        assert_eq!(
            load(None, &env, Overrides::default()).unwrap().scaling.urls(),
            vec!["redis://u:p@r:6379".to_owned()]
        );
        // REDIS_URL wins; several URLs are a cluster's seeds.
        let env = [("REDIS_URL", "redis://a:1, redis://b:2"), ("REDIS_HOST", "ignored")];
        assert_eq!(
            load(None, &env, Overrides::default()).unwrap().scaling.urls(),
            vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()]
        );
        let bad = [("REVERB_SCALING_ENABLED", "true"), ("REDIS_URL", "http://nope")];
        assert!(load(None, &bad, Overrides::default()).unwrap_err().to_string().contains("redis_url"));
    }

    #[test]
    fn a_node_url_from_the_environment_overrides_the_file() {
        let file = "[server]\nhost = \"0.0.0.0\"\n[scaling]\nnode_url = \"http://file:1\"\n";
        let c = load(Some(file), &[], Overrides::default()).unwrap();
        assert_eq!(c.scaling.node_url(&c.server).as_deref(), Some("http://file:1"));
        let c = load(Some(file), &[("HERALD_NODE_URL", "http://10.1.2.3:8080/")], Overrides::default()).unwrap();
        assert_eq!(c.scaling.node_url(&c.server).as_deref(), Some("http://10.1.2.3:8080"));
    }

    #[test]
    fn a_database_store_from_herald_or_soketi_names() {
        let c = load(
            None,
            &[("HERALD_APPS_DRIVER", "postgres"), ("DATABASE_URL", "postgres://u@db/apps")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.apps_store.driver, AppsDriver::Postgres);
        assert_eq!(c.apps_store.url.as_deref(), Some("postgres://u@db/apps"));
        assert!(c.apps.is_empty() && !c.uses_default_app(), "no demo app when a database serves the apps");

        let soketi = [
            ("SOKETI_APP_MANAGER_DRIVER", "mysql"),
            ("SOKETI_DB_MYSQL_HOST", "10.0.0.9"),
            ("SOKETI_DB_MYSQL_USERNAME", "soketi"),
            ("SOKETI_DB_MYSQL_PASSWORD", "p@ss word"),
            ("SOKETI_DB_MYSQL_DATABASE", "main"),
            ("SOKETI_APP_MANAGER_MYSQL_TABLE", "soketi_apps"),
        ];
        let c = load(None, &soketi, Overrides::default()).unwrap();
        assert_eq!(c.apps_store.driver, AppsDriver::Mysql);
        assert_eq!(c.apps_store.url.as_deref(), Some("mysql://soketi:p%40ss%20word@10.0.0.9:3306/main"));
        assert_eq!(c.apps_store.table, "soketi_apps");

        let err =
            |file: Option<&str>, env: &[(&str, &str)]| load(file, env, Overrides::default()).unwrap_err().to_string();
        assert!(err(None, &[("HERALD_APPS_DRIVER", "dynamodb")]).contains("HERALD_APPS_DRIVER"));
        assert!(err(None, &[("HERALD_APPS_DRIVER", "postgres")]).contains("apps_store.url"));
        let both = "[apps_store]\ndriver = \"postgres\"\nurl = \"postgres://h/db\"\n[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"s\"\n";
        assert!(err(Some(both), &[]).contains("[[apps]]"));
        let bad_table = "[apps_store]\ndriver = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"apps; drop\"\n";
        assert!(err(Some(bad_table), &[]).contains("apps_store.table"));
    }

    #[test]
    fn clear_errors() {
        let err =
            |file: Option<&str>, env: &[(&str, &str)]| load(file, env, Overrides::default()).unwrap_err().to_string();
        assert!(err(None, &[("REVERB_SERVER_PORT", "eighty")]).contains("REVERB_SERVER_PORT"));
        assert!(err(None, &[("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM", "everyone")]).contains("members or all"));
        let partial = err(None, &[("REVERB_APP_KEY", "k")]);
        assert!(partial.contains("REVERB_APP_ID: is missing, but REVERB_APP_KEY is set"), "{partial}");
        assert!(err(Some("[server]\nprot = 1\n"), &[]).contains("prot"));
        let dup = "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"s\"\n[[apps]]\nid=\"2\"\nkey=\"k\"\nsecret=\"t\"\n";
        assert!(err(Some(dup), &[]).contains("key"));
        assert!(err(Some("[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"\"\n"), &[]).contains("secret"));
        assert!(err(Some("[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"s\"\nping_interval = 0\n"), &[])
            .contains("ping_interval"));
        assert!(err(Some("[server]\npath = \"nope\"\n"), &[]).contains("path"));
        assert!(err(Some("[server]\nmax_connections_per_ip = 0\n"), &[]).contains("max_connections_per_ip"));
        assert!(err(Some("[server]\nmax_connections = 0\n"), &[]).contains("max_connections"));
        for bad in ["10.0.0.0/33", "::1/129", "localhost", "10.0.0/8"] {
            let file = format!("[server]\nper_ip_limit_exempt = [{bad:?}]\n");
            assert!(err(Some(&file), &[]).contains("per_ip_limit_exempt"), "{bad}");
        }
        let file_app = "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"s\"\n";
        assert!(err(Some(file_app), &[("REVERB_APP_ID", "2"), ("REVERB_APP_KEY", "x"), ("REVERB_APP_SECRET", "y")])
            .contains("REVERB_APP_"));
    }
}
