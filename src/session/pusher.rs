//! [`PusherSession`]: the Pusher protocol for one client, over any transport.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::{debug, debug_span};

use super::subscriptions::Subscriptions;
use super::{Exit, Liveness, Opened, Session};
use crate::apps::App;
use crate::cluster::BroadcastKind;
use crate::config::ClientEventsFrom;
use crate::hub::{Hub, Outbound, SubscribeError};
use crate::protocol::channel::{user_channel, user_of_channel, validate_event_name};
use crate::protocol::message::Subscribe;
use crate::protocol::presence::{signin_data, MemberData, SigninData};
use crate::protocol::signature::{channel_auth_message, signin_message, verify_auth};
use crate::protocol::{ChannelKind, ChannelName, ClientMessage, ErrorCode, Frame, SocketId};
use crate::webhooks::WebhookEvent;

/// Most channels one connection may subscribe to.
pub(super) const MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// What a transport learnt from the client's opening request.
pub struct PusherHandshake {
    pub app_key: String,
    /// The `protocol` query parameter, if any.
    pub protocol: Option<String>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
}

/// One Pusher client. Kept small: an idle connection is this struct, its queue and its registry
/// entries.
pub struct PusherSession {
    hub: Arc<Hub>,
    app: App,
    socket_id: SocketId,
    out: Outbound,
    /// Channels this socket is subscribed to (with the presence user it joined as), so a
    /// disconnect leaves them all.
    channels: Subscriptions,
    /// The signed-in user (`pusher:signin`).
    user_id: Option<String>,
    /// The users its sign-in watches (kept apart from `channels`: they are not subscriptions the
    /// client made, and do not count against its channel limit).
    watching: Vec<String>,
    /// Built on the first client event, so connections that never send one pay nothing.
    client_event_limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Reverb-style limit on every message, when the app enables it; built on the first message.
    message_limiter: Option<governor::DefaultDirectRateLimiter>,
}

/// Protocol versions 5-7 are in use (pysher still sends 6). A version that is not a number gets
/// 4006, as on Pusher, so a client can tell a malformed URL from a version it must upgrade from.
fn check_protocol_version(protocol: Option<&str>) -> Result<(), ErrorCode> {
    let version = protocol.ok_or(ErrorCode::NoProtocolVersion)?;
    let version: u32 = version.parse().map_err(|_| ErrorCode::InvalidVersionFormat)?;
    if (5..=7).contains(&version) {
        Ok(())
    } else {
        Err(ErrorCode::UnsupportedProtocolVersion)
    }
}

impl PusherSession {
    /// Checks a new client (app key, Origin, protocol version, connection quota) and greets it
    /// with `pusher:connection_established`; a refusal is the `Exit` to close with.
    pub async fn open(hub: Arc<Hub>, handshake: PusherHandshake, max_outbound_buffer: usize) -> Opened<PusherSession> {
        let Some(app) = hub.app_by_key(&handshake.app_key) else {
            debug!("refused: unknown app key");
            let message = format!("App key {} does not exist", handshake.app_key);
            return Err(Exit::Pusher(ErrorCode::AppNotFound, message));
        };
        if !crate::protocol::origin::origin_allowed(&app.allowed_origins, handshake.origin.as_deref()) {
            debug!(app_id = %app.id, "refused: origin not allowed");
            return Err(Exit::Pusher(ErrorCode::Unauthorized, "Origin not allowed".into()));
        }
        check_protocol_version(handshake.protocol.as_deref())
            .map_err(|code| Exit::Pusher(code, code.message().into()))?;
        let socket_id = hub.next_socket_id();
        let (out, rx) = Outbound::new(socket_id, max_outbound_buffer);
        if !hub.connection_opened(&app, &out).await {
            let code = ErrorCode::OverConnectionQuota;
            return Err(Exit::Pusher(code, code.message().into()));
        }
        crate::metrics::connection_opened(&app.id);
        hub.feed.record(&app.id, "connection", None, Some(socket_id.to_string()), "");
        out.push(Frame::connection_established(socket_id, app.activity_timeout));
        let session = PusherSession {
            hub,
            app,
            socket_id,
            out,
            channels: Subscriptions::default(),
            user_id: None,
            watching: Vec::new(),
            client_event_limiter: None,
            message_limiter: None,
        };
        Ok((session, rx))
    }

