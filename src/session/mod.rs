//! Sessions: what a client's messages mean, whatever carries them.
//!
//! A session is the protocol half of a connection: subscriptions, presence, client events,
//! sign-in, limits and liveness, written against two things only: the text messages its transport
//! hands it, and the connection's [`Outbound`] queue, into which it puts every frame it sends (the
//! one bounded, coalescing queue that broadcasts also fill). It ends by returning an [`Exit`],
//! which its transport turns into that transport's way of closing.
//!
//! The transport interface is therefore small: create the session (its `open` refuses with an
//! `Exit`), call [`Session::on_text`] / [`Session::on_binary`] for each message, drain the
//! [`OutboundReceiver`] onto the wire, keep time with the session's [`Liveness`], and call
//! [`Session::close`] once at the end. The WebSocket transport (`crate::connection`) is the first;
//! an HTTP transport is another file beside it, driving the same sessions.
//!
//! Four kinds: [`PusherSession`] (the Pusher protocol), [`PlainSession`] (the plain endpoint: one
//! room, JSON messages, JWT auth), [`EchoSession`] (the conformance echo endpoint) and
//! [`SseSession`] (a listener on the Server-Sent Events endpoint: no inbound messages).

mod echo;
mod liveness;
mod plain;
mod pusher;
mod sse;
mod subscriptions;

use std::future::Future;

use tokio::time::Instant;

use crate::hub::{Outbound, OutboundReceiver};
use crate::protocol::ErrorCode;

pub use echo::EchoSession;
pub use liveness::Liveness;
pub use plain::{PlainHandshake, PlainSession, PLAIN_AUTH_DEADLINE};
pub use pusher::{PusherHandshake, PusherSession};
pub use sse::{SseHandshake, SseSession, MAX_SSE_CHANNELS};

/// How a session (or its transport) ends a connection.
#[derive(Debug)]
pub enum Exit {
    /// The peer closed or the transport failed: nothing more to say.
    Gone,
    /// Send `pusher:error` with the code, then close with the same code.
    Pusher(ErrorCode, String),
    /// Close with an RFC 6455 code (1002 protocol violation, 1007 invalid UTF-8, 1009 too big).
    Protocol(u16, &'static str),
    /// Close with 1008 (policy violation): the plain endpoint's refusals.
    Policy(&'static str),
}

/// A session that was accepted: the session, and the receiving end of its queue for the transport.
pub type Opened<T> = Result<(T, OutboundReceiver), Exit>;

/// The protocol half of a connection (see the module documentation).
pub trait Session: Send + 'static {
    /// One text message from the client; `Some` ends the connection.
    fn on_text(&mut self, text: String) -> impl Future<Output = Option<Exit>> + Send;
    /// One binary message from the client; `Some` ends the connection.
    fn on_binary(&mut self, data: Vec<u8>) -> impl Future<Output = Option<Exit>> + Send;
    /// The queue this session sends on (transports queue their control answers there too).
    fn out(&self) -> &Outbound;
    /// The liveness timer the transport keeps for this session, starting `now`.
    fn liveness(&self, now: Instant) -> Liveness;
    /// What the logs call this connection.
    fn span(&self) -> tracing::Span;
    /// Leaves every channel and lets go of what the session counted. Called once, whatever ended it.
    fn close(&mut self, exit: &Exit) -> impl Future<Output = ()> + Send;
}
