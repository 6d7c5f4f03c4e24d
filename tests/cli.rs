//! `herald connect`, `herald trigger` and `herald channels`, driven as processes through stdin/stdout
//! against a real Herald, with their exit codes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{unused_port, TestServer, APP_ID, KEY, SECRET};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// `herald` with no `REVERB_*` variables from the test's environment.
fn herald(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("REVERB_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// What a finished process left.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Reads a pipe to its end on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Waits (bounded) for a child; kills it when it overstays.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to its end (bounded), with `stdin` as its input.
fn run(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let code = wait_bounded(&mut child, WAIT);
    Output { code, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// A running `herald connect`: lines typed on its stdin, lines read from its stdout.
struct Connect {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Connect {
    fn spawn(args: &[&str]) -> Connect {
        let mut cmd = herald(&["connect"]);
        cmd.args(args);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_reader = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen_by_reader.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Connect { child, stdin, lines, seen, stderr: Some(stderr) }
    }

    /// Connects to the test server with `extra` flags and waits for `connection_established`.
    fn to(server: &TestServer, extra: &[&str]) -> Connect {
        let port = server.port.to_string();
        let mut args = vec!["--port", port.as_str()];
        args.extend_from_slice(extra);
        let mut c = Connect::spawn(&args);
        c.expect_event("pusher:connection_established");
        c
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next stdout line matching `pred`, within 10 s.
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line with {what} within {WAIT:?}; saw:\n{}", self.seen.lock().unwrap().join("\n")),
            }
        }
    }

    /// The next received frame (`< ` line) with this event, as JSON.
    fn expect_event(&mut self, event: &str) -> Value {
        let line = self.expect(event, |l| received(l).is_some_and(|v| v["event"] == event));
        received(&line).unwrap()
    }

    /// Ends stdin and waits (bounded) for the process to exit.
    fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let code = wait_bounded(&mut self.child, WAIT);
        // Let the reader thread take the last lines.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok() {}
        let stdout = self.seen.lock().unwrap().join("\n");
        let stderr = self.stderr.take().unwrap().join().unwrap();
        Output { code, stdout, stderr }
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `< ` line's frame as JSON.
fn received(line: &str) -> Option<Value> {
    serde_json::from_str(line.strip_prefix("< ")?).ok()
}

/// A `> ` line's frame as JSON.
fn sent(line: &str) -> Option<Value> {
    serde_json::from_str(line.strip_prefix("> ")?).ok()
}

fn api_flags(port: u16) -> Vec<String> {
    ["--port", &port.to_string(), "--app-id", APP_ID, "--key", KEY, "--secret", SECRET]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn tool(name: &str, port: u16, args: &[&str]) -> Command {
    let mut cmd = herald(&[name]);
    cmd.args(api_flags(port)).args(args);
    cmd
}

#[tokio::test]
async fn public_subscribe_then_trigger_and_channels() {
    let server = TestServer::start("", "").await;
    let mut c = Connect::to(&server, &[]);
    c.type_line("/subscribe orders");
    let ok = c.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(ok["channel"], "orders");

    let out = run(
        tool("trigger", server.port, &["--channel", "orders", "--event", "order.shipped", "--data", r#"{"id":42}"#]),
        "",
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), serde_json::json!({}), "{}", out.all());
    let event = c.expect_event("order.shipped");
    assert_eq!(event["channel"], "orders");
    assert_eq!(event["data"], r#"{"id":42}"#);

    // Several channels, data from stdin, and the info asked for.
    let out = run(
        tool(
            "trigger",
            server.port,
            &["-c", "orders", "-c", "other", "-e", "e2", "-d", "-", "--info", "subscription_count"],
        ),
        "plain text\n",
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let answer: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answer["channels"]["orders"]["subscription_count"], 1, "{answer}");
    assert_eq!(c.expect_event("e2")["data"], "plain text");

    let out = run(tool("channels", server.port, &["--info", "subscription_count"]), "");
    assert_eq!(out.code, Some(0), "{}", out.all());
    let answer: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answer["channels"]["orders"]["subscription_count"], 1, "{answer}");
    let out = run(tool("channels", server.port, &["--prefix", "nothing-"]), "");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), serde_json::json!({"channels": {}}));

    c.type_line("/unsubscribe orders");
    c.expect("the unsubscribe sent", |l| sent(l).is_some_and(|v| v["event"] == "pusher:unsubscribe"));
    let out = c.finish();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains(r#"> {"event":"pusher:subscribe","data":{"channel":"orders"}}"#), "{}", out.all());
}

#[tokio::test]
async fn url_form_and_non_interactive_input() {
    let server = TestServer::start("", "").await;
    // Everything on stdin at once, then EOF: the tool still waits for the replies.
    let url = format!("ws://127.0.0.1:{}/app/{KEY}", server.port);
    let out =
        run(herald(&["connect", &url, "--wait", "1000"]), "/subscribe news\n/ping\n{\"event\":\"pusher:bogus\"}\n");
    assert_eq!(out.code, Some(0), "{}", out.all());
    let frames: Vec<Value> = out.stdout.lines().filter_map(received).collect();
    let events: Vec<&str> = frames.iter().filter_map(|v| v["event"].as_str()).collect();
    assert!(events.contains(&"pusher:connection_established"), "{}", out.all());
    assert!(events.contains(&"pusher_internal:subscription_succeeded"), "{}", out.all());
    assert!(events.contains(&"pusher:pong"), "/ping prints a pong: {}", out.all());
    assert!(events.contains(&"pusher:error"), "raw lines are sent as they are: {}", out.all());
    // One frame per line, every line prefixed.
    assert!(out.stdout.lines().all(|l| l.starts_with("< ") || l.starts_with("> ")), "{}", out.all());
}

#[tokio::test]
async fn ping_prints_pong_even_with_quiet_pings() {
    let server = TestServer::start("", "").await;
    let mut c = Connect::to(&server, &["--quiet-pings"]);
    c.type_line("/ping");
    c.expect("the ping sent", |l| sent(l).is_some_and(|v| v["event"] == "pusher:ping"));
    c.expect_event("pusher:pong");
    let out = c.finish();
    assert_eq!(out.code, Some(0), "{}", out.all());
}

#[tokio::test]
async fn private_and_presence_channels_signed_with_secret() {
    let server = TestServer::start("", "").await;
    let mut a = Connect::to(&server, &["--secret", SECRET, "--user-id", "7", "--user-info", r#"{"name":"Ann"}"#]);
    a.type_line("/subscribe private-orders");
    assert_eq!(a.expect_event("pusher_internal:subscription_succeeded")["channel"], "private-orders");
    a.type_line("/subscribe presence-room");
    let ok = a.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(ok["channel"], "presence-room");
    let presence: Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
    assert_eq!(presence["presence"]["ids"], serde_json::json!(["7"]), "{presence}");
    assert_eq!(presence["presence"]["hash"]["7"]["name"], "Ann", "{presence}");

    // A second client joins; a client event from it reaches the first (whose /trigger defaults to the
    // last private/presence channel).
    let mut b = Connect::to(&server, &["--secret", SECRET, "--user-id", "8"]);
    b.type_line("/subscribe presence-room");
    b.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(a.expect_event("pusher_internal:member_added")["channel"], "presence-room");
    b.type_line(r#"/trigger client-typing {"typing":true}"#);
    let whisper = a.expect_event("client-typing");
    assert_eq!(whisper["channel"], "presence-room");
    assert_eq!(whisper["data"]["typing"], true, "{whisper}");
    assert_eq!(whisper["user_id"], "8", "{whisper}");

    // Sign-in.
    b.type_line("/signin 8");
    b.expect_event("pusher:signin_success");

    let out = b.finish();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(a.finish().code == Some(0));
}

#[tokio::test]
async fn private_channel_without_secret_is_refused() {
    let server = TestServer::start("", "").await;
    let mut c = Connect::to(&server, &[]);
    c.type_line("/subscribe private-orders");
    // Then something the server answers, to know the first line was handled.
    c.type_line("/ping");
    c.expect_event("pusher:pong");
    let out = c.finish();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stderr.contains("--secret"), "{}", out.all());
    assert!(!out.stdout.contains("subscription_succeeded"), "{}", out.all());

    // Sent unsigned as a raw frame, the server refuses it.
    let mut c = Connect::to(&server, &[]);
    c.type_line(r#"{"event":"pusher:subscribe","data":{"channel":"private-orders"}}"#);
    let refused = c.expect_event("pusher:subscription_error");
    assert_eq!(refused["channel"], "private-orders");
    assert_eq!(c.finish().code, Some(0));
}

#[tokio::test]
async fn unknown_key_exits_2_with_the_code() {
    let server = TestServer::start("", "").await;
    let port = server.port.to_string();
    let out = run(herald(&["connect", "--port", &port, "--app-key", "no-such-key"]), "");
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stdout.contains("4001"), "the pusher:error frame: {}", out.all());
    assert!(out.stderr.contains("4001"), "the close code: {}", out.all());
}

#[tokio::test]
async fn server_shutdown_exits_2_with_4200() {
    let mut server = TestServer::start("", "").await;
    let mut c = Connect::to(&server, &[]);
    server.terminate();
    let code = wait_bounded(&mut c.child, WAIT);
    let out = c.finish();
    assert_eq!(code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("4200"), "{}", out.all());
}

#[test]
fn connect_to_a_closed_port_exits_1() {
    let port = unused_port().to_string();
    let out = run(herald(&["connect", "--port", &port]), "/ping\n");
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("cannot connect"), "{}", out.all());
}

/// Usage errors exit 64, never 2, which `connect` keeps for "the server closed with an error code".
#[test]
fn usage_errors_exit_64_not_the_server_error_code() {
    for args in [
        &["connect", "--no-such-flag"][..],
        &["connect", "--port", "not-a-port"],
        &["connect", "--user-info", "{not json"],
        &["trigger", "--bogus"],
        &["no-such-command"],
    ] {
        let out = run(herald(args), "");
        assert_eq!(out.code, Some(64), "{args:?}: {}", out.all());
        assert!(!out.stderr.is_empty(), "{args:?}: the mistake is explained: {}", out.all());
    }
    let out = run(herald(&["connect", "--help"]), "");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("--app-key"), "{}", out.all());
}

#[tokio::test]
async fn trigger_with_a_wrong_secret_exits_3() {
    let server = TestServer::start("", "").await;
    let mut cmd = herald(&["trigger", "--port", &server.port.to_string(), "-c", "orders", "-e", "x", "-d", "{}"]);
    cmd.args(["--secret", "wrong-secret"]);
    let out = run(cmd, "");
    assert_eq!(out.code, Some(3), "{}", out.all());
    assert!(out.stderr.contains("401"), "{}", out.all());
    assert!(out.stdout.is_empty(), "{}", out.all());

    // The REVERB_* variables are read when there is no flag, and a flag wins over them.
    let mut cmd = herald(&["channels"]);
    cmd.env("REVERB_PORT", server.port.to_string()).env("REVERB_APP_SECRET", "wrong-secret");
    let out = run(cmd, "");
    assert_eq!(out.code, Some(3), "{}", out.all());
    let mut cmd = herald(&["channels", "--secret", SECRET]);
    cmd.env("REVERB_PORT", server.port.to_string()).env("REVERB_APP_SECRET", "wrong-secret");
    assert_eq!(run(cmd, "").code, Some(0));

    // A 4xx other than 401: an invalid channel name.
    let out = run(tool("trigger", server.port, &["-c", "bad name!", "-e", "x", "-d", "{}"]), "");
    assert_eq!(out.code, Some(3), "{}", out.all());
    assert!(out.stderr.contains("400"), "{}", out.all());
}

#[test]
fn trigger_to_a_dead_port_exits_1() {
    let port = unused_port();
    let out = run(tool("trigger", port, &["-c", "orders", "-e", "x", "-d", "{}"]), "");
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("cannot reach"), "{}", out.all());
    let out = run(tool("channels", port, &[]), "");
    assert_eq!(out.code, Some(1), "{}", out.all());
}

#[test]
fn server_errors_exit_4() {
    // A stand-in server that answers every request with a 500.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut socket, _)) = listener.accept() {
            socket.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf);
            let body = r#"{"error":"boom"}"#;
            let _ = write!(
                socket,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let out = run(tool("channels", port, &[]), "");
    assert_eq!(out.code, Some(4), "{}", out.all());
    assert!(out.stderr.contains("500") && out.stderr.contains("boom"), "{}", out.all());
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("herald-cli-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let cert_path = dir.join("cert.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let port = unused_port();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        dir.join("key.pem").display()
    );
    let _server = TestServer::start_with_config(port, &config, &[]).await;
    let ca = cert_path.to_str().unwrap();
    let url = format!("wss://localhost:{port}/app/{KEY}");

    let out = run(herald(&["connect", &url, "--ca-file", ca]), "/ping\n");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("pusher:pong"), "{}", out.all());

    // The webpki roots alone do not trust a self-signed certificate.
    let out = run(herald(&["connect", &url]), "/ping\n");
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("TLS"), "{}", out.all());

    // The HTTP API tools over https.
    let out =
        run(herald(&["channels", "--host", "localhost", "--port", &port.to_string(), "--tls", "--ca-file", ca]), "");
    assert_eq!(out.code, Some(0), "{}", out.all());
    std::fs::remove_dir_all(&dir).ok();
}