    /// Reverb's `rate_limiting`: `max_attempts` messages per `decay_seconds`. Over it, the message
    /// is refused with 4301, or the connection closed when `terminate` is set.
    fn check_message_rate(&mut self) -> Result<(), Option<Exit>> {
        let limits = &self.app.rate_limiting;
        if !limits.enabled {
            return Ok(());
        }
        let limiter = self.message_limiter.get_or_insert_with(|| {
            let burst = NonZeroU32::new(limits.max_attempts).unwrap_or(NonZeroU32::MIN);
            let period = Duration::from_secs(limits.decay_seconds) / burst.get();
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .unwrap_or_else(|| Quota::per_second(burst))
                .allow_burst(burst);
            RateLimiter::direct(quota)
        });
        if limiter.check().is_ok() {
            return Ok(());
        }
        if limits.terminate {
            return Err(Some(Exit::Pusher(ErrorCode::ClientEventRejected, "Rate limit exceeded".into())));
        }
        self.send_error(ErrorCode::ClientEventRejected, "Rate limit exceeded");
        Err(None)
    }
}

impl Session for PusherSession {
    async fn on_text(&mut self, text: String) -> Option<Exit> {
        if let Err(exit) = self.check_message_rate() {
            return exit;
        }
        self.on_message(&text).await;
        None
    }

    async fn on_binary(&mut self, _data: Vec<u8>) -> Option<Exit> {
        self.send_error(ErrorCode::Generic, "Binary messages are not supported");
        None
    }

    fn out(&self) -> &Outbound {
        &self.out
    }

    fn liveness(&self, now: Instant) -> Liveness {
        Liveness::new(now, &self.app)
    }

    fn span(&self) -> tracing::Span {
        debug_span!("connection", app_id = %self.app.id, socket_id = %self.socket_id)
    }

    async fn close(&mut self, exit: &Exit) {
        let reason = format!("{exit:?}");
        self.hub.feed.record(&self.app.id, "disconnection", None, Some(self.socket_id.to_string()), &reason);
        for channel in self.channels.take_names() {
            self.hub.unsubscribe(&self.app.id, &channel, self.socket_id).await;
        }
        self.hub.unwatch(&self.app.id, self.socket_id, &std::mem::take(&mut self.watching));
        self.hub.connection_closed(&self.app.id, self.socket_id).await;
    }
}

