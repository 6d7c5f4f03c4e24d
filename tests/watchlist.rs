//! Watchlist events (`pusher.user.watchlist` in pusher-js) on a real server: the state right after
//! sign-in, `online` only on a user's first connection and `offline` only on its last, the
//! watchlist cap and its refusals. The two-node case is in `scaling.rs` and the pusher-js one in
//! `tests/compat`. Run alone and with `HERALD_TEST_REDIS_URL` by `scripts/test`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald::protocol::signature::{make_auth, signin_message};
use serde_json::{json, Value};

/// Sends `pusher:signin` with `user_data`, signed, and returns the first reply.
async fn signin(c: &mut Client, socket_id: &str, user_data: &Value) -> Value {
    let data = user_data.to_string();
    let auth = make_auth(KEY, SECRET, &signin_message(socket_id, &data));
    c.send(&json!({"event":"pusher:signin","data":{"auth": auth, "user_data": data}}).to_string()).await;
    c.recv().await
}

/// A connection signed in as `id` watching `watchlist`, past its `signin_success`.
async fn signed_in(server: &TestServer, id: &str, watchlist: &[&str]) -> Client {
    let (mut c, socket_id) = server.connect().await;
    let reply = signin(&mut c, &socket_id, &json!({"id": id, "watchlist": watchlist})).await;
    assert_eq!(reply["event"], "pusher:signin_success", "{reply}");
    c
}

/// The `data.events` of the next message, which must be a watchlist event.
async fn watchlist_events(c: &mut Client) -> Value {
    let m = c.recv().await;
    assert_eq!(m["event"], "pusher_internal:watchlist_events", "{m}");
    assert!(m["data"].is_string(), "data is a JSON string, like every server event: {m}");
    let data: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
    data["events"].clone()
}

fn online(ids: &[&str]) -> Value {
    json!([{"name": "online", "user_ids": ids}])
}

fn offline(ids: &[&str]) -> Value {
    json!([{"name": "offline", "user_ids": ids}])
}

