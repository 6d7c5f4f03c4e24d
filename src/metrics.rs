//! Prometheus metrics at `GET /metrics`.
//!
//! Counters are recorded where things happen, at most once per batch on the hot path (a write of
//! many frames counts them in one call); gauges that are cheaper to read than to maintain
//! (connections, subscriptions, channels, cluster health, webhook totals) are read at scrape time
//! into a [`Snapshot`], which the server fills: this module sits below every other and imports none.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Installs the process-wide recorder (once). Without it, recording is a no-op.
///
/// The exporter keeps every histogram sample until it is drained into the buckets, which a scrape
/// does; a server nobody scrapes (the default) would grow with every publish (~20 bytes each,
/// 60 KiB a minute in the soak), so a thread drains them every [`UPKEEP_INTERVAL`].
pub fn install() {
    HANDLE.get_or_init(|| {
        let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &buckets)
            .and_then(|b| b.install_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("herald-metrics".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
        if let Err(e) = spawned {
            tracing::warn!("metrics: no upkeep thread ({e}); histogram samples are drained only by scrapes");
        }
        handle
    });
}

/// The scrape-time readings: what is cheaper to read when asked than to keep up to date.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Open connections on this node, per served app.
    pub connections: Vec<(String, usize)>,
    pub subscriptions: usize,
    pub channels: usize,
    /// Apps with state on this node (made by their first connection, freed after their last).
    pub active_apps: usize,
    /// pusher-js HTTP fallback sessions (`xhr_streaming`, `xhr_polling`) open on this node.
    pub http_sessions: usize,
    pub cluster_healthy: bool,
    /// Whether the app store was readable at its last read, its failed reads, and its apps.
    pub apps_store_healthy: bool,
    pub apps_store_failed_refreshes: u64,
    pub apps_served: usize,
    pub webhooks_delivered: u64,
    pub webhooks_failed_attempts: u64,
    pub webhooks_given_up: u64,
    pub webhooks_dropped: u64,
}

/// The text exposition, with the snapshot's gauges refreshed first.
pub fn render(snapshot: &Snapshot) -> String {
    for (app_id, count) in &snapshot.connections {
        gauge!("herald_connections", "app" => app_id.clone()).set(*count as f64);
    }
    gauge!("herald_subscriptions").set(snapshot.subscriptions as f64);
    gauge!("herald_channels").set(snapshot.channels as f64);
    gauge!("herald_active_apps").set(snapshot.active_apps as f64);
    gauge!("herald_http_sessions").set(snapshot.http_sessions as f64);
    gauge!("herald_adapter_healthy").set(if snapshot.cluster_healthy { 1.0 } else { 0.0 });
    gauge!("herald_apps_store_healthy").set(if snapshot.apps_store_healthy { 1.0 } else { 0.0 });
    counter!("herald_apps_store_failed_refreshes_total").absolute(snapshot.apps_store_failed_refreshes);
    gauge!("herald_apps").set(snapshot.apps_served as f64);
    counter!("herald_webhook_deliveries_total").absolute(snapshot.webhooks_delivered);
    counter!("herald_webhook_failed_attempts_total").absolute(snapshot.webhooks_failed_attempts);
    counter!("herald_webhook_given_up_total").absolute(snapshot.webhooks_given_up);
    counter!("herald_webhook_dropped_total").absolute(snapshot.webhooks_dropped);
    HANDLE.get().map(PrometheusHandle::render).unwrap_or_default()
}

/// How long the last successful read of the app store took (the table read, parsed and swapped in).
pub fn apps_store_read(took: Duration) {
    gauge!("herald_apps_store_read_seconds").set(took.as_secs_f64());
}

pub fn connection_opened(app_id: &str) {
    counter!("herald_connections_total", "app" => app_id.to_owned()).increment(1);
}

pub fn disconnected(code: Option<u16>) {
    let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
    counter!("herald_disconnects_total", "code" => code).increment(1);
}

pub fn error_sent(code: u16) {
    counter!("herald_errors_total", "code" => code.to_string()).increment(1);
}

pub fn slow_consumer_dropped() {
    counter!("herald_slow_consumer_disconnects_total").increment(1);
}

pub fn received(bytes: usize) {
    counter!("herald_messages_received_total").increment(1);
    counter!("herald_bytes_received_total").increment(bytes as u64);
}

pub fn sent(messages: usize, bytes: usize) {
    counter!("herald_messages_sent_total").increment(messages as u64);
    counter!("herald_bytes_sent_total").increment(bytes as u64);
}

/// permessage-deflate: bytes of messages sent compressed, before and after compression (counted
/// per delivery, so the ratio is the bandwidth saved).
pub fn compressed(before: usize, after: usize) {
    counter!("herald_compression_bytes_in_total").increment(before as u64);
    counter!("herald_compression_bytes_out_total").increment(after as u64);
}

pub fn http_request(status: u16) {
    counter!("herald_http_requests_total", "status" => status.to_string()).increment(1);
}

pub fn published(deliveries: usize, seconds: f64) {
    counter!("herald_events_published_total").increment(1);
    counter!("herald_deliveries_total").increment(deliveries as u64);
    histogram!("herald_fanout_seconds").record(seconds);
}

/// A connection closed at accept because it was over a cap (`global` or `per_ip`).
pub fn connection_refused(reason: &'static str) {
    counter!("herald_connections_refused_total", "reason" => reason).increment(1);
}

/// A dashboard request refused with 429 after repeated wrong passwords from its address.
pub fn dashboard_auth_refused() {
    counter!("herald_dashboard_auth_refused_total").increment(1);
}
