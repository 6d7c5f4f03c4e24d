//! A line a second while the run goes on, so a person sees a stall or a collapse as it happens, and the
//! peak memory of the server and of the bench (sampled on the same tick, since a final reading would miss
//! a peak during a burst).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use super::latency::Latencies;
use super::procfs;

/// Peaks seen while the progress task ran.
#[derive(Debug, Default, Clone, Copy)]
pub struct Peaks {
    pub server_rss_bytes: u64,
    pub bench_rss_bytes: u64,
}

pub struct Progress {
    stop: CancellationToken,
    handle: JoinHandle<Peaks>,
}

impl Progress {
    /// Starts printing (unless `quiet`) and sampling once a second.
    pub fn start(
        scenario: &'static str,
        counters: Arc<Counters>,
        latencies: Arc<Latencies>,
        server_pid: Option<u32>,
        quiet: bool,
    ) -> Progress {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let mut peaks = Peaks::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tick.tick().await;
            let mut last_server = server_pid.and_then(|pid| procfs::sample(&pid.to_string()));
            let (mut last_sent, mut last_delivered) = (0, 0);
            // Bounded: the run's own deadline cancels `token`; this cap only guards against a bug there.
            for _ in 0..24 * 3600 {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Some(me) = procfs::sample("self") {
                    peaks.bench_rss_bytes = peaks.bench_rss_bytes.max(me.rss_bytes);
                }
                let server = server_pid.and_then(|pid| procfs::sample(&pid.to_string()));
                let mut server_text = String::new();
                if let Some(now) = server {
                    peaks.server_rss_bytes = peaks.server_rss_bytes.max(now.rss_bytes);
                    let cpu = last_server.map(|before| procfs::cpu_percent(&before, &now)).unwrap_or_default();
                    server_text = format!("  server {:.1} MB {:.0}% cpu", mb(now.rss_bytes), cpu);
                    last_server = Some(now);
                }
                let sent = Counters::get(&counters.events_sent);
                let delivered = Counters::get(&counters.delivered);
                let last = latencies.take_interval();
                if !quiet {
                    eprintln!(
                        "[{:>4}s] {scenario}: subscribed {} failed {}  sent {}/s  delivered {}/s (of {} owed, {} got)  \
                         p50 {:.2} ms p99 {:.2} ms max {:.2} ms  closed {}{server_text}",
                        started.elapsed().as_secs(),
                        Counters::get(&counters.subscribed),
                        Counters::get(&counters.setup_failed),
                        sent - last_sent,
                        delivered - last_delivered,
                        Counters::get(&counters.expected),
                        delivered,
                        last.p50_ms,
                        last.p99_ms,
                        last.max_ms,
                        Counters::get(&counters.disconnects),
                    );
                }
                (last_sent, last_delivered) = (sent, delivered);
            }
            peaks
        });
        Progress { stop, handle }
    }

    /// Stops the ticker and returns the peaks it saw.
    pub async fn finish(self) -> Peaks {
        self.stop.cancel();
        self.handle.await.unwrap_or_default()
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}
