//! Issue #15 hardening (HTTP API, connections, dashboard, Origin, webhooks, demo), each test against a
//! real server over real sockets.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// What the server sent on a raw connection, and whether it then closed it (else the wait ran out).
struct Answer {
    text: String,
    closed: bool,
}

/// Reads what `stream` sends until it closes or `wait` has passed.
async fn read_answer(stream: &mut TcpStream, wait: Duration) -> Answer {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Answer { text: String::from_utf8_lossy(&buf).into_owned(), closed: true },
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Answer { text: String::from_utf8_lossy(&buf).into_owned(), closed: false },
        }
    }
}

/// Connects, sends `request` as it is and reads the answer until the server closes or `wait` passes.
async fn exchange(port: u16, request: &[u8], wait: Duration) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    if stream.write_all(request).await.is_err() {
        return Answer { text: String::new(), closed: true };
    }
    read_answer(&mut stream, wait).await
}

/// A query that passes every check made before the body is read (key, version, fresh timestamp,
/// body_md5 and auth_signature present) but whose signature is wrong.
fn plausible_query() -> String {
    format!(
        "auth_key={KEY}&auth_timestamp={}&auth_version=1.0&body_md5=00000000000000000000000000000000&auth_signature=00",
        now()
    )
}

fn post_head(path_and_query: &str, content_length: usize) -> String {
    format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

#[tokio::test]
async fn an_api_body_not_sent_in_time_gets_408_and_the_connection_closes() {
    let server = TestServer::start("handshake_timeout_ms = 500", "").await;
    let path = format!("/apps/{APP_ID}/events?{}", plausible_query());
    let mut request = post_head(&path, 100).into_bytes();
    request.extend_from_slice(&[b' '; 50]);
    let answer = exchange(server.port, &request, Duration::from_secs(5)).await;
    assert!(answer.text.starts_with("HTTP/1.1 408"), "{:?}", answer.text);
    let body = answer.text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {:?}", answer.text));
    assert!(body["error"].is_string(), "{body}");
    assert!(answer.closed, "the connection is closed after the 408");
    // The server itself is fine.
    assert_eq!(server.trigger("c", "e", "d").await, 200);
}

#[tokio::test]
async fn unsigned_api_bodies_are_refused_before_they_are_read() {
    // The default deadline (10 s) is longer than the wait: a 401 within it was sent before the body.
    let server = TestServer::start("", "").await;
    let stale = format!(
        "auth_key={KEY}&auth_timestamp={}&auth_version=1.0&body_md5=00000000000000000000000000000000&auth_signature=00",
        now() - 3600
    );
    let no_md5 = format!("auth_key={KEY}&auth_timestamp={}&auth_version=1.0&auth_signature=00", now());
    let wrong_key = plausible_query().replace(KEY, "other-key");
    for query in ["".to_owned(), "auth_key=app-key".to_owned(), stale, no_md5, wrong_key] {
        let head = post_head(&format!("/apps/{APP_ID}/events?{query}"), 99_999);
        let answer = exchange(server.port, head.as_bytes(), Duration::from_secs(3)).await;
        assert!(answer.text.starts_with("HTTP/1.1 401"), "{query}: {:?}", answer.text);
        assert!(answer.text.contains("\"error\""), "{query}: {:?}", answer.text);
        assert!(answer.closed, "{query}: closed without waiting for the body");
    }
    // An unknown app is refused before its body too.
    let head = post_head(&format!("/apps/999/events?{}", plausible_query()), 99_999);
    let answer = exchange(server.port, head.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.text.starts_with("HTTP/1.1 404"), "{:?}", answer.text);
    assert!(answer.closed);
    // Signed requests still work, on a keep-alive connection too.
    for _ in 0..3 {
        assert_eq!(server.trigger("c", "e", "d").await, 200);
    }
}

/// Whether a new connection is served (a `GET /up` answered) or closed at once with no answer.
async fn served(port: u16) -> bool {
    let answer = exchange(port, b"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", Duration::from_secs(3)).await;
    if answer.text.is_empty() {
        assert!(answer.closed, "a refused connection is closed, not left hanging");
        false
    } else {
        assert!(answer.text.starts_with("HTTP/1.1 200"), "{:?}", answer.text);
        true
    }
}

/// Waits (bounded) until a new connection is served again.
async fn served_again(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !served(port).await {
        assert!(Instant::now() < deadline, "the freed slot was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /metrics`, retried (bounded) while a capped server has no slot free.
async fn metrics(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            if let Ok(text) = response.text().await {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "/metrics never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle keep-alive HTTP connection that has been answered once. Retried (bounded): the
/// connection of the readiness probe may not have been let go of yet.
async fn idle_http(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 1024];
        if stream.write_all(b"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.is_ok() {
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                if buf[..n].starts_with(b"HTTP/1.1 200") {
                    return stream;
                }
            }
        }
        assert!(Instant::now() < deadline, "no connection slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Pusher WebSocket client, connected and greeted; retried (bounded) like [`idle_http`].
async fn websocket(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    let url = format!("ws://127.0.0.1:{port}/app/{KEY}?protocol=7");
    loop {
        if let Ok(Ok((ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(&url)).await
        {
            let mut client = Client { ws };
            if let Ok(hello) = client.next_text(Duration::from_secs(5)).await {
                assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
                return client;
            }
        }
        assert!(Instant::now() < deadline, "no connection slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_over_the_per_ip_cap_are_closed_at_accept_and_counted() {
    let server = TestServer::start("max_connections_per_ip = 3\nper_ip_limit_exempt = []", "").await;
    // Two WebSockets (counted for as long as they are open, not only during their handshake) and
    // one idle keep-alive HTTP connection fill the cap.
    let ws1 = websocket(server.port).await;
    let _ws2 = websocket(server.port).await;
    let idle = idle_http(server.port).await;
    for _ in 0..3 {
        assert!(!served(server.port).await, "a 4th connection from 127.0.0.1 is refused");
    }
    drop(ws1);
    served_again(server.port).await;
    drop(idle);
    served_again(server.port).await;
    let text = metrics(server.port).await;
    let refused = text
        .lines()
        .find(|l| l.starts_with("herald_connections_refused_total{reason=\"per_ip\"}"))
        .unwrap_or_else(|| panic!("{text}"));
    let count: u64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3, "{refused}");
}

#[tokio::test]
async fn the_global_cap_applies_to_exempt_addresses_too() {
    // Loopback is exempt from the per-IP cap by default (a same-host proxy), never from the global one.
    let server = TestServer::start("max_connections = 2\nmax_connections_per_ip = 1", "").await;
    let ws = websocket(server.port).await;
    let idle = idle_http(server.port).await;
    assert!(!served(server.port).await, "a 3rd connection is refused");
    drop(idle);
    served_again(server.port).await;
    drop(ws);
    let text = metrics(server.port).await;
    assert!(text.contains("herald_connections_refused_total{reason=\"global\"}"), "{text}");
    assert!(!text.contains("reason=\"per_ip\""), "{text}");
}

fn basic(password: &str) -> String {
    use base64_engine as b64;
    format!("Basic {}", b64::encode(format!("admin:{password}").as_bytes()))
}

/// Standard base64, for the Basic header (the tests do not otherwise need a crate for it).
mod base64_engine {
    pub fn encode(input: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn dashboard_passwords_cannot_be_guessed_quickly() {
    const PASSWORD: &str = "correct horse battery staple";
    let server = TestServer::start(&format!("dashboard = true\ndashboard_password = \"{PASSWORD}\""), "").await;
    let url = format!("http://127.0.0.1:{}/dashboard/api/apps", server.port);
    // One keep-alive client, as a brute-forcer would use.
    let client = reqwest::Client::new();
    let get = |password: &str| client.get(&url).header("Authorization", basic(password)).send();
    assert_eq!(get(PASSWORD).await.unwrap().status(), 200);
    for i in 0..5 {
        assert_eq!(get(&format!("guess-{i}")).await.unwrap().status(), 401, "failure {i}");
    }
    let refused = get("guess-5").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    // While blocked, even the right password is not tried.
    assert_eq!(get(PASSWORD).await.unwrap().status(), 429);
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    assert_eq!(get(PASSWORD).await.unwrap().status(), 200, "served again after the wait");
    let text = metrics(server.port).await;
    let line =
        text.lines().find(|l| l.starts_with("herald_dashboard_auth_refused_total")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 2, "{line}");
}

#[test]
fn a_short_dashboard_password_is_refused_at_start_up() {
    let dir = std::env::temp_dir().join(format!("herald-hardening-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("herald.toml");
    let port = unused_port();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\ndashboard = true\ndashboard_password = \"fifteen-chars-x\"\n"
    );
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["start", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.is_some_and(|s| !s.success()), "a 15-character password must stop start-up: {stderr}");
    assert!(stderr.contains("dashboard_password") && stderr.contains("16"), "{stderr}");
}

/// A raw WebSocket handshake with `origins` as the Origin headers (bytes, not necessarily ASCII).
/// Returns the status line and, after a 101, the socket as a WebSocket client.
async fn handshake(
    port: u16,
    path: &str,
    origins: &[&[u8]],
) -> (String, Option<WebSocketStream<MaybeTlsStream<TcpStream>>>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    .into_bytes();
    for origin in origins {
        request.extend_from_slice(b"Origin: ");
        request.extend_from_slice(origin);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await.unwrap();
    // Read the answer's head byte by byte, so no WebSocket frame is consumed with it.
    let mut head = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!("no answer to the handshake: {other:?} after {:?}", String::from_utf8_lossy(&head)),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    if status.starts_with("HTTP/1.1 101") {
        (status, Some(WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await))
    } else {
        (status, None)
    }
}

#[tokio::test]
async fn the_pusher_endpoint_refuses_non_ascii_and_conflicting_origins_with_4009() {
    let server = TestServer::start("", r#"allowed_origins = ["https://app.example.com"]"#).await;
    let path = format!("/app/{KEY}?protocol=7");
    let cases: [(&[&[u8]], bool); 6] = [
        (&[b"https://app.example.com"], true),
        (&[], true),
        (&[b"https://app.example.com", b"https://app.example.com"], true),
        (&[b"https://app.example.com\xff"], false),
        (&[b"https://\xc3\xa9vil.example"], false),
        (&[b"https://app.example.com", b"https://evil.example"], false),
    ];
    for (origins, allowed) in cases {
        let (status, ws) = handshake(server.port, &path, origins).await;
        let ws = ws.unwrap_or_else(|| panic!("{origins:?}: {status}"));
        let mut client = Client { ws };
        let first = client.recv().await;
        if allowed {
            assert_eq!(first["event"], "pusher:connection_established", "{origins:?}: {first}");
        } else {
            assert_eq!(first["event"], "pusher:error", "{origins:?}: {first}");
            let data = match &first["data"] {
                Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            assert_eq!(data["code"], 4009, "{origins:?}: {first}");
            assert_eq!(client.closed_with().await, Some(4009), "{origins:?}");
        }
    }
}

#[tokio::test]
async fn the_plain_endpoint_refuses_non_ascii_and_conflicting_origins_with_403() {
    let server = TestServer::start("", r#"allowed_origins = ["https://app.example.com"]"#).await;
    let path = format!("/ws/{KEY}/lobby");
    let cases: [(&[&[u8]], &str); 5] = [
        (&[b"https://app.example.com"], "HTTP/1.1 101"),
        (&[b"https://app.example.com", b"https://app.example.com"], "HTTP/1.1 101"),
        (&[b"https://app.example.com\xff"], "HTTP/1.1 403"),
        (&[b"https://\xc3\xa9vil.example"], "HTTP/1.1 403"),
        (&[b"https://app.example.com", b"https://evil.example"], "HTTP/1.1 403"),
    ];
    for (origins, expected) in cases {
        let (status, _) = handshake(server.port, &path, origins).await;
        assert!(status.starts_with(expected), "{origins:?}: {status}");
    }
}

/// A tiny HTTP server: answers every request with `answer` and records each request it read.
async fn tiny_server(answer: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        // Bounded: the test's runtime ends with the test.
        for _ in 0..1000 {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let answer = answer.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the announced body (bounded in time), then answer.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await else { break };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                log.lock().unwrap().push(String::from_utf8_lossy(&buf).to_string());
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn webhooks_do_not_follow_redirects_and_logs_hide_url_credentials() {
    let (elsewhere, elsewhere_seen) =
        tiny_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()).await;
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (hook, hook_seen) = tiny_server(redirect).await;
    let port = unused_port();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         webhook_batch_ms = 10\n[[apps.webhooks]]\nurl = \"http://hookuser:hunter2-secret@127.0.0.1:{hook}/hooks?token=qs-secret\"\n"
    );
    let mut server = TestServer::start_with_config(port, &config, &[("HERALD_LOG", "herald=debug")]).await;
    let (_c, _) = server.subscriber("orders").await;
    // The 307 is a failed attempt: it is retried (0.25 s, then 0.5 s), never followed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook_seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the webhook was not retried after a 307");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hook_seen.lock().unwrap()[0].contains("channel_occupied"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(elsewhere_seen.lock().unwrap().is_empty(), "the signed body went to the redirect target");
    let logs = server.output();
    assert!(logs.contains("webhook"), "the failed attempts are logged: {logs}");
    for secret in ["hunter2-secret", "hookuser", "qs-secret"] {
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
    }
}

/// Runs `herald start` with `args` in an empty directory, without the REVERB_* environment; returns
/// the child once `/up` answers on 127.0.0.1:`port`.
#[allow(clippy::zombie_processes)] // the caller kills and waits for it
async fn start_bare(args: &[&str], port: u16) -> (std::process::Child, std::path::PathBuf) {
    start_bare_env(args, &[], port).await
}

/// `start_bare` with extra environment variables.
#[allow(clippy::zombie_processes)] // the caller kills and waits for it
async fn start_bare_env(args: &[&str], env: &[(&str, &str)], port: u16) -> (std::process::Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("herald-hardening-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("start").args(args).current_dir(&dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in ["REVERB_APP_ID", "REVERB_APP_KEY", "REVERB_APP_SECRET", "REVERB_SERVER_HOST", "REVERB_SERVER_PORT"] {
        cmd.env_remove(var);
    }
    for var in ["HERALD_LOG", "HERALD_LOG_PAYLOADS"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/up")).await {
            if r.status() == 200 {
                return (child, dir);
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("herald did not start: {}", String::from_utf8_lossy(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(mut child: std::process::Child, dir: std::path::PathBuf) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_embedded_demo_app_listens_on_loopback_unless_told_otherwise() {
    let port = unused_port();
    let (child, dir) = start_bare(&["--port", &port.to_string()], port).await;
    let out = stop(child, dir);
    assert!(out.contains(&format!("listening on 127.0.0.1:{port}")), "{out}");
    assert!(out.contains("--host 0.0.0.0"), "the banner says how to listen elsewhere: {out}");
}

fn demo_auth_request(host: &str) -> String {
    let body = "socket_id=1.1&channel_name=presence-demo-chat&user_id=u1";
    format!(
        "POST /demo/auth HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn the_debug_demo_answers_only_loopback_hosts() {
    let port = unused_port();
    let (child, dir) = start_bare(&["--host", "127.0.0.1", "--port", &port.to_string(), "--debug"], port).await;
    let mut results = Vec::new();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "[::1]".into(), "LOCALHOST".into()] {
        let answer = exchange(port, demo_auth_request(&host).as_bytes(), Duration::from_secs(5)).await;
        results.push((host, answer.text));
    }
    let mut refused = Vec::new();
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example:8080"] {
        let answer = exchange(port, demo_auth_request(host).as_bytes(), Duration::from_secs(5)).await;
        refused.push((host, answer.text));
    }
    // The passwordless --debug dashboard likewise.
    let dashboard =
        |host: &str| format!("GET /dashboard/api/apps HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let local_dashboard = exchange(port, dashboard("localhost").as_bytes(), Duration::from_secs(5)).await;
    let foreign_dashboard = exchange(port, dashboard("evil.example").as_bytes(), Duration::from_secs(5)).await;
    let no_host = exchange(
        port,
        b"POST /demo/auth HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b",
        Duration::from_secs(5),
    )
    .await;
    let out = stop(child, dir);
    for (host, text) in results {
        assert!(text.starts_with("HTTP/1.1 200") && text.contains("\"auth\""), "{host}: {text} {out}");
    }
    for (host, text) in refused {
        assert!(text.starts_with("HTTP/1.1 403"), "{host}: {text}");
    }
    assert!(!no_host.text.contains("\"auth\""), "{}", no_host.text);
    assert!(local_dashboard.text.starts_with("HTTP/1.1 200"), "{}", local_dashboard.text);
    assert!(foreign_dashboard.text.starts_with("HTTP/1.1 403"), "{}", foreign_dashboard.text);
}

#[tokio::test]
async fn a_demo_enabled_in_the_config_answers_any_host() {
    let server = TestServer::start("demo = true", "").await;
    let answer = exchange(server.port, demo_auth_request("chat.example.com").as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.text.starts_with("HTTP/1.1 200") && answer.text.contains("\"auth\""), "{}", answer.text);
}

/// What a debug log would leak if it carried payloads: each string is sent once, in one kind of input.
const CLIENT_EVENT_SECRET: &str = "whisper-e7c1-only-in-a-client-event";
const PRESENCE_SECRET: &str = "presence-4b2d-only-in-channel-data";
const SIGNIN_SECRET: &str = "signin-9f30-only-in-user-data";
const API_SECRET: &str = "api-51aa-only-in-a-publish-body";
const SECRETS: [&str; 4] = [CLIENT_EVENT_SECRET, PRESENCE_SECRET, SIGNIN_SECRET, API_SECRET];

/// The log text without ANSI colour sequences (`ESC [ ... m`), should a terminal have asked for them.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A protocol-7 connection to the demo app on `port`, with its socket id.
async fn demo_client(port: u16) -> (Client, String) {
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/app/{KEY}?protocol=7&client=rust")).await;
    let established = client.recv().await;
    assert_eq!(established["event"], "pusher:connection_established", "{established}");
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap_or("{}")).unwrap_or_default();
    let socket_id = data["socket_id"].as_str().unwrap_or_default().to_owned();
    (client, socket_id)
}

/// Subscribes `client` to a presence channel as `user_id`, with `info` in its channel_data; returns the auth.
async fn join_presence(client: &mut Client, socket_id: &str, channel: &str, user_id: &str, info: &str) -> String {
    use herald::protocol::signature::{channel_auth_message, make_auth};
    let channel_data = serde_json::json!({"user_id": user_id, "user_info": {"name": info}}).to_string();
    let auth = make_auth(KEY, SECRET, &channel_auth_message(socket_id, channel, Some(&channel_data)));
    let subscribe = serde_json::json!({"event": "pusher:subscribe",
        "data": {"channel": channel, "auth": auth, "channel_data": channel_data}});
    client.send(&subscribe.to_string()).await;
    recv_event(client, "pusher_internal:subscription_succeeded").await;
    auth
}

/// The next message on `client` whose event is `event`, skipping presence and other noise.
async fn recv_event(client: &mut Client, event: &str) -> Value {
    for _ in 0..20 {
        let message = client.recv().await;
        assert_ne!(message["event"], "pusher:error", "{message}");
        assert_ne!(message["event"], "pusher:subscription_error", "{message}");
        if message["event"] == event {
            return message;
        }
    }
    panic!("{event} did not arrive");
}

/// What went into the server: the size and id fields its log should name, and the signatures it must not.
struct Traffic {
    sizes_and_ids: Vec<String>,
    signatures: Vec<String>,
}

/// Drives every input that carries a payload through the demo app on `port`: a presence join
/// with channel_data, a client event, a sign-in with user_data, an API publish, each delivered.
async fn payload_traffic(port: u16) -> Traffic {
    use herald::protocol::signature::{make_auth, sign_api_request, signin_message};
    let channel = "presence-logs";
    let (mut sender, sender_id) = demo_client(port).await;
    let (mut reader, reader_id) = demo_client(port).await;
    let sender_auth = join_presence(&mut sender, &sender_id, channel, "u-sender", PRESENCE_SECRET).await;
    join_presence(&mut reader, &reader_id, channel, "u-reader", "reader").await;

    let whisper = format!(r#"{{"note":"{CLIENT_EVENT_SECRET}"}}"#);
    sender.send(&format!(r#"{{"event":"client-typing","channel":"{channel}","data":{whisper}}}"#)).await;
    let got = recv_event(&mut reader, "client-typing").await;
    assert_eq!(got["data"]["note"], CLIENT_EVENT_SECRET);

    let user_data = serde_json::json!({"id": "signin-user-77", "user_info": {"name": SIGNIN_SECRET}}).to_string();
    let signin_auth = make_auth(KEY, SECRET, &signin_message(&sender_id, &user_data));
    let signin = serde_json::json!({"event": "pusher:signin", "data": {"auth": signin_auth, "user_data": user_data}});
    sender.send(&signin.to_string()).await;
    recv_event(&mut sender, "pusher:signin_success").await;

    let api_data = format!(r#"{{"note":"{API_SECRET}"}}"#);
    let body = serde_json::json!({"name": "api-event", "channel": channel, "data": api_data}).to_string();
    let path = format!("/apps/{APP_ID}/events");
    let query = sign_api_request(KEY, SECRET, "POST", &path, body.as_bytes(), &[], now());
    let status = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}?{query}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200);
    let got = recv_event(&mut reader, "api-event").await;
    assert!(got["data"].as_str().unwrap_or("").contains(API_SECRET), "{got}");
    // The "sent" line of the last frame is written before the server is stopped.
    sender.send(r#"{"event":"pusher:ping"}"#).await;
    recv_event(&mut sender, "pusher:pong").await;

    let signature = |auth: &str| auth.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
    Traffic {
        sizes_and_ids: vec![
            format!("data_bytes={}", whisper.len()),
            format!(
                "channel_data_bytes={}",
                serde_json::json!({"user_id": "u-sender", "user_info": {"name": PRESENCE_SECRET}}).to_string().len()
            ),
            format!("user_data_bytes={}", user_data.len()),
            format!("data_bytes={}", api_data.len()),
            "user_id=signin-user-77".to_owned(),
            "event=\"api-event\"".to_owned(),
            format!("socket_id={sender_id}"),
            format!("socket_id={reader_id}"),
        ],
        signatures: vec![signature(&sender_auth), signature(&signin_auth)],
    }
}

#[tokio::test]
async fn debug_logs_carry_sizes_and_ids_but_no_payloads() {
    let port = unused_port();
    let (child, dir) = start_bare(&["--host", "127.0.0.1", "--port", &port.to_string(), "--debug"], port).await;
    let traffic = payload_traffic(port).await;
    let logs = without_colours(&stop(child, dir));
    assert!(logs.contains("received a client event") && logs.contains("API publish"), "{logs}");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "{secret} is in the debug log:\n{logs}");
    }
    for signature in traffic.signatures {
        assert!(!logs.contains(&signature), "an auth signature is in the debug log:\n{logs}");
    }
    for wanted in traffic.sizes_and_ids {
        assert!(logs.contains(&wanted), "{wanted} is missing from the debug log:\n{logs}");
    }
}

#[tokio::test]
async fn payloads_are_logged_only_with_the_explicit_opt_in() {
    for (flag, env) in [(Some("--log-payloads"), None), (None, Some(("HERALD_LOG_PAYLOADS", "1")))] {
        let port = unused_port();
        let port_arg = port.to_string();
        let mut args = vec!["--host", "127.0.0.1", "--port", &port_arg, "--debug"];
        args.extend(flag);
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let (child, dir) = start_bare_env(&args, &env, port).await;
        payload_traffic(port).await;
        let logs = without_colours(&stop(child, dir));
        assert!(logs.contains("never use it in production"), "the opt-in is warned about at start-up: {logs}");
        for secret in SECRETS {
            assert!(logs.contains(secret), "{secret} is not in the opted-in log ({flag:?} {env:?}):\n{logs}");
        }
    }
}

/// Found by the `presence_channel_data` fuzz target's property (docs/fuzzing.md): sign-in accepted
/// user ids of up to 200 characters, but their channel `#server-to-user-{id}` was held to the
/// 164-character channel limit, so `sendToUser` for an id over 148 characters got 400 (and
/// another node dropped the broadcast as malformed).
#[tokio::test]
async fn a_user_signed_in_with_a_long_id_can_be_sent_to() {
    use herald::protocol::signature::{make_auth, signin_message};
    let server = TestServer::start("", "").await;
    let (mut client, socket_id) = server.connect().await;
    let user_id = "u".repeat(200);
    let user_data = serde_json::json!({ "id": user_id }).to_string();
    let auth = make_auth(KEY, SECRET, &signin_message(&socket_id, &user_data));
    client
        .send(
            &serde_json::json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}).to_string(),
        )
        .await;
    recv_event(&mut client, "pusher:signin_success").await;
    let status = server.trigger(&format!("#server-to-user-{user_id}"), "to-user", "{\"n\":1}").await;
    assert_eq!(status, 200, "sendToUser for a signed-in user was refused");
    let got = recv_event(&mut client, "to-user").await;
    assert_eq!(got["data"], "{\"n\":1}");
}
