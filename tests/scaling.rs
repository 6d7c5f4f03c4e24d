//! Several Herald nodes and a real `redis-server` (and a real 3-node Redis Cluster) act as one.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herald::protocol::signature::{channel_auth_message, make_auth, signin_message};
use serde_json::{json, Value};

struct Redis {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start(port: u16, extra: &[&str]) -> Redis {
        let dir = std::env::temp_dir().join(format!("herald-redis-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child, dir }
    }

    fn stop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP / SIGCONT: a Redis that keeps its sockets open and stops answering.
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster-bus port (port + 10000, which a cluster-mode redis-server also binds) is
/// valid and free too.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = unused_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster-mode redis-server");
}

/// Two nodes sharing one prefix (the same deployment).
async fn pair(redis_url: &str, extra_app: &str) -> (TestServer, TestServer) {
    let prefix = format!("herald-test-{}", rand::random::<u32>());
    (node(redis_url, &prefix, extra_app).await, node(redis_url, &prefix, extra_app).await)
}

/// One node of the deployment whose key prefix is `prefix`.
async fn node(redis_url: &str, prefix: &str, extra_app: &str) -> TestServer {
    let port = unused_port();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[scaling]\nenabled = true\nredis_url = \"{redis_url}\"\nchannel = \"{prefix}\"\nnode_timeout_ms = 1500\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{extra_app}\n"
    );
    TestServer::start_with_config(port, &config, &[]).await
}

/// A connection signed in as `id`, watching `watchlist`, past its `signin_success`.
async fn signed_in(server: &TestServer, id: &str, watchlist: &[&str]) -> Client {
    let (mut c, socket_id) = server.connect().await;
    let data = json!({"id": id, "watchlist": watchlist}).to_string();
    let auth = make_auth(KEY, SECRET, &signin_message(&socket_id, &data));
    c.send(&json!({"event":"pusher:signin","data":{"auth": auth, "user_data": data}}).to_string()).await;
    let reply = c.recv().await;
    assert_eq!(reply["event"], "pusher:signin_success", "{reply}");
    c
}

/// The `data.events` of the next message, which must be a watchlist event.
async fn watchlist_events(c: &mut Client, wait: Duration) -> Value {
    let m = c.next_text(wait).await.expect("a watchlist event");
    assert_eq!(m["event"], "pusher_internal:watchlist_events", "{m}");
    data_of(&m)["events"].clone()
}

fn data_of(message: &Value) -> Value {
    match &message["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

async fn join(c: &mut Client, socket_id: &str, channel: &str, user_id: &str) -> Value {
    let channel_data = json!({"user_id": user_id, "user_info": {"name": format!("user {user_id}")}}).to_string();
    let auth = make_auth(KEY, SECRET, &channel_auth_message(socket_id, channel, Some(&channel_data)));
    c.send(
        &json!({"event":"pusher:subscribe","data":{"channel": channel, "auth": auth, "channel_data": channel_data}})
            .to_string(),
    )
    .await;
    let reply = c.recv().await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded", "{reply}");
    data_of(&reply)["presence"].clone()
}

/// Polls `/up` on `server` until it reports `want` ("OK" or "DEGRADED"), within `secs`.
async fn health_becomes(server: &TestServer, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, health) = server.raw_api("GET", "/up", "").await;
        if health["health"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "/up never said {want}: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls an API query on `server` until `check` holds (state in Redis is shared, not instant).
async fn eventually(server: &TestServer, path: &str, extra: &[(&str, &str)], check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.api("GET", path, "", extra).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never satisfied the check: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_reach_every_node_once_in_order_with_exclusion() {
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (a, b) = pair(&url, "").await;
    let (mut on_a, _) = a.subscriber("orders").await;
    let (mut on_b, b_id) = b.subscriber("orders").await;
    for n in 0..50 {
        assert_eq!(a.trigger("orders", "seq", &n.to_string()).await, 200);
    }
    for n in 0..50 {
        assert_eq!(on_b.recv().await["data"], n.to_string(), "in publish order on the other node");
        assert_eq!(on_a.recv().await["data"], n.to_string());
    }
    on_a.expect_silence(Duration::from_millis(200)).await;
    on_b.expect_silence(Duration::from_millis(10)).await;

    // A batch queues its events for the bus together (several records in one PUBLISH): still every
    // event, once, in order, on the other node.
    for round in 0..3 {
        let batch: Vec<Value> =
            (0..10).map(|n| json!({"name": "b", "channel": "orders", "data": format!("{round}-{n}")})).collect();
        let body = json!({ "batch": batch }).to_string();
        assert_eq!(a.api("POST", &format!("/apps/{APP_ID}/batch_events"), &body, &[]).await.0, 200);
    }
    for round in 0..3 {
        for n in 0..10 {
            assert_eq!(on_b.recv().await["data"], format!("{round}-{n}"), "batched, in order, on the other node");
            assert_eq!(on_a.recv().await["data"], format!("{round}-{n}"));
        }
    }
    on_b.expect_silence(Duration::from_millis(200)).await;

    // socket_id exclusion crosses nodes: published on A, excluding a socket on B.
    let body = json!({"name": "e", "channel": "orders", "data": "x", "socket_id": b_id}).to_string();
    assert_eq!(a.api("POST", &format!("/apps/{APP_ID}/events"), &body, &[]).await.0, 200);
    assert_eq!(on_a.recv().await["event"], "e");
    on_b.expect_silence(Duration::from_millis(300)).await;

    // Counts and channel lists are cluster-wide, from either node.
    eventually(&b, &format!("/apps/{APP_ID}/channels/orders"), &[("info", "subscription_count")], |v| {
        v["subscription_count"] == 2
    })
    .await;
    eventually(&a, &format!("/apps/{APP_ID}/connections"), &[], |v| v["connections"] == 2).await;
    eventually(&a, &format!("/apps/{APP_ID}/channels"), &[], |v| v == &json!({"channels": {"orders": {}}})).await;

    // Client events and user termination cross nodes too.
    let (mut sender, sender_id) = a.connect().await;
    let (mut receiver, receiver_id) = b.connect().await;
    for (c, id) in [(&mut sender, &sender_id), (&mut receiver, &receiver_id)] {
        let auth = make_auth(KEY, SECRET, &channel_auth_message(id, "private-x", None));
        c.send(&json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth":auth}}).to_string()).await;
        assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    }
    sender.send(r#"{"event":"client-hi","channel":"private-x","data":{"from":"a"}}"#).await;
    assert_eq!(receiver.recv().await["data"]["from"], "a");
    let user = json!({"id": "77"}).to_string();
    let auth = make_auth(KEY, SECRET, &herald::protocol::signature::signin_message(&receiver_id, &user));
    receiver.send(&json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user}}).to_string()).await;
    assert_eq!(receiver.recv().await["event"], "pusher:signin_success");
    assert_eq!(a.trigger("#server-to-user-77", "notice", "via a").await, 200);
    assert_eq!(receiver.recv().await["data"], "via a");
    assert_eq!(a.api("POST", &format!("/apps/{APP_ID}/users/77/terminate_connections"), "{}", &[]).await.0, 200);
    assert_eq!(receiver.closed_with().await, Some(4009));
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_killed_node_s_members_are_removed() {
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (a, mut b) = pair(&url, "").await;
    let (mut ann_a, ann_a_id) = a.connect().await;
    assert_eq!(join(&mut ann_a, &ann_a_id, "presence-room", "1").await["count"], 1);

    // The same user on the other node: one member, nobody told.
    let (mut ann_b, ann_b_id) = b.connect().await;
    let presence = join(&mut ann_b, &ann_b_id, "presence-room", "1").await;
    assert_eq!(presence["count"], 1);
    ann_a.expect_silence(Duration::from_millis(300)).await;

    // A new user on B: announced once on A, listed from either node.
    let (mut bob_b, bob_id) = b.connect().await;
    let presence = join(&mut bob_b, &bob_id, "presence-room", "2").await;
    assert_eq!(presence["count"], 2);
    assert_eq!(presence["hash"]["1"]["name"], "user 1");
    let added = ann_a.recv().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(data_of(&added)["user_id"], "2");
    assert_eq!(ann_b.recv().await["event"], "pusher_internal:member_added");
    ann_a.expect_silence(Duration::from_millis(200)).await;
    let users = eventually(&a, &format!("/apps/{APP_ID}/channels/presence-room/users"), &[], |v| {
        v["users"].as_array().is_some_and(|u| u.len() == 2)
    })
    .await;
    assert_eq!(users, json!({"users": [{"id": "1"}, {"id": "2"}]}));
    eventually(
        &b,
        &format!("/apps/{APP_ID}/channels/presence-room"),
        &[("info", "user_count,subscription_count")],
        |v| v == &json!({"occupied": true, "user_count": 2, "subscription_count": 3}),
    )
    .await;

    // Node B dies without a goodbye: user 2 (only there) is removed cluster-wide, user 1 stays.
    let killed = Instant::now();
    let _ = b.output(); // SIGKILL
    let removed = ann_a.next_text(Duration::from_secs(10)).await.expect("member_removed after the node died");
    assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
    assert_eq!(data_of(&removed)["user_id"], "2");
    assert!(killed.elapsed() < Duration::from_secs(8), "bounded by the node timeout: {:?}", killed.elapsed());
    ann_a.expect_silence(Duration::from_millis(500)).await;
    eventually(&a, &format!("/apps/{APP_ID}/channels/presence-room/users"), &[], |v| {
        v == &json!({"users": [{"id": "1"}]})
    })
    .await;
    eventually(&a, &format!("/apps/{APP_ID}/connections"), &[], |v| v["connections"] == 1).await;
}

#[tokio::test]
async fn nodes_survive_a_redis_restart_and_resume_cross_node_delivery() {
    let port = unused_port();
    let mut redis = Redis::start(port, &[]);
    let url = format!("redis://127.0.0.1:{port}");
    let (a, b) = pair(&url, "").await;
    let (mut on_a, _) = a.subscriber("news").await;
    let (mut on_b, _) = b.subscriber("news").await;
    assert_eq!(a.trigger("news", "e", "before").await, 200);
    assert_eq!(on_b.recv().await["data"], "before");
    assert_eq!(on_a.recv().await["data"], "before");

    redis.stop();
    // Local traffic keeps flowing, and health says degraded.
    health_becomes(&a, "DEGRADED", 10).await;
    assert_eq!(a.trigger("news", "e", "during").await, 200);
    assert_eq!(on_a.recv().await["data"], "during");

    let _redis = Redis::start(port, &[]);
    health_becomes(&a, "OK", 15).await;
    health_becomes(&b, "OK", 15).await;
    assert_eq!(a.trigger("news", "e", "after").await, 200);
    // B may or may not have seen "during" (it was down); it must see "after".
    loop {
        let m = on_b.recv().await;
        if m["data"] == "after" {
            break;
        }
        assert_eq!(m["data"], "during");
    }
    // State was rewritten into the new Redis: counts are right again.
    eventually(&b, &format!("/apps/{APP_ID}/channels/news"), &[("info", "subscription_count")], |v| {
        v["subscription_count"] == 2
    })
    .await;
}

#[tokio::test]
async fn cluster_questions_get_503_while_redis_is_down_and_200_once_it_is_back() {
    let port = unused_port();
    let mut redis = Redis::start(port, &[]);
    let url = format!("redis://127.0.0.1:{port}");
    let (a, _b) = pair(&url, "").await;
    let (mut ann, ann_id) = a.connect().await;
    join(&mut ann, &ann_id, "presence-room", "1").await;
    let users = format!("/apps/{APP_ID}/channels/presence-room/users");
    let channel = format!("/apps/{APP_ID}/channels/presence-room");
    let channels = format!("/apps/{APP_ID}/channels");
    let info = [("info", "subscription_count,user_count")];
    eventually(&a, &users, &[], |v| v == &json!({"users": [{"id": "1"}]})).await;

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = a.api("GET", &users, "", &[]).await;
        if status == 503 {
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "a JSON error: {body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "users never answered 503 with Redis stopped: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (path, extra) in [(&channel, &info[..]), (&channels, &[("filter_by_prefix", "presence-"), info[0]][..])] {
        let (status, body) = a.api("GET", path, "", extra).await;
        assert_eq!(status, 503, "{path}: {body}");
    }
    let (status, body) = a.api("GET", &format!("/apps/{APP_ID}/connections"), "", &[]).await;
    assert_eq!(status, 503, "{body}");
    let (_, health) = a.raw_api("GET", "/up", "").await;
    assert_eq!(health["health"], "DEGRADED");

    let _redis = Redis::start(port, &[]);
    eventually(&a, &users, &[], |v| v == &json!({"users": [{"id": "1"}]})).await;
    eventually(&a, &channel, &info, |v| v["user_count"] == 1 && v["subscription_count"] == 1).await;
    let (_, health) = a.raw_api("GET", "/up", "").await;
    assert_eq!(health["health"], "OK");
    drop(ann);
}

#[tokio::test]
async fn a_stalled_redis_is_noticed_and_clients_are_answered_within_their_deadlines() {
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (a, b) = pair(&url, "").await;
    let (mut open_before, open_id) = a.connect().await;
    join(&mut open_before, &open_id, "presence-room", "1").await;
    let (mut elsewhere, elsewhere_id) = b.connect().await;
    join(&mut elsewhere, &elsewhere_id, "presence-room", "3").await;
    assert_eq!(data_of(&open_before.recv().await)["user_id"], "3");

    redis.signal("-STOP");
    // A ping on an open connection is answered at once: nothing on that path waits for Redis.
    let started = Instant::now();
    open_before.send(r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(open_before.recv().await["event"], "pusher:pong");
    // A new connection is greeted, and its presence join is answered (served by this node) within
    // the Redis command deadline, instead of hanging with the stalled server.
    let (mut newcomer, newcomer_id) = a.connect().await;
    let presence = join(&mut newcomer, &newcomer_id, "presence-room", "2").await;
    assert!(presence["ids"].as_array().is_some_and(|ids| ids.contains(&json!("2"))), "{presence}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered within the deadlines: {:?}", started.elapsed());
    // The node says it is degraded, and cluster questions are refused rather than guessed.
    health_becomes(&a, "DEGRADED", 10).await;
    let (status, _) = a.api("GET", &format!("/apps/{APP_ID}/channels/presence-room/users"), "", &[]).await;
    assert_eq!(status, 503);

    redis.signal("-CONT");
    health_becomes(&a, "OK", 15).await;
    // Every member is in Redis again (the newcomer's join was written when Redis came back).
    eventually(&a, &format!("/apps/{APP_ID}/channels/presence-room/users"), &[], |v| {
        v == &json!({"users": [{"id": "1"}, {"id": "2"}, {"id": "3"}]})
    })
    .await;
    // The newcomer was listed only itself: it is told of the members on both nodes, and the
    // member on the other node hears of it, so every list is exact again.
    assert_eq!(members_added(&mut newcomer, &["1", "3"]).await, ["1", "3"]);
    assert_eq!(members_added(&mut elsewhere, &["2"]).await, ["2"]);
}

/// Reads `c`'s messages until a `member_added` has come for each of `want` (repeats are allowed:
/// a list told again after an outage), within 15 s; the users heard of, sorted.
async fn members_added(c: &mut Client, want: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut heard = std::collections::BTreeSet::new();
    while !want.iter().all(|u| heard.contains(*u)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(message) = c.next_text(left).await else {
            panic!("member_added for {want:?} never came; heard {heard:?}");
        };
        if message["event"] == "pusher_internal:member_added" {
            heard.insert(data_of(&message)["user_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    heard.into_iter().collect()
}

#[tokio::test]
async fn webhooks_fire_once_per_cluster() {
    use std::sync::{Arc, Mutex};
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap();
                sink.lock().unwrap().extend(v["events"].as_array().unwrap().iter().cloned());
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let hooks = format!("webhook_batch_ms = 20\nwebhook_delay_ms = 0\n[[apps.webhooks]]\nurl = \"{hook_url}\"\nevent_types = [\"channel_occupied\", \"channel_vacated\", \"member_added\", \"member_removed\"]\n");
    let (a, b) = pair(&url, &hooks).await;
    let (mut c_a, id_a) = a.connect().await;
    join(&mut c_a, &id_a, "presence-hooked", "1").await;
    let (mut c_b, id_b) = b.connect().await;
    join(&mut c_b, &id_b, "presence-hooked", "1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(c_a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names = |v: &Vec<Value>| v.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&received.lock().unwrap()), ["channel_occupied", "member_added"], "one of each for the cluster");
    drop(c_b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", received.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        names(&received.lock().unwrap()),
        ["channel_occupied", "member_added", "member_removed", "channel_vacated"]
    );
}

#[tokio::test]
async fn watchlists_hear_of_users_on_other_nodes_and_of_a_killed_nodes_users() {
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (a, mut b) = pair(&url, "").await;
    let _early = signed_in(&b, "early", &[]).await;
    let mut watcher = signed_in(&a, "w", &["early", "u"]).await;
    let wait = Duration::from_secs(5);
    assert_eq!(
        watchlist_events(&mut watcher, wait).await,
        json!([{"name": "online", "user_ids": ["early"]}, {"name": "offline", "user_ids": ["u"]}]),
        "the state after sign-in is the cluster's"
    );
    let u_on_b = signed_in(&b, "u", &[]).await;
    assert_eq!(watchlist_events(&mut watcher, wait).await, json!([{"name": "online", "user_ids": ["u"]}]));
    // A second connection of u, on the watcher's node: no second online.
    let u_on_a = signed_in(&a, "u", &[]).await;
    drop(u_on_b);
    eventually(&a, &format!("/apps/{APP_ID}/connections"), &[], |v| v["connections"] == 3).await;
    drop(u_on_a);
    assert_eq!(watchlist_events(&mut watcher, wait).await, json!([{"name": "offline", "user_ids": ["u"]}]));

    // Node B dies with "early" signed in there: another node reaps it and announces it offline.
    let _ = b.output(); // SIGKILL
    let events = watchlist_events(&mut watcher, Duration::from_secs(20)).await;
    assert_eq!(events, json!([{"name": "offline", "user_ids": ["early"]}]));
}

#[tokio::test]
async fn subscription_counts_pushed_and_answered_are_cluster_wide() {
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (a, b) = pair(&url, "subscription_count_events = true").await;
    let (mut on_a, _) = a.subscriber("counted").await;
    let (mut on_b, _) = b.subscriber("counted").await;
    // Each node's subscriber hears the count of both nodes, whichever node changed it.
    count_becomes(&mut on_a, 2).await;
    count_becomes(&mut on_b, 2).await;
    eventually(&a, &format!("/apps/{APP_ID}/channels/counted"), &[("info", "subscription_count")], |v| {
        v == &json!({"occupied": true, "subscription_count": 2})
    })
    .await;
    // Leaving on B is announced to A's subscriber.
    drop(on_b);
    count_becomes(&mut on_a, 1).await;
}

/// Reads `pusher_internal:subscription_count` messages (a few, each within 5 s) until one says `n`.
async fn count_becomes(c: &mut Client, n: u64) {
    let mut seen = Vec::new();
    for _ in 0..10 {
        let Ok(m) = c.next_text(Duration::from_secs(5)).await else { break };
        assert_eq!(m["event"], "pusher_internal:subscription_count", "{m}");
        seen.push(data_of(&m)["subscription_count"].clone());
        if seen.last() == Some(&json!(n)) {
            return;
        }
    }
    panic!("the subscription count never became {n}: heard {seen:?}");
}

#[tokio::test]
async fn a_cache_channels_last_event_reaches_a_node_started_after_it() {
    use std::sync::{Arc, Mutex};
    let redis = Redis::start(unused_port(), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap();
                sink.lock().unwrap().extend(v["events"].as_array().unwrap().iter().cloned());
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let hooks =
        format!("webhook_batch_ms = 20\n[[apps.webhooks]]\nurl = \"{hook_url}\"\nevent_types = [\"cache_miss\"]\n");
    let prefix = format!("herald-test-{}", rand::random::<u32>());
    let a = node(&url, &prefix, &hooks).await;
    assert_eq!(a.trigger("cache-quote", "price", r#"{"p":7}"#).await, 200);
    // Node B starts after the event: it never saw it go by.
    let b = node(&url, &prefix, &hooks).await;
    let (mut c, _) = b.connect().await;
    c.send(r#"{"event":"pusher:subscribe","data":{"channel":"cache-quote"}}"#).await;
    assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    let replayed = c.recv().await;
    assert_eq!(replayed["event"], "price", "the event published on node A: {replayed}");
    assert_eq!(replayed["data"], r#"{"p":7}"#);
    // A cache channel with no event anywhere is a miss, and its webhook is the only one: the
    // subscription to cache-quote before it sent none.
    c.send(r#"{"event":"pusher:subscribe","data":{"channel":"cache-empty"}}"#).await;
    assert_eq!(c.recv().await["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(c.recv().await["event"], "pusher:cache_miss");
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no cache_miss webhook for cache-empty");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let channels: Vec<Value> = received.lock().unwrap().iter().map(|e| e["channel"].clone()).collect();
    assert_eq!(channels, vec![json!("cache-empty")], "one cache_miss, for the channel that had no event");
}

#[tokio::test]
async fn works_with_a_redis_cluster() {
    let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
    let _nodes: Vec<Redis> = ports
        .iter()
        .map(|p| {
            let conf = format!("nodes-{p}.conf");
            Redis::start(
                *p,
                &["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--cluster-node-timeout", "2000"],
            )
        })
        .collect();
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for p in &ports {
        create.arg(format!("127.0.0.1:{p}"));
    }
    let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).output().expect("redis-cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Wait until the cluster agrees on its slots.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = Command::new("redis-cli").args(["-p", &ports[0].to_string(), "cluster", "info"]).output().unwrap();
        if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
            break;
        }
        assert!(Instant::now() < deadline, "redis cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let urls = ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let (a, b) = pair(&urls, "").await;
    let (mut on_b, _) = b.subscriber("cluster-news").await;
    assert_eq!(a.trigger("cluster-news", "e", "over the cluster").await, 200);
    assert_eq!(on_b.recv().await["data"], "over the cluster");

    let (mut p_a, p_a_id) = a.connect().await;
    join(&mut p_a, &p_a_id, "presence-c", "1").await;
    let (mut p_b, p_b_id) = b.connect().await;
    assert_eq!(join(&mut p_b, &p_b_id, "presence-c", "2").await["count"], 2);
    assert_eq!(data_of(&p_a.recv().await)["user_id"], "2");
    eventually(&a, &format!("/apps/{APP_ID}/channels/cluster-news"), &[("info", "subscription_count")], |v| {
        v["subscription_count"] == 1
    })
    .await;
}
