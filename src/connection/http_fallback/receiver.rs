//! The sending end of one receive response, as its session's driver holds it.
//!
//! A held `xhr_streaming` response is its socket itself: once hyper lets go of the connection (see
//! `crate::server`'s takeover), the driver writes the stream's lines straight onto it, as the SSE
//! and WebSocket tasks write theirs, so a held stream costs no second task and no channel. Polls,
//! and streams served through hyper (relayed ones, or a connection that cannot be taken), get
//! their lines through a small channel to the hyper response body ([`ResponseBody`]); those are
//! short-lived, or are the exception.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::connection::raw::{read_some, RawStream};

/// Lines a channelled response may have waiting for its client to read; then the driver stops
/// taking from the session's queue, which fills and ends a client that does not read (4100).
const BODY_CAPACITY: usize = 2;
/// How long a replaced or finished stream's last bytes (and a TLS close) may take to leave.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bytes a stream's client may send after its request (it should send none) before it is dropped.
const MAX_IGNORED_INPUT: usize = 64 * 1024;

/// The sending end of one receive response.
pub struct Receiver {
    sink: Sink,
    pub(super) polling: bool,
}

enum Sink {
    /// Lines for a hyper response body.
    Lines {
        lines: mpsc::Sender<Bytes>,
        /// Cut the response off (a client that stopped reading): its body then ends with an
        /// error, so the HTTP connection is closed rather than left holding unwritten bytes.
        abort: CancellationToken,
    },
    /// The connection's socket, once hyper hands it over.
    Socket(Socket),
}

struct Socket {
    state: SocketState,
    /// Bytes the client sent on the stream, read and dropped.
    ignored: usize,
    /// Kept while the socket is (the server's open-socket count, the connection's permit).
    _hold: Box<dyn Send>,
}

enum SocketState {
    /// hyper has not handed the socket over yet; `head` is the response head to write first.
    Awaited {
        socket: oneshot::Receiver<RawStream>,
        head: Vec<u8>,
        deadline: Duration,
    },
    Open(RawStream),
    /// Never arrived, or failed: nothing more is written.
    Lost,
}

/// The body of one channelled response: the lines its driver writes, ended when the driver lets go
/// of it, or failed when the driver aborts it.
pub struct ResponseBody {
    lines: mpsc::Receiver<Bytes>,
    abort: CancellationToken,
}

impl ResponseBody {
    /// The body as a stream for the HTTP response.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold(self, |mut body| async move {
            tokio::select! {
                biased;
                _ = body.abort.cancelled() => {
                    Some((Err(std::io::Error::other("the client stopped reading")), body))
                }
                line = body.lines.recv() => line.map(|line| (Ok(line), body)),
            }
        })
    }
}

/// A channelled receive response's two ends.
pub fn response(polling: bool) -> (Receiver, ResponseBody) {
    let (tx, rx) = mpsc::channel(BODY_CAPACITY);
    let abort = CancellationToken::new();
    (Receiver { sink: Sink::Lines { lines: tx, abort: abort.clone() }, polling }, ResponseBody { lines: rx, abort })
}

impl Receiver {
    /// A stream served on the connection's socket: `socket` delivers it once the handler has
    /// returned (within `deadline`), and `head` goes out before the first line. The body is
    /// close-delimited: it ends by closing the socket. `hold` is dropped with the socket.
    pub fn socket(
        socket: oneshot::Receiver<RawStream>,
        head: Vec<u8>,
        deadline: Duration,
        hold: impl Send + 'static,
    ) -> Receiver {
        let state = SocketState::Awaited { socket, head, deadline };
        Receiver { sink: Sink::Socket(Socket { state, ignored: 0, _hold: Box::new(hold) }), polling: false }
    }

    /// Makes the response ready for lines: a socket response waits for its socket and writes its
    /// head. False when it never will be.
    pub(super) async fn ready(&mut self) -> bool {
        let Sink::Socket(socket) = &mut self.sink else { return true };
        if let SocketState::Awaited { .. } = socket.state {
            let SocketState::Awaited { socket: arriving, head, deadline } =
                std::mem::replace(&mut socket.state, SocketState::Lost)
            else {
                return false;
            };
            let opened = tokio::time::timeout(deadline, async {
                // No socket: the connection went away before hyper let go of it.
                let mut io = arriving.await.map_err(|_| io::Error::from(io::ErrorKind::NotConnected))?;
                io.write_all(&head).await?;
                io.flush().await?;
                Ok::<_, io::Error>(io)
            })
            .await;
            if let Ok(Ok(io)) = opened {
                socket.state = SocketState::Open(io);
            }
        }
        matches!(socket.state, SocketState::Open(_))
    }

