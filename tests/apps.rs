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
