//! `herald bench` flags, and the checks that make every run bounded before it starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::target;

/// Connections one bench process may open. The per-process fd cap here is 20,000 (hard); the rest is kept
/// for the publisher's sockets, stdio and the runtime.
pub const MAX_CONNECTIONS: usize = 19_000;
/// Longest measured phase of a run.
pub const MAX_DURATION_SECS: u64 = 300;
/// Highest offered rate (events/s for fanout, per client for rooms): far above what one core can deliver.
pub const MAX_RATE: u64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 1 public channel x N subscribers; events published through `batch_events` at --rate events/s.
    Fanout,
    /// N clients in private rooms of --room-size; each sends a `client-` event at --rate per second.
    Rooms,
    /// N connections each subscribed to its own channel, no traffic: server RSS per connection, idle CPU.
    Idle,
    /// N clients connect and subscribe all at once: time until all are subscribed, handshakes/s.
    Storm,
    /// N clients in presence channels of --room-size members; one member per channel leaves and rejoins
    /// --rate times a second: member events/s delivered, member_added latency.
    Presence,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Rooms => "rooms",
            Scenario::Idle => "idle",
            Scenario::Storm => "storm",
            Scenario::Presence => "presence",
        }
    }
}

/// What fills an event's `data` after the stamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// `x` repeated: the cheapest text to make and read (and it compresses to almost nothing).
    #[default]
    Padding,
    /// A JSON object like an application broadcasts (an order with its customer, items and
    /// shipping), different in every event: what compression is measured on.
    Json,
    /// A Laravel broadcast of an Eloquent model with its relations (`toArray()`: repeated keys, shared
    /// timestamps, decimals as strings), different in every event.
    Eloquent,
}

/// How the subscribers connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// The Pusher WebSocket endpoint.
    Ws,
    /// Server-Sent Events (`GET /sse/{key}?channels=...`); fanout and idle only.
    Sse,
    /// pusher-js's `xhr_streaming` HTTP fallback (a held `POST .../xhr_streaming`, `xhr_send` to
    /// subscribe); fanout and idle only.
    #[value(name = "xhr_streaming")]
    XhrStreaming,
}

/// Load generator for Herald (or any Pusher-protocol server on this machine).
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Targets only 127.0.0.0/8. One process holds at most 19,000 connections (the fd cap is \
20,000 here): run several processes for more. Every phase has a timeout; a run always ends by itself.")]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// How subscribers connect: `ws` (the Pusher endpoint), `sse` or `xhr_streaming` (fanout and idle only).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Server address (127.0.0.0/8 only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Spread the subscribers over these ports of --host instead of --port (publishing still goes to
    /// --port): the `cluster` set-up, e.g. `--port 8081 --subscribe-ports 8081,8082` for two nodes.
    #[arg(long, value_delimiter = ',')]
    pub subscribe_ports: Vec<u16>,
    /// App id (for the HTTP API path).
    #[arg(long, default_value = "123456")]
    pub app_id: String,
    #[arg(long, default_value = "app-key")]
    pub key: String,
    /// App secret: signs HTTP API requests and private-channel subscriptions.
    #[arg(long, default_value = "app-secret")]
    pub secret: String,
    /// WebSocket connections to open (at most 19,000 per process).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Offered rate: events/s published (fanout), client events/s sent by each client (rooms), or
    /// leave-and-rejoin cycles/s per channel (presence).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Bytes of each event's `data` (the stamp is padded to this size).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// What `data` holds besides the stamp (fanout and rooms).
    #[arg(long, value_enum, default_value_t = PayloadKind::Padding)]
    pub payload_kind: PayloadKind,
    /// Offer permessage-deflate in every handshake (as browsers do) and inflate what the server
    /// compresses; the report counts the connections that agreed and the bytes on the wire.
    #[arg(long)]
    pub compression: bool,
    /// With --compression, one client in N inflates, checks and times every message; the others
    /// count compressed messages as deliveries unopened (inflating a million messages a second would
    /// make the generator the bottleneck). 1: every client inflates.
    #[arg(long, default_value_t = 10)]
    pub inflate_sample: usize,
    /// Seconds of traffic (fanout, rooms) or of watching idle connections (idle); at most 300.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Members per private room (rooms) or presence channel (presence).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// HTTP keep-alive connections publishing in parallel (fanout); each waits for its answer before the
    /// next request, so more of them are needed at high rates.
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Loopback source addresses to spread connections over: 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    pub source_addrs: u8,
    /// Connections being set up at once (fanout, rooms, idle; storm opens all at once).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds one connection may take to connect and subscribe.
    #[arg(long, default_value_t = 15)]
    pub connect_timeout: u64,
    /// Seconds to wait after the last event for deliveries still in flight.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    /// Seconds to let connections settle before measuring (idle).
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// The server's pid: its RSS and CPU are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A free-form label stored in the report (e.g. "herald" or "floor").
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Validated settings of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: BenchArgs,
    pub target: SocketAddr,
    /// Where subscribers connect, round-robin (just `target` unless --subscribe-ports).
    pub subscribe_targets: Vec<SocketAddr>,
    pub sources: Vec<Ipv4Addr>,
    pub duration: Duration,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub settle: Duration,
}

