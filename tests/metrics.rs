//! `/metrics` counts what actually happened.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// Parses the Prometheus text format into `name{labels}` -> value.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{}/metrics", server.port));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_match_known_traffic() {
    let server = TestServer::start("", "").await;
    let (mut a, _) = server.subscriber("metered").await;
    let (mut b, _) = server.subscriber("metered").await;
    for n in 0..3 {
        assert_eq!(server.trigger("metered", "e", &n.to_string()).await, 200);
    }
    for _ in 0..3 {
        a.recv().await;
        b.recv().await;
    }
    let (status, _) = server.api_as(KEY, "wrong", "GET", &format!("/apps/{APP_ID}/channels"), "", &[]).await;
    assert_eq!(status, 401);
    a.send("not json").await;
    assert_eq!(a.recv().await["event"], "pusher:error");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, text) = scrape(&server, None).await;
    assert_eq!(status, 200);
    let m = parse(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing from:\n{text}"));
    assert_eq!(get(&format!("herald_connections{{app=\"{APP_ID}\"}}")), 2.0);
    assert_eq!(get(&format!("herald_connections_total{{app=\"{APP_ID}\"}}")), 2.0);
    assert_eq!(get("herald_subscriptions"), 2.0);
    assert_eq!(get("herald_channels"), 1.0);
    assert_eq!(get("herald_events_published_total"), 3.0);
    assert_eq!(get("herald_deliveries_total"), 6.0);
    assert_eq!(get("herald_http_requests_total{status=\"401\"}"), 1.0);
    assert!(get("herald_http_requests_total{status=\"200\"}") >= 3.0);
    assert_eq!(get("herald_errors_total{code=\"4200\"}"), 1.0);
    // Each client: connection_established + subscription_succeeded + 3 events (+ the error for a).
    assert_eq!(get("herald_messages_sent_total"), 11.0);
    assert_eq!(get("herald_messages_received_total"), 3.0, "two subscribes and one bad message");
    assert_eq!(get("herald_adapter_healthy"), 1.0);
    assert!(get("herald_fanout_seconds_count") >= 3.0);

    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = parse(&scrape(&server, None).await.1);
    assert_eq!(m[&format!("herald_connections{{app=\"{APP_ID}\"}}")], 1.0);
    assert_eq!(m["herald_subscriptions"], 1.0);
}

#[tokio::test]
async fn a_metrics_token_guards_the_endpoint() {
    let server = TestServer::start("metrics_token = \"s3cret\"", "").await;
    assert_eq!(scrape(&server, None).await.0, 401);
    assert_eq!(scrape(&server, Some("wrong")).await.0, 401);
    let (status, text) = scrape(&server, Some("s3cret")).await;
    assert_eq!(status, 200);
    assert!(text.contains("herald_adapter_healthy"), "{text}");
}

#[tokio::test]
async fn an_apps_state_is_made_by_its_first_connection_and_freed_after_its_last() {
    let server = TestServer::start("", "").await;
    let active = |text: &str| parse(text).get("herald_active_apps").copied();
    let (_, text) = scrape(&server, None).await;
    assert_eq!(active(&text), Some(0.0), "no state before any connection:\n{text}");
    // Publishing to a channel nobody listens to makes no state either.
    assert_eq!(server.trigger("nobody-here", "e", "1").await, 200);
    let (_, text) = scrape(&server, None).await;
    assert_eq!(active(&text), Some(0.0));

    let (first, _) = server.subscriber("room").await;
    let (second, _) = server.subscriber("room").await;
    let (_, text) = scrape(&server, None).await;
    assert_eq!(active(&text), Some(1.0), "one app in use, however many connections:\n{text}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, text) = scrape(&server, None).await;
    assert_eq!(active(&text), Some(1.0), "still one connection open");
    drop(second);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, text) = scrape(&server, None).await;
        if active(&text) == Some(0.0) {
            assert_eq!(parse(&text).get("herald_channels"), Some(&0.0));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the app's state was never freed:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every publish records its fan-out time in a histogram; the exporter keeps each sample until it
/// is drained. Nobody scraping `/metrics` (the default) must not make memory grow with traffic:
/// 400,000 publishes (4,000 API calls to 100 channels) kept ~8 MB of samples when nothing drained them.
#[tokio::test]
async fn unscraped_metrics_do_not_grow_with_traffic() {
    let server = TestServer::start("", "api_rate_limit = 0").await;
    let channels: Vec<String> = (0..100).map(|i| format!("quiet-{i}")).collect();
    let body = serde_json::json!({ "name": "e", "channels": channels, "data": "x" }).to_string();
    let publish = |n: usize| {
        let (server, body) = (&server, &body);
        async move {
            for _ in 0..n {
                assert_eq!(server.api("POST", &format!("/apps/{APP_ID}/events"), body, &[]).await.0, 200);
            }
        }
    };
    // Warm up with the same load: the server's buffers and the allocator's caches reach their
    // working size (about 1 MB here), so what the measured round adds is what traffic keeps.
    futures_util::future::join_all((0..4).map(|_| publish(1_000))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = server.rss_kib();
    futures_util::future::join_all((0..4).map(|_| publish(1_000))).await;
    // Samples are drained every second or so; give the drain time on a slow machine.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 2048, "400,000 publishes grew the server by {grown} KiB");
}
