//! Channel history and resume, against real server processes: the HTTP API's history endpoint, an
//! `EventSource`-style client (plain HTTP following the SSE rules) whose stream the server cuts
//! while events are published, the plain WebSocket endpoint's `since`, and the bounds. With
//! `HERALD_TEST_REDIS_URL` set, the same tests run on the Redis adapter.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use herald::protocol::sse_auth::issue_bearer;
use herald::protocol::token::issue;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const RULES: &str = "[[apps.history]]\nchannels = \"chat-*\"\nsize = 100\nttl_s = 3600\n\n[[apps.history]]\nchannels = \"tiny-*\"\nsize = 5\nttl_s = 3600\n\n[[apps.history]]\nchannels = \"private-room-*\"\nsize = 100\n\n[[apps.history]]\nchannels = \"brief-*\"\nsize = 100\nttl_s = 1\n";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn server() -> TestServer {
    TestServer::start("", RULES).await
}

async fn history(server: &TestServer, channel: &str, query: &[(&str, &str)]) -> (u16, Value) {
    server.api("GET", &format!("/apps/{APP_ID}/channels/{channel}/history"), "", query).await
}

/// The channel's history once its newest event's data is `last`: with Redis, a publish is
/// answered before its batch reaches the stream (one round trip per batch, not per event).
async fn settled(server: &TestServer, channel: &str, last: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = history(server, channel, &[("limit", "1000")]).await;
        if status == 200 && datas(&body).last().map(String::as_str) == Some(last) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{channel} never ended with {last}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn positions(body: &Value) -> Vec<String> {
    body["events"].as_array().unwrap().iter().map(|e| e["position"].as_str().unwrap().to_owned()).collect()
}

fn datas(body: &Value) -> Vec<String> {
    body["events"].as_array().unwrap().iter().map(|e| e["data"].as_str().unwrap().to_owned()).collect()
}

/// An event as an `EventSource` dispatches it: its type, data (parsed) and the last event id.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    data: Value,
    id: String,
}

/// A plain HTTP client that follows the SSE parsing rules (fields, blank-line dispatch, the last
/// event id kept across events, as `EventSource` does).
struct SseClient {
    tcp: TcpStream,
    pending: Vec<u8>,
    last_id: String,
}

impl SseClient {
    async fn open(port: u16, channels: &str, last_event_id: Option<&str>, user: &str) -> SseClient {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let bearer = issue_bearer(SECRET, user, now() + 300, &[], None);
        let mut req = format!(
            "GET /sse/{KEY}?channels={channels} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer {bearer}\r\n"
        );
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut client = SseClient { tcp, pending: Vec::new(), last_id: last_event_id.unwrap_or("").to_owned() };
        let head = client.line_until(b"\r\n\r\n").await.expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        client
    }

    async fn line_until(&mut self, end: &[u8]) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = self.pending.windows(end.len()).position(|w| w == end) {
                let line = String::from_utf8(self.pending[..at].to_vec()).unwrap();
                self.pending.drain(..at + end.len());
                return Some(line);
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The next dispatched event; `None` at the end of the stream (or after 10 s of nothing).
    async fn event(&mut self) -> Option<Event> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let line = self.line_until(b"\n").await?;
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let name = if name.is_empty() { "message".to_owned() } else { name };
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Event { name, data, id: self.last_id.clone() });
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = value.to_owned(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "id" => self.last_id = value.to_owned(),
                _ => {}
            }
        }
    }

    /// Events until one named `name` (returned last).
    async fn until(&mut self, name: &str) -> Vec<Event> {
        let mut seen = Vec::new();
        while let Some(e) = self.event().await {
            let done = e.name == name;
            seen.push(e);
            if done {
                return seen;
            }
        }
        panic!("the stream ended before {name}: {seen:?}");
    }
}

/// The published numbers among events named `n` of `channel`.
fn numbers(events: &[Event], channel: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.name == "n" && e.data["channel"] == channel)
        .map(|e| e.data["data"].as_u64().or_else(|| e.data["data"].as_str()?.parse().ok()).unwrap())
        .collect()
}

