//! One Pusher client: connect from a chosen loopback source address, wait for
//! `pusher:connection_established`, subscribe, then receive (and, in `rooms`, send) until told to stop.
//! With `--compression` it offers permessage-deflate as browsers do, and [`Wire`] inflates what the
//! server compressed; either way [`Wire`] counts the bytes that came over the socket.
//!
//! Written against the wire protocol directly (docs/protocol.md), not against Herald's types, so the same client
//! measures Herald and the floor alike. Each socket is small: a 4 KiB read buffer, because 19,000 clients
//! with tungstenite's default 128 KiB buffers would take 2.4 GB and make the bench, not the server, the
//! bottleneck.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use super::latency::Latencies;
use super::wire::{self, Wire};
use super::{payload, stamp, target};
use crate::protocol::signature::{channel_auth_message, make_auth};

/// Frames read while waiting for one specific answer before giving up (the server sends a handful).
const MAX_SETUP_FRAMES: usize = 64;

pub struct Client {
    ws: WebSocketStream<Wire<TcpStream>>,
    pub socket_id: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_message_size(Some(1 << 20))
}

impl Client {
    /// Opens a TCP connection from `source` to `to`, upgrades it (offering permessage-deflate when
    /// `compression`; inflating what arrives compressed when `inflate`, counting it unopened when
    /// not), and waits for the socket id.
    pub async fn connect(
        source: Ipv4Addr,
        to: SocketAddr,
        url: &str,
        (compression, inflate): (bool, bool),
        counters: &Arc<Counters>,
    ) -> anyhow::Result<Client> {
        target::assert_loopback(to)?;
        let socket = TcpSocket::new_v4().context("socket")?;
        socket.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("bind {source}"))?;
        let stream = socket.connect(to).await.context("connect")?;
        stream.set_nodelay(true).context("nodelay")?;
        let mut request = url.into_client_request().context("websocket url")?;
        if compression {
            request.headers_mut().insert("Sec-WebSocket-Extensions", HeaderValue::from_static(wire::OFFER));
        }
        let stream = Wire::new(stream, counters.clone(), inflate);
        let (ws, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .context("websocket handshake")?;
        if ws.get_ref().deflate_agreed() {
            Counters::add(&counters.deflate_agreed, 1);
        }
        let mut client = Client { ws, socket_id: String::new() };
        let established =
            client.wait_for(|e| e.event == "pusher:connection_established", "connection_established").await?;
        let data: serde_json::Value = match established {
            Some(serde_json::Value::String(s)) => serde_json::from_str(&s).context("connection_established data")?,
            Some(other) => other,
            None => bail!("connection_established without data"),
        };
        client.socket_id = data
            .get("socket_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("connection_established without socket_id"))?
            .to_owned();
        Ok(client)
    }

    /// Subscribes to `channel` (signing it when private) and waits for `subscription_succeeded`.
    pub async fn subscribe(&mut self, channel: &str, key: &str, secret: &str) -> anyhow::Result<()> {
        let mut data = serde_json::json!({ "channel": channel });
        if channel.starts_with("private-") {
            data["auth"] = make_auth(key, secret, &channel_auth_message(&self.socket_id, channel, None)).into();
        } else if channel.starts_with("presence-") {
            // One user per connection, named after it; no stamp in its info (only rejoins carry one).
            let channel_data = serde_json::json!({ "user_id": self.socket_id, "user_info": {} }).to_string();
            let message = channel_auth_message(&self.socket_id, channel, Some(&channel_data));
            data["auth"] = make_auth(key, secret, &message).into();
            data["channel_data"] = channel_data.into();
        }
        let subscribe = serde_json::json!({ "event": "pusher:subscribe", "data": data }).to_string();
        self.ws.send(Message::text(subscribe)).await.context("send subscribe")?;
        self.wait_for(
            |e| e.event == "pusher_internal:subscription_succeeded" && e.channel.as_deref() == Some(channel),
            "subscription_succeeded",
        )
        .await?;
        Ok(())
    }

    /// Reads frames until one matches; a `pusher:error`, `pusher:subscription_error` or close fails.
    async fn wait_for(
        &mut self,
        wanted: impl Fn(&Envelope<'_>) -> bool,
        what: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        for _ in 0..MAX_SETUP_FRAMES {
            let text = match self.ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => bail!("closed while waiting for {what}: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context(format!("waiting for {what}")),
                None => bail!("connection ended while waiting for {what}"),
            };
            let envelope: Envelope<'_> = serde_json::from_str(text.as_str()).context("unparsable frame")?;
            if wanted(&envelope) {
                return Ok(envelope.data);
            }
            if envelope.event == "pusher:error" || envelope.event == "pusher:subscription_error" {
                bail!("{} while waiting for {what}: {}", envelope.event, envelope.data.unwrap_or_default());
            }
        }
        bail!("no {what} within {MAX_SETUP_FRAMES} frames")
    }

    /// Receives until `stop`, counting stamped events and recording their latency; answers `pusher:ping`.
    /// With a `talker`, also sends stamped client events on its schedule.
    pub async fn run(
        mut self,
        index: usize,
        stop: CancellationToken,
        counters: Arc<Counters>,
        latencies: Arc<Latencies>,
        mut talker: Option<Talker>,
    ) {
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        loop {
            let next_send = talker.as_ref().map_or(far, |t| t.next);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_send), if talker.is_some() => {
                    let Some(t) = talker.as_mut() else { continue };
                    let (frames, events, owed) = t.next_frames(&self.socket_id);
                    for frame in frames {
                        if self.ws.feed(Message::text(frame)).await.is_err() {
                            Counters::add(&counters.disconnects, 1);
                            counters.note("send failed");
                            return;
                        }
                    }
                    if self.ws.flush().await.is_err() {
                        Counters::add(&counters.disconnects, 1);
                        counters.note("send failed");
                        return;
                    }
                    Counters::add(&counters.events_sent, events);
                    Counters::add(&counters.expected, owed);
                    if t.next >= t.until {
                        talker = None;
                    }
                }
                incoming = self.ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let text = text.as_str();
                        if let Some(micros) = stamp::latency_micros(text, stamp::now_nanos()) {
                            // A rejoining member's own member list carries its stamp: not a delivery.
                            if !text.contains("subscription_succeeded") {
                                Counters::add(&counters.delivered, 1);
                                latencies.record(index, micros);
                            }
                        } else if text.contains("\"pusher_internal:member_removed\"") {
                            // Owed like member_added, but it names only the user: counted, not timed.
                            Counters::add(&counters.delivered, 1);
                        } else if text.contains("\"pusher:ping\"") {
                            let pong = r#"{"event":"pusher:pong","data":{}}"#;
                            if self.ws.send(Message::text(pong)).await.is_err() {
                                Counters::add(&counters.disconnects, 1);
                                return;
                            }
                        } else if text.contains("\"pusher:error\"") {
                            Counters::add(&counters.server_errors, 1);
                            counters.note(&format!("server said: {text}"));
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        Counters::add(&counters.disconnects, 1);
                        counters.note(&format!("closed by server: {}", frame.map_or_else(|| "no code".into(), |f| format!("{} {}", f.code, f.reason))));
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        Counters::add(&counters.disconnects, 1);
                        counters.note(&format!("read error: {e}"));
                        return;
                    }
                    None => {
                        Counters::add(&counters.disconnects, 1);
                        counters.note("connection ended");
                        return;
                    }
                },
            }
        }
    }
}

