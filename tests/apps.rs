//! Apps come from a store that can change while clients stay connected: SIGHUP reloads the file.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn config(port: u16, apps: &[(&str, &str, &str)]) -> String {
    let mut config = format!("[server]\nhost = \"127.0.0.1\"\nport = {port}\n");
    for (id, key, secret) in apps {
        config.push_str(&format!("[[apps]]\nid = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\n"));
    }
    config
}

/// Opens a Pusher connection with `key`: `Ok` with the greeting, or the close code it was refused with.
async fn open(server: &TestServer, key: &str) -> Result<(Client, Value), Option<u16>> {
    let mut client = Client::connect(&server.ws_url(key, "protocol=7")).await;
    let first = client.recv().await;
    if first["event"] == "pusher:connection_established" {
        return Ok((client, first));
    }
    assert_eq!(first["event"], "pusher:error", "{first}");
    Err(client.closed_with().await)
}

#[tokio::test]
async fn sighup_serves_new_apps_closes_removed_ones_and_refuses_a_broken_file() {
    let port = unused_port();
    let server =
        TestServer::start_with_config(port, &config(port, &[(APP_ID, KEY, SECRET), ("2", "key-2", "secret-2")]), &[])
            .await;
    let (mut stays, _) = open(&server, KEY).await.expect("app 1 is served");
    stays.subscribe("orders").await;
    let (mut leaves, _) = open(&server, "key-2").await.expect("app 2 is served");
    assert_eq!(open(&server, "key-3").await.err(), Some(Some(4001)), "app 3 is not served yet");

    server.rewrite_config(&config(port, &[(APP_ID, KEY, SECRET), ("3", "key-3", "secret-3")]));
    server.signal("HUP");
    assert_eq!(leaves.closed_with().await, Some(4001), "a removed app's connections are closed with 4001");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open(&server, "key-3").await.is_err() {
        assert!(Instant::now() < deadline, "the added app was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = server.api_as("key-2", "secret-2", "GET", "/apps/2/channels", "", &[]).await;
    assert_eq!(status, 404, "the removed app's HTTP API is gone");
    let (status, _) = server.api_as("key-3", "secret-3", "GET", "/apps/3/channels", "", &[]).await;
    assert_eq!(status, 200, "the added app's HTTP API works");
    // The unchanged app's connection was never touched.
    assert_eq!(server.trigger("orders", "e", "still here").await, 200);
    assert_eq!(stays.recv().await["data"], "still here");

    // A file that does not load is refused and the previous apps keep being served.
    server.rewrite_config("this is = not [valid toml");
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(open(&server, "key-3").await.is_ok(), "the last good configuration is kept");
    assert_eq!(server.trigger("orders", "e", "after a bad reload").await, 200);
    assert_eq!(stays.recv().await["data"], "after a bad reload");
}

#[tokio::test]
async fn sighup_applies_a_changed_limit_to_new_connections_and_refuses_an_invalid_file() {
    let port = unused_port();
    let limited = |max: u32| format!("{}max_connections = {max}\n", config(port, &[(APP_ID, KEY, SECRET)]));
    let server = TestServer::start_with_config(port, &limited(1), &[]).await;
    let (mut first, _) = open(&server, KEY).await.expect("the first connection is served");
    first.subscribe("orders").await;
    assert_eq!(open(&server, KEY).await.err(), Some(Some(4004)), "max_connections = 1");

    server.rewrite_config(&limited(2));
    server.signal("HUP");
    // The connection that gets in is kept: a dropped one would count for a moment still.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _second = loop {
        if let Ok((client, _)) = open(&server, KEY).await {
            break client;
        }
        assert!(Instant::now() < deadline, "the raised limit never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(server.trigger("orders", "e", "kept").await, 200);
    assert_eq!(first.recv().await["data"], "kept", "a changed app keeps its connections");

    // Valid TOML that is not a valid configuration (two apps with one key) is refused too.
    let duplicate = config(port, &[(APP_ID, KEY, SECRET), ("2", KEY, "other")]);
    server.rewrite_config(&duplicate);
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(open(&server, KEY).await.err(), Some(Some(4004)), "the last good configuration (2) is kept");
    assert_eq!(server.trigger("orders", "e", "still").await, 200);
    assert_eq!(first.recv().await["data"], "still");
}

/// `herald config --check FILE`: its exit code and what it printed, within a deadline (it must
/// not start a server).
fn check(file_text: &str) -> (i32, String) {
    check_beside(file_text, None)
}

/// `herald config --check` run in a directory of its own, with `dotenv` as its `./.env`.
fn check_beside(file_text: &str, dotenv: Option<&str>) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("herald-check-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("herald.toml");
    std::fs::write(&path, file_text).unwrap();
    if let Some(dotenv) = dotenv {
        std::fs::write(dir.join(".env"), dotenv).unwrap();
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "--check"])
        .arg(&path)
        .current_dir(&dir)
        .env_remove("REVERB_APP_ID")
        .env_remove("HERALD_APPS_DRIVER")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn herald config --check");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald config --check did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    std::fs::remove_dir_all(&dir).ok();
    (code, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn config_check_validates_a_file_without_starting() {
    let port = unused_port();
    let (code, out) = check(&config(port, &[(APP_ID, KEY, SECRET), ("2", "key-2", "secret-2")]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid") && out.contains("2 app(s)"), "{out}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing was started on the port");

    let (code, out) = check("this is = not [valid toml");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid"), "{out}");

    let (code, out) = check(&format!("{}ping_interval = 0\n", config(port, &[(APP_ID, KEY, SECRET)])));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ping_interval"), "the message names the setting: {out}");

    let (code, out) = check("[apps_store]\ndriver = \"postgres\"\nurl = \"mysql://wrong\"\n");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("apps_store.url"), "{out}");
    let (code, out) = check("[apps_store]\ndriver = \"postgres\"\nurl = \"postgres://h@127.0.0.1/db\"\n");
    assert_eq!(code, 0, "a database store needs no [[apps]]: {out}");

    // The `.env` beside it counts, as it does for `herald start`.
    let laravel = "REVERB_APP_ID=555\nREVERB_APP_KEY=k555\nREVERB_APP_SECRET=s555\n";
    let (code, out) = check_beside("", Some(laravel));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 app(s): 555"), "{out}");
    let (code, out) = check_beside("", Some(&format!("{laravel}REVERB_APP_MAX_MESSAGE_SIZE=5\n")));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("max_message_size"), "{out}");
}

/// The status line's code of a GET `target` with `headers` (a WebSocket upgrade for `/ws/...`).
async fn status_of(port: u16, target: &str, headers: &[(&str, String)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if target.starts_with("/ws/") {
        request.push_str(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        assert!(head.len() < 4096, "no status line in 4 KiB for {target}");
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(1))), "no status line for {target}: {read:?}");
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head).to_string();
    line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"))
}

#[tokio::test]
async fn a_rotated_secret_still_opens_the_plain_and_sse_endpoints_for_the_grace_only() {
    use herald::protocol::sse_auth::{issue_bearer, issue_ticket, TicketRequest};
    use herald::protocol::token::issue;
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let port = unused_port();
    let file =
        |secret: &str| format!("{}[apps_store]\nsecret_grace_seconds = 3\n", config(port, &[(APP_ID, KEY, secret)]));
    let server = TestServer::start_with_config(port, &file("old"), &[]).await;
    let channels = vec!["private-orders".to_owned()];
    let request = TicketRequest { channels: &channels, user_id: None, user_info: None };
    // Each way in, with a credential signed by `secret`: its status.
    let statuses = |secret: &'static str| {
        let ticket = issue_ticket(secret, &format!("{}", rand::random::<u64>()), now() + 60, &request);
        async move {
            let plain = issue(secret, "u", now() + 60, None);
            // The token in the first message, for clients that cannot set a header: 101 once
            // welcomed, else the close code.
            let mut by_message = Client::connect(&format!("ws://127.0.0.1:{port}/ws/{KEY}/lobby")).await;
            by_message.send(&serde_json::json!({"type": "auth", "token": plain}).to_string()).await;
            let first_message = match by_message.next_text(Duration::from_secs(5)).await {
                Ok(welcome) if welcome["data"]["user"] == "u" => 101,
                Err(Ended::Closed(Some(code))) => code,
                other => panic!("neither welcomed nor closed: {other:?}"),
            };
            let bearer = issue_bearer(secret, "u", now() + 60, &["private-orders"], None);
            [
                status_of(port, &format!("/ws/{KEY}/lobby"), &[("Authorization", format!("Bearer {plain}"))]).await,
                status_of(
                    port,
                    &format!("/sse/{KEY}?channels=private-orders"),
                    &[("Authorization", format!("Bearer {bearer}"))],
                )
                .await,
                status_of(port, &format!("/sse/{KEY}?channels=private-orders&ticket={ticket}"), &[]).await,
                first_message,
            ]
        }
    };
    assert_eq!(statuses("old").await, [101, 200, 200, 101]);
    assert_eq!(statuses("forged").await, [401, 401, 401, 1008]);

    server.rewrite_config(&file("new"));
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while statuses("new").await != [101, 200, 200, 101] {
        assert!(Instant::now() < deadline, "the new secret was never used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = Instant::now();
    assert_eq!(statuses("old").await, [101, 200, 200, 101], "tokens and tickets of the old secret during the grace");
    assert!(rotated.elapsed() < Duration::from_secs(3), "the grace check ran within the grace");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(rotated.elapsed()) + Duration::from_millis(700)).await;
    assert_eq!(statuses("old").await, [401, 401, 401, 1008], "the old secret after the grace");
    assert_eq!(statuses("new").await, [101, 200, 200, 101]);
}