    /// Writes one line; false when the client is gone (a channel's body dropped, a socket failed
    /// or not [`Receiver::ready`]). Not bounded in time here: the driver races it against its
    /// slow-consumer limits. It does not wait for the socket itself, so that the future the driver
    /// holds while it writes stays small.
    pub(super) async fn send(&mut self, line: Bytes) -> bool {
        match &mut self.sink {
            Sink::Lines { lines, .. } => lines.send(line).await.is_ok(),
            Sink::Socket(socket) => {
                let SocketState::Open(io) = &mut socket.state else { return false };
                let written = async { io.write_all(&line).await.and(io.flush().await) };
                if written.await.is_ok() {
                    return true;
                }
                socket.state = SocketState::Lost;
                false
            }
        }
    }

    /// Resolves when the client went away: its body was dropped, or its socket reached its end
    /// (read here, so a dead stream detaches at once rather than at its next write). Whatever a
    /// stream's client sends is dropped, up to a limit.
    pub(super) async fn gone(&mut self) {
        match &mut self.sink {
            Sink::Lines { lines, .. } => lines.closed().await,
            Sink::Socket(socket) => {
                let SocketState::Open(io) = &mut socket.state else { return };
                loop {
                    match read_some(io).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            socket.ignored += n;
                            if socket.ignored > MAX_IGNORED_INPUT {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Cuts a response whose client stopped reading: a channelled body fails, a socket is closed
    /// as it is, unwritten bytes and all.
    pub(super) fn cut(self) {
        if let Sink::Lines { abort, .. } = self.sink {
            abort.cancel();
        }
    }

    /// Ends the response in order: a socket is shut down (its last bytes, and a TLS close, leave
    /// within [`SHUTDOWN_GRACE`]); a channelled body ends when its sender is dropped.
    pub(super) async fn finish(self) {
        if let Sink::Socket(Socket { state: SocketState::Open(mut io), .. }) = self.sink {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, io.shutdown()).await;
        }
    }

    /// Ends a response that a newer one replaced, without holding up its driver.
    pub(super) fn finish_aside(self) {
        if let Sink::Socket(Socket { state: SocketState::Open(_), .. }) = &self.sink {
            tokio::spawn(self.finish());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_socket_response_writes_its_head_then_its_lines_and_finishes_with_an_end() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let (tx, rx) = oneshot::channel();
        let mut receiver = Receiver::socket(rx, b"HEAD\r\n".to_vec(), Duration::from_secs(5), ());
        assert!(tx.send(Box::new(ours)).is_ok());
        assert!(!receiver.send(Bytes::from_static(b"early\n")).await, "no line before the head");
        assert!(receiver.ready().await);
        assert!(receiver.send(Bytes::from_static(b"o\n")).await);
        assert!(receiver.send(Bytes::from_static(b"h\n")).await);
        receiver.finish().await;
        let mut seen = String::new();
        peer.read_to_string(&mut seen).await.unwrap();
        assert_eq!(seen, "HEAD\r\no\nh\n");
    }

    #[tokio::test]
    async fn a_socket_that_never_arrives_is_not_ready_and_takes_no_lines() {
        let (tx, rx) = oneshot::channel::<RawStream>();
        let mut receiver = Receiver::socket(rx, b"HEAD\r\n".to_vec(), Duration::from_secs(5), ());
        drop(tx);
        assert!(!receiver.ready().await);
        assert!(!receiver.send(Bytes::from_static(b"o\n")).await);
    }

    #[tokio::test]
    async fn a_socket_response_is_gone_when_its_client_closes_and_ignores_what_it_sends() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let (tx, rx) = oneshot::channel();
        let mut receiver = Receiver::socket(rx, Vec::new(), Duration::from_secs(5), ());
        assert!(tx.send(Box::new(ours)).is_ok());
        assert!(receiver.ready().await);
        peer.write_all(b"stray bytes").await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(100), receiver.gone()).await;
        assert!(early.is_err(), "a client that sends a little is still there");
        drop(peer);
        tokio::time::timeout(Duration::from_secs(5), receiver.gone()).await.expect("gone once the client closes");
    }
}
