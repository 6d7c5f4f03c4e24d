//! One task per WebSocket connection: it reads frames into the protocol layer, writes its outbound
//! queue to the socket, and keeps the connection alive (or drops it) on a single timer.
//!
//! Reading, writing and the timer are one `select!` loop over one socket, so there is no lock
//! between a reader and a writer half. Writes are coalesced: everything queued when the writer wakes
//! goes out in one vectored write (see [`crate::transport`]).

mod handler;
mod liveness;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, Instrument};

use crate::hub::{App, Hub, Outbound, OutboundReceiver, Outgoing, OverflowSignal};
use crate::protocol::{ErrorCode, Frame, SocketId};
use crate::transport::{Message, OpCode, WebSocket};

use liveness::Liveness;
use subscriptions::Subscriptions;

/// Most frames taken from the queue for one coalesced write.
const MAX_BATCH: usize = 256;
/// How long the goodbye (error frame + close) may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most channels one connection may subscribe to.
pub const MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// What the HTTP upgrade learnt from the request line.
pub struct Handshake {
    pub app_key: String,
    /// The `protocol` query parameter, if any.
    pub protocol: Option<String>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
}

/// Server-wide limits a connection needs.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_outbound_buffer: usize,
}

/// How a connection ends.
#[derive(Debug)]
enum Exit {
    /// The peer closed or the transport failed: nothing more to say.
    Gone,
    /// Send `pusher:error` with the code, then close with the same code.
    Pusher(ErrorCode, String),
    /// Close with an RFC 6455 code (1002 protocol violation, 1007 invalid UTF-8, 1009 too big).
    Protocol(u16, &'static str),
    /// Close with 1008 (policy violation): the plain endpoint's refusals.
    Policy(&'static str),
}

/// Checks a new Pusher-protocol socket (app key, Origin, protocol version, connection quota) and
/// greets it. Refused sockets get their error and close here; an accepted one is returned, ready
/// to be served in a task of its own by [`Connection::serve`].
pub async fn open<S>(mut ws: WebSocket<S>, hub: Arc<Hub>, handshake: Handshake, limits: Limits) -> Option<Connection<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(app) = hub.app_by_key(&handshake.app_key).cloned() else {
        debug!("refused: unknown app key");
        let message = format!("App key {} does not exist", handshake.app_key);
        goodbye(&mut ws, Exit::Pusher(ErrorCode::AppNotFound, message)).await;
        return None;
    };
    if !crate::protocol::origin::origin_allowed(&app.allowed_origins, handshake.origin.as_deref()) {
        debug!(app_id = %app.id, "refused: origin not allowed");
        goodbye(&mut ws, Exit::Pusher(ErrorCode::Unauthorized, "Origin not allowed".into())).await;
        return None;
    }
    if let Err(code) = check_protocol_version(handshake.protocol.as_deref()) {
        goodbye(&mut ws, Exit::Pusher(code, code.message().into())).await;
        return None;
    }
    if !hub.connection_opened(&app).await {
        let code = ErrorCode::OverConnectionQuota;
        goodbye(&mut ws, Exit::Pusher(code, code.message().into())).await;
        return None;
    }
    let socket_id = hub.next_socket_id();
    crate::metrics::connection_opened(&app.id);
    hub.feed.record(&app.id, "connection", None, Some(socket_id.to_string()), "");
    let liveness = Liveness::new(Instant::now(), &app);
    let conn = Connection::new(ws, hub, app, socket_id, limits, Mode::Pusher, liveness);
    conn.out.push(Frame::connection_established(socket_id, conn.app.activity_timeout));
    Some(conn)
}

/// A connection for the WebSocket conformance echo endpoint (`[server] echo_path`, off by default):
/// the same loop, queue and writer as the Pusher endpoint, with every message sent back as it came,
/// so that the Autobahn TestSuite exercises the code real clients use.
pub fn open_echo<S>(ws: WebSocket<S>, hub: Arc<Hub>, limits: Limits) -> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let socket_id = hub.next_socket_id();
    let mut app = crate::config::AppConfig::new("echo", "echo", "echo");
    app.ping_interval = 3600;
    app.activity_timeout = 3600;
    let liveness = Liveness::new(Instant::now(), &app);
    Connection::new(ws, hub, Arc::new(app), socket_id, limits, Mode::Echo, liveness)
}

