//! A socket its HTTP server has let go of (see `crate::server`'s takeover): the streaming
//! transports write on it directly, with no HTTP machinery in between. Defined here, below the
//! server, because the transports that own such a socket live in this layer.

use tokio::io::{AsyncRead, AsyncWrite};

/// A taken socket, plain or TLS.
pub type RawStream = Box<dyn RawIo>;

/// What a taken socket can do.
pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> RawIo for T {}
