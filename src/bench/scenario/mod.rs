//! The scenarios of docs/benchmarking.md, and what they share: the before/after readings of the server and the
//! kernel, the receive loops, the drain, and the verdict.
//!
//! Each scenario is a file that reads top to bottom as the run happens.

mod fanout;
mod idle;
mod presence;
mod rooms;
mod storm;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::args::{Plan, Scenario, Transport};
use super::client::{Client, Talker};
use super::connect::{open_clients, SetupReport};
use super::counters::Counters;
use super::latency::Latencies;
use super::procfs::{self, ProcSample, SockStat};
use super::progress::{Peaks, Progress};
use super::report::{BenchFigures, KernelFigures, Params, Report, ServerFigures, Traffic, P99_LIMIT_MS};

/// Runs the plan's scenario to its end.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let mut run = Run::new(plan);
    match run.plan.args.transport {
        Transport::Ws => {}
        Transport::Sse => {
            super::stream::run::<super::sse::Client>(&mut run).await?;
            return Ok(run.finish().await);
        }
        Transport::XhrStreaming => {
            super::stream::run::<super::xhr::Client>(&mut run).await?;
            return Ok(run.finish().await);
        }
    }
    match run.plan.args.scenario {
        Scenario::Fanout => fanout::run(&mut run).await?,
        Scenario::Rooms => rooms::run(&mut run).await?,
        Scenario::Idle => idle::run(&mut run).await?,
        Scenario::Storm => storm::run(&mut run).await?,
        Scenario::Presence => presence::run(&mut run).await?,
    }
    Ok(run.finish().await)
}

/// One run's shared state and readings.
pub struct Run {
    pub plan: Plan,
    pub counters: Arc<Counters>,
    pub latencies: Arc<Latencies>,
    pub report: Report,
    progress: Option<Progress>,
    server_before: Option<ProcSample>,
    bench_before: Option<ProcSample>,
    /// Machine busy time, the server's and the bench's CPU when the measured phase began.
    measure_from: Option<(f64, Option<ProcSample>, Option<ProcSample>)>,
    sock_before: SockStat,
    /// Bytes on the clients' sockets when the measured phase began, and how many came during it.
    wire_from: u64,
    wire_measured: u64,
}