/// Which endpoint a connection serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// The Pusher protocol.
    Pusher,
    /// The conformance echo endpoint: every message goes back as it came.
    Echo,
    /// The plain endpoint: one room, JSON `{type, payload}` messages, WebSocket pings only.
    Plain { channel: String, user_id: String },
}

/// How long a plain client without a handshake token has to send `{"type":"auth","token":...}`.
pub const PLAIN_AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// Who a plain client is, if it authenticated at the handshake.
pub struct PlainHandshake {
    pub app: App,
    pub room: String,
    pub channel: String,
    /// From the handshake's token; `None` means the first message must authenticate.
    pub user_id: Option<String>,
}

/// Authenticates a plain WebSocket client (no Pusher library) and joins it to its room.
pub async fn open_plain<S>(
    mut ws: WebSocket<S>,
    hub: Arc<Hub>,
    handshake: PlainHandshake,
    limits: Limits,
) -> Option<Connection<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let PlainHandshake { app, room, channel, user_id } = handshake;
    let user_id = match user_id {
        Some(user) => user,
        None => match first_message_auth(&mut ws, &app, &room).await {
            Ok(user) => user,
            Err(exit) => {
                goodbye(&mut ws, exit).await;
                return None;
            }
        },
    };
    if !hub.connection_opened(&app).await {
        goodbye(&mut ws, Exit::Policy("Over the app's connection quota")).await;
        return None;
    }
    let socket_id = hub.next_socket_id();
    crate::metrics::connection_opened(&app.id);
    // Plain clients answer WebSocket pings, not pusher:ping: only those are sent.
    let liveness = Liveness::new(Instant::now(), &app).websocket_pings_only();
    let mode = Mode::Plain { channel: channel.clone(), user_id: user_id.clone() };
    let mut conn = Connection::new(ws, hub.clone(), app.clone(), socket_id, limits, mode, liveness);
    let joined = Frame::plain_joined(&channel, &room, &user_id, &socket_id.to_string());
    if let Ok(name) = crate::protocol::ChannelName::parse(&channel) {
        // The join confirmation is queued by the registry, under the room's lock.
        if hub.subscribe_confirmed(&app, &name, &conn.out, None, Some(joined)).await.is_ok() {
            conn.channels.insert(channel, None);
        }
    }
    Some(conn)
}

/// Waits (bounded) for `{"type":"auth","token":"..."}` and verifies it.
/// Refusals close with 1008; a frame that breaks the protocol closes with its own code, and a peer's
/// close is answered like anywhere else.
async fn first_message_auth<S>(ws: &mut WebSocket<S>, app: &App, room: &str) -> Result<String, Exit>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    #[derive(serde::Deserialize)]
    struct Auth {
        #[serde(rename = "type")]
        kind: String,
        token: String,
    }
    let first = tokio::time::timeout(PLAIN_AUTH_DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Ping(payload))) => ws.send_pong(&payload).await.map_err(|_| Exit::Gone)?,
                Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => return Err(Exit::Policy("Authentication required")),
                Some(Ok(Message::Close(theirs))) => {
                    let _ = ws.answer_close(&theirs).await;
                    return Err(Exit::Gone);
                }
                Some(Err(e)) => return Err(Exit::Protocol(e.close_code(), e.reason())),
                None => return Err(Exit::Gone),
            }
        }
    })
    .await
    .map_err(|_| Exit::Policy("Authentication required: send {\"type\":\"auth\",\"token\":\"...\"} first"))??;
    let auth: Auth = serde_json::from_str(&first).map_err(|_| Exit::Policy("Authentication required"))?;
    if auth.kind != "auth" {
        return Err(Exit::Policy("Authentication required"));
    }
    let secret = app.jwt_secret.as_deref().unwrap_or(&app.secret);
    crate::protocol::token::verify(&auth.token, secret, room).map(|c| c.sub).map_err(|e| {
        Exit::Policy(match e {
            crate::protocol::token::TokenError::Expired => "Token expired",
            crate::protocol::token::TokenError::WrongRoom => "Token not valid for this room",
            crate::protocol::token::TokenError::Invalid => "Invalid token",
        })
    })
}

