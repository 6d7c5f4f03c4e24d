//! [`EchoSession`]: the WebSocket conformance endpoint (`[server] echo_path`, off by default).
//!
//! Every message goes back as it came, through the same queue, writer and limits as the Pusher
//! endpoint, so that the Autobahn TestSuite exercises the code real clients use.

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug_span;

use super::{Liveness, Opened, Session};
use crate::hub::{Hub, Outbound};
use crate::protocol::{Frame, SocketId};

/// Long enough never to interfere with a conformance run.
const ECHO_PING_INTERVAL: Duration = Duration::from_secs(3600);

pub struct EchoSession {
    socket_id: SocketId,
    out: Outbound,
}

impl EchoSession {
    /// Echo connections belong to no app and count against no quota.
    pub fn open(hub: &Hub, max_outbound_buffer: usize) -> Opened<EchoSession> {
        let socket_id = hub.next_socket_id();
        let (out, rx) = Outbound::new(socket_id, max_outbound_buffer);
        Ok((EchoSession { socket_id, out }, rx))
    }
}

impl Session for EchoSession {
    async fn on_text(&mut self, text: String) -> Option<super::Exit> {
        if let Some(frame) = Frame::from_text_bytes(text.into_bytes().into()) {
            self.out.push(frame);
        }
        None
    }

    async fn on_binary(&mut self, data: Vec<u8>) -> Option<super::Exit> {
        self.out.push_binary(data.into());
        None
    }

    fn out(&self) -> &Outbound {
        &self.out
    }

    fn liveness(&self, now: Instant) -> Liveness {
        Liveness::with_intervals(now, ECHO_PING_INTERVAL, ECHO_PING_INTERVAL)
    }

    fn span(&self) -> tracing::Span {
        debug_span!("echo", socket_id = %self.socket_id)
    }

    async fn close(&mut self, _exit: &super::Exit) {}
}
