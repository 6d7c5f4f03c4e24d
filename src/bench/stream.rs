//! The `fanout` and `idle` scenarios with HTTP subscribers (`--transport sse` or `xhr_streaming`)
//! instead of WebSocket ones, so every transport is measured by the same generator, publisher and
//! report. What differs between transports is only the client: a [`Subscriber`] connects and
//! subscribes, then counts the stamped events it receives; this file opens many of them and runs
//! the scenario around them.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::args::{Plan, Scenario};
use super::connect::SetupReport;
use super::counters::Counters;
use super::latency::{Latencies, SetupTimes};
use super::publisher::{publish, PublishPlan};
use super::scenario::{drain, traffic, Run};

/// The channel of the `fanout` scenario (the WebSocket one's name).
const FANOUT_CHANNEL: &str = "bench-fanout";

/// One subscriber of an HTTP transport.
pub trait Subscriber: Sized + Send + 'static {
    /// The `--transport` value, for notes and errors.
    const NAME: &'static str;

    /// Connects from `source` to `to`, subscribes to `channel`, and returns once the subscription
    /// is confirmed.
    fn connect(
        source: Ipv4Addr,
        to: SocketAddr,
        key: &str,
        channel: &str,
    ) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// Receives until `stop`, counting stamped events and recording their latency.
    fn run(
        self,
        index: usize,
        stop: CancellationToken,
        counters: Arc<Counters>,
        latencies: Arc<Latencies>,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs the plan's scenario with `S` subscribers.
pub async fn run<S: Subscriber>(run: &mut Run) -> anyhow::Result<()> {
    run.report.notes.push(format!("transport: {}", S::NAME));
    match run.plan.args.scenario {
        Scenario::Fanout => fanout::<S>(run).await,
        Scenario::Idle => idle::<S>(run).await,
        other => bail!("--transport {} runs fanout and idle, not {}", S::NAME, other.name()),
    }
}

async fn fanout<S: Subscriber>(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let channel = FANOUT_CHANNEL;
    let (clients, setup) = open_clients::<S>(&plan, |_| channel.to_owned(), &run.counters).await;
    let subscribers = clients.len() as u64;
    if subscribers == 0 {
        run.connected(setup);
        bail!("no {} client could subscribe: is the server running on {}?", S::NAME, plan.target);
    }
    let receivers = Receivers::start(run, clients);
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);
    let server_from = run.begin_measure();
    let start = Instant::now() + Duration::from_millis(50);
    let until = start + plan.duration;
    let publish_plan = Arc::new(PublishPlan {
        target: plan.target,
        app_id: plan.args.app_id.clone(),
        key: plan.args.key.clone(),
        secret: plan.args.secret.clone(),
        channel: channel.to_owned(),
        rate: plan.args.rate,
        payload: plan.args.payload,
        payload_kind: plan.args.payload_kind,
        publishers: plan.args.publishers,
        start,
        until,
        subscribers,
    });
    let outcome = publish(publish_plan, run.counters.clone()).await;
    let send_end = outcome.finished_at.unwrap_or(until).max(until);
    let drained = drain(&run.counters, plan.drain_timeout).await;
    run.measured(server_from);
    run.report.traffic = Some(traffic(&run.counters, plan.args.rate, start, send_end, drained, outcome.max_lag));
    run.report.latency = Some(run.latencies.total());
    receivers.stop().await;
    Ok(())
}

async fn idle<S: Subscriber>(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let (clients, setup) = open_clients::<S>(&plan, |i| format!("bench-idle-{i}"), &run.counters).await;
    if clients.is_empty() {
        run.connected(setup);
        bail!("no {} client could subscribe: is the server running on {}?", S::NAME, plan.target);
    }
    let receivers = Receivers::start(run, clients);
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);
    let server_from = run.begin_measure();
    tokio::time::sleep(plan.duration).await;
    run.measured(server_from);
    receivers.stop().await;
    Ok(())
}

/// Opens the plan's clients, `--connect-concurrency` at a time; client `i` listens to `channel(i)`.
async fn open_clients<S: Subscriber>(
    plan: &Plan,
    channel: impl Fn(usize) -> String,
    counters: &Arc<Counters>,
) -> (Vec<(usize, S)>, SetupReport) {
    let n = plan.args.connections;
    let concurrency = plan.args.connect_concurrency;
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let times = Arc::new(SetupTimes::default());
    let started = std::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (gate, times, counters) = (gate.clone(), times.clone(), counters.clone());
        let source = plan.sources[i % plan.sources.len()];
        let to = plan.subscribe_targets[i % plan.subscribe_targets.len()];
        let (key, channel, timeout) = (plan.args.key.clone(), channel(i), plan.connect_timeout);
        tasks.spawn(async move {
            let Ok(_permit) = gate.acquire_owned().await else { return None };
            let began = std::time::Instant::now();
            match tokio::time::timeout(timeout, S::connect(source, to, &key, &channel)).await {
                Ok(Ok(client)) => {
                    Counters::add(&counters.connected, 1);
                    Counters::add(&counters.subscribed, 1);
                    times.record(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
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
            last_done = std::time::Instant::now();
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

/// The receive loops, stoppable together.
struct Receivers {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Receivers {
    fn start<S: Subscriber>(run: &Run, clients: Vec<(usize, S)>) -> Receivers {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (i, client) in clients {
            tasks.spawn(client.run(i, stop.clone(), run.counters.clone(), run.latencies.clone()));
        }
        Receivers { stop, tasks }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
            self.tasks.abort_all();
        }
    }
}
