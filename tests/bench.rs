//! Smoke tests of `herald bench`: every scenario, a few seconds each, against a real Herald process and
//! against `herald-floor`, checking that the report is sane (exact delivery counts at a low rate, ordered
//! percentiles, server figures from /proc). Not timed assertions: the machine is shared and noisy.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const FLOOR: &str = env!("CARGO_BIN_EXE_herald-floor");

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("herald-bench-test-{tag}-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn up(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

fn wait_up(server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("server exited early: {status}");
        }
        if up(server.port) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server on port {} did not answer GET /up", server.port);
}

fn start_herald() -> Server {
    let port = free_port();
    let dir = temp_dir("herald");
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {port}\n\n[[apps]]\nid = \"123456\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nenable_client_messages = true\n"
        ),
    )
    .expect("write config");
    let child = Command::new(HERALD)
        .args(["start", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herald");
    let mut server = Server { child, port, dir };
    wait_up(&mut server);
    server
}

fn start_floor() -> Server {
    let port = free_port();
    let child = Command::new(FLOOR)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herald-floor");
    let mut server = Server { child, port, dir: temp_dir("floor") };
    wait_up(&mut server);
    server
}

/// Runs `herald bench` against `server` and returns its JSON report.
fn bench(server: &Server, args: &[&str]) -> Value {
    let json = server.dir.join(format!("report-{}.json", rand::random::<u32>()));
    let output = Command::new(HERALD)
        .arg("bench")
        .args(["--port", &server.port.to_string(), "--server-pid", &server.child.id().to_string(), "--quiet"])
        .args(["--settle", "1", "--drain-timeout", "10", "--json"])
        .arg(&json)
        .args(args)
        .output()
        .expect("run herald bench");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench {args:?} failed: {table}\n{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(table.contains("held"), "table printed: {table}");
    report
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn assert_all_subscribed(r: &Value, n: u64) {
    assert_eq!(u(&r["setup"]["subscribed"]), n, "{r:#}");
    assert_eq!(u(&r["setup"]["failed"]), 0, "{r:#}");
    assert!(f(&r["setup"]["handshakes_per_sec"]) > 0.0, "{r:#}");
}

fn assert_server_figures(r: &Value) {
    let s = &r["server"];
    assert!(u(&s["rss_before_bytes"]) > 0, "{r:#}");
    assert!(u(&s["rss_connected_bytes"]) > 0, "{r:#}");
    assert!(u(&s["rss_peak_bytes"]) >= u(&s["rss_connected_bytes"]), "{r:#}");
    assert!(f(&s["cpu_percent"]) >= 0.0, "{r:#}");
}

/// Every owed delivery arrived, the counts agree, and the percentiles are present and ordered.
fn assert_exact_delivery(r: &Value, events: u64, per_event: u64) {
    let t = &r["traffic"];
    assert_eq!(u(&t["events_sent"]), events, "{r:#}");
    assert_eq!(u(&t["expected_deliveries"]), events * per_event, "{r:#}");
    assert_eq!(u(&t["deliveries"]), events * per_event, "{r:#}");
    assert_eq!(u(&t["lost"]), 0, "{r:#}");
    assert_eq!(u(&t["disconnects"]), 0, "{r:#}");
    let l = &r["latency"];
    assert_eq!(u(&l["count"]), events * per_event, "{r:#}");
    let (p50, p99, p999, max) = (f(&l["p50_ms"]), f(&l["p99_ms"]), f(&l["p999_ms"]), f(&l["max_ms"]));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= max, "{r:#}");
    assert!(f(&t["deliveries_per_sec"]) > 0.0, "{r:#}");
}

#[test]
fn every_scenario_against_herald() {
    let server = start_herald();

    // 3 s at 200 events/s: 600 events in 60 batches, each to 200 subscribers.
    let r = bench(&server, &["--scenario", "fanout", "--connections", "200", "--rate", "200", "--duration", "3"]);
    assert_all_subscribed(&r, 200);
    assert_exact_delivery(&r, 600, 200);
    assert_server_figures(&r);

    // 200 clients in 20 private rooms (signed subscriptions), 2 client events/s each for 3 s.
    let r = bench(&server, &["--scenario", "rooms", "--connections", "200", "--rate", "2", "--duration", "3"]);
    assert_all_subscribed(&r, 200);
    assert_exact_delivery(&r, 200 * 2 * 3, 9);
    assert_server_figures(&r);

    let r = bench(&server, &["--scenario", "idle", "--connections", "300", "--duration", "2"]);
    assert_all_subscribed(&r, 300);
    assert_server_figures(&r);
    assert!(r["traffic"].is_null() && r["latency"].is_null(), "{r:#}");
    assert!(r["held"].as_bool().unwrap_or(false), "{r:#}");

    let r = bench(&server, &["--scenario", "storm", "--connections", "300"]);
    assert_all_subscribed(&r, 300);
    assert_eq!(u(&r["setup"]["concurrency"]), 300, "{r:#}");
    assert!(f(&r["setup"]["seconds_until_all_subscribed"]) > 0.0, "{r:#}");

    // 200 clients in 10 presence channels of 20; in each, one member leaves and rejoins twice a second
    // for 3 s: 6 cycles x (member_removed + member_added) to 19 others, only member_added timed.
    let r = bench(
        &server,
        &["--scenario", "presence", "--connections", "200", "--room-size", "20", "--rate", "2", "--duration", "3"],
    );
    assert_all_subscribed(&r, 200);
    let t = &r["traffic"];
    assert_eq!(u(&t["events_sent"]), 10 * 6 * 2, "{r:#}");
    assert_eq!(u(&t["expected_deliveries"]), 10 * 6 * 2 * 19, "{r:#}");
    assert_eq!(u(&t["deliveries"]), 10 * 6 * 2 * 19, "{r:#}");
    assert_eq!((u(&t["lost"]), u(&t["disconnects"]), u(&t["server_errors"])), (0, 0, 0), "{r:#}");
    assert_eq!(u(&r["latency"]["count"]), 10 * 6 * 19, "{r:#}");
    assert!(f(&r["latency"]["p50_ms"]) > 0.0, "{r:#}");
}

/// The HTTP transports' subscribers (`--transport sse`, `xhr_streaming`) run fanout and idle with the
/// same accounting as WebSocket ones: every delivery counted and timed, none lost.
#[test]
fn fanout_and_idle_with_http_subscribers() {
    let server = start_herald();
    for transport in ["xhr_streaming", "sse"] {
        let fanout = ["--scenario", "fanout", "--connections", "100", "--rate", "100", "--duration", "2"];
        let r = bench(&server, &[&fanout[..], &["--transport", transport]].concat());
        assert_all_subscribed(&r, 100);
        assert_exact_delivery(&r, 200, 100);
        assert_server_figures(&r);
        assert!(r["notes"].to_string().contains(&format!("transport: {transport}")), "{r:#}");

        let r = bench(
            &server,
            &["--scenario", "idle", "--connections", "200", "--duration", "1", "--transport", transport],
        );
        assert_all_subscribed(&r, 200);
        assert_server_figures(&r);
        assert!(r["held"].as_bool().unwrap_or(false), "{r:#}");
    }
    // 1 KiB JSON events: several of them may share one `a[...]` line, each still counted once.
    let mut json = JSON_FANOUT.to_vec();
    json[5] = "400";
    json.extend(["--transport", "xhr_streaming"]);
    let r = bench(&server, &json);
    assert_exact_delivery(&r, 800, 100);
}

/// 1 KiB JSON events to 100 subscribers, 2 s at 100 events/s: the same run without and with
/// `--compression`.
const JSON_FANOUT: [&str; 12] = [
    "--scenario",
    "fanout",
    "--connections",
    "100",
    "--rate",
    "100",
    "--duration",
    "2",
    "--payload",
    "1024",
    "--payload-kind",
    "json",
];

#[test]
fn compression_is_agreed_inflated_and_smaller_on_the_wire() {
    let server = start_herald();
    let plain = bench(&server, &JSON_FANOUT);
    // Every client inflates, checks and times every message.
    let zipped = bench(&server, &[&JSON_FANOUT[..], &["--compression", "--inflate-sample", "1"]].concat());
    for r in [&plain, &zipped] {
        assert_all_subscribed(r, 100);
        // Every compressed event was inflated and its stamp found.
        assert_exact_delivery(r, 200, 100);
        assert_server_figures(r);
        assert!(f(&r["server"]["cpu_us_per_delivery"]) > 0.0, "{r:#}");
    }
    assert_eq!((u(&plain["deflate_agreed"]), u(&zipped["deflate_agreed"])), (0, 100));
    assert_eq!(u(&zipped["deliveries_unopened"]), 0, "{zipped:#}");
    let per_delivery = |r: &Value| f(&r["traffic"]["wire_bytes_per_delivery"]);
    // The event's text: 1 KiB of JSON, its quotes escaped inside the Pusher envelope.
    assert!(per_delivery(&plain) > 1024.0, "{plain:#}");
    // This JSON compresses to ~45 % (BENCHMARKS.md).
    assert!(
        per_delivery(&zipped) < per_delivery(&plain) * 0.6,
        "{} vs {}",
        per_delivery(&zipped),
        per_delivery(&plain)
    );

    // The default sample: 1 client in 10 inflates and times; the others' deliveries are counted
    // unopened, and every one is still accounted for.
    let sampled = bench(&server, &[&JSON_FANOUT[..], &["--compression"]].concat());
    let t = &sampled["traffic"];
    assert_eq!((u(&t["deliveries"]), u(&t["lost"])), (200 * 100, 0), "{sampled:#}");
    assert_eq!(u(&sampled["deliveries_unopened"]), 200 * 90, "{sampled:#}");
    assert_eq!(u(&sampled["latency"]["count"]), 200 * 10, "{sampled:#}");
}

#[test]
fn fanout_rooms_and_storm_against_the_floor() {
    let server = start_floor();
    let r = bench(&server, &["--scenario", "fanout", "--connections", "200", "--rate", "200", "--duration", "3"]);
    assert_all_subscribed(&r, 200);
    assert_exact_delivery(&r, 600, 200);
    assert_server_figures(&r);

    // The floor never agrees to permessage-deflate: the offer is declined and the report says so.
    let r = bench(&server, &[&JSON_FANOUT[..], &["--compression"]].concat());
    assert_exact_delivery(&r, 200, 100);
    assert_eq!(u(&r["deflate_agreed"]), 0, "{r:#}");
    assert!(f(&r["traffic"]["wire_bytes_per_delivery"]) > 1024.0, "{r:#}");
    assert!(r["notes"].to_string().contains("agreed to permessage-deflate"), "{r:#}");

    let r = bench(&server, &["--scenario", "rooms", "--connections", "100", "--rate", "2", "--duration", "2"]);
    assert_all_subscribed(&r, 100);
    assert_exact_delivery(&r, 100 * 2 * 2, 9);

    let r = bench(&server, &["--scenario", "storm", "--connections", "200"]);
    assert_all_subscribed(&r, 200);
}

#[test]
fn refuses_other_hosts_and_too_many_connections() {
    for (args, expected) in [
        (vec!["--host", "10.0.0.1"], "127.0.0.0/8"),
        (vec!["--host", "8.8.8.8"], "127.0.0.0/8"),
        (vec!["--connections", "20000"], "several"),
        (vec!["--duration", "1000"], "--duration"),
    ] {
        let output = Command::new(HERALD)
            .args(["bench", "--scenario", "fanout"])
            .args(&args)
            .output()
            .expect("run herald bench");
        assert_eq!(output.status.code(), Some(64), "{args:?}: a usage error, like clap's own");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = Command::new(HERALD)
        .args(["bench", "--scenario", "rooms", "--transport", "xhr_streaming"])
        .output()
        .expect("run herald bench");
    assert_eq!(output.status.code(), Some(64), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("fanout and idle"));
}
