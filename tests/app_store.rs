//! Apps from a database while clients stay connected: a real PostgreSQL and a real MariaDB, each
//! started by its test. An inserted app is served, a changed one is used for new connections and
//! signatures, a disabled one is closed with 4001, and a database that goes away leaves the last
//! good apps served (`/up` DEGRADED) until it is back.

mod common;
#[path = "common/databases.rs"]
mod databases;

use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use databases::{Mariadb, Postgres};
use herald::protocol::signature::{channel_auth_message, make_auth};
use serde_json::{json, Value};

/// Herald's own layout (README, App store): the `[[apps]]` settings as columns, all but the
/// credentials optional. `notes` is a column Herald does not know and must leave alone.
const HERALD_TABLE_PG: &str = "CREATE TABLE apps (
    id text PRIMARY KEY,
    key text NOT NULL UNIQUE,
    secret text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    max_connections integer,
    enable_client_messages boolean NOT NULL DEFAULT true,
    webhooks jsonb,
    notes text
)";

const HERALD_TABLE_MYSQL: &str = "CREATE TABLE apps (
    id varchar(255) PRIMARY KEY,
    `key` varchar(255) NOT NULL UNIQUE,
    secret varchar(255) NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    max_connections integer NULL,
    enable_client_messages boolean NOT NULL DEFAULT true,
    webhooks json NULL,
    notes text NULL
)";

/// The statement trigger of README, App store: every change to the table is announced.
const NOTIFY_TRIGGER: &str = "CREATE FUNCTION herald_apps_notify() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_notify('herald_apps', ''); RETURN NULL; END $$;
    CREATE TRIGGER herald_apps_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION herald_apps_notify();";

/// Soketi's `apps` columns and types (PostgreSQL), as a Soketi deployment has them.
const SOKETI_TABLE_PG: &str = "CREATE TABLE apps (
    id varchar(255) PRIMARY KEY, \"key\" varchar(255) NOT NULL, secret varchar(255) NOT NULL,
    max_connections integer NOT NULL, enable_client_messages smallint NOT NULL, \"enabled\" smallint NOT NULL,
    max_backend_events_per_sec integer NOT NULL, max_client_events_per_sec integer NOT NULL,
    max_read_req_per_sec integer NOT NULL, webhooks json,
    max_presence_members_per_channel integer DEFAULT NULL, max_presence_member_size_in_kb integer DEFAULT NULL,
    max_channel_name_length integer DEFAULT NULL, max_event_channels_at_once integer DEFAULT NULL,
    max_event_name_length integer DEFAULT NULL, max_event_payload_in_kb integer DEFAULT NULL,
    max_event_batch_size integer DEFAULT NULL, enable_user_authentication smallint NOT NULL)";

/// The same for MySQL/MariaDB.
const SOKETI_TABLE_MYSQL: &str = "CREATE TABLE apps (
    `id` varchar(255) NOT NULL, `key` varchar(255) NOT NULL, `secret` varchar(255) NOT NULL,
    `max_connections` integer(10) NOT NULL, `enabled` tinyint(1) NOT NULL, `enable_client_messages` tinyint(1) NOT NULL,
    `max_backend_events_per_sec` integer(10) NOT NULL, `max_client_events_per_sec` integer(10) NOT NULL,
    `max_read_req_per_sec` integer(10) NOT NULL, `webhooks` json,
    `max_presence_members_per_channel` tinyint(1) NULL, `max_presence_member_size_in_kb` tinyint(1) NULL,
    `max_channel_name_length` tinyint(1) NULL, `max_event_channels_at_once` tinyint(1) NULL,
    `max_event_name_length` tinyint(1) NULL, `max_event_payload_in_kb` tinyint(1) NULL,
    `max_event_batch_size` tinyint(1) NULL, `enable_user_authentication` tinyint(1) NOT NULL, PRIMARY KEY (`id`))";

