//! What a connection does with each Pusher message it receives.

use std::num::NonZeroU32;

use governor::{Quota, RateLimiter};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{Connection, MAX_CHANNELS_PER_CONNECTION};
use crate::adapter::Broadcast;
use crate::config::ClientEventsFrom;
use crate::hub::SubscribeError;
use crate::protocol::channel::{validate_event_name, USER_CHANNEL_PREFIX};
use crate::protocol::message::Subscribe;
use crate::protocol::presence::{signin_user_id, MemberData};
use crate::protocol::signature::{channel_auth_message, signin_message, verify_auth};
use crate::protocol::{ChannelKind, ChannelName, ClientMessage, ErrorCode, Frame};
use crate::webhooks::WebhookEvent;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Handles one text message. Bad input is answered with `pusher:error`; the connection stays.
    pub(super) async fn on_text(&mut self, text: &str) {
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
            ClientMessage::Subscribe(s) => debug!(channel = %s.channel, "received pusher:subscribe"),
            ClientMessage::Signin { .. } => debug!("received pusher:signin"),
            ClientMessage::ClientEvent { event, channel, data } => {
                debug!(%event, %channel, data = data.map(|d| d.get()).unwrap_or(""), "received a client event")
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
                if !channel.starts_with(USER_CHANNEL_PREFIX) && self.channels.remove(&channel).is_some() {
                    self.hub.unsubscribe(&self.app.id, &channel, self.socket_id).await;
                }
            }
            ClientMessage::ClientEvent { event, channel, data } => {
                if let Err(message) = self.client_event(&event, &channel, data).await {
                    self.send_error(ErrorCode::ClientEventRejected, message);
                }
            }
            ClientMessage::Signin { auth, user_data } => self.signin(&auth, &user_data),
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
        if let Some(user) = request.channel.strip_prefix(USER_CHANNEL_PREFIX) {
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
            if !verify_auth(&self.app.key, &self.app.secret, &message, auth) {
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

    /// `pusher:signin`: the app vouches for who this connection is; events sent to the user
    /// (`#server-to-user-{id}`) then reach it, and `terminate_connections` can close it.
    fn signin(&mut self, auth: &str, user_data: &str) {
        let message = signin_message(&self.socket_id.to_string(), user_data);
        if !verify_auth(&self.app.key, &self.app.secret, &message, auth) {
            self.send_error(ErrorCode::Unauthorized, "Invalid signature for pusher:signin");
            return;
        }
        let user_id = match signin_user_id(user_data) {
            Ok(id) => id,
            Err(e) => {
                self.send_error(ErrorCode::Unauthorized, &e.to_string());
                return;
            }
        };
        if let Some(previous) = self.user_id.take() {
            let name = format!("{USER_CHANNEL_PREFIX}{previous}");
            self.channels.remove(&name);
            self.hub.registry().unsubscribe(&self.app.id, &name, self.socket_id);
        }
        self.hub.registry().join_user_channel(&self.app.id, &user_id, &self.out);
        self.channels.insert(format!("{USER_CHANNEL_PREFIX}{user_id}"), None);
        self.user_id = Some(user_id);
        self.out.push(Frame::signin_success(user_data));
    }

    /// Sends `pusher:error` (the connection stays open), counted by code.
    pub(super) fn send_error(&self, code: ErrorCode, message: &str) {
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
        if !matches!(name.kind, ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence) {
            return Err("Client events are only allowed on private and presence channels");
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
        let broadcast =
            Broadcast { app_id: self.app.id.clone(), channel: channel.to_owned(), frame, except: Some(self.socket_id) };
        // Awaited in the connection's loop, so one client's events keep their order.
        self.hub.publish(broadcast).await;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// A plain client's message: validated, then delivered to the room's other members with the
    /// sender's id and the server's time. Bad messages get `herald:error` and reach nobody.
    pub(super) async fn on_plain_text(&mut self, text: &str) {
        let super::Mode::Plain { channel, user_id } = &self.mode else { return };
        let message = match crate::protocol::plain::PlainMessage::parse(text) {
            Ok(message) => message,
            Err(e) => {
                self.out.push(Frame::plain_error(&e.to_string()));
                return;
            }
        };
        if let Some(per_second) = NonZeroU32::new(self.app.client_event_rate_limit) {
            let limiter =
                self.client_event_limiter.get_or_insert_with(|| RateLimiter::direct(Quota::per_second(per_second)));
            if limiter.check().is_err() {
                self.out.push(Frame::plain_error("Rate limit exceeded"));
                return;
            }
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let frame = Frame::plain_message(channel, &message, user_id, ts);
        let broadcast =
            Broadcast { app_id: self.app.id.clone(), channel: channel.clone(), frame, except: Some(self.socket_id) };
        self.hub.publish(broadcast).await;
    }
}