impl Plan {
    pub fn new(args: BenchArgs) -> anyhow::Result<Plan> {
        let target = target::loopback_target(&args.host, args.port)?;
        if args.connections == 0 {
            anyhow::bail!("--connections must be at least 1");
        }
        if args.connections > MAX_CONNECTIONS {
            anyhow::bail!(
                "--connections {}: one process holds at most {MAX_CONNECTIONS} (the file-descriptor cap is 20,000 \
                 per process here). Run several `herald bench` processes, e.g. {} processes of {} connections.",
                args.connections,
                args.connections.div_ceil(MAX_CONNECTIONS),
                args.connections.div_ceil(args.connections.div_ceil(MAX_CONNECTIONS)),
            );
        }
        if args.duration == 0 || args.duration > MAX_DURATION_SECS {
            anyhow::bail!("--duration must be 1..={MAX_DURATION_SECS} seconds");
        }
        if !(args.rate > 0.0 && args.rate <= MAX_RATE as f64) {
            anyhow::bail!("--rate must be above 0 and at most {MAX_RATE}");
        }
        if matches!(args.scenario, Scenario::Rooms | Scenario::Presence) && !(2..=100).contains(&args.room_size) {
            anyhow::bail!("--room-size must be 2..=100");
        }
        if args.payload > 1_000_000 {
            anyhow::bail!("--payload must be at most 1,000,000 bytes");
        }
        for (name, value, max) in [
            ("--publishers", args.publishers as u64, 64),
            ("--connect-concurrency", args.connect_concurrency as u64, MAX_CONNECTIONS as u64),
            ("--connect-timeout", args.connect_timeout, 120),
            ("--drain-timeout", args.drain_timeout, 120),
            ("--inflate-sample", args.inflate_sample as u64, 1_000_000),
        ] {
            if value == 0 || value > max {
                anyhow::bail!("{name} must be 1..={max}");
            }
        }
        if args.transport != Transport::Ws && !matches!(args.scenario, Scenario::Fanout | Scenario::Idle) {
            anyhow::bail!("--transport sse and xhr_streaming run the fanout and idle scenarios only");
        }
        if args.settle > 60 {
            anyhow::bail!("--settle must be at most 60 seconds");
        }
        let subscribe_targets = if args.subscribe_ports.is_empty() {
            vec![target]
        } else {
            args.subscribe_ports.iter().map(|p| target::loopback_target(&args.host, *p)).collect::<Result<_, _>>()?
        };
        Ok(Plan {
            target,
            subscribe_targets,
            sources: target::source_addrs(args.source_addrs),
            duration: Duration::from_secs(args.duration),
            connect_timeout: Duration::from_secs(args.connect_timeout),
            drain_timeout: Duration::from_secs(args.drain_timeout),
            settle: Duration::from_secs(args.settle),
            args,
        })
    }

    /// An upper bound on the whole run, used as a last-resort deadline: set-up, the measured phase, the
    /// drain and some slack for closing.
    pub fn hard_deadline(&self) -> Duration {
        self.connect_timeout * 4 + self.settle + self.duration + self.drain_timeout + Duration::from_secs(30)
    }

    /// The WebSocket URL the clients open.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/app/{}?protocol=7&client=herald-bench&version=0.1.0&flash=false", self.target, self.args.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(extra: &[&str]) -> anyhow::Result<Plan> {
        let mut argv = vec!["bench", "--scenario", "fanout"];
        argv.extend_from_slice(extra);
        Plan::new(Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn refuses_non_loopback_and_oversized_runs() {
        assert!(plan(&[]).is_ok());
        assert!(plan(&["--host", "10.1.2.3"]).is_err());
        let err = plan(&["--connections", "19001"]).expect_err("over the cap").to_string();
        assert!(err.contains("several"), "{err}");
        assert!(plan(&["--connections", "19000"]).is_ok());
        assert!(plan(&["--duration", "301"]).is_err());
        assert!(plan(&["--rate", "0"]).is_err());
    }

    #[test]
    fn sse_subscribers_run_fanout_and_idle_only() {
        assert_eq!(plan(&["--transport", "sse"]).map(|p| p.args.transport).ok(), Some(Transport::Sse));
        assert_eq!(plan(&[]).map(|p| p.args.transport).ok(), Some(Transport::Ws));
        let rooms = Cli::try_parse_from(["bench", "--scenario", "rooms", "--transport", "sse"]).unwrap();
        assert!(Plan::new(rooms.args).is_err());
        let xhr = plan(&["--transport", "xhr_streaming"]).map(|p| p.args.transport).ok();
        assert_eq!(xhr, Some(Transport::XhrStreaming));
        let storm = Cli::try_parse_from(["bench", "--scenario", "storm", "--transport", "xhr_streaming"]).unwrap();
        assert!(Plan::new(storm.args).is_err());
    }
}
