//! The WebSocket transport: RFC 6455 framing owned by Herald.
//!
//! Why not a WebSocket crate here: measured, the codec state and read/write buffers a general
//! WebSocket library keeps per connection were the largest part of an idle connection's memory, and
//! its write path copied every broadcast frame into each subscriber's buffer. This layer keeps no
//! buffer while a socket is idle and writes a batch of shared frames with one `writev`. The HTTP
//! handshake stays with hyper (`server::websocket`); clients and tools still use tungstenite.
//!
//! [`codec`] is pure (bytes in, messages out) and unit-tested frame by frame; [`socket`] adds the
//! I/O; [`deflate`] is permessage-deflate (RFC 7692), negotiated per connection and compressed
//! once per broadcast. The Autobahn TestSuite runs against it in the test command.

pub mod codec;
pub mod deflate;
pub mod socket;

pub use codec::{Message, OpCode, ReadError};
pub use deflate::Deflate;
pub use socket::{WebSocket, WireFrame};
