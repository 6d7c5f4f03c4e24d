//! `--transport sse`: the `fanout` and `idle` scenarios with Server-Sent Events subscribers
//! (`GET /sse/{key}?channels=...`) instead of WebSocket ones, so both transports are measured by the
//! same generator, publisher and report.
//!
//! The client is raw HTTP/1.1 over a TcpStream (what `EventSource` sends): it reads the response
//! head, waits for `pusher:subscription_succeeded`, then splits the body on blank lines and looks
//! for the stamp in each event, as the WebSocket client does in each frame. Its read buffer is
//! 4 KiB, like the WebSocket client's, so 19,000 of them stay cheap.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
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
use super::{stamp, target};

/// The channel of the `fanout` scenario (the WebSocket one's name).
const FANOUT_CHANNEL: &str = "bench-fanout";
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest event accepted (an event that never ends is a broken server).
const MAX_EVENT: usize = 1 << 20;

/// Runs the plan's scenario with SSE subscribers.
pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    run.report.notes.push("transport: sse".into());
    match run.plan.args.scenario {
        Scenario::Fanout => fanout(run).await,
        Scenario::Idle => idle(run).await,
        other => bail!("--transport sse runs fanout and idle, not {}", other.name()),
    }
}

async fn fanout(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let channel = FANOUT_CHANNEL;
    let (clients, setup) = open_clients(&plan, |_| channel.to_owned(), &run.counters).await;
    let subscribers = clients.len() as u64;
    if subscribers == 0 {
        run.connected(setup);
        bail!("no SSE client could subscribe: is the server running on {}?", plan.target);
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

async fn idle(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let (clients, setup) = open_clients(&plan, |i| format!("bench-idle-{i}"), &run.counters).await;
    if clients.is_empty() {
        run.connected(setup);
        bail!("no SSE client could subscribe: is the server running on {}?", plan.target);
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

/// One SSE subscriber.
struct Client {
    tcp: TcpStream,
    /// The start of an event whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Client {
    /// Connects from `source`, asks for the stream of `channel`, and waits for its confirmation.
    async fn connect(source: Ipv4Addr, to: SocketAddr, key: &str, channel: &str) -> anyhow::Result<Client> {
        target::assert_loopback(to)?;
        let socket = TcpSocket::new_v4().context("socket")?;
        socket.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("bind {source}"))?;
        let mut tcp = socket.connect(to).await.context("connect")?;
        tcp.set_nodelay(true).context("nodelay")?;
        let request =
            format!("GET /sse/{key}?channels={channel} HTTP/1.1\r\nHost: {to}\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.context("send request")?;
        let mut got = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if got.len() > MAX_HEAD || tcp.read_buf(&mut got).await.context("read response")? == 0 {
                bail!("no response head");
            }
        };
        if !got.starts_with(b"HTTP/1.1 200") {
            let shown =
                String::from_utf8_lossy(&got[..head_end.min(got.len())]).lines().next().unwrap_or("").to_owned();
            bail!("refused: {shown}");
        }
        let mut client = Client { tcp, partial: got.split_off(head_end) };
        loop {
            let mut subscribed = false;
            client.take_events(|event| subscribed |= contains(event, b"event: pusher:subscription_succeeded"))?;
            if subscribed {
                return Ok(client);
            }
            let mut buf = [0u8; 4096];
            let n = client.tcp.read(&mut buf).await.context("read stream")?;
            if n == 0 {
                bail!("stream ended before its subscription was confirmed");
            }
            client.partial.extend_from_slice(&buf[..n]);
        }
    }

    /// Hands every complete event in `partial` to `each`, keeping the unfinished rest.
    fn take_events(&mut self, mut each: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let mut start = 0;
        while let Some(at) = find_blank_line(&self.partial[start..]) {
            each(&self.partial[start..start + at]);
            start += at + 2;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_EVENT {
            bail!("an event longer than {MAX_EVENT} bytes");
        }
        Ok(())
    }

    /// Receives until `stop`, counting stamped events and recording their latency.
    async fn run(mut self, index: usize, stop: CancellationToken, counters: Arc<Counters>, latencies: Arc<Latencies>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                read = self.tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        Counters::add(&counters.disconnects, 1);
                        counters.note("stream ended");
                        return;
                    }
                    Ok(n) => n,
                },
            };
            self.partial.extend_from_slice(&buf[..n]);
            let now = stamp::now_nanos();
            let outcome = self.take_events(|event| {
                let text = std::str::from_utf8(event).unwrap_or("");
                if let Some(micros) = stamp::latency_micros(text, now) {
                    Counters::add(&counters.delivered, 1);
                    latencies.record(index, micros);
                } else if text.contains("event: pusher:error") {
                    Counters::add(&counters.server_errors, 1);
                    counters.note(&format!("server said: {text}"));
                }
            });
            if let Err(e) = outcome {
                Counters::add(&counters.disconnects, 1);
                counters.note(&format!("{e:#}"));
                return;
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where the first `\n\n` (the end of an event) starts.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|b| *b == b'\n') {
        let at = from + at;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Opens the plan's clients, `--connect-concurrency` at a time; client `i` listens to `channel(i)`.
async fn open_clients(
    plan: &Plan,
    channel: impl Fn(usize) -> String,
    counters: &Arc<Counters>,
) -> (Vec<(usize, Client)>, SetupReport) {
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
            match tokio::time::timeout(timeout, Client::connect(source, to, &key, &channel)).await {
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
    fn start(run: &Run, clients: Vec<(usize, Client)>) -> Receivers {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_and_the_rest_is_kept() {
        let (a, _b) = std::net::TcpListener::bind("127.0.0.1:0").map(|l| (l.local_addr().unwrap(), l)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let tcp = TcpStream::connect(a).await.unwrap();
            let mut client =
                Client { tcp, partial: b"retry: 1\n\nevent: e\ndata: {}\nid: 1\n\nevent: f\ndata".to_vec() };
            let mut seen = Vec::new();
            client.take_events(|e| seen.push(String::from_utf8(e.to_vec()).unwrap())).unwrap();
            assert_eq!(seen, ["retry: 1", "event: e\ndata: {}\nid: 1"]);
            assert_eq!(client.partial, b"event: f\ndata");
        });
        assert_eq!(find_blank_line(b"a\nb\n\nc"), Some(3));
        assert_eq!(find_blank_line(b"a\nb\n"), None);
    }
}