/// A Soketi row for app `id` (key `key-{id}`, secret `secret-{id}`), with the identifier quote of
/// its database (`key` and `enabled` are reserved words in one or the other).
fn soketi_row(quote: char, id: &str, enabled: u8, member_kb: i32) -> String {
    let q = quote;
    format!(
        "INSERT INTO apps (id, {q}key{q}, secret, max_connections, {q}enabled{q}, enable_client_messages, \
         max_backend_events_per_sec, max_client_events_per_sec, max_read_req_per_sec, webhooks, \
         max_presence_member_size_in_kb, enable_user_authentication) \
         VALUES ('{id}', 'key-{id}', 'secret-{id}', 200, {enabled}, 1, -1, -1, -1, '[]', {member_kb}, 0)"
    )
}

fn store_config(port: u16, driver: &str, url: &str, extra: &str) -> String {
    format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[apps_store]\ndriver = \"{driver}\"\nurl = \"{url}\"\n{extra}\n"
    )
}

/// Opens a Pusher connection: the client and its socket id, or the close code it was refused with.
async fn open(server: &TestServer, key: &str) -> Result<(Client, String), Option<u16>> {
    let mut client = Client::connect(&server.ws_url(key, "protocol=7")).await;
    let first = client.recv().await;
    if first["event"] == "pusher:connection_established" {
        let data: Value = serde_json::from_str(first["data"].as_str().unwrap_or("{}")).unwrap_or_default();
        return Ok((client, data["socket_id"].as_str().unwrap_or_default().to_owned()));
    }
    assert_eq!(first["event"], "pusher:error", "{first}");
    Err(client.closed_with().await)
}

/// Opens a connection as soon as the app is served, keeping it (a probe that is dropped would
/// still count against a small `max_connections` for a moment).
async fn open_when_served(server: &TestServer, key: &str) -> (Client, String) {
    let deadline = Instant::now() + SOON;
    loop {
        if let Ok(opened) = open(server, key).await {
            return opened;
        }
        assert!(Instant::now() < deadline, "{key} was not served within {SOON:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn served(server: &TestServer, key: &str) -> bool {
    open(server, key).await.is_ok()
}

/// Polls `check` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn health(server: &TestServer) -> Value {
    server.raw_api("GET", "/up", "").await.1
}

async fn channels_status(server: &TestServer, id: &str, key: &str, secret: &str) -> u16 {
    server.api_as(key, secret, "GET", &format!("/apps/{id}/channels"), "", &[]).await.0
}

/// Subscribes `client` to a private channel with an auth signed by `secret`; true when accepted.
async fn private_subscribe(client: &mut Client, socket_id: &str, key: &str, secret: &str, channel: &str) -> bool {
    let auth = make_auth(key, secret, &channel_auth_message(socket_id, channel, None));
    client.send(&json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}).to_string()).await;
    let reply = client.recv().await;
    match reply["event"].as_str() {
        Some("pusher_internal:subscription_succeeded") => true,
        Some("pusher:subscription_error") | Some("pusher:error") => false,
        _ => panic!("unexpected reply {reply}"),
    }
}

