//! The [`History`] seam: channels that keep their recent events, with a position each, so a
//! client that was away can be given what it missed.
//!
//! History is cluster state: a position must mean the same on every node, so it is assigned once,
//! before the event fans out anywhere, by whoever keeps the history (a single node's memory ring,
//! or Redis Streams in a cluster), and travels with the event. Only channels an app's
//! `[[apps.history]]` rule names keep one; every other publish never reaches this seam.
//!
//! The resume rule is the same everywhere: a reader that gives position `P` gets the events after
//! `P` when everything after `P` is still kept (`floor <= P <= head`, where the floor is the newest
//! position the channel has forgotten, or where its history began); otherwise it is told to
//! *reset*: it missed events nobody can give it (trimmed by size or TTL, or lost with a node's
//! memory or a Redis restart), so it reloads.

use async_trait::async_trait;

use super::{Broadcast, ClusterResult};
use crate::config::HistoryRule;
use crate::protocol::position::Position;
use crate::protocol::Frame;

/// Most events one read returns.
pub const MAX_READ: usize = 1000;

/// What became of a broadcast handed to [`History::append`].
pub enum Appended {
    /// Kept (its frame now carries its position; or not kept, when a cap or an outage refused it):
    /// the caller delivers it here and hands it to the broker as any broadcast.
    Deliver(Broadcast),
    /// The cluster took it: it is kept and delivered on every node, this one included.
    Sent,
}

/// One read of a channel's history.
#[derive(Debug, Default)]
pub struct Replay {
    /// Oldest first, at most the asked limit; each frame has its [`Frame::history`] position.
    /// After `since`, or, without one (and on a reset), the newest kept.
    pub events: Vec<Frame>,
    /// `since` is outside what is kept: events after it are lost to this reader.
    pub reset: bool,
    /// The channel's newest position (its floor when it keeps nothing): a reader that has
    /// everything is here.
    pub head: Position,
    /// The limit cut the read: more events follow the last one returned.
    pub more: bool,
}

#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Keeps an event of a history channel (its `rule`) and gives it its position.
    async fn append(&self, broadcast: Broadcast, rule: &HistoryRule) -> Appended;
    /// The channel's events after `since` (`None`: the newest), at most `limit` (0 reads only
    /// the head).
    async fn read(
        &self,
        app_id: &str,
        channel: &str,
        rule: &HistoryRule,
        since: Option<Position>,
        limit: usize,
    ) -> ClusterResult<Replay>;
}
