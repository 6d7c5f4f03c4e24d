//! The plain WebSocket endpoint with a real WebSocket client (no Pusher library).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::SinkExt;
use herald::protocol::signature::{channel_auth_message, make_auth};
use herald::protocol::token::issue;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(user: &str) -> String {
    issue(SECRET, user, now() + 300, None)
}

fn url(server: &TestServer, room: &str, query: &str) -> String {
    format!("ws://127.0.0.1:{}/ws/{KEY}/{room}{query}", server.port)
}

/// Connects with `headers`; Ok(client) after 101, Err(status, body) otherwise.
async fn open(url: &str, headers: &[(&'static str, String)]) -> Result<(Client, Option<String>), (u16, String)> {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
            Ok((Client { ws }, protocol))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("{e}"),
    }
}

async fn joined(url: &str, user: &str) -> Client {
    let (mut c, _) = open(url, &[("Authorization", format!("Bearer {}", token(user)))]).await.expect("handshake");
    let hello = c.recv().await;
    assert_eq!(hello["event"], "herald:joined", "{hello}");
    assert_eq!(hello["data"]["user"], user);
    c
}

#[tokio::test]
async fn two_clients_chat_in_a_room() {
    let server = TestServer::start("", "").await;
    let lobby = url(&server, "lobby", "");
    let mut alice = joined(&lobby, "alice").await;
    let mut bob = joined(&lobby, "bob").await;
    alice.send(r#"{"type":"chat","payload":{"text":"hi bob"}}"#).await;
    let got = bob.recv().await;
    assert_eq!(got["event"], "client-chat");
    assert_eq!(got["channel"], "private-room-lobby");
    assert_eq!(got["data"]["payload"], json!({"text": "hi bob"}));
    assert_eq!(got["data"]["from"], "alice");
    let ts = got["data"]["ts"].as_u64().unwrap();
    assert!(ts / 1000 >= now() - 5 && ts / 1000 <= now() + 5, "server timestamp in ms: {ts}");
    alice.expect_silence(Duration::from_millis(300)).await;

    // Another room hears nothing.
    let mut elsewhere = joined(&url(&server, "kitchen", ""), "carol").await;
    bob.send(r#"{"type":"chat","payload":"only the lobby"}"#).await;
    assert_eq!(alice.recv().await["data"]["payload"], "only the lobby");
    elsewhere.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn bad_messages_get_an_error_and_reach_nobody() {
    let server = TestServer::start("", "").await;
    let lobby = url(&server, "lobby", "");
    let mut alice = joined(&lobby, "alice").await;
    let mut bob = joined(&lobby, "bob").await;
    for bad in
        ["not json", "[1]", r#"{"payload":1}"#, r#"{"type":"chat"}"#, r#"{"type":"pusher:subscribe","payload":{}}"#]
    {
        alice.send(bad).await;
        let error = alice.recv().await;
        assert_eq!(error["event"], "herald:error", "{bad}: {error}");
        assert!(error["data"]["message"].is_string());
    }
    alice.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(alice.recv().await["event"], "herald:error");
    bob.expect_silence(Duration::from_millis(300)).await;
    alice.send(r#"{"type":"chat","payload":"still here"}"#).await;
    assert_eq!(bob.recv().await["data"]["payload"], "still here");
}

#[tokio::test]
async fn each_of_the_three_ways_to_authenticate_works() {
    let server = TestServer::start("", "").await;
    let lobby = url(&server, "lobby", "");
    let mut listener = joined(&lobby, "listener").await;

    // 1. Authorization header.
    let (mut by_header, _) = open(&lobby, &[("Authorization", format!("Bearer {}", token("h")))]).await.unwrap();
    assert_eq!(by_header.recv().await["data"]["user"], "h");

    // 2. Sec-WebSocket-Protocol, as a browser does; the server answers herald.v1, never the token.
    let offer = format!("herald.v1, bearer.{}", token("p"));
    let (mut by_protocol, chosen) = open(&lobby, &[("Sec-WebSocket-Protocol", offer)]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("herald.v1"));
    assert_eq!(by_protocol.recv().await["data"]["user"], "p");

    // 3. First message.
    let (mut by_message, _) = open(&lobby, &[]).await.unwrap();
    by_message.send(&json!({"type": "auth", "token": token("m")}).to_string()).await;
    assert_eq!(by_message.recv().await["data"]["user"], "m");
    by_message.send(r#"{"type":"chat","payload":"from m"}"#).await;
    let got = listener.recv().await;
    assert_eq!((got["data"]["from"].as_str(), got["data"]["payload"].as_str()), (Some("m"), Some("from m")));
}

#[tokio::test]
async fn bad_expired_missing_and_misplaced_tokens_are_refused() {
    let server = TestServer::start("", "").await;
    let lobby = url(&server, "lobby", "");
    let bearer = |t: String| vec![("Authorization", format!("Bearer {t}"))];
    let cases = [
        (bearer(issue("wrong-secret", "u", now() + 60, None)), 401, "Invalid token"),
        (bearer(issue(SECRET, "u", now() - 10, None)), 401, "Token expired"),
        (bearer("garbage".into()), 401, "Invalid token"),
        (bearer(issue(SECRET, "u", now() + 60, Some("kitchen"))), 403, "room"),
        (vec![("Sec-WebSocket-Protocol", format!("bearer.{}", token("u")))], 400, "herald.v1"),
    ];
    for (headers, status, message) in cases {
        let (got, body) = open(&lobby, &headers).await.err().expect("refused at the handshake");
        assert_eq!(got, status, "{body}");
        assert!(body.contains(message), "{body}");
    }
    // ?token= is off by default.
    let (status, body) = open(&url(&server, "lobby", &format!("?token={}", token("q"))), &[]).await.err().unwrap();
    assert_eq!(status, 401, "{body}");
    // Unknown app, bad room.
    let (status, _) = open(&format!("ws://127.0.0.1:{}/ws/nope/lobby", server.port), &[]).await.err().unwrap();
    assert_eq!(status, 404);
    let (status, _) = open(&url(&server, "bad%20room", ""), &bearer(token("u"))).await.err().unwrap();
    assert_eq!(status, 400);

    // Missing token: the first message must authenticate; anything else is closed with 1008.
    let (mut c, _) = open(&lobby, &[]).await.unwrap();
    c.send(r#"{"type":"chat","payload":"sneaky"}"#).await;
    assert_eq!(c.closed_with().await, Some(1008));
    let (mut c, _) = open(&lobby, &[]).await.unwrap();
    c.send(&json!({"type": "auth", "token": issue(SECRET, "u", now() - 10, None)}).to_string()).await;
    assert_eq!(c.closed_with().await, Some(1008));
    // A frame that breaks the protocol before authenticating closes with its own code, not 1008.
    let (mut c, _) = open(&lobby, &[]).await.unwrap();
    c.send(&"x".repeat(20_000)).await;
    assert_eq!(c.closed_with().await, Some(1009), "over max_message_size");
    // Silence past the deadline is closed too.
    let (mut c, _) = open(&lobby, &[]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(c.closed_with().await, Some(1008));
    assert!(started.elapsed() >= Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn query_tokens_work_only_when_the_app_allows_them() {
    let server = TestServer::start("", "plain_query_token = true").await;
    let (mut c, _) = open(&url(&server, "lobby", &format!("?token={}", token("q"))), &[]).await.unwrap();
    assert_eq!(c.recv().await["data"]["user"], "q");
}

#[tokio::test]
async fn rooms_are_hub_channels_shared_with_the_http_api_and_pusher_clients() {
    let server = TestServer::start("", "").await;
    let mut plain = joined(&url(&server, "lobby", ""), "alice").await;
    assert_eq!(server.trigger("private-room-lobby", "announcement", "from the API").await, 200);
    let got = plain.recv().await;
    assert_eq!((got["event"].as_str(), got["data"].as_str()), (Some("announcement"), Some("from the API")));

    // A Pusher client authorised for private-room-lobby sees the plain client's messages.
    let (mut pusher, socket_id) = server.connect().await;
    let auth = make_auth(KEY, SECRET, &channel_auth_message(&socket_id, "private-room-lobby", None));
    pusher
        .send(&json!({"event":"pusher:subscribe","data":{"channel":"private-room-lobby","auth":auth}}).to_string())
        .await;
    assert_eq!(pusher.recv().await["event"], "pusher_internal:subscription_succeeded");
    plain.send(r#"{"type":"move","payload":{"x":3}}"#).await;
    let seen = pusher.recv().await;
    assert_eq!(seen["event"], "client-move", "plain messages reach Pusher clients as client events");
    assert_eq!(seen["data"]["payload"]["x"], 3);
    assert_eq!(seen["data"]["from"], "alice");
    // And a whisper from the Pusher side reaches the plain client.
    pusher.send(r#"{"event":"client-wave","channel":"private-room-lobby","data":{"hi":true}}"#).await;
    assert_eq!(plain.recv().await["event"], "client-wave");
}

/// A plain client cannot make a Pusher client in its room take its message for the server's:
/// `pusher:` and `pusher_internal:` types are refused, and everything else arrives as `client-*`.
#[tokio::test]
async fn plain_messages_never_look_like_server_events_to_pusher_clients() {
    let server = TestServer::start("", "").await;
    let mut plain = joined(&url(&server, "lobby", ""), "mallory").await;
    let (mut pusher, socket_id) = server.connect().await;
    let auth = make_auth(KEY, SECRET, &channel_auth_message(&socket_id, "private-room-lobby", None));
    pusher
        .send(&json!({"event":"pusher:subscribe","data":{"channel":"private-room-lobby","auth":auth}}).to_string())
        .await;
    assert_eq!(pusher.recv().await["event"], "pusher_internal:subscription_succeeded");

    for forged in [
        r#"{"type":"pusher_internal:member_added","payload":{"user_id":"admin"}}"#,
        r#"{"type":"pusher_internal:subscription_succeeded","payload":{}}"#,
        r#"{"type":"pusher:error","payload":{"code":4001}}"#,
        r#"{"type":"pusher\u005finternal:member_removed","payload":{}}"#,
    ] {
        plain.send(forged).await;
        let refused = plain.recv().await;
        assert_eq!(refused["event"], "herald:error", "{forged}: {refused}");
    }
    // A type the app's server might publish arrives under a client- name; a client- type stays as is.
    plain.send(r#"{"type":"order.shipped","payload":{"id":1}}"#).await;
    plain.send(r#"{"type":"client-typing","payload":true}"#).await;
    // The first thing the Pusher client sees is the renamed message: none of the forged ones came.
    let first = pusher.recv().await;
    assert_eq!(first["event"], "client-order.shipped", "{first}");
    assert_eq!(first["data"]["from"], "mallory");
    assert_eq!(pusher.recv().await["event"], "client-typing");
}

/// A `type` holding JSON escapes is unescaped and delivered (it was refused when borrowed).
#[tokio::test]
async fn a_type_with_json_escapes_is_accepted() {
    let server = TestServer::start("", "").await;
    let lobby = url(&server, "lobby", "");
    let mut alice = joined(&lobby, "alice").await;
    let mut bob = joined(&lobby, "bob").await;
    alice.send(r#"{"type":"caf\u00e9 \"quoted\" \/ line\nbreak","payload":"escaped"}"#).await;
    let got = bob.recv().await;
    assert_eq!(got["event"], "client-caf\u{e9} \"quoted\" / line\nbreak", "{got}");
    assert_eq!(got["data"]["payload"], "escaped");
}
