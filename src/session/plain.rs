//! [`PlainSession`]: the plain endpoint (`/ws/{app_key}/{room}`), for clients without a Pusher
//! library. One room per connection, JSON `{type, payload}` messages, WebSocket pings only.
//!
//! The client is authenticated before the session opens (a JWT at the handshake, or as its first
//! message, which the transport reads); the session joins the room and relays what it sends to
//! the room's other members, stamped with the sender's id and the server's time.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use tracing::debug_span;

use super::{Exit, Liveness, Opened, Session};
use crate::apps::App;
use crate::cluster::BroadcastKind;
use crate::hub::{Hub, Outbound};
use crate::protocol::plain::PlainMessage;
use crate::protocol::position::Position;
use crate::protocol::{Channel, Frame, SocketId};

/// How long a plain client without a handshake token has to send `{"type":"auth","token":...}`.
pub const PLAIN_AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// Who a plain client is, if it authenticated at the handshake.
pub struct PlainHandshake {
    pub app: App,
    pub room: String,
    /// The room's channel, validated.
    pub channel: Channel,
    /// From the handshake's token; `None` means the first message must authenticate.
    pub user_id: Option<String>,
    /// The position of the last message the client had (`?since=`), in a room with history.
    pub since: Option<Position>,
}

pub struct PlainSession {
    hub: Arc<Hub>,
    app: App,
    socket_id: SocketId,
    out: Outbound,
    channel: Channel,
    user_id: String,
    /// Whether the room was joined (and so must be left).
    joined: bool,
    /// Built on the first message.
    limiter: Option<governor::DefaultDirectRateLimiter>,
}

impl PlainSession {
    /// Joins an authenticated client (`user_id`) to its room; `herald:joined` confirms it.
    pub async fn open(
        hub: Arc<Hub>,
        handshake: PlainHandshake,
        user_id: String,
        max_outbound_buffer: usize,
    ) -> Opened<PlainSession> {
        let PlainHandshake { app, room, channel, since, .. } = handshake;
        let socket_id = hub.next_socket_id();
        let (out, rx) = Outbound::new(socket_id, max_outbound_buffer);
        if !hub.connection_opened(&app, &out).await {
            return Err(Exit::Policy("Over the app's connection quota"));
        }
        crate::metrics::connection_opened(&app.id);
        let joined = Frame::plain_joined(&channel.name, &room, &user_id, &socket_id.to_string());
        let from = hub.resume_from(&app.id, &channel.name, since).await;
        // The join confirmation is queued by the registry, under the room's lock.
        let joined = hub.subscribe_confirmed(&app, &channel.as_name(), &out, None, Some(joined)).await.is_ok();
        if let (true, Some(from)) = (joined, from) {
            hub.resume(&app.id, from, &out).await;
        }
        Ok((PlainSession { hub, app, socket_id, out, channel, user_id, joined, limiter: None }, rx))
    }
}

impl Session for PlainSession {
    /// Validated, then delivered to the room's other members. Bad messages get `herald:error` and
    /// reach nobody.
    async fn on_text(&mut self, text: String) -> Option<Exit> {
        let message = match PlainMessage::parse(&text) {
            Ok(message) => message,
            Err(e) => {
                self.out.push(Frame::plain_error(&e.to_string()));
                return None;
            }
        };
        if let Some(per_second) = NonZeroU32::new(self.app.client_event_rate_limit) {
            let limiter = self.limiter.get_or_insert_with(|| RateLimiter::direct(Quota::per_second(per_second)));
            if limiter.check().is_err() {
                self.out.push(Frame::plain_error("Rate limit exceeded"));
                return None;
            }
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let frame = Frame::plain_message(&self.channel.name, &message, &self.user_id, ts);
        let except = Some(self.socket_id);
        self.hub.publish(&self.app.id, self.channel.clone(), BroadcastKind::ClientEvent, frame, except).await;
        None
    }

    async fn on_binary(&mut self, _data: Vec<u8>) -> Option<Exit> {
        self.out.push(Frame::plain_error("Binary messages are not supported: send JSON text"));
        None
    }

    fn out(&self) -> &Outbound {
        &self.out
    }

    /// Plain clients answer WebSocket pings, not `pusher:ping`: only those are sent.
    fn liveness(&self, now: Instant) -> Liveness {
        Liveness::new(now, &self.app).websocket_pings_only()
    }

    fn span(&self) -> tracing::Span {
        debug_span!("plain", app_id = %self.app.id, socket_id = %self.socket_id)
    }

    async fn close(&mut self, _exit: &Exit) {
        if std::mem::take(&mut self.joined) {
            self.hub.unsubscribe(&self.app.id, &self.channel.name, self.socket_id).await;
        }
        self.hub.connection_closed(&self.app.id, self.socket_id).await;
    }
}
