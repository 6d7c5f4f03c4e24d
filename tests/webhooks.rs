//! Webhooks delivered to a real HTTP receiver running in the test.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use herald::protocol::signature::{channel_auth_message, make_auth, verify};
use serde_json::{json, Value};

#[derive(Default)]
struct Received {
    /// (X-Pusher-Key, X-Pusher-Signature, body)
    requests: Vec<(String, String, String)>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
    attempts: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn receive(State(state): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let mut r = state.lock().unwrap();
    r.attempts += 1;
    if r.attempts <= r.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    r.requests.push((header("x-pusher-key"), header("x-pusher-signature"), body));
    StatusCode::OK
}

async fn receiver(fail_first: usize) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Received { fail_first, ..Default::default() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = Router::new().route("/hooks", post(receive)).with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, state)
}

/// Every event received so far, in order, after checking each request's key and signature.
fn events(state: &Shared) -> Vec<Value> {
    let r = state.lock().unwrap();
    let mut all = Vec::new();
    for (key, signature, body) in &r.requests {
        assert_eq!(key, KEY);
        assert!(verify(SECRET, body, signature), "bad signature on {body}");
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert!(parsed["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
        all.extend(parsed["events"].as_array().unwrap().iter().cloned());
    }
    all
}

async fn wait_for(state: &Shared, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = events(state);
        if got.len() >= n {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "expected {n} webhook events, got {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(state: &Shared, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = events(state);
        if done(&got) {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "webhook events never complete: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hook(url: &str, extra: &str) -> String {
    format!("webhook_batch_ms = 50\nwebhook_delay_ms = 0\n[[apps.webhooks]]\nurl = \"{url}\"\n{extra}")
}

#[tokio::test]
async fn every_event_type_arrives_signed_with_its_fields() {
    let (url, state) = receiver(0).await;
    let app = format!("subscription_count_events = true\n{}", hook(&url, ""));
    let server = TestServer::start("", &app).await;

    let (mut a, a_id) = server.connect().await;
    let data = json!({"user_id": "7", "user_info": {"name": "Ann"}}).to_string();
    let auth = make_auth(KEY, SECRET, &channel_auth_message(&a_id, "presence-room", Some(&data)));
    a.send(
        &json!({"event":"pusher:subscribe","data":{"channel":"presence-room","auth":auth,"channel_data":data}})
            .to_string(),
    )
    .await;
    // a's join must be recorded before b's, or the two member_added events may swap.
    assert_eq!(a.recv().await["event"], "pusher_internal:subscription_succeeded");
    let (mut b, b_id) = server.connect().await;
    let data_b = json!({"user_id": "8"}).to_string();
    let auth = make_auth(KEY, SECRET, &channel_auth_message(&b_id, "presence-room", Some(&data_b)));
    b.send(
        &json!({"event":"pusher:subscribe","data":{"channel":"presence-room","auth":auth,"channel_data":data_b}})
            .to_string(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.send(r#"{"event":"client-typing","channel":"presence-room","data":{"on":true}}"#).await;
    a.send(r#"{"event":"pusher:subscribe","data":{"channel":"cache-quotes"}}"#).await;
    a.send(r#"{"event":"pusher:subscribe","data":{"channel":"counted"}}"#).await;
    // Counts are announced on a one-second tick: wait for this one before changing it again.
    wait_until(&state, |got| got.iter().any(|e| e["name"] == "subscription_count" && e["channel"] == "counted")).await;
    b.send(r#"{"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(a);

    let got = wait_until(&state, |got| {
        let has = |name: &str, channel: &str| got.iter().any(|e| e["name"] == name && e["channel"] == channel);
        has("subscription_count", "counted")
            && has("channel_vacated", "counted")
            && has("channel_vacated", "presence-room")
    })
    .await;
    let find = |name: &str, channel: &str| {
        got.iter().filter(|e| e["name"] == name && e["channel"] == channel).cloned().collect::<Vec<_>>()
    };
    assert_eq!(
        find("channel_occupied", "presence-room"),
        vec![json!({"name": "channel_occupied", "channel": "presence-room"})]
    );
    let added: Vec<_> = find("member_added", "presence-room").iter().map(|e| e["user_id"].clone()).collect();
    assert_eq!(added, vec![json!("7"), json!("8")]);
    let client = &find("client_event", "presence-room")[0];
    assert_eq!(client["event"], "client-typing");
    assert_eq!(serde_json::from_str::<Value>(client["data"].as_str().unwrap()).unwrap(), json!({"on": true}));
    assert_eq!(client["socket_id"], b_id);
    assert_eq!(client["user_id"], "8");
    assert_eq!(find("cache_miss", "cache-quotes").len(), 1);
    assert_eq!(find("subscription_count", "counted")[0]["subscription_count"], 1);
    let removed: Vec<_> = find("member_removed", "presence-room").iter().map(|e| e["user_id"].clone()).collect();
    assert_eq!(removed, vec![json!("8"), json!("7")], "b unsubscribed, then a disconnected");
    assert_eq!(find("channel_vacated", "presence-room").len(), 1);
    assert_eq!(find("channel_vacated", "counted").len(), 1);
    // Order within the channel: occupied first, vacated last.
    let room: Vec<_> = got
        .iter()
        .filter(|e| e["channel"] == "presence-room")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(room.first().map(String::as_str), Some("channel_occupied"));
    assert_eq!(room.last().map(String::as_str), Some("channel_vacated"));
}

#[tokio::test]
async fn events_are_batched_and_a_failing_receiver_loses_nothing() {
    let (url, state) = receiver(2).await;
    let server = TestServer::start("", &hook(&url, "event_types = [\"channel_occupied\", \"channel_vacated\"]")).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let (mut c, _) = server.connect().await;
        c.subscribe(&format!("batch-{i}")).await;
        clients.push(c);
    }
    let got = wait_for(&state, 5).await;
    let names: Vec<_> = got.iter().map(|e| e["channel"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, (0..5).map(|i| format!("batch-{i}")).collect::<Vec<_>>(), "all five, in order");
    let r = state.lock().unwrap();
    assert!(r.attempts >= 3, "two failures then success: {} attempts", r.attempts);
    assert!(r.requests.len() < 5, "events were batched: {} requests for 5 events", r.requests.len());
}

#[tokio::test]
async fn a_quick_reload_sends_no_vacated_occupied_pair_and_filters_apply() {
    let (url, state) = receiver(0).await;
    let app = format!(
        "webhook_batch_ms = 50\nwebhook_delay_ms = 700\n[[apps.webhooks]]\nurl = \"{url}\"\nevent_types = [\"channel_occupied\", \"channel_vacated\"]\nfilter = {{ channel_name_starts_with = \"private-\" }}\n"
    );
    let server = TestServer::start("", &app).await;
    let (mut c, id) = server.connect().await;
    let subscribe = |id: &str| {
        let auth = make_auth(KEY, SECRET, &channel_auth_message(id, "private-page", None));
        json!({"event":"pusher:subscribe","data":{"channel":"private-page","auth":auth}}).to_string()
    };
    c.send(&subscribe(&id)).await;
    assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    c.subscribe("public-ignored").await;
    drop(c);
    // The "reload": a new connection subscribes again within the delay.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (mut again, id2) = server.connect().await;
    again.send(&subscribe(&id2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = events(&state);
    assert_eq!(got, vec![json!({"name": "channel_occupied", "channel": "private-page"})], "{got:?}");
    drop(again);
    let got = wait_for(&state, 2).await;
    assert_eq!(got[1], json!({"name": "channel_vacated", "channel": "private-page"}));
}

#[tokio::test]
async fn unknown_event_types_and_bad_urls_stop_start_up() {
    for (hook_lines, expected) in [
        ("url = \"http://127.0.0.1:1/x\"\nevent_types = [\"channel_exploded\"]", "channel_exploded"),
        ("url = \"ftp://example.com\"", "http://"),
    ] {
        let port = unused_port();
        let dir = std::env::temp_dir().join(format!("herald-hooks-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.toml");
        let config = format!("[server]\nport = {port}\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\n{hook_lines}\n");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["start", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(expected), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::remove_dir_all(&dir).ok();
    }
}