const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn postgres_apps_are_served_changed_rotated_disabled_and_outlive_an_outage() {
    let mut pg = Postgres::start();
    pg.sql(HERALD_TABLE_PG);
    pg.sql("INSERT INTO apps (id, key, secret, notes) VALUES ('1', 'key-1', 'secret-1', 'a note')");
    let port = unused_port();
    let extra = "refresh_interval_ms = 300\nsecret_grace_seconds = 3";
    let server = TestServer::start_with_config(port, &store_config(port, "postgres", &pg.url(), extra), &[]).await;
    assert_eq!(health(&server).await["health"], "OK");
    let (mut one, _) = open(&server, "key-1").await.expect("a row is an app");
    one.subscribe("orders").await;
    assert_eq!(open(&server, "key-2").await.err(), Some(Some(4001)), "no row, no app");

    // An inserted app is served without a restart, limits included.
    pg.sql("INSERT INTO apps (id, key, secret, max_connections) VALUES ('2', 'key-2', 'secret-2', 2)");
    let (mut two, two_socket) = open_when_served(&server, "key-2").await;
    let (_two_more, _) = open(&server, "key-2").await.expect("second of two");
    assert_eq!(open(&server, "key-2").await.err(), Some(Some(4004)), "max_connections from the row");
    pg.sql("UPDATE apps SET max_connections = 3 WHERE id = '2'");
    eventually("a raised limit applies to new connections", SOON, || served(&server, "key-2")).await;
    assert_eq!(channels_status(&server, "2", "key-2", "secret-2").await, 200);

    // A rotated secret signs at once; the old one is accepted for the grace only.
    pg.sql("UPDATE apps SET secret = 'secret-2b' WHERE id = '2'");
    eventually("the new secret is used", SOON, || async {
        channels_status(&server, "2", "key-2", "secret-2b").await == 200
    })
    .await;
    let rotated = Instant::now();
    assert_eq!(channels_status(&server, "2", "key-2", "secret-2").await, 200, "the old secret during the grace");
    assert!(
        private_subscribe(&mut two, &two_socket, "key-2", "secret-2b", "private-a").await,
        "a connection opened before the rotation checks channel auth with the new secret"
    );
    assert!(rotated.elapsed() < Duration::from_secs(3), "the grace checks above ran within the grace");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(rotated.elapsed()) + Duration::from_millis(700)).await;
    assert_eq!(channels_status(&server, "2", "key-2", "secret-2").await, 401, "the old secret after the grace");
    assert!(
        !private_subscribe(&mut two, &two_socket, "key-2", "secret-2", "private-b").await,
        "channel auth with the old secret after the grace"
    );
    assert_eq!(channels_status(&server, "2", "key-2", "secret-2b").await, 200);

    // Disabling the app closes its connections with 4001 and refuses its HTTP API.
    pg.sql("UPDATE apps SET enabled = false WHERE id = '2'");
    assert_eq!(two.closed_with().await, Some(4001), "a disabled app's connections are closed with 4001");
    let (status, body) = server.api_as("key-2", "secret-2b", "GET", "/apps/2/channels", "", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string(), "a JSON error: {body}");

    // The database goes away: the last good apps keep serving, /up says DEGRADED, failures count.
    assert_eq!(server.metric("herald_apps_store_failed_refreshes_total").await, 0.0);
    pg.halt();
    eventually("/up says DEGRADED", SOON, || async { health(&server).await["health"] == "DEGRADED" }).await;
    assert!(health(&server).await["apps_store"].is_string());
    assert!(server.metric("herald_apps_store_failed_refreshes_total").await >= 1.0);
    assert_eq!(server.metric("herald_apps_store_healthy").await, 0.0);
    let body = json!({"name": "e", "channel": "orders", "data": "during the outage"}).to_string();
    assert_eq!(server.api_as("key-1", "secret-1", "POST", "/apps/1/events", &body, &[]).await.0, 200);
    assert_eq!(one.recv().await["data"], "during the outage", "connected clients keep working");
    assert!(served(&server, "key-1").await, "new connections to a known app too");

    // It comes back: refreshes resume.
    pg.resume();
    eventually("/up says OK again", Duration::from_secs(20), || async { health(&server).await["health"] == "OK" })
        .await;
    pg.sql("INSERT INTO apps (id, key, secret) VALUES ('3', 'key-3', 'secret-3')");
    eventually("an app inserted after the outage is served", Duration::from_secs(30), || served(&server, "key-3"))
        .await;
    let body = json!({"name": "e", "channel": "orders", "data": "after"}).to_string();
    assert_eq!(server.api_as("key-1", "secret-1", "POST", "/apps/1/events", &body, &[]).await.0, 200);
    assert_eq!(one.recv().await["data"], "after", "the first client was never disconnected");
}

#[tokio::test]
async fn postgres_notify_and_sighup_read_the_table_before_the_interval() {
    let pg = Postgres::start();
    pg.sql(HERALD_TABLE_PG);
    pg.sql("INSERT INTO apps (id, key, secret) VALUES ('1', 'key-1', 'secret-1')");
    let port = unused_port();
    let extra = "refresh_interval_ms = 600000";
    let server = TestServer::start_with_config(port, &store_config(port, "postgres", &pg.url(), extra), &[]).await;
    assert!(served(&server, "key-1").await);

    // Without a notification, nothing reads the table for ten minutes...
    pg.sql("INSERT INTO apps (id, key, secret) VALUES ('2', 'key-2', 'secret-2')");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(open(&server, "key-2").await.err(), Some(Some(4001)), "not read yet: no trigger, long interval");
    // ...but SIGHUP does.
    server.signal("HUP");
    eventually("SIGHUP reads the table", SOON, || served(&server, "key-2")).await;

    // With the documented trigger, a change is read at once.
    pg.sql(NOTIFY_TRIGGER);
    pg.sql("INSERT INTO apps (id, key, secret) VALUES ('3', 'key-3', 'secret-3')");
    eventually("NOTIFY herald_apps reads the table", Duration::from_secs(5), || served(&server, "key-3")).await;
    let (mut three, _) = open(&server, "key-3").await.expect("served");
    pg.sql("DELETE FROM apps WHERE id = '3'");
    assert_eq!(three.closed_with().await, Some(4001), "a deleted app's connections are closed with 4001");
}

