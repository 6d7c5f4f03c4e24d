//! A socket its HTTP server has let go of (see `crate::server`'s takeover): the streaming
//! transports write on it directly, with no HTTP machinery in between. Defined here, below the
//! server, because the transports that own such a socket live in this layer.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A taken socket, plain or TLS.
pub type RawStream = Box<dyn RawIo>;

/// What a taken socket can do.
pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> RawIo for T {}

/// Reads what the client sends (nothing, normally) into a buffer that lives only during the poll,
/// so an idle stream holds none: `Ok(0)` is the client leaving.
pub async fn read_some<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut buf = [0u8; 512];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
