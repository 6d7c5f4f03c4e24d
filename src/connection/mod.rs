//! The WebSocket transport: one task per socket, driving a [`Session`] over
//! [`crate::transport::WebSocket`] framing.
//!
//! Reading, writing and the liveness timer are one `select!` loop over one socket, so there is no
//! lock between a reader and a writer half. What the session queues (and every broadcast the hub
//! pushes into the same queue) is written coalesced: everything queued when the writer wakes goes
//! out in one vectored write. WebSocket pings are answered here, through the same queue and
//! byte limit; the close handshake is this transport's way of carrying a session's [`Exit`].
//!
//! [`sse`] is the second transport: Server-Sent Events, a listener's stream.

pub mod http_fallback;
mod plain_auth;
pub use plain_auth::verify_token;
pub mod raw;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::hub::{Hub, OutboundReceiver, Outgoing, OverflowSignal};
use crate::protocol::{ErrorCode, Frame};
use crate::session::{
    EchoSession, Exit, Liveness, Opened, PlainHandshake, PlainSession, PusherHandshake, PusherSession, Session,
};
use crate::transport::{deflate, Deflate, Message, OpCode, WebSocket};

/// Most frames taken from the queue for one coalesced write.
const MAX_BATCH: usize = 256;
/// How long the goodbye (error frame + close) may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Server-wide limits a connection needs.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_outbound_buffer: usize,
}

/// Opens a Pusher session on an upgraded socket; a refused one gets its error and close here.
pub async fn open_pusher<S>(
    ws: WebSocket<S>,
    hub: Arc<Hub>,
    handshake: PusherHandshake,
    limits: Limits,
) -> Option<Connection<S, PusherSession>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    accept(ws, PusherSession::open(hub, handshake, limits.max_outbound_buffer).await).await
}

/// Opens an echo session (the conformance endpoint).
pub async fn open_echo<S>(ws: WebSocket<S>, hub: Arc<Hub>, limits: Limits) -> Option<Connection<S, EchoSession>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    accept(ws, EchoSession::open(&hub, limits.max_outbound_buffer)).await
}

/// Authenticates a plain client (at the handshake, or by its first message) and joins its room.
pub async fn open_plain<S>(
    mut ws: WebSocket<S>,
    hub: Arc<Hub>,
    handshake: PlainHandshake,
    limits: Limits,
) -> Option<Connection<S, PlainSession>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let user_id = match handshake.user_id.clone() {
        Some(user) => user,
        None => match plain_auth::first_message_auth(&mut ws, &handshake.app, &handshake.room).await {
            Ok(user) => user,
            Err(exit) => {
                goodbye(&mut ws, exit).await;
                return None;
            }
        },
    };
    accept(ws, PlainSession::open(hub, handshake, user_id, limits.max_outbound_buffer).await).await
}

async fn accept<S, T>(mut ws: WebSocket<S>, opened: Opened<T>) -> Option<Connection<S, T>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: Session,
{
    match opened {
        Ok((session, rx)) => {
            let overflow = rx.overflow_signal();
            let liveness = session.liveness(Instant::now());
            Some(Connection { ws, session, rx, overflow, liveness })
        }
        Err(exit) => {
            goodbye(&mut ws, exit).await;
            None
        }
    }
}

/// One accepted socket and its session. It lives in its own task ([`Connection::serve`]), kept
/// small: an idle connection is this struct, its queue and its registry entries.
pub struct Connection<S, T> {
    ws: WebSocket<S>,
    session: T,
    rx: OutboundReceiver,
    overflow: OverflowSignal,
    liveness: Liveness,
}