#[tokio::test]
async fn soketis_postgres_table_is_read_as_is_and_a_bad_row_is_skipped_by_name() {
    let pg = Postgres::start();
    pg.sql(SOKETI_TABLE_PG);
    pg.sql(&soketi_row('"', "app-id", 1, 1));
    pg.sql(&soketi_row('"', "off", 0, 1));
    pg.sql(&soketi_row('"', "broken", 1, -5));
    let port = unused_port();
    let mut server = TestServer::start_with_config(port, &store_config(port, "postgres", &pg.url(), ""), &[]).await;
    assert!(served(&server, "key-app-id").await, "Soketi's row is an app");
    assert_eq!(channels_status(&server, "app-id", "key-app-id", "secret-app-id").await, 200);
    assert_eq!(open(&server, "key-off").await.err(), Some(Some(4001)), "enabled = 0 is not served");
    assert_eq!(open(&server, "key-broken").await.err(), Some(Some(4001)), "a malformed row is skipped");
    assert_eq!(health(&server).await["health"], "OK", "a bad row is not an unreachable store");
    let log = server.output();
    assert!(log.contains("row skipped") && log.contains("broken"), "the log names the row: {log}");
}

#[tokio::test]
async fn mariadb_apps_are_served_rotated_disabled_and_outlive_an_outage() {
    let mut db = Mariadb::start();
    db.sql(HERALD_TABLE_MYSQL);
    db.sql("INSERT INTO apps (id, `key`, secret) VALUES ('1', 'key-1', 'secret-1')");
    let port = unused_port();
    let extra = "refresh_interval_ms = 300";
    let server = TestServer::start_with_config(port, &store_config(port, "mysql", &db.url(), extra), &[]).await;
    let (mut one, _) = open(&server, "key-1").await.expect("a row is an app");
    one.subscribe("orders").await;

    db.sql("INSERT INTO apps (id, `key`, secret, max_connections) VALUES ('2', 'key-2', 'secret-2', 1)");
    let (mut two, _) = open_when_served(&server, "key-2").await;
    assert_eq!(open(&server, "key-2").await.err(), Some(Some(4004)), "max_connections from the row");

    // No grace configured: the old secret is refused as soon as the new one works.
    db.sql("UPDATE apps SET secret = 'secret-2b' WHERE id = '2'");
    eventually("the new secret is used", SOON, || async {
        channels_status(&server, "2", "key-2", "secret-2b").await == 200
    })
    .await;
    assert_eq!(channels_status(&server, "2", "key-2", "secret-2").await, 401);

    db.sql("UPDATE apps SET enabled = false WHERE id = '2'");
    assert_eq!(two.closed_with().await, Some(4001));
    assert_eq!(channels_status(&server, "2", "key-2", "secret-2b").await, 404);

    db.halt();
    eventually("/up says DEGRADED", SOON, || async { health(&server).await["health"] == "DEGRADED" }).await;
    assert!(server.metric("herald_apps_store_failed_refreshes_total").await >= 1.0);
    assert!(served(&server, "key-1").await, "the last good apps keep serving");
    let body = json!({"name": "e", "channel": "orders", "data": "during the outage"}).to_string();
    assert_eq!(server.api_as("key-1", "secret-1", "POST", "/apps/1/events", &body, &[]).await.0, 200);
    assert_eq!(one.recv().await["data"], "during the outage");

    db.resume();
    eventually("/up says OK again", Duration::from_secs(20), || async { health(&server).await["health"] == "OK" })
        .await;
    db.sql("INSERT INTO apps (id, `key`, secret) VALUES ('3', 'key-3', 'secret-3')");
    eventually("an app inserted after the outage is served", Duration::from_secs(30), || served(&server, "key-3"))
        .await;
}

