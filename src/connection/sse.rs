//! The Server-Sent Events transport: one task per stream, writing what its session's queue holds
//! onto the socket as the body of an HTTP/1.1 `text/event-stream` response.
//!
//! The endpoint (`crate::server`) takes the socket back from hyper once it has accepted the request:
//! held by hyper, a stream that lasts hours would keep hyper's connection state and buffers
//! (~16 KiB) and could not be cut when its client stops reading, because hyper only polls a body
//! when the socket can take more. Here the stream is served as a WebSocket is: one `select!` over
//! the socket (read only to notice the client leaving), the queue, a heartbeat and shutdown. The
//! body is close-delimited (`Connection: close`, no length), so events are written as they are,
//! with no chunk framing. A broadcast's `event:`/`data:` lines are the same for every subscriber;
//! each write puts them beside this stream's `id:` lines in one vectored write.

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::connection::raw::read_some;
use crate::hub::{OutboundReceiver, Outgoing, OverflowSignal};
use crate::protocol::sse::{self, EventIds};
use crate::protocol::{ErrorCode, Frame};
use crate::session::{Exit, Session};

/// Most queued items taken for one write.
const MAX_BATCH: usize = 256;
/// Slices handed to one `writev` (the kernel's IOV_MAX is 1024).
const MAX_SLICES: usize = 1024;
/// Batches smaller than this are copied into one buffer: cheaper than the kernel walking slices.
const JOIN_BELOW: usize = 4 * 1024;
/// How long one write may wait for a client that does not read before it is cut (4100).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the goodbye (the final error event and the close) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes a client may send after its request (an event stream expects none) before it is dropped.
const MAX_IGNORED_INPUT: usize = 64 * 1024;

/// Settings one stream is opened with.
#[derive(Debug, Clone, Copy)]
pub struct SseSettings {
    /// Silence after which a comment is written, so proxies keep the stream open.
    pub heartbeat: Duration,
    /// The `retry:` the client is told (how long `EventSource` waits before reconnecting).
    pub retry: Duration,
}

/// Writes the response head and the `retry:` line, and starts serving; `None` when the client is
/// already gone (its session is then closed here).
pub async fn start<S, T>(
    mut io: S,
    (mut session, rx): (T, OutboundReceiver),
    head: &[u8],
    settings: SseSettings,
) -> Option<SseStream<S, T>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: Session,
{
    let retry = sse::retry(u64::try_from(settings.retry.as_millis()).unwrap_or(u64::MAX));
    let opening = async {
        io.write_all(head).await?;
        io.write_all(retry.as_bytes()).await?;
        io.flush().await
    };
    if !matches!(tokio::time::timeout(CLOSE_TIMEOUT, opening).await, Ok(Ok(()))) {
        session.close(&Exit::Gone).await;
        crate::metrics::disconnected(None);
        return None;
    }
    let overflow = rx.overflow_signal();
    Some(SseStream {
        io,
        session,
        rx,
        overflow,
        ids: EventIds::default(),
        heartbeat: settings.heartbeat,
        last_write: Instant::now(),
        ignored: 0,
        broken: false,
    })
}

/// One open stream and its session, served by its own task ([`SseStream::serve`]).
pub struct SseStream<S, T> {
    io: S,
    session: T,
    rx: OutboundReceiver,
    overflow: OverflowSignal,
    ids: EventIds,
    heartbeat: Duration,
    /// When anything was last written: the heartbeat is due `heartbeat` after it.
    last_write: Instant,
    /// Bytes the client sent after its request, read and dropped.
    ignored: usize,
    /// Part of an event went out and the rest did not: nothing more may follow on the stream.
    broken: bool,
}

