//! Taking a connection's socket back from hyper after a request was routed, for a response that
//! outlives HTTP: an SSE stream, or an `xhr_streaming` response, is written by its session's own
//! task on the raw socket.
//!
//! hyper hands a socket back only for a `101` upgrade, and an event stream is a `200`. So every
//! connection's stream is wrapped in a [`Detachable`] before hyper gets it, and each request carries
//! a [`Takeover`] handle. A handler that wants the socket [`Takeover::prepare`]s a receiver, and
//! [`Takeover::arm`]s it as its last step: at its next read or write (writing the handler's
//! placeholder answer), hyper's I/O hands the stream over and from then on reads an end of input
//! and swallows writes, so hyper finishes the connection quietly and frees its buffers.
//!
//! Checking costs one relaxed atomic load per read or write; nothing is locked unless a handover was
//! asked for.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

pub use crate::connection::raw::{RawIo, RawStream};

#[derive(Default)]
struct Slot {
    armed: AtomicBool,
    sender: Mutex<Option<oneshot::Sender<RawStream>>>,
}

/// A request's handle on its connection's socket (a request extension).
#[derive(Clone)]
pub struct Takeover(Arc<Slot>);

impl Takeover {
    /// The receiver the socket will arrive on once [`Takeover::arm`] is called. It fails if the
    /// connection goes away first.
    pub fn prepare(&self) -> oneshot::Receiver<RawStream> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut sender) = self.0.sender.lock() {
            *sender = Some(tx);
        }
        rx
    }

    /// Asks for the socket: hyper's next read or write hands it over. Call it right before
    /// returning the (never written) response.
    pub fn arm(&self) {
        self.0.armed.store(true, Ordering::Release);
    }
}

/// A connection's stream as hyper sees it, until a handler takes it.
pub struct Detachable<S> {
    inner: Option<S>,
    slot: Arc<Slot>,
}

impl<S: RawIo> Detachable<S> {
    pub fn new(inner: S) -> (Detachable<S>, Takeover) {
        let slot = Arc::new(Slot::default());
        (Detachable { inner: Some(inner), slot: slot.clone() }, Takeover(slot))
    }

    /// The stream, unless it was taken (for the WebSocket upgrade, which gets it from hyper).
    pub fn into_inner(self) -> Option<S> {
        self.inner
    }

    /// The stream to use now: `None` once handed over (or when this call hands it over).
    fn stream(&mut self) -> Option<&mut S> {
        if self.inner.is_some() && self.slot.armed.load(Ordering::Acquire) {
            let sender = self.slot.sender.lock().ok().and_then(|mut s| s.take());
            if let (Some(sender), Some(stream)) = (sender, self.inner.take()) {
                // A receiver already gone means the handler's task ended: the socket just closes.
                let _ = sender.send(Box::new(stream));
            }
        }
        self.inner.as_mut()
    }
}

impl<S: RawIo> AsyncRead for Detachable<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Some(stream) => Pin::new(stream).poll_read(cx, buf),
            // The end of input: hyper reads no further request.
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: RawIo> AsyncWrite for Detachable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.stream() {
            Some(stream) => Pin::new(stream).poll_write(cx, buf),
            // hyper's placeholder answer goes nowhere: the new owner writes the real one.
            None => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Some(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_stream_moves_to_the_taker_at_the_next_io_and_hyper_sees_an_end() {
        let (ours, mut peer) = tokio::io::duplex(64);
        let (mut wrapped, takeover) = Detachable::new(ours);
        wrapped.write_all(b"before ").await.unwrap();
        let rx = takeover.prepare();
        wrapped.write_all(b"still hyper's ").await.unwrap();
        takeover.arm();
        wrapped.write_all(b"swallowed").await.unwrap();
        let mut taken = rx.await.expect("handed over");
        let mut buf = [0u8; 8];
        assert_eq!(wrapped.read(&mut buf).await.unwrap(), 0, "hyper reads an end of input");
        taken.write_all(b"by the taker").await.unwrap();
        drop(taken);
        drop(wrapped);
        let mut seen = String::new();
        peer.read_to_string(&mut seen).await.unwrap();
        assert_eq!(seen, "before still hyper's by the taker");
    }

    #[tokio::test]
    async fn an_unarmed_takeover_changes_nothing_and_its_receiver_fails_when_the_connection_ends() {
        let (ours, mut peer) = tokio::io::duplex(64);
        let (mut wrapped, takeover) = Detachable::new(ours);
        let rx = takeover.prepare();
        wrapped.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).await.unwrap();
        assert!(wrapped.into_inner().is_some());
        drop(takeover);
        assert!(rx.await.is_err());
    }
}
