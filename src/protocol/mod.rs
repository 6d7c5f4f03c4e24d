//! The Pusher protocol as pure data: messages, channel names, signatures and error codes.
//!
//! Nothing in here does I/O or knows about tokio, so every rule of the wire format can be unit-tested
//! with plain values (and fuzzed). The layers above turn bytes from sockets and HTTP requests into
//! these types and back.

pub mod channel;
pub mod error;
pub mod frame;
pub mod http_fallback;
pub mod message;
pub mod origin;
pub mod plain;
pub mod position;
pub mod presence;
pub mod signature;
pub mod socket_id;
pub mod sse;
pub mod sse_auth;
pub mod token;

pub use channel::{Channel, ChannelKind, ChannelName};
pub use error::ErrorCode;
pub use frame::Frame;
pub use message::{ClientMessage, ProtocolError};
pub use socket_id::SocketId;