impl Run {
    fn new(plan: Plan) -> Run {
        let counters = Arc::new(Counters::default());
        let latencies = Arc::new(Latencies::new());
        let a = &plan.args;
        let report = Report {
            scenario: a.scenario.name().into(),
            label: a.label.clone(),
            target: plan.target.to_string(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            params: Params {
                connections: a.connections,
                rate: a.rate,
                payload_bytes: a.payload,
                duration_s: a.duration,
                room_size: matches!(a.scenario, Scenario::Rooms | Scenario::Presence).then_some(a.room_size),
                publishers: (a.scenario == Scenario::Fanout).then_some(a.publishers),
                source_addrs: plan.sources.len(),
                payload_kind: a.payload_kind,
                compression: a.compression,
                inflate_sample: a.inflate_sample,
            },
            ..Report::default()
        };
        let progress = Progress::start(a.scenario.name(), counters.clone(), latencies.clone(), a.server_pid, a.quiet);
        let server_before = a.server_pid.and_then(|pid| procfs::sample(&pid.to_string()));
        let mut run = Run {
            counters,
            latencies,
            report,
            progress: Some(progress),
            server_before,
            bench_before: procfs::sample("self"),
            measure_from: None,
            sock_before: procfs::sockstat().unwrap_or_default(),
            wire_from: 0,
            wire_measured: 0,
            plan,
        };
        run.report.machine.cores = procfs::machine_cores().unwrap_or(1);
        run.report.machine.loadavg_1m_before = procfs::loadavg().unwrap_or_default();
        if run.plan.args.server_pid.is_some() && run.server_before.is_none() {
            run.report.notes.push("--server-pid given but /proc/PID is unreadable: no server figures".into());
        }
        run
    }

    pub fn server_sample(&self) -> Option<ProcSample> {
        self.plan.args.server_pid.and_then(|pid| procfs::sample(&pid.to_string()))
    }

    /// Marks the start of the measured phase; returns the server's reading for [`Run::measured`].
    pub fn begin_measure(&mut self) -> Option<ProcSample> {
        self.wire_from = Counters::get(&self.counters.wire_bytes);
        let server = self.server_sample();
        if let Some(busy) = procfs::machine_busy_seconds() {
            self.measure_from = Some((busy, server, procfs::sample("self")));
        }
        server
    }

    /// Records the set-up and the server's and kernel's state once every client is connected and settled.
    pub fn connected(&mut self, setup: SetupReport) {
        let subscribed = setup.subscribed.max(1) as f64;
        let sock_now = procfs::sockstat().unwrap_or_default();
        self.report.kernel = KernelFigures {
            before: self.sock_before,
            connected: sock_now,
            tcp_mem_per_connection_bytes: sock_now.tcp_mem_bytes.saturating_sub(self.sock_before.tcp_mem_bytes) as f64
                / subscribed,
        };
        if let (Some(pid), Some(before), Some(now)) =
            (self.plan.args.server_pid, self.server_before, self.server_sample())
        {
            self.report.server = Some(ServerFigures {
                pid,
                rss_before_bytes: before.rss_bytes,
                rss_connected_bytes: now.rss_bytes,
                rss_per_connection_bytes: now.rss_bytes.saturating_sub(before.rss_bytes) as f64 / subscribed,
                ..ServerFigures::default()
            });
        }
        self.report.setup = setup;
    }

    /// Records the server's CPU over the measured phase (from `from` to now) and its RSS at the end.
    pub fn measured(&mut self, from: Option<ProcSample>) {
        self.wire_measured = Counters::get(&self.counters.wire_bytes).saturating_sub(self.wire_from);
        let to = self.server_sample();
        if let (Some((busy_from, server_from, me_from)), Some(busy_to), Some(me_to)) =
            (self.measure_from, procfs::machine_busy_seconds(), procfs::sample("self"))
        {
            let wall = me_from.map(|m| me_to.at.duration_since(m.at).as_secs_f64()).unwrap_or_default();
            let server = match (server_from, to) {
                (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
                _ => 0.0,
            };
            let me = me_from.map(|m| me_to.cpu_seconds - m.cpu_seconds).unwrap_or_default();
            if wall > 0.0 {
                self.report.machine.other_cpu_percent = (100.0 * (busy_to - busy_from - server - me) / wall).max(0.0);
            }
        }
        if let (Some(server), Some(from), Some(to)) = (self.report.server.as_mut(), from, to) {
            server.cpu_percent = procfs::cpu_percent(&from, &to);
            server.cpu_seconds = to.cpu_seconds - from.cpu_seconds;
            server.measured_seconds = to.at.duration_since(from.at).as_secs_f64();
            server.rss_after_bytes = to.rss_bytes;
        }
    }

    async fn finish(mut self) -> Report {
        let peaks: Peaks = match self.progress.take() {
            Some(p) => p.finish().await,
            None => Peaks::default(),
        };
        let me = procfs::sample("self");
        let cpu = match (self.bench_before, me) {
            (Some(a), Some(b)) => procfs::cpu_percent(&a, &b),
            _ => 0.0,
        };
        let report = &mut self.report;
        report.bench = BenchFigures {
            cpu_percent: cpu,
            rss_peak_bytes: peaks.bench_rss_bytes.max(me.map(|m| m.rss_bytes).unwrap_or_default()),
        };
        if let Some(server) = report.server.as_mut() {
            server.rss_peak_bytes = peaks.server_rss_bytes.max(server.rss_after_bytes).max(server.rss_connected_bytes);
        }
        report.deflate_agreed = Counters::get(&self.counters.deflate_agreed);
        report.deliveries_unopened = Counters::get(&self.counters.unopened);
        if let Some(t) = report.traffic.as_mut() {
            t.wire_bytes = self.wire_measured;
            t.wire_bytes_per_delivery = self.wire_measured as f64 / t.deliveries.max(1) as f64;
            if let Some(server) = report.server.as_mut() {
                server.cpu_us_per_delivery = server.cpu_seconds * 1e6 / t.deliveries.max(1) as f64;
            }
        }
        report.failures = self.counters.reasons();
        judge(report, Counters::get(&self.counters.disconnects));
        self.report
    }
}

/// Decides whether the load held and says why not.
fn judge(report: &mut Report, disconnects: u64) {
    let mut notes = Vec::new();
    if report.traffic.is_none() && disconnects > 0 {
        notes.push(format!("{disconnects} connections were closed by the server while idle"));
    }
    if report.params.compression && report.deflate_agreed < report.setup.subscribed as u64 {
        notes.push(format!(
            "--compression: only {} of {} connections agreed to permessage-deflate",
            report.deflate_agreed, report.setup.subscribed
        ));
    }
    if report.setup.failed > 0 {
        notes.push(format!(
            "{} of {} connections failed to connect and subscribe",
            report.setup.failed, report.setup.requested
        ));
    }
    if let Some(t) = &report.traffic {
        if t.lost > 0 {
            notes.push(format!("{} deliveries lost (or still in flight after the drain timeout)", t.lost));
        }
        if t.achieved_events_per_sec < 0.95 * t.offered_events_per_sec {
            notes.push(format!(
                "offered {:.0} events/s but only {:.0}/s were sent: the publisher fell behind (server answers too slow?)",
                t.offered_events_per_sec, t.achieved_events_per_sec
            ));
        }
        if t.disconnects > 0 {
            notes.push(format!("{} connections were closed during the run", t.disconnects));
        }
        if t.publish_errors > 0 {
            notes.push(format!("{} publish requests failed", t.publish_errors));
        }
    }
    if let Some(l) = &report.latency {
        if l.p99_ms > P99_LIMIT_MS {
            notes.push(format!("p99 {:.1} ms is above {P99_LIMIT_MS} ms", l.p99_ms));
        }
    }
    let held = notes.is_empty() && report.setup.subscribed > 0;
    if report.bench.cpu_percent > 90.0 {
        notes.push(format!(
            "the bench used {:.0}% of a core: it may be the bottleneck, figures are a lower bound",
            report.bench.cpu_percent
        ));
    }
    report.held = held;
    report.notes.extend(notes);
}

/// Receive loops of every client, stoppable together.
pub struct Receivers {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Receivers {
    /// Starts `client.run` for every client; `talker(i)` gives client `i` something to send, if anything.
    pub fn start(
        run: &Run,
        clients: Vec<(usize, Client)>,
        mut talker: impl FnMut(usize) -> Option<Talker>,
    ) -> Receivers {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (i, client) in clients {
            let t = talker(i);
            tasks.spawn(client.run(i, stop.clone(), run.counters.clone(), run.latencies.clone(), t));
        }
        Receivers { stop, tasks }
    }

    /// Stops every loop and closes the sockets (bounded: a stuck task is abandoned after 10 s).
    pub async fn stop(mut self) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// Waits until every owed delivery has arrived or `timeout` passes; returns when it ended.
pub async fn drain(counters: &Counters, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if Counters::get(&counters.delivered) >= Counters::get(&counters.expected) || now >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The traffic figures of a send window `[start, until]` followed by a drain that ended at `drained`.
pub fn traffic(
    counters: &Counters,
    offered: f64,
    start: Instant,
    until: Instant,
    drained: Instant,
    publisher_max_lag: Duration,
) -> Traffic {
    let send_seconds = until.duration_since(start).as_secs_f64();
    let drain_seconds = drained.saturating_duration_since(until).as_secs_f64();
    let sent = Counters::get(&counters.events_sent);
    let expected = Counters::get(&counters.expected);
    let delivered = Counters::get(&counters.delivered);
    Traffic {
        offered_events_per_sec: offered,
        events_sent: sent,
        achieved_events_per_sec: sent as f64 / send_seconds.max(1e-9),
        publish_errors: Counters::get(&counters.publish_errors),
        publisher_max_lag_ms: publisher_max_lag.as_secs_f64() * 1_000.0,
        send_seconds,
        expected_deliveries: expected,
        deliveries: delivered,
        lost: expected.saturating_sub(delivered),
        deliveries_per_sec: delivered as f64 / (send_seconds + drain_seconds).max(1e-9),
        drain_seconds,
        disconnects: Counters::get(&counters.disconnects),
        server_errors: Counters::get(&counters.server_errors),
        // Filled in at the end of the run, from the readings of the measured phase.
        wire_bytes: 0,
        wire_bytes_per_delivery: 0.0,
    }
}

/// Clients in groups of `--room-size` (client `i` joins `channel(i / size)`): how many of each group did
/// subscribe, i.e. how many deliveries an event sent in the group is owed (plus the sender).
pub struct Groups {
    size: usize,
    members: HashMap<usize, u64>,
}

impl Groups {
    /// Opens the plan's clients in their groups; fails when none could subscribe.
    pub async fn open(
        run: &mut Run,
        channel: fn(usize) -> String,
    ) -> anyhow::Result<(Groups, Vec<(usize, Client)>, SetupReport)> {
        let plan = run.plan.clone();
        let size = plan.args.room_size;
        let (clients, setup) =
            open_clients(&plan, plan.args.connect_concurrency, |i| channel(i / size), &run.counters).await;
        if clients.is_empty() {
            run.connected(setup);
            anyhow::bail!("no client could subscribe: is the server running on {}?", plan.target);
        }
        let mut members: HashMap<usize, u64> = HashMap::new();
        for (i, _) in &clients {
            *members.entry(i / size).or_default() += 1;
        }
        Ok((Groups { size, members }, clients, setup))
    }

    /// Others in client `i`'s group that did subscribe.
    pub fn peers_of(&self, i: usize) -> u64 {
        self.members.get(&(i / self.size)).copied().unwrap_or(1).saturating_sub(1)
    }
}

/// The measured phase of a run whose clients send on their own schedules (`rooms`, `presence`): settle,
/// measure until `until`, drain, and report `offered` events/s against what arrived.
pub async fn measure_talkers(
    run: &mut Run,
    receivers: Receivers,
    setup: SetupReport,
    (start, until): (Instant, Instant),
    offered: f64,
) {
    let plan = run.plan.clone();
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);
    let server_from = run.begin_measure();
    tokio::time::sleep_until(until).await;
    // A send due just before `until` may still be on its way out.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let drained = drain(&run.counters, plan.drain_timeout).await;
    run.measured(server_from);
    run.report.traffic = Some(traffic(&run.counters, offered, start, until, drained, Duration::ZERO));
    run.report.latency = Some(run.latencies.total());
    receivers.stop().await;
}
