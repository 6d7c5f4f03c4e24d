//! Opening many clients: bounded concurrency, a timeout per client, and the set-up figures (handshakes/s,
//! time until all are subscribed, per-client connect+subscribe time).
//!
//! Failures are counted with their reason rather than aborting the run: a server that refuses some
//! connections under a storm is itself a result worth reporting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::args::Plan;
use super::client::Client;
use super::counters::Counters;
use super::latency::{Percentiles, SetupTimes};

/// What opening the clients took.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SetupReport {
    pub requested: usize,
    pub subscribed: usize,
    pub failed: usize,
    /// From the first connect to the last subscription confirmed.
    pub seconds_until_all_subscribed: f64,
    /// Connect + WebSocket handshake + subscribe, completed per second.
    pub handshakes_per_sec: f64,
    /// Connect + subscribe time of one client.
    pub per_client: Percentiles,
    pub concurrency: usize,
}

/// Opens `plan.args.connections` clients, `concurrency` at a time; client `i` subscribes to `channel(i)`.
/// Returns the subscribed clients with their index, in no particular order.
pub async fn open_clients(
    plan: &Plan,
    concurrency: usize,
    channel: impl Fn(usize) -> String,
    counters: &Arc<Counters>,
) -> (Vec<(usize, Client)>, SetupReport) {
    let n = plan.args.connections;
    let url = Arc::new(plan.ws_url());
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let times = Arc::new(SetupTimes::default());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (gate, url, times, counters) = (gate.clone(), url.clone(), times.clone(), counters.clone());
        let source = plan.sources[i % plan.sources.len()];
        let to = plan.subscribe_targets[i % plan.subscribe_targets.len()];
        let channel = channel(i);
        let (key, secret) = (plan.args.key.clone(), plan.args.secret.clone());
        let timeout = plan.connect_timeout;
        let deflate = (plan.args.compression, i % plan.args.inflate_sample.max(1) == 0);
        tasks.spawn(async move {
            let Ok(_permit) = gate.acquire_owned().await else { return None };
            let began = Instant::now();
            let setup = async {
                let mut client = Client::connect(source, to, &url, deflate, &counters).await?;
                Counters::add(&counters.connected, 1);
                client.subscribe(&channel, &key, &secret).await?;
                anyhow::Ok(client)
            };
            match tokio::time::timeout(timeout, setup).await {
                Ok(Ok(client)) => {
                    Counters::add(&counters.subscribed, 1);
                    times.record(micros(began.elapsed()));
                    Some((i, client))
                }
                Ok(Err(e)) => {
                    Counters::add(&counters.setup_failed, 1);
                    counters.note(&format!("setup: {e:#}"));
                    None
                }
                Err(_) => {
                    Counters::add(&counters.setup_failed, 1);
                    counters.note(&format!("setup: no answer within {}s", timeout.as_secs()));
                    None
                }
            }
        });
    }
    let mut clients = Vec::with_capacity(n);
    let mut last_done = started;
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(pair)) = joined {
            clients.push(pair);
            last_done = Instant::now();
        }
    }
    let seconds = last_done.duration_since(started).as_secs_f64();
    let report = SetupReport {
        requested: n,
        subscribed: clients.len(),
        failed: n - clients.len(),
        seconds_until_all_subscribed: seconds,
        handshakes_per_sec: if seconds > 0.0 { clients.len() as f64 / seconds } else { 0.0 },
        per_client: times.percentiles(),
        concurrency,
    };
    (clients, report)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