/// Protocol versions 5-7 are in use (pysher still sends 6).
fn check_protocol_version(protocol: Option<&str>) -> Result<(), ErrorCode> {
    let version = protocol.ok_or(ErrorCode::NoProtocolVersion)?;
    let version: u32 = version.parse().map_err(|_| ErrorCode::UnsupportedProtocolVersion)?;
    if (5..=7).contains(&version) {
        Ok(())
    } else {
        Err(ErrorCode::UnsupportedProtocolVersion)
    }
}

/// One accepted socket and everything it owns. It lives in its own task ([`Connection::serve`]),
/// kept small: an idle connection is this struct, its queue and its registry entries.
pub struct Connection<S> {
    ws: WebSocket<S>,
    hub: Arc<Hub>,
    app: App,
    socket_id: SocketId,
    out: Outbound,
    rx: OutboundReceiver,
    overflow: OverflowSignal,
    /// Channels this socket is subscribed to (with the presence user it joined as), so a
    /// disconnect leaves them all.
    channels: Subscriptions,
    liveness: Liveness,
    /// The signed-in user (`pusher:signin`).
    user_id: Option<String>,
    /// Built on the first client event, so connections that never send one pay nothing.
    client_event_limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Reverb-style limit on every message, when the app enables it; built on the first message.
    message_limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Which endpoint the socket came in on.
    mode: Mode,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    fn new(
        ws: WebSocket<S>,
        hub: Arc<Hub>,
        app: App,
        socket_id: SocketId,
        limits: Limits,
        mode: Mode,
        liveness: Liveness,
    ) -> Self {
        let (out, rx) = Outbound::new(socket_id, limits.max_outbound_buffer);
        let overflow = rx.overflow_signal();
        Connection {
            ws,
            hub,
            app,
            socket_id,
            out,
            rx,
            overflow,
            channels: Subscriptions::default(),
            liveness,
            user_id: None,
            client_event_limiter: None,
            message_limiter: None,
            mode,
        }
    }

    /// Serves the connection until it closes, then leaves its channels and says goodbye. `hold`
    /// is kept until then (the server's count of open sockets).
    ///
    /// Spawn the returned future on its own: it owns the connection in place (nothing else rides
    /// along in the task), so an idle connection's task is as small as the connection itself.
    pub fn serve<G: Send + 'static>(
        mut self,
        shutdown: CancellationToken,
        hold: G,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: 'static,
    {
        // A debug span: at the default level no per-connection span is kept (it costs ~0.5 KB).
        let span = match &self.mode {
            Mode::Plain { .. } => debug_span!("plain", app_id = %self.app.id, socket_id = %self.socket_id),
            _ => debug_span!("connection", app_id = %self.app.id, socket_id = %self.socket_id),
        };
        async move {
            let _hold = hold;
            debug!("connected");
            // A bug that panics while serving this socket must not leave its subscriptions (and
            // presence members) behind: the panic is caught here and the connection still leaves.
            let exit = match std::panic::AssertUnwindSafe(self.run(&shutdown)).catch_unwind().await {
                Ok(exit) => exit,
                Err(_) => {
                    tracing::error!(socket_id = %self.socket_id, "connection task panicked: closing it");
                    Exit::Gone
                }
            };
            // Boxed: leaving channels and the goodbye are big futures, run once.
            Box::pin(self.finish(exit)).await;
        }
        .instrument(span)
    }

