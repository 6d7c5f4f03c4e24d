//! What a connection does with each Pusher message it receives.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connection, MAX_CHANNELS_PER_CONNECTION};
use crate::adapter::Broadcast;
use crate::protocol::channel::validate_event_name;
use crate::protocol::message::Subscribe;
use crate::protocol::signature::{channel_auth_message, verify_auth};
use crate::protocol::{ChannelKind, ChannelName, ClientMessage, ErrorCode, Frame};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Handles one text message. Bad input is answered with `pusher:error`; the connection stays.
    pub(super) async fn on_text(&mut self, text: &str) {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(e) => {
                self.out.push(Frame::error(ErrorCode::Generic, &e.to_string()));
                return;
            }
        };
        match message {
            ClientMessage::Ping => {
                self.out.push(Frame::pong());
            }
            ClientMessage::Pong => {}
            ClientMessage::Subscribe(subscribe) => self.subscribe(subscribe),
            ClientMessage::Unsubscribe { channel } => {
                if self.channels.remove(&channel) {
                    self.hub.registry().unsubscribe(&self.app.id, &channel, self.socket_id);
                }
            }
            ClientMessage::ClientEvent { event, channel, data } => {
                if let Err(message) = self.client_event(&event, &channel, data).await {
                    self.out.push(Frame::error(ErrorCode::ClientEventRejected, message));
                }
            }
            ClientMessage::Signin { .. } => {
                self.out
                    .push(Frame::error(ErrorCode::Unauthorized, "User sign-in is not supported by this server yet"));
            }
            ClientMessage::Unknown { event } => {
                let shown: String = event.chars().take(64).collect();
                self.out.push(Frame::error(ErrorCode::Generic, &format!("Unknown event {shown:?}")));
            }
        }
    }

    fn subscribe(&mut self, request: Subscribe) {
        let refuse = |this: &Self, kind: &str, error: &str, status: u16| {
            this.out.push(Frame::subscription_error(&request.channel, kind, error, status));
        };
        let channel = match ChannelName::parse(&request.channel) {
            Ok(channel) => channel,
            Err(e) => return refuse(self, "InvalidChannel", &e.to_string(), 400),
        };
        if !self.channels.contains(channel.name) && self.channels.len() >= MAX_CHANNELS_PER_CONNECTION {
            let error = format!("A connection may subscribe to at most {MAX_CHANNELS_PER_CONNECTION} channels");
            return refuse(self, "LimitReached", &error, 400);
        }
        match channel.kind {
            ChannelKind::Public => {}
            ChannelKind::Private | ChannelKind::PrivateEncrypted => {
                let message = channel_auth_message(&self.socket_id.to_string(), channel.name, None);
                let auth = request.auth.as_deref().unwrap_or_default();
                if !verify_auth(&self.app.key, &self.app.secret, &message, auth) {
                    return refuse(self, "AuthError", "Invalid signature", 401);
                }
            }
            ChannelKind::Presence | ChannelKind::User => {
                return refuse(
                    self,
                    "UnsupportedChannel",
                    "Presence channels are not supported by this server yet",
                    400,
                );
            }
        }
        let succeeded = Frame::subscription_succeeded(channel.name, "{}");
        self.hub.registry().subscribe(&self.app.id, channel.name, &self.out, succeeded);
        self.channels.insert(channel.name.to_owned());
    }

    /// Relays a `client-*` event to the channel's other subscribers.
    async fn client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: Option<&serde_json::value::RawValue>,
    ) -> Result<(), &'static str> {
        if !self.app.enable_client_messages {
            return Err("Client events are not enabled for this app");
        }
        validate_event_name(event).map_err(|_| "Invalid event name")?;
        let name = ChannelName::parse(channel).map_err(|_| "Invalid channel name")?;
        if !matches!(name.kind, ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence) {
            return Err("Client events are only allowed on private and presence channels");
        }
        if !self.channels.contains(channel) {
            return Err("Client events are only allowed on channels the connection is subscribed to");
        }
        let frame = Frame::client_event(event, channel, data, None);
        let broadcast =
            Broadcast { app_id: self.app.id.clone(), channel: channel.to_owned(), frame, except: Some(self.socket_id) };
        // Awaited in the connection's loop, so one client's events keep their order.
        self.hub.publish(broadcast).await;
        Ok(())
    }
}
