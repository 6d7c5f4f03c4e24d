//! Resuming history channels: what a reconnecting client missed, replayed before its live events.
//!
//! The order is what makes the seam exact: the channel's head is read *before* subscribing (where a
//! fresh reader starts), the subscription then queues live events, the history is read *after* it,
//! and the replay is spliced into the queue before the channel's live events, dropping those the
//! replay already holds ([`Outbound::splice_replay`]). An event published at any moment is so
//! either replayed or live, never both, never neither.
//!
//! Each resumed channel first gets `herald:position` (where the client now is; the missed events
//! follow) or `herald:reset` (what it asked for is gone: it reloads, and live events follow).

use tracing::debug;

use super::{Hub, Outbound};
use crate::config::HistoryRule;
use crate::protocol::position::Position;
use crate::protocol::Frame;

/// One history channel a session is about to subscribe to, and where its reader starts.
pub struct ResumeFrom {
    channel: String,
    rule: HistoryRule,
    since: Position,
    /// The client named the position (a reconnect), rather than starting at the head.
    given: bool,
}

impl Hub {
    /// Before subscribing to `channel`: `None` when it keeps no history, else where its reader
    /// starts: the client's position `given` (a reconnect), or the channel's head now. With the
    /// cluster away, a fresh reader starts at nothing and a reconnect is told to reset.
    pub async fn resume_from(&self, app_id: &str, channel: &str, given: Option<Position>) -> Option<ResumeFrom> {
        let rule = self.history_rule(app_id, channel)?;
        let (since, given) = match given {
            Some(p) => (p, true),
            None => match self.history(app_id, channel, &rule, None, 0).await {
                Ok(replay) => (replay.head, false),
                Err(e) => {
                    debug!(error = %e, "history head unknown: starting live");
                    (Position::ZERO, true)
                }
            },
        };
        Some(ResumeFrom { channel: channel.to_owned(), rule, since, given })
    }

    /// After subscribing: queues the channel's marker and what was missed, before its live events.
    pub async fn resume(&self, app_id: &str, from: ResumeFrom, out: &Outbound) {
        let ResumeFrom { channel, rule, since, given } = from;
        let replay = self.history(app_id, &channel, &rule, Some(since), rule.size).await;
        let (reset, head) = match &replay {
            Ok(r) => (r.reset || r.more, r.head),
            Err(_) => (true, since),
        };
        if let (false, Ok(replay)) = (reset, replay) {
            let last = replay.events.last().and_then(|f| f.history()).map(|(_, p)| p);
            // A fresh reader's floor is only what it is replayed: a cache channel's last event,
            // queued at subscribe, is still its to get.
            let floor = if given { Some(last.unwrap_or(since)) } else { last };
            let mut frames = Vec::with_capacity(replay.events.len() + 1);
            frames.push(Frame::history_marker(false, &channel, since));
            frames.extend(replay.events);
            if out.splice_replay(&channel, frames, floor) {
                return;
            }
            debug!(channel, "replay does not fit the queue: reset instead");
        }
        out.splice_replay(&channel, vec![Frame::history_marker(true, &channel, head)], None);
    }
}
