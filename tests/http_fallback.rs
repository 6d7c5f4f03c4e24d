//! pusher-js's HTTP fallbacks (`xhr_streaming`, `xhr_polling`) on the wire: the session lifecycle
//! and hostile input, with raw HTTP requests against a real server. (The real pusher-js client
//! on both transports is in tests/compat/test/http_fallback.test.js.)

mod common;

use std::time::{Duration, Instant};

use common::{unused_port, Redis, TestServer, APP_ID, KEY, SECRET};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const QUERY: &str = "protocol=7&client=js&version=8.6.0";

fn url(server: &TestServer, session: &str, what: &str) -> String {
    format!("http://127.0.0.1:{}/pusher/app/{KEY}/{session}/{what}?{QUERY}", server.port)
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> (u16, String) {
    let response = client.post(url).header("content-type", "application/json").body(body.to_owned()).send().await;
    let response = response.expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The Pusher messages of a receive response's `a[...]` lines, parsed.
fn messages(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix('a'))
        .flat_map(|array| serde_json::from_str::<Vec<String>>(array).expect("an a-line is an array of strings"))
        .map(|message| serde_json::from_str(&message).expect("each message is JSON"))
        .collect()
}

/// Opens a polling session (its first poll) and returns its socket id.
async fn open_polling(client: &reqwest::Client, server: &TestServer, session: &str) -> String {
    let (status, body) = post(client, &url(server, session, "xhr"), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("o\n"), "a session's first answer starts with `o`: {body:?}");
    let established = messages(&body).into_iter().find(|m| m["event"] == "pusher:connection_established");
    let data: Value =
        serde_json::from_str(established.expect("connection_established")["data"].as_str().unwrap()).unwrap();
    data["socket_id"].as_str().unwrap().to_owned()
}

async fn send(client: &reqwest::Client, server: &TestServer, session: &str, messages: &[Value]) -> (u16, String) {
    let body: Vec<String> = messages.iter().map(Value::to_string).collect();
    post(client, &url(server, session, "xhr_send"), &serde_json::to_string(&body).unwrap()).await
}

async fn wait_for_metric(server: &TestServer, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let value = server.metric(name).await;
        if value == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_polling_session_subscribes_receives_and_keeps_one_open_line() {
    let server = TestServer::start("", "").await;
    let client = reqwest::Client::new();
    let session = "1/pollabcd";
    open_polling(&client, &server, session).await;
    let subscribe = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": "news"}});
    let (status, body) = send(&client, &server, session, &[subscribe]).await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, body) = post(&client, &url(&server, session, "xhr"), "").await;
    assert_eq!(status, 200);
    assert!(!body.starts_with('o'), "a second poll of the same session has no second `o`: {body:?}");
    assert_eq!(messages(&body)[0]["event"], "pusher_internal:subscription_succeeded");

    // An event published between two polls waits in the session's queue for the next one.
    assert_eq!(server.trigger("news", "tick", r#"{"n":1}"#).await, 200);
    let (_, body) = post(&client, &url(&server, session, "xhr"), "").await;
    let got = messages(&body);
    assert_eq!((got[0]["event"].as_str(), got[0]["channel"].as_str()), (Some("tick"), Some("news")));
    assert_eq!(got[0]["data"], r#"{"n":1}"#);

    // `[]` is pusher-js's ping over HTTP: accepted, nothing to answer.
    assert_eq!(post(&client, &url(&server, session, "xhr_send"), "[]").await.0, 204);
}

#[tokio::test]
async fn unknown_sessions_bad_paths_and_bad_bodies_get_clear_errors_and_leave_the_session_working() {
    let server = TestServer::start("", "max_message_size = 1000").await;
    let client = reqwest::Client::new();
    let session = "7/goodsess";
    open_polling(&client, &server, session).await;

    let error =
        |body: &str| serde_json::from_str::<Value>(body).ok().and_then(|v| v["error"].as_str().map(str::to_owned));
    let (status, body) = post(&client, &url(&server, "7/nosuchse", "xhr_send"), "[]").await;
    assert_eq!(status, 404, "{body}");
    assert!(error(&body).is_some_and(|e| e.contains("Unknown session")), "{body}");
    for bad in ["not json", "[1,2]", r#"{"event":"x"}"#, "[\"\u{0}\"", ""] {
        let (status, body) = post(&client, &url(&server, session, "xhr_send"), bad).await;
        assert_eq!(status, 400, "{bad:?} -> {body}");
        assert!(error(&body).is_some(), "a JSON error for {bad:?}: {body}");
    }
    let oversized = serde_json::to_string(&vec!["x".repeat(1001)]).unwrap();
    assert_eq!(post(&client, &url(&server, session, "xhr_send"), &oversized).await.0, 413);
    let huge_body = "[".to_owned() + &"\"x\",".repeat(2000) + "\"x\"]";
    assert_eq!(post(&client, &url(&server, session, "xhr_send"), &huge_body).await.0, 413);
    for path in ["1000/abcdefgh", "12/ABCDEFGH", "x/abc", &format!("1/{}", "a".repeat(33))] {
        assert_eq!(post(&client, &url(&server, path, "xhr"), "").await.0, 400, "{path}");
    }
    let unknown_app = format!("http://127.0.0.1:{}/pusher/app/nokey/1/abcdefgh/xhr?{QUERY}", server.port);
    let (status, body) = post(&client, &unknown_app, "").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("o\n") && body.contains("4001") && body.contains("\nc[4001,"), "{body:?}");
    let no_protocol = format!("http://127.0.0.1:{}/pusher/app/{KEY}/1/noprotoc/xhr", server.port);
    assert!(post(&client, &no_protocol, "").await.1.contains("c[4008,"), "a missing protocol version is 4008");
    // A malformed Pusher message inside a well-formed body is the session's business, as on a
    // WebSocket: a pusher:error, and the session goes on.
    assert_eq!(post(&client, &url(&server, session, "xhr_send"), r#"["{not json"]"#).await.0, 204);
    let (_, body) = post(&client, &url(&server, session, "xhr"), "").await;
    assert_eq!(messages(&body)[0]["event"], "pusher:error", "{body}");

    // After all of that, the session works.
    let subscribe = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": "after"}});
    assert_eq!(send(&client, &server, session, &[subscribe]).await.0, 204);
    let (_, body) = post(&client, &url(&server, session, "xhr"), "").await;
    assert_eq!(messages(&body)[0]["event"], "pusher_internal:subscription_succeeded", "{body}");
}

#[tokio::test]
async fn a_thousand_abandoned_sessions_expire_and_leave_nothing_behind() {
    let server = TestServer::start("http_session_timeout_ms = 1000", "").await;
    let client = reqwest::Client::new();
    let baseline_kib = server.rss_kib();
    const SESSIONS: usize = 1000;
    for i in 0..SESSIONS {
        let session = format!("{}/s{i:07}", i % 1000);
        open_polling(&client, &server, &session).await;
        let subscribe =
            serde_json::json!({"event": "pusher:subscribe", "data": {"channel": format!("room-{}", i % 10)}});
        assert_eq!(send(&client, &server, &session, &[subscribe]).await.0, 204);
    }
    // Every poll answered and none renewed: they all expire about a second after their last poll.
    let peak_kib = server.rss_kib();
    wait_for_metric(&server, "herald_http_sessions", 0.0, Duration::from_secs(10)).await;
    wait_for_metric(&server, "herald_connections", 0.0, Duration::from_secs(5)).await;
    assert_eq!(server.metric("herald_subscriptions").await, 0.0);
    assert_eq!(server.metric("herald_channels").await, 0.0);
    let (status, body) = server.api("GET", &format!("/apps/{}/channels", common::APP_ID), "", &[]).await;
    assert_eq!((status, &body["channels"]), (200, &serde_json::json!({})));
    let after_kib = server.rss_kib();
    eprintln!("RSS: baseline {baseline_kib} KiB, {SESSIONS} sessions {peak_kib} KiB, after expiry {after_kib} KiB");
    assert!(after_kib < baseline_kib + 16 * 1024, "memory after expiry: {after_kib} KiB (baseline {baseline_kib} KiB)");
    // An expired session is unknown: its client's next request says so.
    assert_eq!(post(&client, &url(&server, "0/s0000000", "xhr_send"), "[]").await.0, 404);
}

#[tokio::test]
async fn a_stream_nobody_reads_is_cut_as_a_slow_consumer_with_memory_bounded() {
    let server = TestServer::start("max_outbound_buffer = 1048576", "").await;
    let client = reqwest::Client::new();
    let session = "3/slowread";
    // A raw socket that sends the streaming request, reads its first bytes, then never reads again.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let request = format!(
        "POST /pusher/app/{KEY}/{session}/xhr_streaming?{QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains("connection_established") {
        let mut chunk = [0u8; 4096];
        let n =
            tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk)).await.expect("the stream opens").unwrap();
        assert!(n > 0, "the stream ended before it opened: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let subscribe = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": "firehose"}});
    assert_eq!(send(&client, &server, session, &[subscribe]).await.0, 204);
    let before_kib = server.rss_kib();

    // Up to 36 MB published at a reader that takes nothing (the socket buffers alone take a few).
    let payload = serde_json::to_string(&"y".repeat(9_000)).unwrap();
    for i in 0..4000 {
        let body = serde_json::json!({"name": "big", "channel": "firehose", "data": payload}).to_string();
        let (status, _) = server.api("POST", &format!("/apps/{}/events", common::APP_ID), &body, &[]).await;
        assert_eq!(status, 200);
        if i % 100 == 0 && server.metric("herald_slow_consumer_disconnects_total").await >= 1.0 {
            break;
        }
    }
    wait_for_metric(&server, "herald_slow_consumer_disconnects_total", 1.0, Duration::from_secs(10)).await;
    wait_for_metric(&server, "herald_http_sessions", 0.0, Duration::from_secs(10)).await;
    let grown_kib = server.rss_kib().saturating_sub(before_kib);
    assert!(grown_kib < 24 * 1024, "server memory grew {grown_kib} KiB for a reader that takes nothing");
    // Everyone else is served as before.
    let (mut ws, _) = server.subscriber("firehose").await;
    assert_eq!(server.trigger("firehose", "small", "{}").await, 200);
    assert_eq!(ws.recv().await["event"], "small");
    drop(stream);
}

/// A node whose advertised address accepts connections and never answers (the fault itself: a
/// stalled process, a black-holing firewall): a request relayed to it is answered 504 within the
/// relay's deadline, rather than left hanging with its client.
#[tokio::test]
async fn a_request_relayed_to_a_stalled_node_is_answered_504_instead_of_hanging() {
    let redis = Redis::start();
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_url = format!("http://{}", stalled.local_addr().unwrap());
    // Holds what it accepts (a bounded number), reads and writes nothing.
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 100 {
            let Ok((connection, _)) = stalled.accept().await else { break };
            held.push(connection);
        }
        std::future::pending::<()>().await
    });
    let prefix = format!("herald-relay-{}", rand::random::<u32>());
    let node = |port: u16, node_url: &str| {
        format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[scaling]\nenabled = true\nredis_url = \"redis://127.0.0.1:{}\"\nchannel = \"{prefix}\"\n{node_url}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n",
            redis.port
        )
    };
    // Node A tells the cluster that its sessions live at the stalled address.
    let port_a = unused_port();
    let a = TestServer::start_with_config(port_a, &node(port_a, &format!("node_url = \"{stalled_url}\"")), &[]).await;
    let port_b = unused_port();
    let b = TestServer::start_with_config(port_b, &node(port_b, ""), &[]).await;
    let client = reqwest::Client::new();
    let session = "7/stalled1";
    open_polling(&client, &a, session).await;

    // The bound is the relay's deadline plus slack for a slow machine; a relay without one hangs.
    let bound = Duration::from_secs(30);
    for (what, body) in [("xhr_send", "[]"), ("xhr", "")] {
        let answer = tokio::time::timeout(bound, post(&client, &url(&b, session, what), body)).await;
        let (status, body) = answer.unwrap_or_else(|_| panic!("{what} relayed to a stalled node hung"));
        assert_eq!(status, 504, "{what}: {body}");
        assert!(body.contains("did not answer in time"), "{what}: {body}");
    }
    // The session itself, on node A, is untouched.
    assert_eq!(send(&client, &a, session, &[]).await.0, 204);
}