impl PusherSession {
    /// Handles one text message. Bad input is answered with `pusher:error`; the connection stays.
    async fn on_message(&mut self, text: &str) {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(e) => {
                debug!(error = %e, "received a malformed message");
                self.send_error(ErrorCode::Generic, &e.to_string());
                return;
            }
        };
        // What arrived, without the auth signatures a subscribe or sign-in carries.
        match &message {
            ClientMessage::Subscribe(s) => debug!(
                channel = %s.channel,
                channel_data_bytes = s.channel_data.as_deref().map_or(0, str::len),
                channel_data = crate::logging::payload(s.channel_data.as_deref().unwrap_or("")),
                "received pusher:subscribe"
            ),
            ClientMessage::Signin { user_data, .. } => debug!(
                user_data_bytes = user_data.len(),
                user_data = crate::logging::payload(user_data),
                "received pusher:signin"
            ),
            ClientMessage::ClientEvent { event, channel, data } => {
                let data = data.map(|d| d.get()).unwrap_or("");
                debug!(%event, %channel, data_bytes = data.len(), data = crate::logging::payload(data), "received a client event")
            }
            ClientMessage::Unsubscribe { channel } => debug!(%channel, "received pusher:unsubscribe"),
            ClientMessage::Ping | ClientMessage::Pong => debug!("received a ping/pong"),
            ClientMessage::Unknown { event } => debug!(%event, "received an unknown event"),
        }
        match message {
            ClientMessage::Ping => {
                self.out.push(Frame::pong());
            }
            ClientMessage::Pong => {}
            ClientMessage::Subscribe(subscribe) => self.subscribe(subscribe).await,
            ClientMessage::Unsubscribe { channel } => {
                if user_of_channel(&channel).is_none() && self.channels.remove(&channel).is_some() {
                    self.hub.unsubscribe(&self.app.id, &channel, self.socket_id).await;
                }
            }
            ClientMessage::ClientEvent { event, channel, data } => {
                if let Err(message) = self.client_event(&event, &channel, data).await {
                    self.send_error(ErrorCode::ClientEventRejected, message);
                }
            }
            ClientMessage::Signin { auth, user_data } => self.signin(&auth, &user_data).await,
            ClientMessage::Unknown { event } => {
                let shown: String = event.chars().take(64).collect();
                self.send_error(ErrorCode::Generic, &format!("Unknown event {shown:?}"));
            }
        }
    }

    async fn subscribe(&mut self, request: Subscribe) {
        let refuse = |this: &Self, kind: &str, error: &str, status: u16| {
            this.out.push(Frame::subscription_error(&request.channel, kind, error, status));
        };
        if let Some(user) = user_of_channel(&request.channel) {
            // pusher-js subscribes to its own user channel after `pusher:signin_success`; the
            // socket joined it at sign-in, so confirm it. Anyone else's is refused.
            if self.user_id.as_deref() == Some(user) {
                self.out.push(Frame::subscription_succeeded(&request.channel, "{}"));
            } else {
                refuse(self, "AuthError", "Sign in as this user to receive its events", 401);
            }
            return;
        }
        let channel = match ChannelName::parse(&request.channel) {
            Ok(channel) => channel,
            Err(e) => return refuse(self, "InvalidChannel", &e.to_string(), 400),
        };
        if !self.channels.contains_key(channel.name) && self.channels.len() >= MAX_CHANNELS_PER_CONNECTION {
            let error = format!("A connection may subscribe to at most {MAX_CHANNELS_PER_CONNECTION} channels");
            return refuse(self, "LimitReached", &error, 400);
        }
        let channel_data = match channel.kind {
            ChannelKind::Presence => request.channel_data.as_deref(),
            _ => None,
        };
        if channel.kind.needs_auth() {
            let message = channel_auth_message(&self.socket_id.to_string(), channel.name, channel_data);
            let auth = request.auth.as_deref().unwrap_or_default();
            if !self.signed_by_app(&message, auth) {
                return refuse(self, "AuthError", "Invalid signature", 401);
            }
        }
        let member = match channel.kind {
            ChannelKind::Presence => match MemberData::parse(channel_data, self.app.max_presence_user_info_size) {
                Ok(member) => Some(member),
                Err(e) => return refuse(self, "InvalidChannelData", &e.to_string(), 400),
            },
            _ => None,
        };
        match self.hub.subscribe(&self.app, &channel, &self.out, member.as_ref()).await {
            Ok(_) => {
                self.channels.insert(channel.name.to_owned(), member.map(|m| m.user_id));
            }
            Err(SubscribeError::PresenceFull(max)) => {
                refuse(self, "LimitReached", &format!("Presence channel is full ({max} members)"), 403)
            }
            Err(SubscribeError::UnknownApp) => refuse(self, "AppNotFound", "Unknown app", 404),
        }
    }

    /// Whether `auth` signs `message` with a secret the app accepts now: the store's current
    /// configuration, not the one this connection opened with, so a rotated secret counts at once
    /// (and the previous one only for its grace).
    fn signed_by_app(&self, message: &str, auth: &str) -> bool {
        let app = self.hub.app_by_id(&self.app.id).unwrap_or_else(|| self.app.clone());
        let signed = app.accepted_secrets().any(|secret| verify_auth(&app.key, secret, message, auth));
        signed
    }

    /// `pusher:signin`: the app vouches for who this connection is; events sent to the user
    /// (`#server-to-user-{id}`) then reach it, `terminate_connections` can close it, and the
    /// users in its `watchlist` are reported online and offline to it.
    async fn signin(&mut self, auth: &str, user_data: &str) {
        let message = signin_message(&self.socket_id.to_string(), user_data);
        if !self.signed_by_app(&message, auth) {
            self.send_error(ErrorCode::Unauthorized, "Invalid signature for pusher:signin");
            return;
        }
        let SigninData { id: user_id, watchlist } = match signin_data(user_data, self.app.max_watchlist_size) {
            Ok(data) => data,
            Err(e) => {
                self.send_error(ErrorCode::Unauthorized, &e.to_string());
                return;
            }
        };
        if let Some(previous) = self.user_id.take() {
            let name = user_channel(&previous);
            self.channels.remove(&name);
            self.hub.unsubscribe(&self.app.id, &name, self.socket_id).await;
        }
        self.hub.unwatch(&self.app.id, self.socket_id, &std::mem::take(&mut self.watching));
        let state = self.hub.sign_in(&self.app.id, &user_id, &self.out, &watchlist).await;
        self.channels.insert(user_channel(&user_id), None);
        debug!(%user_id, watching = watchlist.len(), "signed in");
        self.user_id = Some(user_id);
        self.watching = watchlist;
        self.out.push(Frame::signin_success(user_data));
        if let Some(state) = state {
            self.out.push(state);
        }
    }

    /// Sends `pusher:error` (the connection stays open), counted by code.
    fn send_error(&self, code: ErrorCode, message: &str) {
        crate::metrics::error_sent(code.code());
        self.out.push(Frame::error(code, message));
    }

    /// Relays a `client-*` event to the channel's other subscribers.
    async fn client_event(&mut self, event: &str, channel: &str, data: Option<&RawValue>) -> Result<(), &'static str> {
        if !self.app.enable_client_messages {
            return Err("Client events are not enabled for this app");
        }
        validate_event_name(event).map_err(|_| "Invalid event name")?;
        let name = ChannelName::parse(channel).map_err(|_| "Invalid channel name")?;
        if !name.kind.accepts_client_events() {
            return Err("Client events are only allowed on private (not encrypted) and presence channels");
        }
        let user_id = match self.channels.get(channel) {
            Some(member) => member.clone(),
            None if self.app.accept_client_events_from == ClientEventsFrom::All => None,
            None => return Err("Client events are only allowed on channels the connection is subscribed to"),
        };
        if let Some(per_second) = NonZeroU32::new(self.app.client_event_rate_limit) {
            let limiter =
                self.client_event_limiter.get_or_insert_with(|| RateLimiter::direct(Quota::per_second(per_second)));
            if limiter.check().is_err() {
                return Err("Client event rate limit exceeded");
            }
        }
        let frame = Frame::client_event(event, channel, data, user_id.as_deref());
        self.hub.webhooks().emit(
            &self.app.id,
            WebhookEvent::ClientEvent {
                channel: channel.to_owned(),
                event: event.to_owned(),
                data: data.map(|d| d.get().to_owned()).unwrap_or_default(),
                socket_id: self.socket_id.to_string(),
                user_id: user_id.clone(),
            },
        );
        // Awaited in the connection's loop, so one client's events keep their order.
        self.hub
            .publish(&self.app.id, name.to_channel(), BroadcastKind::ClientEvent, frame, Some(self.socket_id))
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        assert_eq!(check_protocol_version(Some("7")), Ok(()));
        assert_eq!(check_protocol_version(Some("6")), Ok(()));
        assert_eq!(check_protocol_version(Some("5")), Ok(()));
        assert_eq!(check_protocol_version(Some("4")), Err(ErrorCode::UnsupportedProtocolVersion));
        assert_eq!(check_protocol_version(Some("8")), Err(ErrorCode::UnsupportedProtocolVersion));
        assert_eq!(check_protocol_version(Some("seven")), Err(ErrorCode::InvalidVersionFormat));
        assert_eq!(check_protocol_version(Some("-7")), Err(ErrorCode::InvalidVersionFormat));
        assert_eq!(check_protocol_version(None), Err(ErrorCode::NoProtocolVersion));
    }
}