#[tokio::test]
async fn soketis_mysql_table_is_read_as_is() {
    let db = Mariadb::start();
    db.sql(SOKETI_TABLE_MYSQL);
    db.sql(&soketi_row('`', "app-id", 1, 1));
    db.sql(&soketi_row('`', "off", 0, 1));
    let port = unused_port();
    let server = TestServer::start_with_config(port, &store_config(port, "mysql", &db.url(), ""), &[]).await;
    assert!(served(&server, "key-app-id").await, "Soketi's row is an app");
    assert_eq!(channels_status(&server, "app-id", "key-app-id", "secret-app-id").await, 200);
    assert_eq!(channels_status(&server, "app-id", "key-app-id", "wrong").await, 401);
    assert_eq!(open(&server, "key-off").await.err(), Some(Some(4001)), "enabled = 0 is not served");
}

#[tokio::test]
async fn a_database_unreachable_at_start_up_serves_nothing_degraded_then_recovers() {
    // The database is down when the server starts: it starts anyway, serving nothing, and says so.
    let mut pg = Postgres::start();
    pg.sql(HERALD_TABLE_PG);
    pg.sql("INSERT INTO apps (id, key, secret) VALUES ('1', 'key-1', 'secret-1')");
    pg.halt();
    let port = unused_port();
    let extra = "refresh_interval_ms = 300";
    let server = TestServer::start_with_config(port, &store_config(port, "postgres", &pg.url(), extra), &[]).await;
    assert_eq!(health(&server).await["health"], "DEGRADED");
    assert_eq!(open(&server, "key-1").await.err(), Some(Some(4001)));
    pg.resume();
    eventually("the app is served once the database is up", Duration::from_secs(20), || served(&server, "key-1")).await;
    assert_eq!(health(&server).await["health"], "OK");
}

/// With `max_apps = 2`, a third row makes the read fail: the two apps read before stay served,
/// the third is not, `/up` says DEGRADED; with a row gone the table is read again.
async fn a_table_over_max_apps_is_a_failed_read(driver: &str, url: &str, sql: &dyn Fn(&str), key: &str) {
    sql(&format!("INSERT INTO apps (id, {key}, secret) VALUES ('1', 'key-1', 'secret-1'), ('2', 'key-2', 'secret-2')"));
    let port = unused_port();
    let extra = "refresh_interval_ms = 300\nmax_apps = 2";
    let server = TestServer::start_with_config(port, &store_config(port, driver, url, extra), &[]).await;
    assert!(served(&server, "key-1").await && served(&server, "key-2").await, "two rows fit");
    assert_eq!(health(&server).await["health"], "OK");

    sql(&format!("INSERT INTO apps (id, {key}, secret) VALUES ('3', 'key-3', 'secret-3')"));
    eventually("/up says DEGRADED", SOON, || async { health(&server).await["health"] == "DEGRADED" }).await;
    assert!(server.metric("herald_apps_store_failed_refreshes_total").await >= 1.0);
    assert!(served(&server, "key-1").await && served(&server, "key-2").await, "the last good apps are kept");
    assert_eq!(open(&server, "key-3").await.err(), Some(Some(4001)), "the row over the cap is not served");

    sql("DELETE FROM apps WHERE id = '1'");
    eventually("a table back under the cap is read", SOON, || served(&server, "key-3")).await;
    assert_eq!(health(&server).await["health"], "OK");
    assert_eq!(open(&server, "key-1").await.err(), Some(Some(4001)), "the deleted row is gone");
}

#[tokio::test]
async fn a_table_with_more_rows_than_max_apps_is_refused_on_postgres_and_mariadb() {
    let pg = Postgres::start();
    pg.sql(HERALD_TABLE_PG);
    a_table_over_max_apps_is_a_failed_read("postgres", &pg.url(), &|q| drop(pg.sql(q)), "key").await;
    let db = Mariadb::start();
    db.sql(HERALD_TABLE_MYSQL);
    a_table_over_max_apps_is_a_failed_read("mysql", &db.url(), &|q| drop(db.sql(q)), "`key`").await;
}
