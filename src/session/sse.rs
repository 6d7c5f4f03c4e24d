//! [`SseSession`]: a listener. The Server-Sent Events endpoint subscribes it to the channels its
//! URL names when it opens, and it sends nothing: there are no inbound messages to handle.
//!
//! Everything else is a subscriber like any WebSocket one: the same hub subscriptions (so fan-out
//! is the same code), the same bounded queue, the same connection quota, a presence member that
//! joins as the token's or ticket's user (`member_added`, webhooks) and leaves when the stream
//! ends. A listener with a user also gets the events sent to that user (`sendToUser`), and
//! `terminate_connections` ends its stream, as for a signed-in WebSocket.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::debug_span;

use super::{Exit, Liveness, Opened, Session};
use crate::apps::App;
use crate::hub::{Hub, Outbound, SubscribeError};
use crate::protocol::channel::user_channel;
use crate::protocol::position::StreamPosition;
use crate::protocol::presence::MemberData;
use crate::protocol::{Channel, ChannelKind, ErrorCode, SocketId};

/// Most channels one stream may name: the same cap as a WebSocket connection's subscriptions.
pub const MAX_SSE_CHANNELS: usize = super::pusher::MAX_CHANNELS_PER_CONNECTION;

/// What the endpoint checked before opening the stream.
pub struct SseHandshake {
    pub app: App,
    /// Validated and without duplicates; private and presence ones authorised.
    pub channels: Vec<Channel>,
    /// Who the token or ticket says the listener is (needed for presence channels).
    pub user: Option<MemberData>,
    /// Where the client was in each history channel (its `Last-Event-ID`); empty for a new one.
    pub resume: StreamPosition,
}

pub struct SseSession {
    hub: Arc<Hub>,
    app: App,
    socket_id: SocketId,
    out: Outbound,
    /// Every channel subscribed (the user's own channel too), to leave at the end.
    channels: Vec<String>,
}

impl SseSession {
    /// Counts the connection and subscribes it to every channel; each subscription's confirmation
    /// (`subscription_succeeded`, the presence member list, a cached event) is the first thing
    /// queued. A refusal leaves nothing behind.
    pub async fn open(hub: Arc<Hub>, handshake: SseHandshake, max_outbound_buffer: usize) -> Opened<SseSession> {
        let SseHandshake { app, channels, user, resume } = handshake;
        let socket_id = hub.next_socket_id();
        let (out, rx) = Outbound::new(socket_id, max_outbound_buffer);
        if !hub.connection_opened(&app, &out).await {
            let code = ErrorCode::OverConnectionQuota;
            return Err(Exit::Pusher(code, code.message().into()));
        }
        crate::metrics::connection_opened(&app.id);
        hub.feed.record(&app.id, "connection", None, Some(socket_id.to_string()), "SSE");
        let mut session = SseSession { hub, app, socket_id, out, channels: Vec::with_capacity(channels.len()) };
        for channel in &channels {
            let member = if channel.kind == ChannelKind::Presence { user.as_ref() } else { None };
            let from = session.hub.resume_from(&session.app.id, &channel.name, resume.get(&channel.name)).await;
            let refused = match session.hub.subscribe(&session.app, &channel.as_name(), &session.out, member).await {
                Ok(_) => {
                    if let Some(from) = from {
                        session.hub.resume(&session.app.id, from, &session.out).await;
                    }
                    None
                }
                Err(SubscribeError::PresenceFull(_)) => Some(Exit::Policy("A presence channel is full")),
                Err(SubscribeError::UnknownApp) => {
                    Some(Exit::Pusher(ErrorCode::AppNotFound, ErrorCode::AppNotFound.message().into()))
                }
            };
            if let Some(exit) = refused {
                session.close(&exit).await;
                return Err(exit);
            }
            session.channels.push(channel.name.clone());
        }
        if let Some(user) = &user {
            // A stream opened as a user is that user signed in: online to its watchers.
            session.hub.sign_in(&session.app.id, &user.user_id, &session.out, &[]).await;
            session.channels.push(user_channel(&user.user_id));
        }
        Ok((session, rx))
    }
}

impl Session for SseSession {
    /// A listener has no inbound messages; a transport that had one would drop it.
    async fn on_text(&mut self, _text: String) -> Option<Exit> {
        None
    }

    async fn on_binary(&mut self, _data: Vec<u8>) -> Option<Exit> {
        None
    }

    fn out(&self) -> &Outbound {
        &self.out
    }

    /// The app's intervals, for a transport that pings; the SSE transport keeps its own heartbeat
    /// instead (an event stream has no answer to wait for).
    fn liveness(&self, now: Instant) -> Liveness {
        Liveness::new(now, &self.app)
    }

    fn span(&self) -> tracing::Span {
        debug_span!("sse", app_id = %self.app.id, socket_id = %self.socket_id)
    }

    async fn close(&mut self, exit: &Exit) {
        let reason = format!("{exit:?}");
        self.hub.feed.record(&self.app.id, "disconnection", None, Some(self.socket_id.to_string()), &reason);
        for channel in std::mem::take(&mut self.channels) {
            self.hub.unsubscribe(&self.app.id, &channel, self.socket_id).await;
        }
        self.hub.connection_closed(&self.app.id, self.socket_id).await;
    }
}