/// A client that sends on a fixed schedule: `client-bench` events on its private channel (the `rooms`
/// scenario), or a leave and a rejoin of its presence channel (the `presence` scenario).
pub struct Talker {
    pub channel: String,
    /// Other members of the room: each sent event is owed to them.
    pub peers: u64,
    pub payload: usize,
    pub payload_kind: super::args::PayloadKind,
    pub period: Duration,
    pub next: Instant,
    pub until: Instant,
    pub seq: u64,
    pub kind: TalkKind,
}

pub enum TalkKind {
    ClientEvent,
    /// Unsubscribe and subscribe again, signing the new `channel_data` (whose `user_info` carries the
    /// stamp, so the others' `member_added` can be timed).
    Rejoin {
        key: Arc<str>,
        secret: Arc<str>,
    },
}

impl Talker {
    /// The frames to send now, stamped now, with the events they cause and the deliveries owed; advances
    /// the schedule. The schedule is fixed (not "now + period") so the offered rate holds when a send is late.
    fn next_frames(&mut self, socket_id: &str) -> (Vec<String>, u64, u64) {
        self.seq += 1;
        self.next += self.period;
        match &self.kind {
            TalkKind::ClientEvent => {
                let data = payload::data(self.payload_kind, stamp::now_nanos(), self.seq, self.payload);
                let data = serde_json::to_string(&data).unwrap_or_default();
                let frame = format!(r#"{{"event":"client-bench","channel":"{}","data":{data}}}"#, self.channel);
                (vec![frame], 1, self.peers)
            }
            TalkKind::Rejoin { key, secret } => {
                let info = stamp::make_data(stamp::now_nanos(), self.seq, 0);
                let channel_data = serde_json::json!({ "user_id": socket_id, "user_info": { "t": info } }).to_string();
                let auth = make_auth(key, secret, &channel_auth_message(socket_id, &self.channel, Some(&channel_data)));
                let leave = serde_json::json!({ "event": "pusher:unsubscribe", "data": { "channel": self.channel } });
                let join = serde_json::json!({
                    "event": "pusher:subscribe",
                    "data": { "channel": self.channel, "auth": auth, "channel_data": channel_data },
                });
                // member_removed, then member_added, to every other member.
                (vec![leave.to_string(), join.to_string()], 2, 2 * self.peers)
            }
        }
    }
}