/// Waits until the server counts `n` open connections, so a close has been handled.
async fn connections_become(server: &TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.api("GET", &format!("/apps/{APP_ID}/connections"), "", &[]).await;
        if status == 200 && body["connections"] == n {
            return;
        }
        assert!(Instant::now() < deadline, "connections never became {n}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_state_comes_right_after_sign_in() {
    let server = TestServer::start("", "").await;
    let _two = signed_in(&server, "2", &[]).await;
    let mut watcher = signed_in(&server, "1", &["2", "3"]).await;
    assert_eq!(
        watchlist_events(&mut watcher).await,
        json!([{"name": "online", "user_ids": ["2"]}, {"name": "offline", "user_ids": ["3"]}])
    );
    // No watchlist, no watchlist event: the next message is the answer to a ping.
    let mut plain = signed_in(&server, "4", &[]).await;
    plain.send(r#"{"event":"pusher:ping","data":{}}"#).await;
    assert_eq!(plain.recv().await["event"], "pusher:pong");
}

#[tokio::test]
async fn online_on_the_first_connection_and_offline_on_the_last() {
    let server = TestServer::start("", "").await;
    let mut watcher = signed_in(&server, "w", &["2", "m1", "m2"]).await;
    assert_eq!(watchlist_events(&mut watcher).await, offline(&["2", "m1", "m2"]));

    let first = signed_in(&server, "2", &[]).await;
    assert_eq!(watchlist_events(&mut watcher).await, online(&["2"]));
    let second = signed_in(&server, "2", &[]).await;
    // A marker user signs in after the second tab: its event must be the next one, so the second
    // tab announced nothing.
    let _m1 = signed_in(&server, "m1", &[]).await;
    assert_eq!(watchlist_events(&mut watcher).await, online(&["m1"]), "no second online for user 2");

    drop(first);
    connections_become(&server, 3).await; // the watcher, the second tab, m1
    let _m2 = signed_in(&server, "m2", &[]).await;
    assert_eq!(watchlist_events(&mut watcher).await, online(&["m2"]), "no offline while a tab is left");

    drop(second);
    assert_eq!(watchlist_events(&mut watcher).await, offline(&["2"]));
}

#[tokio::test]
async fn signing_in_again_as_someone_else_takes_the_first_user_offline() {
    let server = TestServer::start("", "").await;
    let mut watcher = signed_in(&server, "w", &["a", "b"]).await;
    assert_eq!(watchlist_events(&mut watcher).await, offline(&["a", "b"]));
    let (mut c, socket_id) = server.connect().await;
    assert_eq!(signin(&mut c, &socket_id, &json!({"id": "a"})).await["event"], "pusher:signin_success");
    assert_eq!(watchlist_events(&mut watcher).await, online(&["a"]));
    assert_eq!(signin(&mut c, &socket_id, &json!({"id": "b"})).await["event"], "pusher:signin_success");
    assert_eq!(watchlist_events(&mut watcher).await, offline(&["a"]));
    assert_eq!(watchlist_events(&mut watcher).await, online(&["b"]));
}

#[tokio::test]
async fn a_watchlist_over_the_cap_or_of_the_wrong_shape_refuses_the_sign_in() {
    let server = TestServer::start("", "max_watchlist_size = 2").await;
    let (mut c, socket_id) = server.connect().await;
    let bad = [json!(["1", "2", "3"]), json!("1"), json!([1]), json!([""]), json!([["1"]]), json!({"1": true})];
    for watchlist in bad {
        let reply = signin(&mut c, &socket_id, &json!({"id": "u", "watchlist": watchlist})).await;
        assert_eq!(reply["event"], "pusher:error", "{watchlist}: {reply}");
        assert_eq!(reply["data"]["code"], 4009, "{reply}");
    }
    // Refused sign-ins made nobody online: a watcher of u sees it offline.
    let mut watcher = signed_in(&server, "w", &["u"]).await;
    assert_eq!(watchlist_events(&mut watcher).await, offline(&["u"]));
    // At the cap is fine.
    let reply = signin(&mut c, &socket_id, &json!({"id": "u", "watchlist": ["1", "2"]})).await;
    assert_eq!(reply["event"], "pusher:signin_success", "{reply}");
    assert_eq!(watchlist_events(&mut c).await, offline(&["1", "2"]));
    assert_eq!(watchlist_events(&mut watcher).await, online(&["u"]));
}

#[tokio::test]
async fn the_default_cap_is_100() {
    let server = TestServer::start("", "").await;
    let (mut c, socket_id) = server.connect().await;
    let ids: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let reply = signin(&mut c, &socket_id, &json!({"id": "u", "watchlist": ids})).await;
    assert_eq!(reply["event"], "pusher:error", "{reply}");
    assert!(reply["data"]["message"].as_str().unwrap().contains("100"), "{reply}");
    let reply = signin(&mut c, &socket_id, &json!({"id": "u", "watchlist": ids[..100]})).await;
    assert_eq!(reply["event"], "pusher:signin_success", "{reply}");
    let events = watchlist_events(&mut c).await;
    assert_eq!(events[0]["user_ids"].as_array().map(Vec::len), Some(100));
}

#[tokio::test]
async fn watchlist_channels_cannot_be_reached_by_clients_or_the_api() {
    let server = TestServer::start("", "").await;
    let (mut c, _) = server.connect().await;
    c.send(r##"{"event":"pusher:subscribe","data":{"channel":"#watchlist-2"}}"##).await;
    assert_eq!(c.recv().await["event"], "pusher:subscription_error");
    let body = json!({"name": "pusher_internal:watchlist_events", "channel": "#watchlist-2", "data": "{}"});
    let (status, _) = server.api("POST", &format!("/apps/{APP_ID}/events"), &body.to_string(), &[]).await;
    assert_eq!(status, 400);
}
