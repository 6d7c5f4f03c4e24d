//! A real Herald process on a free port, and a small WebSocket client, for the integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const APP_ID: &str = "123456";
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

pub struct TestServer {
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

/// With `HERALD_TEST_REDIS_URL` set, every test server runs with the Redis adapter (its own key
/// prefix), so the same suites check both adapters.
fn scaling_block() -> String {
    match std::env::var("HERALD_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => format!(
            "[scaling]\nenabled = true\nredis_url = \"{url}\"\nchannel = \"herald-suite-{}\"\n",
            rand::random::<u64>()
        ),
        _ => String::new(),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestServer {
    /// Starts Herald with the default test app; `app_extra` and `server_extra` are TOML lines
    /// added to the app table and the server table.
    pub async fn start(server_extra: &str, app_extra: &str) -> TestServer {
        let port = free_port();
        let config = format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {port}\n{server_extra}\n{}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nenable_client_messages = true\n{app_extra}\n",
            scaling_block()
        );
        TestServer::start_with_config(port, &config, &[]).await
    }

    /// Starts Herald with the test app configured only by `app_lines` (client events off by default).
    pub async fn start_with_app(app_lines: &str) -> TestServer {
        let port = free_port();
        let config = format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {port}\n{}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{app_lines}\n",
            scaling_block()
        );
        TestServer::start_with_config(port, &config, &[]).await
    }

    pub async fn start_with_config(port: u16, config: &str, env: &[(&str, &str)]) -> TestServer {
        let dir = std::env::temp_dir().join(format!("herald-test-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.arg("start").arg("--config").arg(&path).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn herald");
        let mut server = TestServer { port, child, dir };
        server.wait_ready(config.contains("[server.tls]")).await;
        server
    }

    async fn wait_ready(&mut self, tls: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("herald exited early with {status}: {}", self.output());
            }
            if tls {
                if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                    return;
                }
            } else if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/up", self.port)).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("herald did not become ready: {}", self.output());
    }

    /// Rewrites the configuration file the server was started with.
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(self.dir.join("herald.toml"), config).unwrap();
    }

    /// Sends a signal (`"HUP"`, `"STOP"`...) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// The server's resident memory in KiB (VmRSS from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most resident memory the server has had so far, in KiB (VmHWM from /proc): a peak that
    /// freed memory cannot hide.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the server and returns what it printed.
    pub fn output(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut out);
        }
        out
    }

    pub fn ws_url(&self, key: &str, query: &str) -> String {
        format!("ws://127.0.0.1:{}/app/{key}?{query}", self.port)
    }

    /// Connects with protocol 7 and returns the client and its socket id.
    pub async fn connect(&self) -> (Client, String) {
        let mut client = Client::connect(&self.ws_url(KEY, "protocol=7&client=rust&version=1.0")).await;
        let established = client.recv().await;
        assert_eq!(established["event"], "pusher:connection_established", "{established}");
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        (client, data["socket_id"].as_str().unwrap().to_owned())
    }

    /// Connects and subscribes to a public channel.
    pub async fn subscriber(&self, channel: &str) -> (Client, String) {
        let (mut client, socket_id) = self.connect().await;
        client.subscribe(channel).await;
        (client, socket_id)
    }

    /// A signed HTTP API request.
    pub async fn api(&self, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        self.api_as(KEY, SECRET, method, path, body, extra).await
    }

    pub async fn api_as(
        &self,
        key: &str,
        secret: &str,
        method: &str,
        path: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let query =
            herald::protocol::signature::sign_api_request(key, secret, method, path, body.as_bytes(), extra, now);
        self.raw_api(method, &format!("{path}?{query}"), body).await
    }

    /// An HTTP request exactly as given (no signing).
    pub async fn raw_api(&self, method: &str, path_and_query: &str, body: &str) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.port);
        let client = reqwest::Client::new();
        let req = match method {
            "GET" => client.get(url),
            _ => client.post(url).header("content-type", "application/json").body(body.to_owned()),
        };
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The value of a metric (summed over its labels) on `/metrics`; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let text = reqwest::get(url).await.expect("GET /metrics").text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn trigger(&self, channel: &str, event: &str, data: &str) -> u16 {
        let body = serde_json::json!({"name": event, "channel": channel, "data": data}).to_string();
        self.api("POST", &format!("/apps/{APP_ID}/events"), &body, &[]).await.0
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// The port a listener on 127.0.0.1 is free to take.
pub fn unused_port() -> u16 {
    free_port()
}

/// What a client saw instead of a message.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<u16>),
    Eof,
    Timeout,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client { ws }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text message as JSON, within 5 s.
    pub async fn recv(&mut self) -> Value {
        match self.next_text(Duration::from_secs(5)).await {
            Ok(v) => v,
            Err(e) => panic!("expected a message, got {e:?}"),
        }
    }

    /// The next text message, or how the stream ended.
    pub async fn next_text(&mut self, wait: Duration) -> Result<Value, Ended> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.map_err(|_| Ended::Timeout)?;
            match next {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str()).expect("server sent JSON")),
                Some(Ok(Message::Close(frame))) => return Err(Ended::Closed(frame.map(|f| u16::from(f.code)))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Eof),
            }
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(v) = self.next_text(wait).await {
            panic!("expected nothing, got {v}");
        }
    }

    /// Waits for the close frame, skipping messages; returns its code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        loop {
            match self.next_text(Duration::from_secs(10)).await {
                Ok(_) => continue,
                Err(Ended::Closed(code)) => return code,
                Err(e) => panic!("expected a close frame, got {e:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.send(&serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string()).await;
        let reply = self.recv().await;
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded", "{reply}");
        assert_eq!(reply["channel"], channel);
    }
}

pub fn close_code(code: CloseCode) -> u16 {
    u16::from(code)
}

/// A real `redis-server` on a free loopback port, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: std::process::Child,
}

impl Redis {
    /// `n` nodes acting as one through this Redis (under a key prefix of their own, so other tests
    /// sharing it are not seen), each serving the test app with `app_extra` lines.
    pub async fn nodes(&self, n: usize, app_extra: &str) -> Vec<TestServer> {
        let prefix = format!("herald-test-{}", rand::random::<u32>());
        let mut nodes = Vec::new();
        for _ in 0..n {
            let port = unused_port();
            let config = format!(
                "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[scaling]\nenabled = true\nredis_url = \"redis://127.0.0.1:{}\"\nchannel = \"{prefix}\"\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{app_extra}",
                self.port
            );
            nodes.push(TestServer::start_with_config(port, &config, &[]).await);
        }
        nodes
    }

    pub fn start() -> Redis {
        Redis::start_on(unused_port())
    }

    /// A redis-server on `port` (a restart: the old one dropped first), empty: no persistence.
    pub fn start_on(port: u16) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis { port, child }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
