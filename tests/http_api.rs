//! The signed HTTP API against a real server.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

fn events_path() -> String {
    format!("/apps/{APP_ID}/events")
}

#[tokio::test]
async fn publishes_to_one_and_many_channels_and_reports_info() {
    let server = TestServer::start("", "").await;
    let (mut a, _) = server.subscriber("a").await;
    let (mut b, _) = server.subscriber("b").await;
    let (_b2, _) = server.subscriber("b").await;
    let body =
        json!({"name": "e", "channels": ["a", "b"], "data": "{\"x\":1}", "info": "subscription_count"}).to_string();
    let (status, reply) = server.api("POST", &events_path(), &body, &[]).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"channels": {"a": {"subscription_count": 1}, "b": {"subscription_count": 2}}}));
    assert_eq!(a.recv().await["data"], "{\"x\":1}");
    assert_eq!(b.recv().await["channel"], "b");

    // Without info: exactly `{}`.
    let body = json!({"name": "e", "channel": "a", "data": "d"}).to_string();
    assert_eq!(server.api("POST", &events_path(), &body, &[]).await, (200, json!({})));
    assert_eq!(a.recv().await["data"], "d");

    // A channel named twice is one delivery, not two.
    let body = json!({"name": "twice", "channels": ["a", "a", "b", "a"], "data": "d", "info": "subscription_count"});
    let (status, reply) = server.api("POST", &events_path(), &body.to_string(), &[]).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"channels": {"a": {"subscription_count": 1}, "b": {"subscription_count": 2}}}));
    assert_eq!(a.recv().await["event"], "twice");
    assert_eq!(b.recv().await["event"], "twice");
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn batch_events_publish_in_order() {
    let server = TestServer::start("", "").await;
    let (mut a, _) = server.subscriber("a").await;
    let (mut b, _) = server.subscriber("b").await;
    let batch: Vec<_> = (0..10)
        .map(|i| json!({"name": format!("e{i}"), "channel": if i % 2 == 0 {"a"} else {"b"}, "data": i.to_string()}))
        .collect();
    let (status, reply) =
        server.api("POST", &format!("/apps/{APP_ID}/batch_events"), &json!({"batch": batch}).to_string(), &[]).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["batch"].as_array().map(Vec::len), Some(10));
    for i in (0..10).step_by(2) {
        assert_eq!(a.recv().await["event"], format!("e{i}"));
        assert_eq!(b.recv().await["event"], format!("e{}", i + 1));
    }
    let eleven: Vec<_> = (0..11).map(|_| json!({"name": "e", "channel": "a", "data": "x"})).collect();
    let (status, _) =
        server.api("POST", &format!("/apps/{APP_ID}/batch_events"), &json!({"batch": eleven}).to_string(), &[]).await;
    assert_eq!(status, 400);
    // One invalid event refuses the whole batch: nothing is published.
    let mixed = json!({"batch": [{"name": "ok", "channel": "a", "data": "x"}, {"name": "bad", "channel": "no spaces", "data": "x"}]});
    assert_eq!(server.api("POST", &format!("/apps/{APP_ID}/batch_events"), &mixed.to_string(), &[]).await.0, 400);
    a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn channel_queries() {
    let server = TestServer::start("", "").await;
    let (_a1, _) = server.subscriber("less-orders").await;
    let (_a2, _) = server.subscriber("orders").await;
    let (_a3, _) = server.subscriber("orders").await;

    let (status, reply) =
        server.api("GET", &format!("/apps/{APP_ID}/channels/orders"), "", &[("info", "subscription_count")]).await;
    assert_eq!((status, reply), (200, json!({"occupied": true, "subscription_count": 2})));
    let (status, reply) = server.api("GET", &format!("/apps/{APP_ID}/channels/empty"), "", &[]).await;
    assert_eq!((status, reply), (200, json!({"occupied": false})));

    let (status, reply) = server.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
    assert_eq!((status, reply), (200, json!({"channels": {"orders": {}, "less-orders": {}}})));
    let (_, reply) = server
        .api(
            "GET",
            &format!("/apps/{APP_ID}/channels"),
            "",
            &[("filter_by_prefix", "ord"), ("info", "subscription_count")],
        )
        .await;
    assert_eq!(reply, json!({"channels": {"orders": {"subscription_count": 2}}}));
    // user_count only with a presence- filter.
    let (status, _) = server.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[("info", "user_count")]).await;
    assert_eq!(status, 400);
    let (status, _) =
        server.api("GET", &format!("/apps/{APP_ID}/channels/orders"), "", &[("info", "user_count")]).await;
    assert_eq!(status, 400);
    let (status, reply) = server.api("GET", &format!("/apps/{APP_ID}/connections"), "", &[]).await;
    assert_eq!((status, reply), (200, json!({"connections": 3})));
}