impl<S, T> SseStream<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Session,
{
    /// Serves the stream until it ends, then closes its session and says goodbye. `hold` is kept
    /// until then (the server's count of open sockets, the connection's permit).
    pub fn serve<G: Send + 'static>(
        mut self,
        shutdown: CancellationToken,
        hold: G,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let span = self.session.span();
        async move {
            let _hold = hold;
            debug!("stream opened");
            // A panic while serving must not leave the stream's subscriptions (and presence member) behind.
            let exit = match std::panic::AssertUnwindSafe(self.run(&shutdown)).catch_unwind().await {
                Ok(exit) => exit,
                Err(_) => {
                    tracing::error!("SSE stream task panicked: closing it");
                    Exit::Gone
                }
            };
            // Boxed: leaving channels and the goodbye are big futures, run once.
            Box::pin(self.finish(exit)).await;
        }
        .instrument(span)
    }

    async fn finish(mut self, exit: Exit) {
        debug!(?exit, "stream closing");
        self.session.close(&exit).await;
        goodbye(&mut self.io, &exit, &mut self.ids, self.broken).await;
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Exit {
        loop {
            // Allocated only when something is queued, and freed after the write.
            let mut batch = Vec::new();
            let beat_at = self.last_write + self.heartbeat;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Exit::Pusher(ErrorCode::Generic, "Server is shutting down".into());
                }
                _ = self.overflow.wait() => {
                    return Exit::Pusher(ErrorCode::OverCapacity, "Client is too slow to read its messages".into());
                }
                read = read_some(&mut self.io) => match read {
                    Ok(0) | Err(_) => return Exit::Gone,
                    Ok(n) => {
                        self.ignored += n;
                        if self.ignored > MAX_IGNORED_INPUT {
                            return Exit::Gone;
                        }
                    }
                },
                n = self.rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return Exit::Gone;
                    }
                    // Boxed: the write future is large and a stream is mostly idle between writes.
                    if let Err(exit) = Box::pin(self.write_batch(&mut batch)).await {
                        return exit;
                    }
                }
                _ = tokio::time::sleep_until(beat_at) => {
                    if let Err(exit) = self.send(&[sse::HEARTBEAT]).await {
                        return exit;
                    }
                }
            }
        }
    }

    /// Writes every queued event with its `id:` line, in one vectored write. A `Close` (terminate)
    /// ends the stream after what came before it.
    async fn write_batch(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), Exit> {
        let mut events: Vec<Bytes> = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len() * 12);
        let mut id_ends = Vec::with_capacity(batch.len());
        let mut then_close = None;
        for item in batch.iter() {
            match item {
                Outgoing::Frame(frame) => match rendered(frame) {
                    Some(event) => {
                        events.push(event);
                        self.ids.push_next(Some(frame), &mut ids);
                        id_ends.push(ids.len());
                    }
                    None => debug!(frame = frame.as_str(), "not sent: no SSE form"),
                },
                Outgoing::Close { code, message } => {
                    then_close = Some(Exit::Pusher(*code, message.clone()));
                    break;
                }
                // A listener answers no pings and sends no binary messages.
                Outgoing::Binary(_) | Outgoing::Ping | Outgoing::Pong(_) => {}
            }
        }
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(events.len() * 2);
        let mut start = 0;
        for (event, end) in events.iter().zip(&id_ends) {
            pieces.push(event);
            pieces.push(&ids[start..*end]);
            start = *end;
        }
        let bytes: usize = pieces.iter().map(|p| p.len()).sum();
        let result = if pieces.is_empty() { Ok(()) } else { self.send(&pieces).await };
        crate::metrics::sent(events.len(), bytes);
        drop(pieces);
        self.rx.sent(batch);
        batch.clear();
        result?;
        then_close.map_or(Ok(()), Err)
    }

    /// Writes `pieces` back to back; a client that does not take them is cut when its queue
    /// overflows or the write times out, whichever comes first.
    async fn send(&mut self, pieces: &[&[u8]]) -> Result<(), Exit> {
        let overflow = self.overflow.clone();
        let write = write_pieces(&mut self.io, pieces, &mut self.broken);
        let result = tokio::select! {
            r = write => r.map_err(|_| Exit::Gone),
            _ = overflow.wait() => Err(Exit::Pusher(ErrorCode::OverCapacity, "Client is too slow to read its messages".into())),
            _ = tokio::time::sleep(WRITE_TIMEOUT) => Err(Exit::Pusher(ErrorCode::OverCapacity, "Write timed out".into())),
        };
        self.last_write = Instant::now();
        result
    }
}

/// A broadcast's `event:` and `data:` lines: rendered by the first SSE subscriber's writer and kept
/// in the shared frame (a reference-count increment for every other one).
fn rendered(frame: &Frame) -> Option<Bytes> {
    frame.sse(sse::render).cloned()
}

/// Writes `pieces` in order: small batches joined into one buffer, large ones as vectored writes
/// of the shared bytes. `broken` says whether a cancelled write left an event half written.
async fn write_pieces<S: AsyncWrite + Unpin>(io: &mut S, pieces: &[&[u8]], broken: &mut bool) -> io::Result<()> {
    if *broken {
        return Err(io::ErrorKind::BrokenPipe.into());
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    if total <= JOIN_BELOW || !io.is_write_vectored() {
        let joined = pieces.concat();
        let mut rest = &joined[..];
        while !rest.is_empty() {
            let n = io.write(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
            *broken = !rest.is_empty();
        }
    } else {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let window = slices.len().min(MAX_SLICES);
            let n = io.write_vectored(&slices[..window]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
            *broken = !slices.is_empty();
        }
    }
    io.flush().await?;
    *broken = false;
    Ok(())
}

/// Ends the stream the way `exit` calls for, bounded in time: a `pusher:error` event with the code
/// (unless an event was left half written), then the end of the body.
async fn goodbye<S: AsyncWrite + Unpin>(io: &mut S, exit: &Exit, ids: &mut EventIds, broken: bool) {
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
    let farewell = async {
        if let (Exit::Pusher(code, message), false) = (exit, broken) {
            if let Some(event) = sse::render(Frame::error(*code, message).as_str()) {
                let mut id = Vec::new();
                ids.push_next(None, &mut id);
                let mut ignored = false;
                if write_pieces(io, &[&event, &id], &mut ignored).await.is_err() {
                    return;
                }
            }
        }
        let _ = io.shutdown().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, farewell).await;
}
