//! The WebSocket endpoint against a real server over real sockets.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn data_of(message: &Value) -> Value {
    match &message["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

#[tokio::test]
async fn connection_established_carries_a_unique_socket_id_and_the_activity_timeout() {
    let server = TestServer::start("", "activity_timeout = 42").await;
    let (_a, id_a) = server.connect().await;
    let (_b, id_b) = server.connect().await;
    let pattern = |s: &str| {
        s.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && (a.to_owned() + b).bytes().all(|c| c.is_ascii_digit())
        })
    };
    assert!(pattern(&id_a) && pattern(&id_b), "{id_a} {id_b}");
    assert_ne!(id_a, id_b);

    let mut c = Client::connect(&server.ws_url(KEY, "protocol=7")).await;
    let established = c.recv().await;
    assert!(established["data"].is_string(), "data must be a JSON string: {established}");
    assert_eq!(data_of(&established)["activity_timeout"], 42);
}

#[tokio::test]
async fn unknown_key_and_bad_protocol_versions_are_refused_with_their_codes() {
    let server = TestServer::start("", "").await;
    for (key, query, code) in
        [("nope", "protocol=7", 4001), (KEY, "protocol=3", 4007), (KEY, "protocol=x", 4006), (KEY, "client=js", 4008)]
    {
        let mut c = Client::connect(&server.ws_url(key, query)).await;
        let error = c.recv().await;
        assert_eq!(error["event"], "pusher:error", "{key} {query}: {error}");
        assert_eq!(data_of(&error)["code"], code, "{key} {query}");
        assert_eq!(c.closed_with().await, Some(code), "{key} {query}");
    }
    // Protocol 5 and 6 clients (pysher) are served.
    for version in ["5", "6"] {
        let mut c = Client::connect(&server.ws_url(KEY, &format!("protocol={version}"))).await;
        assert_eq!(c.recv().await["event"], "pusher:connection_established");
    }
}

#[tokio::test]
async fn ping_pong_and_bad_messages_keep_the_connection_open() {
    let server = TestServer::start("", "").await;
    let (mut c, _) = server.connect().await;
    c.send(r#"{"event":"pusher:ping","data":{}}"#).await;
    assert_eq!(c.recv().await["event"], "pusher:pong");

    for bad in [
        "not json",
        "{}",
        "[1,2]",
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":7}}"#,
        r#"{"event":"nope"}"#,
    ] {
        c.send(bad).await;
        let error = c.recv().await;
        assert_eq!(error["event"], "pusher:error", "{bad}: {error}");
        assert_eq!(data_of(&error)["code"], 4200, "{bad}");
    }
    c.ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(c.recv().await["event"], "pusher:error");

    // Still alive and serving.
    c.send(r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(c.recv().await["event"], "pusher:pong");
    c.subscribe("still-works").await;
}

trait SendBinary {
    async fn send_binary(&mut self, data: Vec<u8>);
}

impl SendBinary for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    async fn send_binary(&mut self, data: Vec<u8>) {
        use futures_util::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::binary(data)).await.unwrap();
    }
}

#[tokio::test]
async fn subscribe_validates_names_and_private_channels_need_a_valid_signature() {
    let server = TestServer::start("", "").await;
    let (mut c, socket_id) = server.connect().await;
    for bad in ["", "has space", "#other", &"x".repeat(165)] {
        c.send(&json!({"event":"pusher:subscribe","data":{"channel": bad}}).to_string()).await;
        let reply = c.recv().await;
        assert_eq!(reply["event"], "pusher:subscription_error", "{bad:?}: {reply}");
        assert_eq!(reply["data"]["status"], 400);
    }
    // No auth, a forged auth, an auth for another socket: refused with 401.
    let other_socket = herald::protocol::signature::make_auth(KEY, SECRET, "1.1:private-room");
    for auth in [None, Some(format!("{KEY}:{}", "0".repeat(64))), Some(other_socket)] {
        let mut data = json!({"channel": "private-room"});
        if let Some(auth) = auth {
            data["auth"] = auth.into();
        }
        c.send(&json!({"event":"pusher:subscribe","data": data}).to_string()).await;
        let reply = c.recv().await;
        assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
        assert_eq!(reply["channel"], "private-room");
        assert_eq!(reply["data"]["status"], 401);
    }
    assert_eq!(server.trigger("private-room", "secret", "x").await, 200);
    c.expect_silence(Duration::from_millis(300)).await;

    let auth = herald::protocol::signature::make_auth(KEY, SECRET, &format!("{socket_id}:private-room"));
    c.send(&json!({"event":"pusher:subscribe","data":{"channel":"private-room","auth": auth}}).to_string()).await;
    assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(server.trigger("private-room", "secret", "x").await, 200);
    assert_eq!(c.recv().await["event"], "secret");
}

