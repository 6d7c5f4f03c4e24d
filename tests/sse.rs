//! The Server-Sent Events endpoint, with a raw HTTP/1.1 client over a TcpStream (what `curl -N` and
//! `EventSource` send), against a real server (and two nodes on a real Redis).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use herald::protocol::signature::{channel_auth_message, make_auth};
use herald::protocol::sse_auth::{issue_bearer, issue_ticket, TicketRequest};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn bearer(sub: &str, channels: &[&str], user_info: Option<&str>) -> String {
    format!("Bearer {}", issue_bearer(SECRET, sub, now() + 300, channels, user_info))
}

/// One thing read from an event stream.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event { name: String, data: Value, id: Option<u64> },
    Comment(String),
    Retry(u64),
}

/// How a stream ended instead of giving an item.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Timeout,
}

/// An open event stream: the response head and whatever arrives after it.
struct Stream {
    tcp: TcpStream,
    pending: Vec<u8>,
    head: String,
}

/// A refused stream: the status and the JSON answer.
type Refused = (u16, Value);

/// Request headers to send.
type Headers = Vec<(&'static str, String)>;

async fn request(port: u16, target: &str, headers: &[(&str, String)], tcp: TcpStream) -> Result<Stream, Refused> {
    let mut tcp = tcp;
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await.expect("a response head").unwrap();
        assert!(n > 0, "closed before a response head: {:?}", String::from_utf8_lossy(&pending));
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(pending[..end].to_vec()).unwrap().to_ascii_lowercase();
    let rest = pending[end + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if status == 200 {
        return Ok(Stream { tcp, pending: rest, head });
    }
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap()).unwrap_or(0);
    let mut body = rest;
    while body.len() < length {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await.expect("a response body").unwrap();
        assert!(n > 0);
        body.extend_from_slice(&buf[..n]);
    }
    Err((status, serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()))))
}

async fn open(server: &TestServer, target: &str, headers: &[(&str, String)]) -> Result<Stream, Refused> {
    open_on(server.port, target, headers).await
}

async fn open_on(port: u16, target: &str, headers: &[(&str, String)]) -> Result<Stream, Refused> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    request(port, target, headers, tcp).await
}

fn path(channels: &str) -> String {
    format!("/sse/{KEY}?channels={channels}")
}

impl Stream {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(str::trim)
    }

    /// The next item, within `wait`.
    async fn next_item(&mut self, wait: Duration) -> Result<Item, End> {
        let deadline = tokio::time::Instant::now() + wait;
        let (mut name, mut data, mut id): (Option<String>, Vec<String>, Option<u64>) = (None, Vec::new(), None);
        loop {
            while let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line = String::from_utf8(self.pending.drain(..=at).collect()).unwrap();
                let line = line.trim_end_matches('\n');
                if line.is_empty() {
                    if !data.is_empty() {
                        let text = data.join("\n");
                        let data = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
                        return Ok(Item::Event { name: name.take().unwrap_or_else(|| "message".into()), data, id });
                    }
                    continue;
                }
                if let Some(comment) = line.strip_prefix(':') {
                    return Ok(Item::Comment(comment.trim().to_owned()));
                }
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "event" => name = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    "id" => id = Some(value.parse().expect("numeric ids")),
                    "retry" => return Ok(Item::Retry(value.parse().unwrap())),
                    other => panic!("unexpected field {other:?}"),
                }
            }
            let mut buf = [0u8; 16 * 1024];
            let n = match tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await {
                Err(_) => return Err(End::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Eof),
                Ok(Ok(n)) => n,
            };
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The next event (comments and `retry:` skipped): (name, data, id).
    async fn event(&mut self) -> (String, Value, u64) {
        loop {
            match self.next_item(Duration::from_secs(10)).await {
                Ok(Item::Event { name, data, id }) => return (name, data, id.expect("every event has an id")),
                Ok(_) => continue,
                Err(e) => panic!("expected an event, got {e:?}"),
            }
        }
    }

    /// Reads until one `subscription_succeeded` per channel arrived (other members' comings and
    /// goings on a busy presence channel may come in between).
    async fn opened(&mut self, channels: usize) -> Vec<Value> {
        let mut confirmed = Vec::new();
        while confirmed.len() < channels {
            let (name, data, _) = self.event().await;
            match name.as_str() {
                "pusher:subscription_succeeded" => confirmed.push(data),
                "pusher:member_added" | "pusher:member_removed" => {}
                other => panic!("{other} before the stream was confirmed: {data}"),
            }
        }
        confirmed
    }

    /// Reads until the stream ends; returns every event on the way.
    async fn until_end(&mut self, wait: Duration) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        loop {
            match self.next_item(wait).await {
                Ok(Item::Event { name, data, .. }) => events.push((name, data)),
                Ok(_) => {}
                Err(End::Eof) => return events,
                Err(End::Timeout) => panic!("the stream did not end: {events:?}"),
            }
        }
    }
}