/// Reads from `stream` into `seen` until `done(seen)` holds or the stream ends; fails at `within`.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, within: Duration, done: impl Fn(&str) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done(&String::from_utf8_lossy(seen)) {
        let mut chunk = [0u8; 16384];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        match read.expect("the stream said it in time") {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// pusher-js reopens its stream once a response has carried 256 KiB (its buffer is never
/// trimmed): the new request for the same session replaces the held one, which ends at once, and
/// every later message arrives on the new one, in order.
#[tokio::test]
async fn a_stream_reopened_after_256_kib_ends_the_old_one_and_the_new_one_carries_on() {
    let server = TestServer::start("", "").await;
    let client = reqwest::Client::new();
    let session = "4/reopened";
    let request = format!(
        "POST /pusher/app/{KEY}/{session}/xhr_streaming?{QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    );
    let mut first = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    assert!(read_until(&mut first, &mut seen, Duration::from_secs(5), |s| s.contains("connection_established")).await);
    let subscribe = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": "news"}});
    assert_eq!(send(&client, &server, session, &[subscribe]).await.0, 204);
    assert!(read_until(&mut first, &mut seen, Duration::from_secs(5), |s| s.contains("subscription_succeeded")).await);

    let payload = "z".repeat(9_000);
    for i in 0..32 {
        let data = serde_json::json!({ "i": i, "payload": payload }).to_string();
        assert_eq!(server.trigger("news", "big", &data).await, 200);
    }
    let all_big = |s: &str| s.matches("\\\"event\\\":\\\"big\\\"").count() == 32;
    assert!(
        read_until(&mut first, &mut seen, Duration::from_secs(10), all_big).await,
        "32 big events on the first stream"
    );
    assert!(seen.len() > 256 * 1024, "the first stream carried {} bytes", seen.len());

    let mut second = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    // The replaced stream ends (its socket closes), without a close line: the session lives on.
    let before = seen.len();
    assert!(!read_until(&mut first, &mut seen, Duration::from_secs(5), |_| false).await);
    assert!(!String::from_utf8_lossy(&seen[before..]).contains("c["), "no close line on the replaced stream");

    for i in 0..5 {
        assert_eq!(server.trigger("news", "after", &format!("{{\"i\":{i}}}")).await, 200);
    }
    let mut again = Vec::new();
    let five = |s: &str| s.matches("\\\"event\\\":\\\"after\\\"").count() == 5;
    assert!(read_until(&mut second, &mut again, Duration::from_secs(5), five).await, "5 events on the reopened stream");
    let text = String::from_utf8_lossy(&again).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!body.starts_with("o\n"), "a reopened stream does not open the session again: {body:?}");
    let order: Vec<i64> = messages(body)
        .iter()
        .filter(|m| m["event"] == "after")
        .map(|m| serde_json::from_str::<Value>(m["data"].as_str().unwrap()).unwrap()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(server.metric("herald_http_sessions").await, 1.0);
}
