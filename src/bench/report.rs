//! The result of a run: one struct, printed as a table for people and written as JSON for scripts
//! (`scripts/bench-plot`, BENCHMARKS.md). Field names carry their unit so a JSON reader needs no legend.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::args::PayloadKind;
use super::connect::SetupReport;
use super::latency::Percentiles;
use super::procfs::SockStat;

/// p99 above this, or any loss, means the offered rate did not hold (docs/benchmarking.md).
pub const P99_LIMIT_MS: f64 = 50.0;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub label: String,
    pub target: String,
    /// Seconds since 1970 when the run started.
    pub started_unix: u64,
    pub params: Params,
    pub setup: SetupReport,
    pub traffic: Option<Traffic>,
    /// Publish-to-receive latency of every delivery.
    pub latency: Option<Percentiles>,
    pub server: Option<ServerFigures>,
    pub kernel: KernelFigures,
    pub bench: BenchFigures,
    pub machine: MachineFigures,
    /// Connections whose handshake agreed to permessage-deflate.
    #[serde(default)]
    pub deflate_agreed: u64,
    /// Compressed deliveries counted without being inflated (outside the `--inflate-sample`).
    #[serde(default)]
    pub deliveries_unopened: u64,
    /// Whether the offered load held: every delivery arrived, p99 under 50 ms, the offered rate was sent.
    pub held: bool,
    /// Why it did not hold, or anything else worth a look.
    pub notes: Vec<String>,
    /// Failure reasons seen, counted.
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Params {
    pub connections: usize,
    pub rate: f64,
    pub payload_bytes: usize,
    pub duration_s: u64,
    pub room_size: Option<usize>,
    pub publishers: Option<usize>,
    pub source_addrs: usize,
    #[serde(default)]
    pub payload_kind: PayloadKind,
    /// The clients offered permessage-deflate (`--compression`).
    #[serde(default)]
    pub compression: bool,
    /// One client in this many inflates what arrives compressed.
    #[serde(default)]
    pub inflate_sample: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Traffic {
    /// Events per second asked for (fanout: published; rooms: all clients together).
    pub offered_events_per_sec: f64,
    pub events_sent: u64,
    pub achieved_events_per_sec: f64,
    pub publish_errors: u64,
    /// Worst lateness of a publish against its schedule.
    pub publisher_max_lag_ms: f64,
    pub send_seconds: f64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Expected minus received (never negative).
    pub lost: u64,
    /// Deliveries divided by the send window.
    pub deliveries_per_sec: f64,
    /// How long after the last send the deliveries took to arrive (or the drain timeout).
    pub drain_seconds: f64,
    pub disconnects: u64,
    pub server_errors: u64,
    /// Bytes the clients read off their sockets from the start of the measured phase to the end of
    /// the drain: frames as sent, compressed or not, headers included.
    #[serde(default)]
    pub wire_bytes: u64,
    /// `wire_bytes` / deliveries.
    #[serde(default)]
    pub wire_bytes_per_delivery: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    pub pid: u32,
    /// Before the bench opened anything.
    pub rss_before_bytes: u64,
    /// When the connections were all set up and settled.
    pub rss_connected_bytes: u64,
    /// At the end of the measured phase.
    pub rss_after_bytes: u64,
    pub rss_peak_bytes: u64,
    /// (RSS when connected - RSS before) / subscribed connections.
    pub rss_per_connection_bytes: f64,
    /// CPU during the measured phase (traffic, idle window or storm), as % of one core.
    pub cpu_percent: f64,
    pub cpu_seconds: f64,
    pub measured_seconds: f64,
    /// Server CPU (utime + stime) over the measured phase per delivery, in microseconds.
    #[serde(default)]
    pub cpu_us_per_delivery: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelFigures {
    pub before: SockStat,
    pub connected: SockStat,
    /// Growth of TCP buffer memory per connection (both ends are on this machine).
    pub tcp_mem_per_connection_bytes: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchFigures {
    pub cpu_percent: f64,
    pub rss_peak_bytes: u64,
}

/// How busy the machine was with other work during the measured phase: figures taken under noise say so.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineFigures {
    pub cores: usize,
    pub loadavg_1m_before: f64,
    /// CPU used by everything except the server and the bench, as % of one core.
    pub other_cpu_percent: f64,
}

impl Report {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let label = if self.label.is_empty() { String::new() } else { format!(" ({})", self.label) };
        row("scenario", format!("{}{label} against {}", self.scenario, self.target));
        let p = &self.params;
        row(
            "parameters",
            format!(
                "{} connections, rate {}, payload {} B{}, {} s{}{}",
                p.connections,
                p.rate,
                p.payload_bytes,
                match p.payload_kind {
                    PayloadKind::Padding => "",
                    PayloadKind::Json => " of JSON",
                    PayloadKind::Eloquent => " of Eloquent JSON",
                },
                p.duration_s,
                p.room_size.map(|r| format!(", rooms of {r}")).unwrap_or_default(),
                if p.compression { ", permessage-deflate offered" } else { "" },
            ),
        );
        if p.compression {
            row(
                "deflate agreed",
                format!(
                    "{} of {} connections; {} deliveries counted unopened (1 client in {} inflates)",
                    self.deflate_agreed, self.setup.subscribed, self.deliveries_unopened, p.inflate_sample
                ),
            );
        }
        let s = &self.setup;
        row("subscribed", format!("{} of {} ({} failed)", s.subscribed, s.requested, s.failed));
        row(
            "connect+subscribe",
            format!(
                "{:.0}/s, all in {:.2} s (concurrency {}); one client p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
                s.handshakes_per_sec,
                s.seconds_until_all_subscribed,
                s.concurrency,
                s.per_client.p50_ms,
                s.per_client.p99_ms,
                s.per_client.max_ms
            ),
        );
        if let Some(t) = &self.traffic {
            row(
                "events sent",
                format!(
                    "{} ({:.0}/s offered, {:.0}/s achieved, {} errors, publisher lag max {:.1} ms)",
                    t.events_sent,
                    t.offered_events_per_sec,
                    t.achieved_events_per_sec,
                    t.publish_errors,
                    t.publisher_max_lag_ms
                ),
            );
            row("deliveries", format!("{} of {} expected, {} lost", t.deliveries, t.expected_deliveries, t.lost));
            row("deliveries/s", format!("{:.0}", t.deliveries_per_sec));
            row("on the wire", format!("{:.1} B per delivery ({} B in all)", t.wire_bytes_per_delivery, t.wire_bytes));
            row("drain", format!("{:.2} s after the last send", t.drain_seconds));
            row("closed by server", format!("{} connections, {} pusher:error", t.disconnects, t.server_errors));
        }
        if let Some(l) = &self.latency {
            row(
                "latency",
                format!(
                    "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples)",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
                ),
            );
        }
        if let Some(sv) = &self.server {
            row(
                "server RSS",
                format!(
                    "{:.1} MB before, {:.1} MB connected, {:.1} MB after, {:.1} MB peak; {:.0} B per connection",
                    mb(sv.rss_before_bytes),
                    mb(sv.rss_connected_bytes),
                    mb(sv.rss_after_bytes),
                    mb(sv.rss_peak_bytes),
                    sv.rss_per_connection_bytes
                ),
            );
            let per_delivery = if sv.cpu_us_per_delivery > 0.0 {
                format!(", {:.3} us per delivery", sv.cpu_us_per_delivery)
            } else {
                String::new()
            };
            row(
                "server CPU",
                format!("{:.1}% of a core over {:.1} s{per_delivery}", sv.cpu_percent, sv.measured_seconds),
            );
        }
        let k = &self.kernel;
        row(
            "kernel TCP memory",
            format!(
                "{:.1} MB -> {:.1} MB ({} -> {} sockets); {:.0} B per connection",
                mb(k.before.tcp_mem_bytes),
                mb(k.connected.tcp_mem_bytes),
                k.before.tcp_inuse,
                k.connected.tcp_inuse,
                k.tcp_mem_per_connection_bytes
            ),
        );
        row(
            "bench itself",
            format!("{:.0}% cpu, {:.1} MB peak RSS", self.bench.cpu_percent, mb(self.bench.rss_peak_bytes)),
        );
        if self.machine.other_cpu_percent > 0.0 || self.machine.loadavg_1m_before > 0.0 {
            row(
                "other load",
                format!(
                    "{:.0}% of a core used by other processes while measuring (load average {:.2} before, {} cores)",
                    self.machine.other_cpu_percent, self.machine.loadavg_1m_before, self.machine.cores
                ),
            );
        }
        row("held", if self.held { "yes".into() } else { "NO".into() });
        for note in &self.notes {
            row("note", note.clone());
        }
        for (reason, count) in &self.failures {
            row("failure", format!("{count} x {reason}"));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$} | {v}");
        }
        out
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}