#[tokio::test]
async fn the_http_api_lists_a_channels_history_with_positions_newest_last() {
    let server = server().await;
    for n in 0..5 {
        assert_eq!(server.trigger("chat-a", "n", &n.to_string()).await, 200);
    }
    assert_eq!(server.trigger("news", "n", "x").await, 200);
    settled(&server, "chat-a", "4").await;
    let (status, all) = history(&server, "chat-a", &[]).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(datas(&all), ["0", "1", "2", "3", "4"]);
    assert_eq!(all["events"][0]["event"], "n");
    assert_eq!(all["reset"], false);
    let p = positions(&all);
    assert_eq!(all["head"], p[4].as_str());
    let (_, after) = history(&server, "chat-a", &[("since", &p[1]), ("limit", "2")]).await;
    assert_eq!(datas(&after), ["2", "3"]);
    assert_eq!(after["more"], true);
    let (_, newest) = history(&server, "chat-a", &[("limit", "2")]).await;
    assert_eq!(datas(&newest), ["3", "4"], "without since: the newest, oldest first");

    // Negative: a channel no rule names, a bad position, a bad limit, an unsigned request.
    let (status, body) = history(&server, "news", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no history"), "{body}");
    assert_eq!(history(&server, "chat-a", &[("since", "yesterday")]).await.0, 400);
    assert_eq!(history(&server, "chat-a", &[("limit", "0")]).await.0, 400);
    assert_eq!(history(&server, "chat-a", &[("limit", "1001")]).await.0, 400);
    assert_eq!(server.raw_api("GET", &format!("/apps/{APP_ID}/channels/chat-a/history"), "").await.0, 401);
}

#[tokio::test]
async fn size_and_ttl_bound_a_history_and_a_trimmed_position_resets() {
    let server = server().await;
    assert_eq!(server.trigger("tiny-a", "n", "0").await, 200);
    let first = positions(&settled(&server, "tiny-a", "0").await)[0].clone();
    for n in 1..20 {
        server.trigger("tiny-a", "n", &n.to_string()).await;
    }
    let kept = settled(&server, "tiny-a", "19").await;
    assert_eq!(datas(&kept), ["15", "16", "17", "18", "19"], "size 5");
    let (_, trimmed) = history(&server, "tiny-a", &[("since", &first)]).await;
    assert_eq!(trimmed["reset"], true, "{trimmed}");

    server.trigger("brief-a", "n", "0").await;
    let before = settled(&server, "brief-a", "0").await;
    assert_eq!(datas(&before), ["0"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, after) = history(&server, "brief-a", &[]).await;
    assert!(datas(&after).is_empty(), "ttl_s = 1: {after}");
}

#[tokio::test]
async fn memory_stays_flat_over_100000_events_to_a_history_channel() {
    let server = TestServer::start("", &format!("api_rate_limit = 0\n{RULES}")).await;
    let body: String = json!({"batch": (0..10).map(|n| json!({"name": "n", "channel": "chat-flood", "data": format!("{n:0>200}")})).collect::<Vec<_>>()}).to_string();
    let path = format!("/apps/{APP_ID}/batch_events");
    let mut rss = Vec::new();
    for round in 0..5 {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (port, body, path) = (server.port, body.clone(), path.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    for _ in 0..500 {
                        let now = now() as i64;
                        let query = herald::protocol::signature::sign_api_request(
                            KEY,
                            SECRET,
                            "POST",
                            &path,
                            body.as_bytes(),
                            &[],
                            now,
                        );
                        let url = format!("http://127.0.0.1:{port}{path}?{query}");
                        let r = client.post(url).header("content-type", "application/json").body(body.clone());
                        assert_eq!(r.send().await.unwrap().status(), 200);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        rss.push(server.rss_kib());
        let _ = round;
    }
    let kept = settled(&server, "chat-flood", &format!("{:0>200}", 9)).await;
    assert_eq!(kept["events"].as_array().unwrap().len(), 100, "100,000 published, size 100 kept");
    // After the first 20,000 events the ring is full: what follows must not grow the process.
    let growth = rss[4] as i64 - rss[0] as i64;
    assert!(growth < 4096, "RSS grew {growth} KiB between 20,000 and 100,000 events: {rss:?}");
}

#[tokio::test]
async fn an_sse_client_cut_by_the_server_resumes_with_every_event_exactly_once() {
    let server = server().await;
    let mut first = SseClient::open(server.port, "chat-a,news", None, "u1").await;
    let opened = first.until("herald:position").await;
    assert!(opened.iter().any(|e| e.name == "pusher:subscription_succeeded"));
    assert!(opened.last().unwrap().id.starts_with("chat-a:"), "{opened:?}");

    // 50 events are published while the server cuts the stream (terminate_connections).
    let publisher = {
        let port = server.port;
        tokio::spawn(async move {
            let client = common_client(port);
            for n in 0..50 {
                assert_eq!(client.trigger("chat-a", "n", &n.to_string()).await, 200);
                if n == 10 {
                    let path = format!("/apps/{APP_ID}/users/u1/terminate_connections");
                    assert_eq!(client.api("POST", &path, "{}", &[]).await.0, 200);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut before_cut = Vec::new();
    while let Some(e) = first.event().await {
        before_cut.push(e);
    }
    assert!(before_cut.iter().any(|e| e.name == "pusher:error" && e.data["data"]["code"] == 4009), "{before_cut:?}");
    let got_before = numbers(&before_cut, "chat-a");
    assert!(!got_before.is_empty() && got_before.len() < 50, "cut midway: {got_before:?}");
    let resume_from = first.last_id.clone();
    assert!(resume_from.starts_with("chat-a:"), "{resume_from}");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = SseClient::open(server.port, "chat-a,news", Some(&resume_from), "u2").await;
    let mut after = Vec::new();
    while numbers(&after, "chat-a").len() + got_before.len() < 50 {
        let e = second.event().await.expect("the rest of the events");
        after.push(e);
    }
    publisher.await.unwrap();
    assert!(after.iter().all(|e| e.name != "herald:reset"), "{after:?}");
    let mut all = got_before.clone();
    all.extend(numbers(&after, "chat-a"));
    assert_eq!(all, (0..50).collect::<Vec<u64>>(), "every event exactly once, in order");
    // No duplicate trails behind: the next live event is the next one.
    server.trigger("chat-a", "n", "50").await;
    let next = second.until("n").await;
    assert_eq!(numbers(&next, "chat-a"), [50]);
    assert!(next.last().unwrap().id.contains("chat-a:"));
}

#[tokio::test]
async fn an_sse_position_older_than_the_history_gets_herald_reset_then_live_events() {
    let server = server().await;
    server.trigger("tiny-b", "n", "0").await;
    let old = format!("tiny-b:{}", positions(&settled(&server, "tiny-b", "0").await)[0]);
    for n in 1..10 {
        server.trigger("tiny-b", "n", &n.to_string()).await;
    }
    settled(&server, "tiny-b", "9").await;
    let mut stream = SseClient::open(server.port, "tiny-b", Some(&old), "u1").await;
    let opened = stream.until("herald:reset").await;
    assert!(numbers(&opened, "tiny-b").is_empty(), "nothing replayed: {opened:?}");
    server.trigger("tiny-b", "n", "10").await;
    assert_eq!(numbers(&stream.until("n").await, "tiny-b"), [10]);

    // A position from a previous life of the server (its memory is gone) resets too, not silence.
    if std::env::var("HERALD_TEST_REDIS_URL").map_or(true, |u| u.is_empty()) {
        let fresh = server_again().await;
        let mut s = SseClient::open(fresh.port, "tiny-b", Some(&stream.last_id), "u1").await;
        s.until("herald:reset").await;
    }
    // A counter id (a stream without history) is no position: a fresh start.
    let mut s = SseClient::open(server.port, "tiny-b", Some("42"), "u1").await;
    s.until("herald:position").await;
}

async fn server_again() -> TestServer {
    server().await
}

/// A second handle on a server for a spawned task (the API helpers need only the port).
fn common_client(port: u16) -> PortClient {
    PortClient { port }
}

struct PortClient {
    port: u16,
}

impl PortClient {
    async fn api(&self, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let now = now() as i64;
        let query =
            herald::protocol::signature::sign_api_request(KEY, SECRET, method, path, body.as_bytes(), extra, now);
        let url = format!("http://127.0.0.1:{}{path}?{query}", self.port);
        let client = reqwest::Client::new();
        let resp =
            client.post(url).header("content-type", "application/json").body(body.to_owned()).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn trigger(&self, channel: &str, event: &str, data: &str) -> u16 {
        let body = json!({"name": event, "channel": channel, "data": data}).to_string();
        self.api("POST", &format!("/apps/{APP_ID}/events"), &body, &[]).await.0
    }
}

async fn plain(port: u16, room: &str, query: &str) -> Result<Client, u16> {
    let url = format!("ws://127.0.0.1:{port}/ws/{KEY}/{room}{query}");
    let mut request = url.into_client_request().unwrap();
    let token = issue(SECRET, "p1", now() + 300, None);
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// Messages until one named `name` (returned last).
async fn plain_until(client: &mut Client, name: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let m =
            client.next_text(Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{e:?} before {name}: {seen:?}"));
        let done = m["event"] == name;
        seen.push(m);
        if done {
            return seen;
        }
    }
}

fn plain_numbers(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter(|m| m["event"] == "n").map(|m| m["data"].as_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn a_plain_client_resumes_with_since_and_messages_carry_their_position() {
    let server = server().await;
    let channel = "private-room-lobby";
    let mut c = plain(server.port, "lobby", "").await.unwrap();
    let opened = plain_until(&mut c, "herald:position").await;
    assert_eq!(opened[0]["event"], "herald:joined");
    for n in 0..10 {
        server.trigger(channel, "n", &n.to_string()).await;
    }
    let mut got = Vec::new();
    let mut last = String::new();
    while got.len() < 10 {
        let m = c.next_text(Duration::from_secs(10)).await.unwrap();
        last = m["position"].as_str().expect("a history message carries its position").to_owned();
        got.extend(plain_numbers(&[m]));
    }
    drop(c);
    for n in 10..30 {
        server.trigger(channel, "n", &n.to_string()).await;
    }
    let mut again = plain(server.port, "lobby", &format!("?since={last}")).await.unwrap();
    let resumed = plain_until(&mut again, "herald:position").await;
    assert_eq!(resumed[0]["event"], "herald:joined");
    assert_eq!(resumed.last().unwrap()["data"]["position"], last.as_str());
    let mut rest = Vec::new();
    while rest.len() < 20 {
        rest.extend(plain_numbers(&[again.next_text(Duration::from_secs(10)).await.unwrap()]));
    }
    got.extend(rest);
    assert_eq!(got, (0..30).collect::<Vec<u64>>());
    server.trigger(channel, "n", "30").await;
    assert_eq!(plain_numbers(&plain_until(&mut again, "n").await), [30], "then live, no duplicate");

    // A position older than the history (or never handed out) resets; a malformed one is a 400.
    let mut reset = plain(server.port, "lobby", "?since=1-0").await.unwrap();
    let r = plain_until(&mut reset, "herald:reset").await;
    assert!(plain_numbers(&r).is_empty(), "{r:?}");
    assert_eq!(plain(server.port, "lobby", "?since=soon").await.err(), Some(400));
}

#[test]
fn bad_history_rules_are_refused_at_start_up() {
    for (rule, expected) in [
        ("channels = \"chat room*\"", "history channels"),
        ("channels = \"chat-*\"\nsize = 0", "history size"),
        ("channels = \"chat-*\"\nsize = 1000000", "history size"),
        ("channels = \"chat-*\"\nttl_s = 0", "history ttl_s"),
        ("channels = \"chat-*\"\nlength = 5", "unknown field"),
    ] {
        let dir = std::env::temp_dir().join(format!("herald-history-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.toml");
        let config = format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {}\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.history]]\n{rule}\n",
            unused_port()
        );
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["start", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rule}: started");
        assert!(stderr.contains(expected), "{rule}: {stderr}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Two nodes on one real Redis, with the history rules.
async fn two_nodes(redis: &Redis) -> (TestServer, TestServer) {
    let mut nodes = redis.nodes(2, RULES).await;
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

#[tokio::test]
async fn across_two_nodes_a_stream_cut_on_node_a_resumes_on_node_b() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let mut first = SseClient::open(a.port, "chat-x", None, "u1").await;
    first.until("herald:position").await;
    for n in 0..10 {
        assert_eq!(b.trigger("chat-x", "n", &n.to_string()).await, 200);
    }
    let mut before = Vec::new();
    while numbers(&before, "chat-x").len() < 10 {
        before.push(first.event().await.expect("events published on node B reach node A"));
    }
    // The same positions on both nodes: node B's history lists what node A's stream was given.
    let (_, listed) = history(&b, "chat-x", &[]).await;
    assert_eq!(format!("chat-x:{}", positions(&listed)[9]), first.last_id);
    let path = format!("/apps/{APP_ID}/users/u1/terminate_connections");
    assert_eq!(a.api("POST", &path, "{}", &[]).await.0, 200);
    while first.event().await.is_some() {}
    for n in 10..50 {
        assert_eq!(a.trigger("chat-x", "n", &n.to_string()).await, 200);
    }
    let mut second = SseClient::open(b.port, "chat-x", Some(&first.last_id), "u2").await;
    let mut after = Vec::new();
    while numbers(&after, "chat-x").len() < 40 {
        after.push(second.event().await.expect("the missed events, on node B"));
    }
    let mut all = numbers(&before, "chat-x");
    all.extend(numbers(&after, "chat-x"));
    assert_eq!(all, (0..50).collect::<Vec<u64>>());
    b.trigger("chat-x", "n", "50").await;
    assert_eq!(numbers(&second.until("n").await, "chat-x"), [50], "then live, once");

    // The plain endpoint, the same way: away from node A, back on node B with ?since=.
    let mut p = plain(a.port, "hall", "").await.unwrap();
    plain_until(&mut p, "herald:position").await;
    a.trigger("private-room-hall", "n", "0").await;
    let last = plain_until(&mut p, "n").await.pop().unwrap()["position"].as_str().unwrap().to_owned();
    drop(p);
    for n in 1..6 {
        a.trigger("private-room-hall", "n", &n.to_string()).await;
    }
    let mut q = plain(b.port, "hall", &format!("?since={last}")).await.unwrap();
    plain_until(&mut q, "herald:position").await;
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(plain_numbers(&[q.next_text(Duration::from_secs(10)).await.unwrap()]));
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_redis_restart_loses_history_but_never_corrupts_or_reorders_it() {
    let redis = Redis::start();
    let port = redis.port;
    let (a, b) = two_nodes(&redis).await;
    for n in 0..10 {
        a.trigger("chat-r", "n", &n.to_string()).await;
    }
    let before = settled(&b, "chat-r", "9").await;
    assert_eq!(datas(&before).len(), 10);
    let old = positions(&before)[9].clone();
    drop(redis);
    let _redis = Redis::start_on(port);
    // Back once both nodes answer cluster questions again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = a.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
        let (status_b, _) = b.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
        if status == 200 && status_b == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the nodes did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 10..20 {
        assert_eq!(a.trigger("chat-r", "n", &n.to_string()).await, 200);
    }
    let after = settled(&b, "chat-r", "19").await;
    let kept = datas(&after);
    // What is kept: only events published after the restart, complete and in order.
    assert!(!kept.is_empty() && kept.len() <= 10, "{after}");
    let expected: Vec<String> = (20 - kept.len()..20).map(|n| n.to_string()).collect();
    assert_eq!(kept, expected, "a tail of what was published after the restart, in order");
    let ps: Vec<herald::protocol::position::Position> =
        positions(&after).iter().map(|p| herald::protocol::position::Position::parse(p).unwrap()).collect();
    assert!(ps.windows(2).all(|w| w[0] < w[1]), "{ps:?}");
    // A position from before the restart is reset, never answered with silence or the wrong events.
    let (_, stale) = history(&b, "chat-r", &[("since", &old)]).await;
    assert_eq!(stale["reset"], true, "{stale}");
    let mut s = SseClient::open(b.port, "chat-r", Some(&format!("chat-r:{old}")), "u1").await;
    s.until("herald:reset").await;
}