#[tokio::test]
async fn events_arrive_complete_in_order_and_exclusion_skips_the_publisher() {
    let server = TestServer::start("", "").await;
    let (mut a, id_a) = server.subscriber("orders").await;
    let (mut b, _) = server.subscriber("orders").await;

    let data = "{\"id\":42,\"note\":\"ünïcode \\\"quoted\\\" \\n\"}";
    assert_eq!(server.trigger("orders", "order.shipped", data).await, 200);
    for c in [&mut a, &mut b] {
        let event = c.recv().await;
        assert_eq!(event["event"], "order.shipped");
        assert_eq!(event["channel"], "orders");
        assert_eq!(event["data"].as_str(), Some(data), "data passes through byte for byte");
    }

    for n in 0..100 {
        assert_eq!(server.trigger("orders", "seq", &n.to_string()).await, 200);
    }
    for n in 0..100 {
        assert_eq!(b.recv().await["data"], n.to_string());
    }
    for n in 0..100 {
        assert_eq!(a.recv().await["data"], n.to_string());
    }

    let body = json!({"name": "e", "channel": "orders", "data": "x", "socket_id": id_a}).to_string();
    assert_eq!(server.api("POST", &format!("/apps/{APP_ID}/events"), &body, &[]).await.0, 200);
    assert_eq!(b.recv().await["event"], "e");
    a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unsubscribe_and_disconnect_leave_nothing_behind() {
    let server = TestServer::start("", "").await;
    let (mut a, _) = server.subscriber("room").await;
    let (b, _) = server.subscriber("room").await;
    a.send(r#"{"event":"pusher:unsubscribe","data":{"channel":"room"}}"#).await;
    // The ping round trip orders the unsubscribe before the trigger.
    a.send(r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(a.recv().await["event"], "pusher:pong");
    server.trigger("room", "e", "x").await;
    a.expect_silence(Duration::from_millis(300)).await;
    drop(b);

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, channels) = server.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
        if channels["channels"].as_object().is_some_and(|m| m.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "channel never vacated: {channels}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = server.api("GET", &format!("/apps/{APP_ID}/connections"), "", &[]).await;
        if body["connections"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "connections never reached 0: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_clients_are_pinged_and_dropped_with_4201_when_silent() {
    let server = TestServer::start("", "ping_interval = 1\nactivity_timeout = 1").await;
    // A client that answers stays connected across several ping rounds.
    let (mut polite, _) = server.connect().await;
    let (mut silent, _) = server.connect().await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        match polite.next_text(Duration::from_millis(200)).await {
            Ok(m) if m["event"] == "pusher:ping" => {
                pings += 1;
                polite.send(r#"{"event":"pusher:pong","data":{}}"#).await;
            }
            Ok(m) => panic!("unexpected {m}"),
            Err(Ended::Timeout) => {}
            Err(e) => panic!("the answering client was dropped: {e:?}"),
        }
    }
    assert!(pings >= 2, "expected repeated pings, got {pings}");
    let ping = silent.recv().await;
    assert_eq!(ping["event"], "pusher:ping");
    let error = silent.recv().await;
    assert_eq!(error["event"], "pusher:error");
    assert_eq!(data_of(&error)["code"], 4201);
    assert_eq!(silent.closed_with().await, Some(4201));
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let server = TestServer::start("", "max_message_size = 1024").await;
    let (mut c, _) = server.connect().await;
    c.send(&format!(r#"{{"event":"pusher:ping","data":"{}"}}"#, "x".repeat(2000))).await;
    assert_eq!(c.closed_with().await, Some(1009));
    // Others are unaffected.
    let (mut other, _) = server.connect().await;
    other.send(r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(other.recv().await["event"], "pusher:pong");
}

/// A frame refused from its header (1 MiB announced, 1 KiB allowed) while its payload is still
/// streaming in: the client still reads the 1009 close frame, instead of a reset that would destroy it.
#[tokio::test]
async fn a_refused_frame_still_gets_its_close_frame_while_the_rest_streams_in() {
    let server = TestServer::start("", "max_message_size = 1024").await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let head = format!(
        "GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = s.into_split();
    // Announce a masked 1 MiB binary frame, then stream 256 KiB of it while reading.
    let sender = tokio::spawn(async move {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        let _ = writer.write_all(&frame).await;
        for _ in 0..64 {
            if writer.write_all(&[0u8; 4096]).await.is_err() {
                break;
            }
        }
        writer
    });
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 65536];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the server ends the connection in time");
    let close = [0x88, 2 + "Message too big".len() as u8, 0x03, 0xF1];
    assert!(
        got.windows(close.len()).any(|w| w == close),
        "no 1009 close frame among {} bytes read (read ended with {outcome:?})",
        got.len()
    );
    drop(sender.await);
}

#[tokio::test]
async fn handshake_errors_get_http_answers_and_silent_sockets_are_cut_off() {
    let server = TestServer::start("handshake_timeout_ms = 500", "").await;
    let request = |extra: &str| format!("GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
    let exchange = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answer in time").unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let plain = exchange(request("")).await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    let wrong_version = exchange(request("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n")).await;
    assert!(wrong_version.starts_with("HTTP/1.1 426"), "{wrong_version}");
    assert!(wrong_version.to_lowercase().contains("sec-websocket-version: 13"), "{wrong_version}");
    let no_key = exchange(request("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n")).await;
    assert!(no_key.starts_with("HTTP/1.1 400"), "{no_key}");
    let ok = exchange(request("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")).await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(ok.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455's example accept key: {ok}");

    // A socket that never finishes its request head is closed by the deadline.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    s.write_all(b"GET /app/app-key HTTP/1.1\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept a silent socket open");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Pongs are written with the next batch and only the latest ping's answer is kept: a client that
/// floods pings and never reads costs no memory. While its pongs cannot be written the server stops
/// reading from it (the flood then waits in the kernel's buffers, not in Herald's), and once the
/// client reads again the flood goes on and its last ping is answered. Others are served meanwhile.
#[tokio::test]
async fn a_ping_flood_without_reading_costs_no_memory_and_the_latest_ping_is_answered() {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start("max_outbound_buffer = 65536", "").await;
    let (mut other, _) = server.subscriber("news").await;
    let rss_before = server.rss_kib();
    // A small receive buffer, so that whatever the server queues stays on the server.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], server.port).into()).await.unwrap();
    let (flooder, _) = tokio_tungstenite::client_async(server.ws_url(KEY, "protocol=7"), stream).await.unwrap();
    let (mut pings, mut pongs) = flooder.split();
    const PINGS: u32 = 300_000;
    let sent = std::sync::Arc::new(AtomicU32::new(0));
    let counter = sent.clone();
    let flood = tokio::spawn(async move {
        for n in 0..PINGS {
            let payload = format!("{n:0>120}");
            if pings.send(Message::Ping(payload.into_bytes().into())).await.is_err() {
                return n;
            }
            counter.store(n + 1, Ordering::Relaxed);
        }
        PINGS
    });
    // The flood runs until it is all sent or the server stops reading (no progress for 2 s): which
    // one depends on how fast this machine is, and both are right.
    let mut last_seen = (0, std::time::Instant::now());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !flood.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::Relaxed);
        if now != last_seen.0 {
            last_seen = (now, std::time::Instant::now());
        } else if last_seen.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let flooded = sent.load(Ordering::Relaxed);
    assert!(flooded > 10_000, "the server read only {flooded} pings");
    // Answering one pong per ping would hold hundreds of thousands of queue entries (tens of MB).
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "a flood of {flooded} pings grew the server by {grown} KiB");
    // Everyone else is served meanwhile.
    assert_eq!(server.trigger("news", "e", "during the flood").await, 200);
    assert_eq!(other.recv().await["data"], "during the flood");
    // Reading now: the server writes again, reads the rest of the flood, and answers its last ping.
    let final_ping = format!("{:0>120}", PINGS - 1);
    let last = tokio::time::timeout(Duration::from_secs(60), async {
        let mut last = None;
        loop {
            match tokio::time::timeout(Duration::from_secs(2), pongs.next()).await {
                Ok(Some(Ok(Message::Pong(payload)))) => {
                    last = Some(String::from_utf8_lossy(&payload).into_owned());
                    if last.as_deref() == Some(final_ping.as_str()) {
                        return last;
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(None) | Ok(Some(Err(_))) => return last,
                Err(_) if flood.is_finished() => return last,
                Err(_) => {}
            }
        }
    })
    .await
    .expect("pongs drained in time");
    assert_eq!(flood.await.unwrap(), PINGS, "the connection was dropped during the flood");
    assert_eq!(last, Some(final_ping), "the latest ping is answered");
}

#[tokio::test]
async fn a_slow_reader_is_dropped_while_others_get_every_event() {
    let server = TestServer::start("max_outbound_buffer = 262144", "").await;
    let (mut reader, _) = server.subscriber("firehose").await;
    let (mut stalled, _) = server.subscriber("firehose").await;
    let payload = "y".repeat(8000);
    let batches = 60;
    // The reader counts what it got, so the publisher can keep within the reader's pace: a reader on a
    // busy test machine must not become a slow consumer itself. The stalled client never reads.
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = got.clone();
    let reading = tokio::spawn(async move {
        let mut n = 0;
        while n < batches * 10 {
            let m = reader.recv().await;
            assert_eq!(m["data"].as_str().map(str::len), Some(8000), "{m}");
            n += 1;
            counted.store(n, std::sync::atomic::Ordering::Release);
        }
        n
    });
    for sent in 0..batches {
        // At most two batches (160 KB) ahead of the reader: under its 256 KiB queue limit.
        let behind = tokio::time::timeout(Duration::from_secs(10), async {
            while got.load(std::sync::atomic::Ordering::Acquire) + 20 < sent * 10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert!(behind.await.is_ok(), "the reading client stopped receiving");
        let batch: Vec<Value> = (0..10).map(|_| json!({"name": "e", "channel": "firehose", "data": payload})).collect();
        let (status, body) = server
            .api("POST", &format!("/apps/{APP_ID}/batch_events"), &json!({"batch": batch}).to_string(), &[])
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(tokio::time::timeout(Duration::from_secs(20), reading).await.unwrap().unwrap(), batches * 10);
    // The stalled client now reads what the kernel buffered, then learns it was dropped.
    let mut received = 0;
    let end = loop {
        match stalled.next_text(Duration::from_secs(10)).await {
            Ok(m) if m["event"] == "e" => received += 1,
            Ok(m) => {
                assert_eq!(data_of(&m)["code"], 4100, "{m}");
            }
            Err(end) => break end,
        }
    };
    assert!(received < batches * 10, "a stalled client cannot have received everything");
    assert!(matches!(end, Ended::Closed(Some(4100)) | Ended::Eof), "{end:?}");
}

#[tokio::test]
async fn foreign_origins_are_refused_with_4009() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start("", r#"allowed_origins = ["https://app.example.com", "*.example.org"]"#).await;
    let attempt = |origin: Option<&'static str>| {
        let url = server.ws_url(KEY, "protocol=7");
        async move {
            let mut request = url.into_client_request().unwrap();
            if let Some(origin) = origin {
                request.headers_mut().insert("Origin", origin.parse().unwrap());
            }
            let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("handshake");
            let mut client = Client { ws };
            client.recv().await
        }
    };
    for allowed in [Some("https://app.example.com"), Some("https://eu.example.org"), None] {
        assert_eq!(attempt(allowed).await["event"], "pusher:connection_established", "{allowed:?}");
    }
    for refused in ["https://evil.example", "http://app.example.com", "https://example.org"] {
        let error = attempt(Some(refused)).await;
        assert_eq!(error["event"], "pusher:error", "{refused}");
        assert_eq!(data_of(&error)["code"], 4009, "{refused}");
    }
}

#[tokio::test]
async fn reverb_rate_limiting_refuses_or_terminates_floods() {
    let limits = "[apps.rate_limiting]\nenabled = true\nmax_attempts = 3\ndecay_seconds = 60";
    let server = TestServer::start("", limits).await;
    let (mut c, _) = server.connect().await;
    for _ in 0..5 {
        c.send(r#"{"event":"pusher:ping"}"#).await;
    }
    let mut events = Vec::new();
    for _ in 0..5 {
        let m = c.recv().await;
        events.push(if m["event"] == "pusher:error" {
            data_of(&m)["code"].to_string()
        } else {
            m["event"].to_string()
        });
    }
    assert_eq!(events, ["\"pusher:pong\"", "\"pusher:pong\"", "\"pusher:pong\"", "4301", "4301"]);

    let server = TestServer::start("", &format!("{limits}\nterminate = true")).await;
    let (mut c, _) = server.connect().await;
    for _ in 0..4 {
        c.send(r#"{"event":"pusher:ping"}"#).await;
    }
    assert_eq!(c.closed_with().await, Some(4301));
}

#[tokio::test]
async fn shutdown_tells_every_client_to_reconnect_with_4200() {
    let mut server = TestServer::start("", "").await;
    let (mut a, _) = server.subscriber("news").await;
    let (mut b, _) = server.connect().await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    for c in [&mut a, &mut b] {
        let error = c.recv().await;
        assert_eq!(error["event"], "pusher:error");
        assert_eq!(data_of(&error)["code"], 4200);
        assert_eq!(c.closed_with().await, Some(4200));
    }
    let (_server, status) = status.await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "exits cleanly and in time: {status:?}");
}

#[tokio::test]
async fn the_connection_quota_refuses_with_4004_and_frees_slots_on_disconnect() {
    let server = TestServer::start("", "max_connections = 2").await;
    let (a, _) = server.connect().await;
    let (_b, _) = server.connect().await;
    let mut third = Client::connect(&server.ws_url(KEY, "protocol=7")).await;
    let error = third.recv().await;
    assert_eq!(data_of(&error)["code"], 4004, "{error}");
    assert_eq!(third.closed_with().await, Some(4004));
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(&server.ws_url(KEY, "protocol=7")).await;
        if c.recv().await["event"] == "pusher:connection_established" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_may_hold_at_most_100_subscriptions() {
    let server = TestServer::start("", "").await;
    let (mut c, _) = server.connect().await;
    for i in 0..100 {
        c.send(&json!({"event":"pusher:subscribe","data":{"channel": format!("c{i}")}}).to_string()).await;
    }
    for _ in 0..100 {
        assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    }
    c.send(r#"{"event":"pusher:subscribe","data":{"channel":"one-too-many"}}"#).await;
    let refused = c.recv().await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(refused["channel"], "one-too-many");
    // Re-subscribing to a channel it holds is fine.
    c.subscribe("c7").await;
}

#[tokio::test]
async fn debug_logs_carry_ids_but_no_secrets_signatures_or_query_strings() {
    let port = unused_port();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n"
    );
    let mut server = TestServer::start_with_config(port, &config, &[("HERALD_LOG", "debug")]).await;
    let mut c = Client::connect(&server.ws_url(KEY, "protocol=7&token=QUERYSECRET")).await;
    let established = c.recv().await;
    let socket_id = data_of(&established)["socket_id"].as_str().unwrap().to_owned();
    let auth = herald::protocol::signature::make_auth(KEY, SECRET, &format!("{socket_id}:private-x"));
    c.send(&json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth": auth}}).to_string()).await;
    assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    let (status, _) = server.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
    assert_eq!(status, 200);
    server.api_as(KEY, "wrong", "GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.output();
    assert!(logs.contains(&socket_id), "logs should name the socket id: {logs}");
    let signature = auth.split_once(':').unwrap().1;
    for secret in [SECRET, signature, "QUERYSECRET", "auth_signature"] {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs:\n{logs}");
    }
}

#[tokio::test]
async fn stalled_readers_cannot_grow_the_server_s_memory() {
    let server = TestServer::start("max_outbound_buffer = 262144", "").await;
    let (mut reader, _) = server.subscriber("flood").await;
    // Twenty clients that subscribe and then never read again.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(server.subscriber("flood").await.0);
    }
    let before = server.rss_kib();
    let batches = 150; // 150 x 10 x 8 KB = 12 MB per subscriber, 240 MB if the stalled ones were buffered
    let reading = tokio::spawn(async move {
        for _ in 0..batches * 10 {
            reader.recv().await;
        }
        reader
    });
    let payload = "z".repeat(8000);
    for _ in 0..batches {
        let batch: Vec<Value> = (0..10).map(|_| json!({"name": "e", "channel": "flood", "data": payload})).collect();
        let body = json!({"batch": batch}).to_string();
        assert_eq!(server.api("POST", &format!("/apps/{APP_ID}/batch_events"), &body, &[]).await.0, 200);
    }
    let _reader = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reading client got every event")
        .unwrap();
    let after = server.rss_kib();
    assert!(before > 0 && after > 0);
    let growth_mib = after.saturating_sub(before) / 1024;
    assert!(growth_mib < 48, "server RSS grew by {growth_mib} MiB ({before} -> {after} KiB)");
    // Each stalled client is cut (its goodbye is bounded at 2 s, as it does not read).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, connections) = server.api("GET", &format!("/apps/{APP_ID}/connections"), "", &[]).await;
        if connections["connections"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stalled clients were not cut: {connections}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}
