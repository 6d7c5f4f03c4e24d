//! The HTTP transport: pusher-js's `xhr_streaming` and `xhr_polling` fallbacks, for networks where
//! WebSocket does not get through.
//!
//! A WebSocket is one socket for one session; here a session outlives every request that carries
//! it. So each session is a task of its own (the [`driver`]), owning the [`PusherSession`] and its
//! outbound queue exactly as a WebSocket connection task does, and requests are messages to it:
//! - a *receive* request (`xhr_streaming`, or `xhr` for polling) attaches its response (the
//!   [`receiver`]), which the driver fills with `o` / `a[...]` / `h` / `c[...]` lines (streaming:
//!   until the client reopens it; polling: one batch, or a heartbeat, then the response ends). A
//!   held stream is its socket, taken from hyper and written by the driver itself: a held
//!   `xhr_streaming` session is one task, as a WebSocket connection is;
//! - an `xhr_send` request hands the driver the client's messages, in order (the [`inbox`]).
//!
//! The [`HttpSessions`] table finds a session by app key and its client-chosen
//! `{server}/{session}` path. A session nobody receives for `http_session_timeout_ms` expires and
//! ends like a closed socket (its channels, presence membership and webhooks). Every session holds
//! a connection permit, so the server's connection caps (total and per address) bound them too.

mod driver;
mod inbox;
mod receiver;

use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::session::{PusherHandshake, PusherSession};
use inbox::{Inbox, Refused};
pub use receiver::{response, Receiver};

/// Requests a session may have queued and not yet handled (each `xhr_send` is one).
const COMMAND_CAPACITY: usize = 32;

/// What a request asks of a session's driver.
enum Command {
    /// The messages of one `xhr_send`, in order.
    Send(Vec<String>),
    /// A receive request's response.
    Attach(Receiver),
}

/// Why a request could not reach its session.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    /// No such session here (never opened, expired or closed).
    Unknown,
    /// The session has more unhandled requests than [`COMMAND_CAPACITY`].
    Busy,
}

/// The requests' way to a live session.
struct Handle {
    commands: Inbox<Command>,
    /// When the cluster was last told this node holds the session (see [`HttpSessions::renewal_due`]).
    renewed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Which session: the app key and the client's `{server}/{session}`.
type SessionKey = Box<str>;

fn session_key(app_key: &str, session_path: &str) -> SessionKey {
    format!("{app_key}/{session_path}").into_boxed_str()
}

/// Every HTTP session this node holds.
pub struct HttpSessions {
    sessions: DashMap<SessionKey, Arc<Handle>>,
    timeout: Duration,
    max_outbound_buffer: usize,
}

/// What opening a session needs besides the client's handshake: the shutdown signal, and a value
/// held until the session ends (the server's connection permit and open-socket count).
pub struct SessionContext<G> {
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    pub hold: G,
}

impl HttpSessions {
    pub fn new(timeout: Duration, max_outbound_buffer: usize) -> Arc<HttpSessions> {
        Arc::new(HttpSessions { sessions: DashMap::new(), timeout, max_outbound_buffer })
    }

    /// Open sessions (a gauge).
    pub fn count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the cluster should be told again that this node holds the session (at most once
    /// per `every`), so that its record outlives it while it is in use without a write per request.
    pub fn renewal_due(&self, app_key: &str, session_path: &str, every: Duration) -> bool {
        let Some(handle) = self.sessions.get(&session_key(app_key, session_path)).map(|h| h.clone()) else {
            return false;
        };
        let mut renewed_at = handle.renewed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        if renewed_at.is_some_and(|at| now.duration_since(at) < every) {
            return false;
        }
        *renewed_at = Some(now);
        true
    }

    /// Hands `messages` to a session, in order.
    pub fn send(&self, app_key: &str, session_path: &str, messages: Vec<String>) -> Result<(), SessionError> {
        let handle = self.sessions.get(&session_key(app_key, session_path)).map(|h| h.clone());
        let handle = handle.ok_or(SessionError::Unknown)?;
        handle.commands.try_send(Command::Send(messages)).map_err(|e| match e {
            Refused::Full(_) => SessionError::Busy,
            Refused::Closed(_) => SessionError::Unknown,
        })
    }

    /// Attaches a receive response to a session that exists; gives the response back when there is
    /// none (or it just ended).
    pub fn attach(&self, app_key: &str, session_path: &str, receiver: Receiver) -> Result<(), Receiver> {
        let Some(handle) = self.sessions.get(&session_key(app_key, session_path)).map(|h| h.clone()) else {
            return Err(receiver);
        };
        handle.commands.try_send(Command::Attach(receiver)).map_err(|refused| match refused.into_inner() {
            Command::Attach(receiver) => receiver,
            Command::Send(_) => unreachable!("an attach gives back its own receiver"),
        })
    }

    /// Opens a session for its first receive request and attaches that request to it. A refused
    /// session (unknown key, Origin, protocol, quota) answers the request with `o`, the error and
    /// `c[code,...]`, as a WebSocket is answered with its error and close code.
    pub async fn open<G: Send + 'static>(
        self: &Arc<Self>,
        session_path: &str,
        handshake: PusherHandshake,
        receiver: Receiver,
        context: SessionContext<G>,
    ) {
        let key = session_key(&handshake.app_key, session_path);
        let opened = PusherSession::open(context.hub, handshake, self.max_outbound_buffer).await;
        let (session, rx) = match opened {
            Ok(opened) => opened,
            Err(exit) => return driver::refuse(receiver, exit).await,
        };
        let handle =
            Arc::new(Handle { commands: Inbox::new(COMMAND_CAPACITY), renewed_at: std::sync::Mutex::new(None) });
        // Two first requests for one new session (pusher-js never sends them): the later one's
        // session is closed at once (its inbox is closed before its driver starts), and its
        // request joins the session that won.
        let registered = match self.sessions.entry(key.clone()) {
            Entry::Vacant(slot) => {
                slot.insert(handle.clone());
                let _ = handle.commands.try_send(Command::Attach(receiver));
                true
            }
            Entry::Occupied(winner) => {
                let _ = winner.get().commands.try_send(Command::Attach(receiver));
                handle.commands.close();
                false
            }
        };
        let sessions = self.clone();
        let driver = Box::new(driver::Driver::new(session, rx, handle.clone(), self.timeout));
        tokio::spawn(async move {
            let _hold = context.hold;
            driver.serve(context.shutdown).await;
            if registered {
                sessions.sessions.remove_if(&key, |_, h| Arc::ptr_eq(h, &handle));
            }
            handle.commands.close();
        });
    }
}
