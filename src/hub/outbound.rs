//! A connection's outbound queue, bounded in bytes.
//!
//! The hub pushes shared frames without blocking and without waiting for any socket: a push is an
//! atomic add and a queue insert. When a client stops reading and its queue passes the byte limit,
//! further frames are refused and the connection is told to close as a slow consumer (4100), so one
//! slow reader can neither grow the server's memory nor hold up anyone else's delivery.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::protocol::{Frame, SocketId};

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Frame),
    /// A binary message (only the conformance echo endpoint sends these).
    Binary(bytes::Bytes),
    /// A WebSocket ping control frame (for clients that only answer those).
    Ping,
    /// Send `pusher:error` with this code and close the socket with it.
    Close {
        code: crate::protocol::ErrorCode,
        message: String,
    },
}

struct Shared {
    socket_id: SocketId,
    queued_bytes: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    /// Wakes a writer stuck on a socket that does not drain, so it can drop the client at once.
    kill: Notify,
}

/// The hub's handle on a connection: cheap to clone, safe to push to from any thread.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

/// The connection's end of the queue.
pub struct OutboundReceiver {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
}

impl Outbound {
    /// A queue for `socket_id` holding at most `limit` bytes of frames.
    pub fn new(socket_id: SocketId, limit: usize) -> (Outbound, OutboundReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            socket_id,
            queued_bytes: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            kill: Notify::new(),
        });
        (Outbound { tx, shared: shared.clone() }, OutboundReceiver { rx, shared })
    }

    pub fn socket_id(&self) -> SocketId {
        self.shared.socket_id
    }

    /// Queues a frame. Returns false when it was refused: the connection is gone or over its limit.
    pub fn push(&self, frame: Frame) -> bool {
        let len = frame.len();
        self.push_counted(len, Outgoing::Frame(frame))
    }

    /// Queues a binary message, counted against the same byte limit.
    pub fn push_binary(&self, data: bytes::Bytes) -> bool {
        self.push_counted(data.len(), Outgoing::Binary(data))
    }

    fn push_counted(&self, len: usize, item: Outgoing) -> bool {
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.shared.limit {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
                self.shared.kill.notify_one();
            }
            return false;
        }
        if self.tx.send(item).is_err() {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Asks the connection to send `pusher:error` with `code` and close (e.g. terminate_connections).
    pub fn close(&self, code: crate::protocol::ErrorCode, message: impl Into<String>) {
        let _ = self.tx.send(Outgoing::Close { code, message: message.into() });
    }
}

/// Resolves when a connection's queue has overflowed (see [`OutboundReceiver::overflow_signal`]).
#[derive(Clone)]
pub struct OverflowSignal(Arc<Shared>);

impl OverflowSignal {
    pub async fn wait(&self) {
        loop {
            let notified = self.0.kill.notified();
            if self.0.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Outbound {
    /// Queues a WebSocket ping control frame.
    pub fn ping(&self) {
        let _ = self.tx.send(Outgoing::Ping);
    }
}

impl OutboundReceiver {
    /// Waits for at least one item and takes up to `max` (for one coalesced write). 0 when closed.
    pub async fn recv_many(&mut self, into: &mut Vec<Outgoing>, max: usize) -> usize {
        self.rx.recv_many(into, max).await
    }

    /// Records that `bytes` of frames left the queue (were handed to the socket).
    pub fn sent(&self, bytes: usize) {
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether a push was refused because the client fell too far behind.
    pub fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// A handle that resolves once the queue overflows, usable while the receiver is borrowed.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.shared.clone())
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::event("e", "c", &"x".repeat(n))
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_flags_overflow() {
        let one = frame(100);
        let (out, mut rx) = Outbound::new(SocketId { node: 1, seq: 1 }, one.len() * 3);
        assert!(out.push(one.clone()) && out.push(one.clone()) && out.push(one.clone()));
        assert!(!rx.overflowed());
        assert!(!out.push(one.clone()), "the fourth frame exceeds the limit");
        assert!(rx.overflowed());
        rx.overflow_signal().wait().await; // must not hang once overflowed
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 10).await, 3);
        rx.sent(one.len() * 3);
        assert_eq!(rx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn push_after_the_connection_is_gone_is_refused() {
        let (out, rx) = Outbound::new(SocketId { node: 1, seq: 2 }, 1 << 20);
        drop(rx);
        assert!(!out.push(frame(1)));
    }
}