    /// Leaves every channel and closes the socket the way `exit` calls for.
    async fn finish(mut self, exit: Exit) {
        debug!(?exit, "closing");
        if self.mode == Mode::Pusher {
            let reason = format!("{exit:?}");
            self.hub.feed.record(&self.app.id, "disconnection", None, Some(self.socket_id.to_string()), &reason);
        }
        self.leave_all_channels().await;
        goodbye(&mut self.ws, exit).await;
        if self.mode != Mode::Echo {
            self.hub.connection_closed(&self.app.id).await;
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Exit {
        loop {
            // Allocated only when something is queued, and freed after the write: an idle
            // connection holds no batch buffer.
            let mut batch = Vec::new();
            let wake_at = self.liveness.next_check();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Exit::Pusher(ErrorCode::Generic, "Server is shutting down".into());
                }
                _ = self.overflow.wait() => {
                    return Exit::Pusher(ErrorCode::OverCapacity, "Client is too slow to read its messages".into());
                }
                incoming = self.ws.next() => {
                    self.liveness.saw_activity(Instant::now());
                    if let Some(Ok(message)) = &incoming {
                        crate::metrics::received(message.len());
                    }
                    let exit = match incoming {
                        None => Some(Exit::Gone),
                        // Boxed: handling a message (a presence join, say) is a big future, and rare.
                        Some(Ok(message)) => Box::pin(self.on_message(message)).await,
                        Some(Err(e)) => Some(Exit::Protocol(e.close_code(), e.reason())),
                    };
                    if let Some(exit) = exit {
                        return exit;
                    }
                }
                n = self.rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return Exit::Gone;
                    }
                    // Boxed: the write future is large and a connection is mostly idle between writes.
                    if let Err(exit) = Box::pin(self.write_batch(&mut batch)).await {
                        return exit;
                    }
                }
                _ = tokio::time::sleep_until(wake_at) => {
                    if let Err(code) = self.liveness.on_timer(Instant::now(), &self.out) {
                        return Exit::Pusher(code, code.message().into());
                    }
                }
            }
        }
    }

    /// Writes every queued item with one vectored write: a batch of broadcast frames costs one
    /// system call and no copy. A client that does not drain is dropped when its queue overflows
    /// or the write times out, whichever comes first.
    /// How long one write may wait for a peer that does not read.
    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.app.activity_timeout.max(30))
    }

    async fn write_batch(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), Exit> {
        let write_timeout = self.write_timeout();
        let overflow = self.overflow.clone();
        let mut bytes = 0;
        let messages = batch.len();
        let mut frames: Vec<(OpCode, &[u8])> = Vec::with_capacity(batch.len());
        let mut then_close = None;
        for item in batch.iter() {
            match item {
                Outgoing::Frame(frame) => {
                    bytes += frame.len();
                    debug!(frame = frame.as_str(), "sent");
                    frames.push((OpCode::Text, frame.as_bytes()));
                }
                Outgoing::Binary(data) => {
                    bytes += data.len();
                    frames.push((OpCode::Binary, data));
                }
                Outgoing::Ping => frames.push((OpCode::Ping, &[])),
                Outgoing::Pong(payload) => {
                    bytes += payload.len().max(1);
                    frames.push((OpCode::Pong, payload));
                }
                Outgoing::Close { code, message } => {
                    then_close = Some(Exit::Pusher(*code, message.clone()));
                    break;
                }
            }
        }
        let ws = &mut self.ws;
        let write = async {
            ws.send_frames(&frames).await.map_err(|_| Exit::Gone)?;
            then_close.map_or(Ok(()), Err)
        };
        let result = tokio::select! {
            r = write => r,
            _ = overflow.wait() => Err(Exit::Pusher(ErrorCode::OverCapacity, "Client is too slow to read its messages".into())),
            _ = tokio::time::sleep(write_timeout) => Err(Exit::Pusher(ErrorCode::OverCapacity, "Write timed out".into())),
        };
        crate::metrics::sent(messages, bytes);
        batch.clear();
        self.rx.sent(bytes);
        result
    }

    /// Handles one inbound WebSocket message; `Some` ends the connection.
    async fn on_message(&mut self, message: Message) -> Option<Exit> {
        match message {
            Message::Text(text) if self.mode == Mode::Echo => {
                if let Some(frame) = Frame::from_text_bytes(text.into_bytes().into()) {
                    self.out.push(frame);
                }
                None
            }
            Message::Binary(data) if self.mode == Mode::Echo => {
                self.out.push_binary(data.into());
                None
            }
            Message::Text(text) if matches!(self.mode, Mode::Plain { .. }) => {
                self.on_plain_text(&text).await;
                None
            }
            Message::Binary(_) if matches!(self.mode, Mode::Plain { .. }) => {
                self.out.push(Frame::plain_error("Binary messages are not supported: send JSON text"));
                None
            }
            Message::Text(text) => {
                if let Err(exit) = self.check_message_rate() {
                    return exit;
                }
                self.on_text(&text).await;
                None
            }
            Message::Binary(_) => {
                self.send_error(ErrorCode::Generic, "Binary messages are not supported");
                None
            }
            // Queued like any frame: written with the next batch, under the same byte limit and write
            // timeout, so a peer that floods pings without reading is dropped, not waited for.
            Message::Ping(payload) => {
                self.out.pong(payload.into());
                None
            }
            Message::Pong(_) => None,
            // The close handshake: answer with the peer's code; the server then closes the socket.
            Message::Close(theirs) => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    if self.ws.answer_close(&theirs).await.is_ok() {
                        self.ws.shutdown().await;
                    }
                })
                .await;
                Some(Exit::Gone)
            }
        }
    }

    /// Reverb's `rate_limiting`: `max_attempts` messages per `decay_seconds`. Over it, the message
    /// is refused with 4301, or the connection closed when `terminate` is set.
    fn check_message_rate(&mut self) -> Result<(), Option<Exit>> {
        let limits = &self.app.rate_limiting;
        if !limits.enabled {
            return Ok(());
        }
        let limiter = self.message_limiter.get_or_insert_with(|| {
            let burst = std::num::NonZeroU32::new(limits.max_attempts).unwrap_or(std::num::NonZeroU32::MIN);
            let period = Duration::from_secs(limits.decay_seconds) / burst.get();
            let quota = governor::Quota::with_period(period.max(Duration::from_nanos(1)))
                .unwrap_or_else(|| governor::Quota::per_second(burst))
                .allow_burst(burst);
            governor::RateLimiter::direct(quota)
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

    async fn leave_all_channels(&mut self) {
        for channel in self.channels.take_names() {
            self.hub.unsubscribe(&self.app.id, &channel, self.socket_id).await;
        }
    }
}

/// Says goodbye the way the exit calls for, bounded in time, then drops the socket.
async fn goodbye<S: AsyncRead + AsyncWrite + Unpin + Send>(ws: &mut WebSocket<S>, exit: Exit) {
    match &exit {
        Exit::Gone => crate::metrics::disconnected(None),
        Exit::Pusher(code, _) => {
            if *code == ErrorCode::OverCapacity {
                crate::metrics::slow_consumer_dropped();
            }
            crate::metrics::error_sent(code.code());
            crate::metrics::disconnected(Some(code.code()));
        }
        Exit::Protocol(code, _) => crate::metrics::disconnected(Some(*code)),
        Exit::Policy(_) => crate::metrics::disconnected(Some(1008)),
    }
    let farewell = async {
        let sent = match exit {
            Exit::Gone => return,
            Exit::Pusher(code, message) => {
                if ws.send_text(Frame::error(code, &message).as_bytes()).await.is_err() {
                    return;
                }
                ws.send_close(code.code(), &message).await
            }
            Exit::Protocol(code, reason) => ws.send_close(code, reason).await,
            Exit::Policy(reason) => ws.send_close(1008, reason).await,
        };
        if sent.is_err() {
            return;
        }
        if ws.read_done() {
            // A refused frame (or the end of input): drain what is still arriving so that closing
            // does not reset the connection and destroy the close frame.
            ws.shutdown().await;
            ws.discard_input().await;
            return;
        }
        // Wait for the peer's close reply so the close handshake completes.
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        ws.shutdown().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, farewell).await;
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
        assert_eq!(check_protocol_version(Some("seven")), Err(ErrorCode::UnsupportedProtocolVersion));
        assert_eq!(check_protocol_version(None), Err(ErrorCode::NoProtocolVersion));
    }
}
