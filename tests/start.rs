//! `herald start` and `herald config` as a user runs them: a Laravel `.env`, JSON logs, start-up refusals.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn workdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-start-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `herald start` in `dir` until `/up` answers, then returns the child (killed by the caller).
#[allow(clippy::zombie_processes)] // the child is returned: the caller kills and waits for it
async fn start_in(dir: &std::path::Path, args: &[&str], port: u16) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("start")
        .args(args)
        .current_dir(dir)
        .env_remove("REVERB_APP_KEY")
        .env_remove("REVERB_APP_ID")
        .env_remove("REVERB_APP_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/up")).await {
            if r.status() == 200 {
                return child;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `herald start --debug` on `port` in `dir`, with `extra` flags and the given output pipes.
fn start_debug(dir: &std::path::Path, port: u16, extra: &[&str], out: Stdio, err: Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["start", "--port", &port.to_string(), "--debug"])
        .args(extra)
        .current_dir(dir)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// Waits (15 s at most) until `/up` answers; fails, and stops the child, if it exits or never does.
async fn wait_until_up(port: u16, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while reqwest::get(format!("http://127.0.0.1:{port}/up")).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("herald exited at start-up: {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_laravel_env_file_in_the_working_directory_configures_the_app() {
    let dir = workdir();
    let port = unused_port();
    std::fs::write(
        dir.join(".env"),
        format!(
            "APP_NAME=Laravel\nBROADCAST_CONNECTION=reverb\nREVERB_APP_ID=777\nREVERB_APP_KEY=laravel-key\n\
             REVERB_APP_SECRET=\"laravel-secret\"\nREVERB_SERVER_HOST=127.0.0.1\nREVERB_SERVER_PORT={port}\n"
        ),
    )
    .unwrap();
    let mut child = start_in(&dir, &[], port).await;
    let mut ok = Client::connect(&format!("ws://127.0.0.1:{port}/app/laravel-key?protocol=7")).await;
    assert_eq!(ok.recv().await["event"], "pusher:connection_established");
    let mut demo = Client::connect(&format!("ws://127.0.0.1:{port}/app/app-key?protocol=7")).await;
    assert_eq!(demo.recv().await["event"], "pusher:error", "the demo app is not served when .env names one");
    let _ = child.kill();
    let _ = child.wait();

    // --env-file names another file; a missing one is an error, not a silent default.
    let other = dir.join("prod.env");
    let port2 = unused_port();
    std::fs::write(&other, format!("REVERB_APP_ID=1\nREVERB_APP_KEY=k2\nREVERB_APP_SECRET=s2\nREVERB_SERVER_PORT={port2}\nREVERB_SERVER_HOST=127.0.0.1\n")).unwrap();
    let mut child = start_in(&dir, &["--env-file", other.to_str().unwrap()], port2).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port2}/app/k2?protocol=7")).await;
    assert_eq!(c.recv().await["event"], "pusher:connection_established");
    let _ = child.kill();
    let _ = child.wait();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["start", "--env-file", "/nonexistent/.env"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/.env"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = workdir();
    let port = unused_port();
    let json = ["--host", "127.0.0.1", "--log-format", "json"];
    let mut child = start_debug(&dir, port, &json, Stdio::null(), Stdio::piped());
    wait_until_up(port, &mut child).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/app/{KEY}?protocol=7")).await;
    c.recv().await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A log pipe whose reader died (`herald start 2>&1 | head -1`), or a closed stdout: the server
/// still starts, serves, and stops on SIGTERM with 4200 to its clients and exit code 0.
#[tokio::test]
async fn closed_stdout_and_stderr_neither_crash_the_server_nor_stop_sigterm() {
    let dir = workdir();
    let port = unused_port();
    let mut child = start_debug(&dir, port, &[], Stdio::piped(), Stdio::piped());
    // The read ends closed: every banner and log write from now on fails with EPIPE.
    drop((child.stdout.take(), child.stderr.take()));
    wait_until_up(port, &mut child).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/app/{KEY}?protocol=7")).await;
    assert_eq!(c.recv().await["event"], "pusher:connection_established");
    c.subscribe("logged-at-debug").await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(c.closed_with().await, Some(4200), "clients are told to reconnect elsewhere");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("SIGTERM did not stop a server whose stderr is closed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A name a client sends with a newline in it is logged on its own line, escaped: it cannot forge
/// a log line that `grep ERROR` would then find.
#[tokio::test]
async fn text_logs_escape_control_characters_from_clients() {
    let dir = workdir();
    let port = unused_port();
    let mut child = start_debug(&dir, port, &[], Stdio::null(), Stdio::piped());
    wait_until_up(port, &mut child).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/app/{KEY}?protocol=7")).await;
    c.recv().await;
    let forged = "x\n2026-12-02T00:00:00.000000Z ERROR FORGED-LINE\r\u{0}";
    c.send(&serde_json::json!({"event": "pusher:subscribe", "data": {"channel": forged}}).to_string()).await;
    assert_eq!(c.recv().await["event"], "pusher:subscription_error", "an invalid channel name is refused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("FORGED-LINE"), "the refused name is logged at debug: {logs}");
    assert!(logs.contains("x\\n2026-12-02"), "its newline escaped: {logs}");
    for line in logs.lines() {
        assert!(!line.contains("ERROR FORGED") || line.contains("subscribe"), "a forged line: {line}");
        assert!(!line.contains(['\r', '\0']), "a raw control character: {line:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn start_up_refuses_a_dashboard_without_a_password_and_config_prints_a_valid_sample() {
    let dir = workdir();
    let path = dir.join("herald.toml");
    std::fs::write(&path, format!("[server]\nport = {}\ndashboard = true\n", unused_port())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).args(["start", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dashboard_password"));

    let sample = Command::new(env!("CARGO_BIN_EXE_herald")).arg("config").output().unwrap();
    assert!(sample.status.success());
    let text = String::from_utf8(sample.stdout).unwrap();
    assert!(text.contains("[[apps]]") && text.contains("REVERB_APP_KEY"));
    herald::config::Config::from_toml(&text).expect("the printed sample is a valid config");
    std::fs::remove_dir_all(&dir).ok();
}