#[tokio::test]
async fn refusals_have_the_right_status_and_a_json_error() {
    let server = TestServer::start("max_request_size = 20000", "max_message_size = 1000").await;
    let (mut c, _) = server.subscriber("guarded").await;
    let ok_body = json!({"name": "e", "channel": "guarded", "data": "x"}).to_string();

    let cases: Vec<(u16, (u16, serde_json::Value))> = vec![
        (401, server.api_as(KEY, "wrong-secret", "POST", &events_path(), &ok_body, &[]).await),
        (401, server.api_as("wrong-key", SECRET, "POST", &events_path(), &ok_body, &[]).await),
        (404, server.api("POST", "/apps/999/events", &ok_body, &[]).await),
        (400, server.api("POST", &events_path(), "{not json", &[]).await),
        (400, server.api("POST", &events_path(), &json!({"channel": "guarded", "data": "x"}).to_string(), &[]).await),
        (400, server.api("POST", &events_path(), &json!({"name": "e", "data": "x"}).to_string(), &[]).await),
        (400, server.api("POST", &events_path(), &json!({"name": "e", "channel": "bad name", "data": "x"}).to_string(), &[]).await),
        (400, server.api("POST", &events_path(), &json!({"name": "e", "channel": "guarded", "data": "x", "socket_id": "abc"}).to_string(), &[]).await),
        (400, server.api("POST", &events_path(), &json!({"name": "e", "channels": (0..101).map(|i| format!("c{i}")).collect::<Vec<_>>(), "data": "x"}).to_string(), &[]).await),
        (413, server.api("POST", &events_path(), &json!({"name": "e", "channel": "guarded", "data": "z".repeat(1001)}).to_string(), &[]).await),
        (413, server.api("POST", &events_path(), &json!({"name": "e", "channel": "guarded", "data": "z".repeat(30000)}).to_string(), &[]).await),
        (401, server.raw_api("POST", &events_path(), &ok_body).await),
        (404, server.raw_api("GET", "/nowhere", "").await),
        // A known path with the wrong method.
        (405, server.raw_api("GET", &events_path(), "").await),
        (405, server.raw_api("POST", &format!("/sse/{KEY}"), "").await),
        (405, server.raw_api("POST", "/up", "").await),
    ];
    for (i, (expected, (status, body))) in cases.iter().enumerate() {
        assert_eq!(status, expected, "case {i}: {body}");
        assert!(body["error"].is_string(), "case {i}: errors are JSON with an `error` message: {body}");
    }

    // A replayed request (timestamp 11 minutes old) is refused.
    let old = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 - 660;
    let query = herald::protocol::signature::sign_api_request(
        KEY,
        SECRET,
        "POST",
        &events_path(),
        ok_body.as_bytes(),
        &[],
        old,
    );
    let (status, body) = server.raw_api("POST", &format!("{}?{query}", events_path()), &ok_body).await;
    assert_eq!(status, 401, "{body}");

    c.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(server.trigger("guarded", "e", "fine").await, 200);
    assert_eq!(c.recv().await["data"], "fine");
}

#[tokio::test]
async fn a_path_prefix_moves_every_route_but_signatures_cover_the_bare_path() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!("[server]\nhost = \"127.0.0.1\"\nport = {port}\n");
    let env = [
        ("REVERB_SERVER_PATH", "/ws"),
        ("REVERB_APP_ID", APP_ID),
        ("REVERB_APP_KEY", KEY),
        ("REVERB_APP_SECRET", SECRET),
    ];
    let server = TestServer::start_with_config(port, &config, &env).await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws/app/{KEY}?protocol=7")).await;
    assert_eq!(c.recv().await["event"], "pusher:connection_established");
    c.subscribe("prefixed").await;

    let body = json!({"name": "e", "channel": "prefixed", "data": "via prefix"}).to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let query =
        herald::protocol::signature::sign_api_request(KEY, SECRET, "POST", &events_path(), body.as_bytes(), &[], now);
    let (status, reply) = server.raw_api("POST", &format!("/ws{}?{query}", events_path()), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(c.recv().await["data"], "via prefix");
    assert_eq!(server.raw_api("GET", "/ws/up", "").await.0, 200);
    assert_eq!(
        server.raw_api("POST", &format!("{}?{query}", events_path()), &body).await.0,
        404,
        "unprefixed route is gone"
    );
}

#[tokio::test]
async fn the_api_request_rate_is_limited_per_app_with_429() {
    let server = TestServer::start("", "api_rate_limit = 5").await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (status, body) = server.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
        if status == 429 {
            assert!(body["error"].is_string(), "{body}");
        }
        statuses.push(status);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 10, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Forged requests are refused by their signature and do not use up the app's budget: a flood of
    // them cannot block the app's own broadcasts.
    for _ in 0..20 {
        let (status, _) = server.api_as(KEY, "forged", "GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
        assert_eq!(status, 401);
    }
    assert_eq!(server.api("GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await.0, 200, "the budget is intact");
}

/// A request refused with 400 must have published nothing, or an SDK that retries it would deliver
/// twice: `info` (the last thing a handler looks at) is validated before the first delivery, for
/// one channel, several, and each event of a batch.
#[tokio::test]
async fn a_refused_request_publishes_nothing_even_when_only_its_info_is_wrong() {
    let server = TestServer::start("", "").await;
    let (mut c, _) = server.subscriber("guarded-info").await;
    let events = events_path();
    let batch = format!("/apps/{APP_ID}/batch_events");
    let refused = [
        (events.clone(), json!({"name": "e1", "channel": "guarded-info", "data": "x", "info": "user_count"})),
        (
            events.clone(),
            json!({"name": "e2", "channels": ["presence-room", "guarded-info"], "data": "x", "info": "user_count"}),
        ),
        (
            batch.clone(),
            json!({"batch": [
                {"name": "e3", "channel": "guarded-info", "data": "x"},
                {"name": "e4", "channel": "guarded-info", "data": "x", "info": "user_count"},
            ]}),
        ),
    ];
    for (path, body) in &refused {
        let (status, reply) = server.api("POST", path, &body.to_string(), &[]).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| e.contains("user_count")), "{reply}");
    }
    // Control: the same info on a presence channel is fine.
    let ok = json!({"name": "e5", "channel": "presence-room", "data": "x", "info": "user_count"});
    let (status, reply) = server.api("POST", &events, &ok.to_string(), &[]).await;
    assert_eq!((status, reply), (200, json!({"channels": {"presence-room": {"user_count": 0}}})));
    // The subscriber's next event is the sentinel: none of the refused ones was delivered.
    assert_eq!(server.trigger("guarded-info", "sentinel", "x").await, 200);
    assert_eq!(c.recv().await["event"], "sentinel");
}