impl<S, T> Connection<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Session,
{
    /// Serves the connection until it closes, then closes its session and says goodbye. `hold`
    /// is kept until then (the server's count of open sockets).
    ///
    /// Spawn the returned future on its own: it owns the connection in place (nothing else rides
    /// along in the task), so an idle connection's task is as small as the connection itself.
    pub fn serve<G: Send + 'static>(
        mut self,
        shutdown: CancellationToken,
        hold: G,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // A debug span: at the default level no per-connection span is kept (it costs ~0.5 KB).
        let span = self.session.span();
        async move {
            let _hold = hold;
            debug!("connected");
            // A bug that panics while serving this socket must not leave its subscriptions (and
            // presence members) behind: the panic is caught here and the session still closes.
            let exit = match std::panic::AssertUnwindSafe(self.run(&shutdown)).catch_unwind().await {
                Ok(exit) => exit,
                Err(_) => {
                    tracing::error!("connection task panicked: closing it");
                    Exit::Gone
                }
            };
            // Boxed: leaving channels and the goodbye are big futures, run once.
            Box::pin(self.finish(exit)).await;
        }
        .instrument(span)
    }

    async fn finish(mut self, exit: Exit) {
        debug!(?exit, "closing");
        self.session.close(&exit).await;
        goodbye(&mut self.ws, exit).await;
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
                // A backlogged queue stops reading until it drains: the client is slowed by TCP.
                incoming = self.ws.next(), if !self.rx.backlogged() => {
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
                    if let Err(code) = self.liveness.on_timer(Instant::now(), self.session.out()) {
                        return Exit::Pusher(code, code.message().into());
                    }
                }
            }
        }
    }

    /// Hands a message to the session; control frames are this transport's own business.
    async fn on_message(&mut self, message: Message) -> Option<Exit> {
        match message {
            Message::Text(text) => self.session.on_text(text).await,
            Message::Binary(data) => self.session.on_binary(data).await,
            // Written with the next batch; only the latest ping's answer is kept, so a ping flood
            // costs no memory.
            Message::Ping(payload) => {
                self.session.out().pong(payload.into());
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

    /// How long one write may wait for a peer that does not read.
    fn write_timeout(&self) -> Duration {
        self.liveness.pong_timeout().max(Duration::from_secs(30))
    }

    /// Writes every queued item with one vectored write: a batch of broadcast frames costs one
    /// system call and no copy. A client that does not drain is dropped when its queue overflows
    /// or the write times out, whichever comes first.
    async fn write_batch(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), Exit> {
        let write_timeout = self.write_timeout();
        let overflow = self.overflow.clone();
        let mut bytes = 0;
        let messages = batch.len();
        // With permessage-deflate, each data message's compressed payload (or `None` to send it as
        // it is); a broadcast's is made once and shared by every subscriber's batch.
        let compressed: Vec<Option<bytes::Bytes>> = match self.ws.deflate() {
            Some(d) => batch.iter().map(|item| compressed(item, d)).collect(),
            None => Vec::new(),
        };
        let (mut plain_in, mut deflated_out) = (0, 0);
        let mut frames: Vec<(OpCode, bool, &[u8])> = Vec::with_capacity(batch.len());
        let mut then_close = None;
        for (i, item) in batch.iter().enumerate() {
            let packed = compressed.get(i).and_then(Option::as_ref);
            if let Some(packed) = packed {
                plain_in += item_len(item);
                deflated_out += packed.len();
            }
            match item {
                Outgoing::Frame(frame) => {
                    bytes += frame.len();
                    debug!(
                        event = crate::logging::frame_event(frame.as_str()),
                        bytes = frame.len(),
                        frame = crate::logging::payload(frame.as_str()),
                        "sent"
                    );
                    frames.push(packed.map_or((OpCode::Text, false, frame.as_bytes()), |p| (OpCode::Text, true, p)));
                }
                Outgoing::Binary(data) => {
                    bytes += data.len();
                    frames.push(packed.map_or((OpCode::Binary, false, data), |p| (OpCode::Binary, true, p)));
                }
                Outgoing::Ping => frames.push((OpCode::Ping, false, &[])),
                Outgoing::Pong(payload) => frames.push((OpCode::Pong, false, payload)),
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
        if deflated_out > 0 {
            crate::metrics::compressed(plain_in, deflated_out);
        }
        drop(frames);
        self.rx.sent(batch);
        batch.clear();
        result
    }
}

/// A data message's compressed payload, when it is at least the threshold and compressing pays. A
/// broadcast frame at the full window is compressed once and shared; other windows, and echoed
/// binary messages, are compressed for this connection alone.
fn compressed(item: &Outgoing, d: Deflate) -> Option<bytes::Bytes> {
    let pack = |data: &[u8]| deflate::compress(data, d.server_window_bits).map(bytes::Bytes::from);
    match item {
        Outgoing::Frame(frame) if frame.len() >= d.threshold => {
            if d.shares_broadcasts() {
                frame.deflated(pack).cloned()
            } else {
                pack(frame.as_bytes())
            }
        }
        Outgoing::Binary(data) if data.len() >= d.threshold => pack(data),
        _ => None,
    }
}

fn item_len(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(frame) => frame.len(),
        Outgoing::Binary(data) => data.len(),
        _ => 0,
    }
}

/// Counts how a connection (of any transport) ended.
fn count_exit(exit: &Exit) {
    match exit {
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
}

/// Says goodbye the way the exit calls for, bounded in time, then drops the socket.
async fn goodbye<S: AsyncRead + AsyncWrite + Unpin + Send>(ws: &mut WebSocket<S>, exit: Exit) {
    count_exit(&exit);
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