/// Polls `check` on an API answer until it holds (bounded).
async fn eventually(server: &TestServer, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.api("GET", path, "", &[]).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never satisfied the check: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", server.port)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn ticket(server: &TestServer, body: Value) -> (u16, Value) {
    server.api("POST", &format!("/apps/{APP_ID}/sse_tickets"), &body.to_string(), &[]).await
}

#[tokio::test]
async fn events_from_the_api_arrive_in_order_with_ids() {
    let server = TestServer::start("", "").await;
    // A cache channel's last event is replayed right after its confirmation.
    assert_eq!(server.trigger("cache-prices", "price", r#"{"eur":1.08}"#).await, 200);
    let mut stream = open(&server, &path("news,cache-prices,news"), &[]).await.expect("opened");
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    assert_eq!(stream.header("access-control-allow-origin"), Some("*"));
    // Something arrives at once, so clients (and proxies) see the stream open.
    match stream.next_item(Duration::from_secs(5)).await {
        Ok(Item::Retry(ms)) => assert!((1000..3000).contains(&ms), "{ms}"),
        other => panic!("expected retry: first, got {other:?}"),
    }
    let (name, data, id) = stream.event().await;
    assert_eq!((name.as_str(), id), ("pusher:subscription_succeeded", 1));
    assert_eq!(data, json!({"channel": "news", "data": {}}));
    let (name, data, id) = stream.event().await;
    assert_eq!((name.as_str(), &data["channel"], id), ("pusher:subscription_succeeded", &json!("cache-prices"), 2));
    let (name, data, id) = stream.event().await;
    assert_eq!((name.as_str(), &data, id), ("price", &json!({"channel": "cache-prices", "data": {"eur": 1.08}}), 3));

    for n in 0..50 {
        assert_eq!(server.trigger("news", "headline", &json!({"n": n}).to_string()).await, 200);
    }
    assert_eq!(server.trigger("news", "note", "not json\nat all").await, 200);
    for n in 0..50u64 {
        let (name, data, id) = stream.event().await;
        assert_eq!(name, "headline");
        assert_eq!(data, json!({"channel": "news", "data": {"n": n}}), "in order");
        assert_eq!(id, 4 + n, "one id per event, counting up");
    }
    let (name, data, id) = stream.event().await;
    assert_eq!((name.as_str(), &data["data"], id), ("note", &json!("not json\nat all"), 54));
    // A channel the stream does not name stays silent.
    assert_eq!(server.trigger("elsewhere", "headline", "{}").await, 200);
    assert_eq!(server.trigger("news", "last", "1").await, 200);
    assert_eq!(stream.event().await.0, "last");
}

#[tokio::test]
async fn a_silent_stream_gets_heartbeat_comments() {
    let server = TestServer::start("sse_heartbeat_seconds = 1", "").await;
    let mut stream = open(&server, &path("quiet"), &[]).await.unwrap();
    stream.opened(1).await;
    for _ in 0..2 {
        assert_eq!(stream.next_item(Duration::from_secs(5)).await, Ok(Item::Comment("ping".into())));
    }
    // Still a live stream after its heartbeats.
    assert_eq!(server.trigger("quiet", "e", "1").await, 200);
    assert_eq!(stream.event().await.0, "e");
}

#[tokio::test]
async fn private_and_presence_channels_need_a_bearer_token_that_names_them() {
    let server = TestServer::start("", "").await;
    let target = path("news,private-orders");
    let cases: Vec<(Headers, u16, &str)> = vec![
        (vec![], 401, "need a token"),
        (vec![("Authorization", "Basic abc".into())], 401, "Bearer"),
        (vec![("Authorization", "Bearer garbage".into())], 401, "Invalid token"),
        (
            vec![(
                "Authorization",
                format!("Bearer {}", issue_bearer("wrong", "7", now() + 60, &["private-orders"], None)),
            )],
            401,
            "Invalid token",
        ),
        (
            vec![(
                "Authorization",
                format!("Bearer {}", issue_bearer(SECRET, "7", now() - 5, &["private-orders"], None)),
            )],
            401,
            "Token expired",
        ),
        (vec![("Authorization", bearer("7", &["private-other"], None))], 403, "private-orders"),
    ];
    for (headers, status, message) in cases {
        let (got, body) = open(&server, &target, &headers).await.err().expect("refused");
        assert_eq!(got, status, "{body}");
        assert!(body["error"].as_str().unwrap().contains(message), "{body}");
    }
    let (status, body) = open(&server, &format!("{target}&token=abc"), &[]).await.err().unwrap();
    assert_eq!((status, body["error"].as_str().unwrap().contains("ticket")), (400, true), "{body}");

    let mut stream =
        open(&server, &target, &[("Authorization", bearer("7", &["private-orders"], None))]).await.unwrap();
    stream.opened(2).await;
    assert_eq!(server.trigger("private-orders", "order.paid", r#"{"id":1}"#).await, 200);
    let (name, data, _) = stream.event().await;
    assert_eq!((name.as_str(), &data), ("order.paid", &json!({"channel": "private-orders", "data": {"id": 1}})));
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once() {
    let server = TestServer::start("", "").await;
    // Unsigned, or badly formed, ticket requests.
    let (status, _) = server.raw_api("POST", &format!("/apps/{APP_ID}/sse_tickets"), "{}").await;
    assert_eq!(status, 401, "the ticket call is signed like every API call");
    for bad in [
        json!({"channels": []}),
        json!({"channels": ["a b"]}),
        json!({"channels": ["presence-room"]}),
        json!({"channels": ["private-encrypted-x"]}),
        json!({"channels": ["news"], "user_id": "7", "user_info": {"big": "x".repeat(2000)}}),
        json!({"channels": ["news"], "surprise": true}),
        // A user terminate_connections could not name.
        json!({"channels": ["news"], "user_id": "a b"}),
        json!({"channels": ["presence-room"], "user_id": "\u{fc}n\u{ef}"}),
    ] {
        let (status, body) = ticket(&server, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (status, body) = ticket(&server, json!({"channels": ["private-orders"]})).await;
    assert_eq!((status, body["expires_in"].as_u64()), (200, Some(60)), "{body}");
    let t = body["ticket"].as_str().unwrap().to_owned();
    // A channel the ticket does not name is refused, and the ticket is not used up by it.
    let (status, body) = open(&server, &format!("{}&ticket={t}", path("private-other")), &[]).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    let mut stream = open(&server, &format!("{}&ticket={t}", path("private-orders")), &[]).await.expect("first use");
    stream.opened(1).await;
    let (status, body) = open(&server, &format!("{}&ticket={t}", path("private-orders")), &[]).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (401, Some("Ticket already used")));
    assert_eq!(server.trigger("private-orders", "e", "1").await, 200);
    assert_eq!(stream.event().await.0, "e", "the first stream is unaffected");

    // Expired, forged, and a bearer token passed off as a ticket.
    let channels = vec!["private-orders".to_owned()];
    let request = TicketRequest { channels: &channels, user_id: None, user_info: None };
    let expired = issue_ticket(SECRET, "old", now() - 1, &request);
    let forged = issue_ticket("not-the-secret", "f", now() + 60, &request);
    let token = issue_bearer(SECRET, "7", now() + 60, &["private-orders"], None);
    for (t, message) in [(expired, "Ticket expired"), (forged, "Invalid ticket"), (token, "Invalid ticket")] {
        let (status, body) = open(&server, &format!("{}&ticket={t}", path("private-orders")), &[]).await.err().unwrap();
        assert_eq!((status, body["error"].as_str()), (401, Some(message)));
    }
    let (status, _) =
        open(&server, &format!("{}&ticket=x", path("news")), &[("Authorization", bearer("7", &[], None))])
            .await
            .err()
            .unwrap();
    assert_eq!(status, 400, "a token and a ticket at once");
}

#[tokio::test]
async fn presence_listeners_join_as_the_ticket_s_user_and_leave_with_the_stream() {
    let server = TestServer::start("", "").await;
    let (mut ws, socket_id) = server.connect().await;
    let channel_data = json!({"user_id": "ws-user", "user_info": {"name": "Grace"}}).to_string();
    let auth = make_auth(KEY, SECRET, &channel_auth_message(&socket_id, "presence-room", Some(&channel_data)));
    ws.send(&json!({"event": "pusher:subscribe", "data": {"channel": "presence-room", "auth": auth, "channel_data": channel_data}}).to_string()).await;
    assert_eq!(ws.recv().await["event"], "pusher_internal:subscription_succeeded");

    let (status, body) =
        ticket(&server, json!({"channels": ["presence-room"], "user_id": 7, "user_info": {"name": "Ada"}})).await;
    assert_eq!(status, 200, "{body}");
    let target = format!("{}&ticket={}", path("presence-room"), body["ticket"].as_str().unwrap());
    let mut stream = open(&server, &target, &[]).await.unwrap();
    let confirmed = stream.opened(1).await;
    let presence = &confirmed[0]["data"]["presence"];
    assert_eq!(presence["count"], 2, "{presence}");
    assert_eq!(presence["hash"]["7"], json!({"name": "Ada"}));
    let added = ws.recv().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    let member: Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(member, json!({"user_id": "7", "user_info": {"name": "Ada"}}));
    eventually(&server, &format!("/apps/{APP_ID}/channels/presence-room/users"), |b| {
        b["users"].as_array().unwrap().len() == 2
    })
    .await;

    // The stream sees the others come and go, as a WebSocket member does.
    let (mut other, other_id) = server.connect().await;
    let data = json!({"user_id": "third"}).to_string();
    let auth = make_auth(KEY, SECRET, &channel_auth_message(&other_id, "presence-room", Some(&data)));
    other.send(&json!({"event": "pusher:subscribe", "data": {"channel": "presence-room", "auth": auth, "channel_data": data}}).to_string()).await;
    let (name, data, _) = stream.event().await;
    assert_eq!((name.as_str(), &data["data"]["user_id"]), ("pusher:member_added", &json!("third")));

    drop(stream);
    loop {
        let message = ws.recv().await;
        if message["event"] == "pusher_internal:member_removed" {
            let gone: Value = serde_json::from_str(message["data"].as_str().unwrap()).unwrap();
            assert_eq!(gone, json!({"user_id": "7"}));
            break;
        }
    }
    eventually(&server, &format!("/apps/{APP_ID}/channels/presence-room/users"), |b| {
        !b["users"].as_array().unwrap().iter().any(|u| u["id"] == "7")
    })
    .await;
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused_with_403() {
    let server = TestServer::start("", r#"allowed_origins = ["https://good.example"]"#).await;
    let target = path("news");
    for origins in [vec!["https://evil.example"], vec!["https://good.example", "https://evil.example"]] {
        let headers: Vec<(&str, String)> = origins.iter().map(|o| ("Origin", o.to_string())).collect();
        let (status, body) = open(&server, &target, &headers).await.err().expect("refused");
        assert_eq!((status, body["error"].as_str()), (403, Some("Origin not allowed")), "{origins:?}");
    }
    // Not visible ASCII: refused rather than read as no Origin.
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    tcp.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\nOrigin: https://g\u{f6}od.example\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 403");

    let stream = open(&server, &target, &[("Origin", "https://good.example".into())]).await.unwrap();
    assert_eq!(stream.header("access-control-allow-origin"), Some("https://good.example"));
    assert_eq!(stream.header("vary"), Some("origin"));
    let stream = open(&server, &target, &[]).await.expect("no Origin: not a browser");
    assert_eq!(stream.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn unknown_apps_bad_names_too_many_channels_and_the_quota_are_refused() {
    let server = TestServer::start("", "max_connections = 1").await;
    let (status, body) = open(&server, "/sse/nope?channels=a", &[]).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (404, Some("Unknown app key")));
    let many = (0..101).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
    for (channels, message) in [
        ("", "at least one"),
        ("a%20b", "Invalid channel"),
        ("%23server-to-user-1", "Invalid channel"),
        ("private-encrypted-x", "WebSocket"),
        (many.as_str(), "at most 100"),
    ] {
        let (status, body) = open(&server, &path(channels), &[]).await.err().expect("refused");
        assert_eq!(status, 400, "{channels}: {body}");
        assert!(body["error"].as_str().unwrap().contains(message), "{body}");
    }
    let hundred = (0..100).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
    let mut first = open(&server, &path(&hundred), &[]).await.expect("100 channels are fine");
    first.opened(100).await;
    let (status, body) = open(&server, &path("a"), &[]).await.err().expect("over the app's quota");
    assert_eq!(status, 403, "{body}");
    drop(first);
    eventually(&server, &format!("/apps/{APP_ID}/connections"), |b| b["connections"] == 0).await;
    open(&server, &path("a"), &[]).await.expect("a slot is free again");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_and_server_memory_stays_bounded() {
    let server = TestServer::start("max_outbound_buffer = 262144", "").await;
    let (mut reader, _) = server.subscriber("flood").await;
    // A small receive buffer, so the kernel holds little of what the stalled client is owed.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(([127, 0, 0, 1], server.port).into()).await.unwrap();
    let mut stalled = request(server.port, &path("flood"), &[], tcp).await.expect("opened");
    eventually(&server, &format!("/apps/{APP_ID}/connections"), |b| b["connections"] == 2).await;
    let before = server.rss_kib();
    let batches = 150; // 150 x 10 x 8 KB = 12 MB owed to each subscriber
    let reading = tokio::spawn(async move {
        for _ in 0..batches * 10 {
            reader.recv().await;
        }
        reader
    });
    let payload = "z".repeat(8000);
    for _ in 0..batches {
        let batch: Vec<Value> = (0..10).map(|_| json!({"name": "e", "channel": "flood", "data": payload})).collect();
        let body = json!({ "batch": batch }).to_string();
        assert_eq!(server.api("POST", &format!("/apps/{APP_ID}/batch_events"), &body, &[]).await.0, 200);
    }
    let _reader = tokio::time::timeout(Duration::from_secs(30), reading).await.expect("the reader got everything");
    let growth_mib = server.rss_kib().saturating_sub(before) / 1024;
    assert!(growth_mib < 48, "server RSS grew by {growth_mib} MiB");
    // The stalled stream is cut (its goodbye is bounded at 2 s, as it does not read).
    eventually(&server, &format!("/apps/{APP_ID}/connections"), |b| b["connections"] == 1).await;
    assert!(metric(&server, "herald_slow_consumer_disconnects_total").await >= 1.0);
    assert!(metric(&server, "herald_errors_total{code=\"4100\"}").await >= 1.0);
    // What it was sent before the cut is still readable, then the stream ends.
    let events = stalled.until_end(Duration::from_secs(10)).await;
    assert!(events.len() < batches * 10, "cut before the end: {} events", events.len());
}

#[tokio::test]
async fn a_thousand_streams_opened_and_dropped_leave_the_hub_empty() {
    let server = TestServer::start("", "").await;
    let (status, _) = server.api("GET", &format!("/apps/{APP_ID}/connections"), "", &[]).await;
    assert_eq!(status, 200);
    let port = server.port;
    for round in 0..10 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            tasks.spawn(async move {
                let (target, headers) = match i % 3 {
                    0 => (path(&format!("news,room-{i}")), vec![]),
                    1 => (
                        path("private-orders"),
                        vec![("Authorization", bearer(&format!("u{i}"), &["private-orders"], None))],
                    ),
                    _ => (
                        path("presence-lobby,news"),
                        vec![("Authorization", bearer(&format!("u{i}"), &["presence-lobby"], None))],
                    ),
                };
                let mut stream = open_on(port, &target, &headers).await.expect("opened");
                stream.opened(if i % 3 == 1 { 1 } else { 2 }).await;
                stream
            });
        }
        let mut streams = Vec::new();
        while let Some(stream) = tasks.join_next().await {
            streams.push(stream.unwrap());
        }
        assert_eq!(streams.len(), 100, "round {round}");
        drop(streams);
    }
    eventually(&server, &format!("/apps/{APP_ID}/connections"), |b| b["connections"] == 0).await;
    eventually(&server, &format!("/apps/{APP_ID}/channels"), |b| b["channels"] == json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "herald_subscriptions").await != 0.0 || metric(&server, "herald_active_apps").await != 0.0 {
        assert!(Instant::now() < deadline, "subscriptions or app state left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&server, "herald_channels").await, 0.0);
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_4200() {
    let mut server = TestServer::start("", "").await;
    let mut a = open(&server, &path("news"), &[]).await.unwrap();
    let mut b =
        open(&server, &path("private-x"), &[("Authorization", bearer("7", &["private-x"], None))]).await.unwrap();
    a.opened(1).await;
    b.opened(1).await;
    let exited = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    for stream in [&mut a, &mut b] {
        let events = stream.until_end(Duration::from_secs(10)).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0],
            ("pusher:error".to_owned(), json!({"data": {"code": 4200, "message": "Server is shutting down"}}))
        );
    }
    let (_server, status) = exited.await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "exits cleanly and in time: {status:?}");
}

#[tokio::test]
async fn events_for_the_user_reach_its_stream_and_terminate_connections_ends_it() {
    let server = TestServer::start("", "").await;
    // Only users a sign-in would accept: any other could never be terminated.
    for sub in ["a b", "a\u{0}b", "\u{fc}n\u{ef}"] {
        let (status, body) =
            open(&server, &path("news"), &[("Authorization", bearer(sub, &[], None))]).await.err().unwrap();
        assert_eq!(status, 400, "{sub:?}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.starts_with("Invalid user id")), "{body}");
    }
    let mut stream = open(&server, &path("news"), &[("Authorization", bearer("42", &[], None))]).await.unwrap();
    stream.opened(1).await;
    assert_eq!(server.trigger("#server-to-user-42", "hello", r#"{"to":"you"}"#).await, 200);
    let (name, data, _) = stream.event().await;
    assert_eq!((name.as_str(), &data), ("hello", &json!({"channel": "#server-to-user-42", "data": {"to": "you"}})));
    let (status, _) = server.api("POST", &format!("/apps/{APP_ID}/users/42/terminate_connections"), "{}", &[]).await;
    assert_eq!(status, 200);
    let events = stream.until_end(Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "pusher:error");
    assert_eq!(events[0].1["data"]["code"], 4009);
    eventually(&server, &format!("/apps/{APP_ID}/connections"), |b| b["connections"] == 0).await;
}

#[tokio::test]
async fn a_ticket_issued_on_one_node_is_redeemed_once_on_any_node() {
    let redis = Redis::start();
    let nodes = redis.nodes(2, "").await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (status, body) = ticket(a, json!({"channels": ["private-orders"], "user_id": "7"})).await;
    assert_eq!(status, 200, "{body}");
    let target = format!("{}&ticket={}", path("private-orders"), body["ticket"].as_str().unwrap());
    let mut stream = open(b, &target, &[]).await.expect("redeemed on the other node");
    stream.opened(1).await;
    for node in [a, b] {
        let (status, body) = open(node, &target, &[]).await.err().expect("used once only");
        assert_eq!((status, body["error"].as_str()), (401, Some("Ticket already used")));
    }
    // Events published on node A reach the stream on node B.
    assert_eq!(a.trigger("private-orders", "order.paid", r#"{"id":3}"#).await, 200);
    let (name, data, _) = stream.event().await;
    assert_eq!((name.as_str(), &data["data"]["id"]), ("order.paid", &json!(3)));
    // Both tickets redeemed at once on the two nodes: exactly one wins.
    let (_, body) = ticket(b, json!({"channels": ["private-orders"]})).await;
    let target = format!("{}&ticket={}", path("private-orders"), body["ticket"].as_str().unwrap());
    let (on_a, on_b) = tokio::join!(open(a, &target, &[]), open(b, &target, &[]));
    assert_eq!([on_a.is_ok(), on_b.is_ok()].iter().filter(|ok| **ok).count(), 1, "exactly one redemption wins");
}

#[tokio::test]
async fn a_client_that_keeps_sending_on_its_stream_is_dropped() {
    let server = TestServer::start("", "").await;
    let mut stream = open(&server, &path("news"), &[]).await.unwrap();
    stream.opened(1).await;
    // A little is read and ignored (a stream expects nothing after its request).
    stream.tcp.write_all(&[b'x'; 1000]).await.unwrap();
    assert_eq!(server.trigger("news", "e", "1").await, 200);
    assert_eq!(stream.event().await.0, "e");
    // More than 64 KiB ends the stream.
    let _ = stream.tcp.write_all(&vec![b'x'; 70_000]).await;
    stream.until_end(Duration::from_secs(10)).await;
    eventually(&server, &format!("/apps/{APP_ID}/connections"), |b| b["connections"] == 0).await;
}
