//! Keeping a connection alive, or finding out that it is dead.
//!
//! One deadline per connection, re-armed only when it fires: activity just stamps a time, so a busy
//! connection costs no timer operations and an idle one wakes once per `ping_interval`. When the
//! client has been silent for `ping_interval` the server sends `pusher:ping` and a WebSocket ping
//! (for clients that only answer control frames); silence for `activity_timeout` more closes it
//! with 4201.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::AppConfig;
use crate::hub::Outbound;
use crate::protocol::{ErrorCode, Frame};

pub struct Liveness {
    last_activity: Instant,
    ping_sent_at: Option<Instant>,
    ping_interval: Duration,
    pong_timeout: Duration,
    /// Plain clients get WebSocket pings only (no `pusher:ping` JSON).
    websocket_only: bool,
}

impl Liveness {
    /// The app's `ping_interval` and `activity_timeout`.
    pub fn new(now: Instant, app: &AppConfig) -> Self {
        Self::with_intervals(now, Duration::from_secs(app.ping_interval), Duration::from_secs(app.activity_timeout))
    }

    pub fn with_intervals(now: Instant, ping_interval: Duration, pong_timeout: Duration) -> Self {
        Liveness { last_activity: now, ping_sent_at: None, ping_interval, pong_timeout, websocket_only: false }
    }

    /// How long a pinged client has to answer (the app's `activity_timeout`).
    pub fn pong_timeout(&self) -> Duration {
        self.pong_timeout
    }

    pub fn websocket_pings_only(mut self) -> Self {
        self.websocket_only = true;
        self
    }

    /// Any frame from the client counts.
    pub fn saw_activity(&mut self, now: Instant) {
        self.last_activity = now;
        self.ping_sent_at = None;
    }

    /// When the timer should next look.
    pub fn next_check(&self) -> Instant {
        match self.ping_sent_at {
            Some(sent) => sent + self.pong_timeout,
            None => self.last_activity + self.ping_interval,
        }
    }

    /// The timer fired: ping an idle client, or give up on one that did not answer.
    pub fn on_timer(&mut self, now: Instant, out: &Outbound) -> Result<(), ErrorCode> {
        if let Some(sent) = self.ping_sent_at {
            if now >= sent + self.pong_timeout {
                return Err(ErrorCode::PongNotReceived);
            }
            return Ok(());
        }
        if now >= self.last_activity + self.ping_interval {
            if !self.websocket_only {
                out.push(Frame::ping());
            }
            out.ping();
            self.ping_sent_at = Some(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SocketId;

    #[tokio::test]
    async fn pings_when_idle_then_gives_up() {
        let mut app = AppConfig::new("1", "k", "s");
        app.ping_interval = 10;
        app.activity_timeout = 5;
        let (out, _rx) = Outbound::new(SocketId { node: 1, seq: 1 }, 1 << 20);
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, &app);
        assert_eq!(l.next_check(), t0 + Duration::from_secs(10));
        assert_eq!(l.on_timer(t0 + Duration::from_secs(3), &out), Ok(()), "early wake-up does nothing");
        assert_eq!(l.on_timer(t0 + Duration::from_secs(10), &out), Ok(()));
        assert_eq!(l.next_check(), t0 + Duration::from_secs(15));
        assert_eq!(l.on_timer(t0 + Duration::from_secs(15), &out), Err(ErrorCode::PongNotReceived));

        let mut l = Liveness::new(t0, &app);
        l.on_timer(t0 + Duration::from_secs(10), &out).unwrap();
        l.saw_activity(t0 + Duration::from_secs(12));
        assert_eq!(l.next_check(), t0 + Duration::from_secs(22), "an answer re-arms the idle timer");
        assert_eq!(l.on_timer(t0 + Duration::from_secs(15), &out), Ok(()));
    }
}
