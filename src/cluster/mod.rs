//! The cluster layer: how one node reaches the others. Two seams, as in centrifuge's
//! `Broker` / `PresenceManager`:
//!
//! - a [`Broker`] carries [`Record`]s (broadcasts, "terminate this user") to every other node. The
//!   hub always delivers to its own sockets first, then hands the record to the broker, so a single
//!   node needs no broker at all ([`memory::MemoryBroker`] does nothing).
//! - a [`ClusterState`] answers what no single node knows: presence members, whether a channel is
//!   occupied anywhere, subscription and connection counts, which nodes are alive. Every question
//!   can fail: when the store cannot be read, callers get a [`ClusterError`] instead of a guess, and
//!   the HTTP API answers 503 rather than 200 with partial data.
//!
//! [`memory`] is the single-process implementation (the default); [`redis`] spreads a deployment
//! over Redis pub/sub and Lua-kept hashes. A new backend is one folder beside `redis/` providing
//! both traits and a `start` that returns a [`Cluster`].

pub mod history;
pub mod memory;
mod memory_claims;
mod memory_history;
mod memory_presence;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

use crate::protocol::presence::MemberData;
use crate::protocol::{Channel, Frame, SocketId};

pub use memory_presence::{Join, Member};

/// Where the cluster keeps who is signed in (the watchlists' online users): a presence list no
/// client can name, so a Redis store keeps it, rewrites it after a loss and reaps a dead node's
/// users with the machinery every presence channel has.
pub const ONLINE_USERS: &str = "#online";

/// What a broadcast is, so no layer has to look inside the frame's JSON to find out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastKind {
    /// An application event (HTTP API, dashboard): the one a cache channel keeps.
    Event,
    /// Server bookkeeping (`pusher_internal:member_added` and the like).
    Internal,
    /// A `client-*` event relayed from a connection (or a plain endpoint message).
    ClientEvent,
}

/// One message for every subscriber of a channel, on every node.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub app_id: String,
    pub channel: Channel,
    pub kind: BroadcastKind,
    /// The complete message, serialised once.
    pub frame: Frame,
    /// A socket that must not receive it (the publisher's own, for `socket_id` exclusion).
    pub except: Option<SocketId>,
}

/// What travels from one node to the others.
#[derive(Debug, Clone)]
pub enum Record {
    Broadcast(Broadcast),
    /// Close a signed-in user's connections (the HTTP API's `terminate_connections`).
    Terminate {
        app_id: String,
        user_id: String,
    },
}

/// The cluster's shared state could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster state unavailable: {0}")]
    Unavailable(String),
}

pub type ClusterResult<T> = Result<T, ClusterError>;

/// An occupied channel as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub name: String,
    pub subscriptions: usize,
    /// Presence members (0 for other kinds).
    pub users: usize,
}

/// What a node offers the cluster layer: delivery to its own sockets and its own counts.
pub trait LocalNode: Send + Sync + 'static {
    /// Delivers to this node's subscribers; returns how many sockets the frame was queued for.
    fn deliver(&self, broadcast: &Broadcast) -> usize;
    /// Closes this node's connections of a signed-in user; returns how many.
    fn terminate_user(&self, app_id: &str, user_id: &str) -> usize;
    /// This node's subscriber count for a channel.
    fn subscription_count(&self, app_id: &str, channel: &str) -> usize;
    /// This node's occupied, listed channels of an app: (name, subscriptions).
    fn channels(&self, app_id: &str) -> Vec<(String, usize)>;
    /// This node's open connections of an app.
    fn connection_count(&self, app_id: &str) -> usize;
    /// Apps that have any state on this node.
    fn app_ids(&self) -> Vec<String>;
}

/// Carries records to the other nodes. Incoming records are delivered to the [`LocalNode`] the
/// broker was started with.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends a record to every other node. Returns once it is queued, in order, for sending.
    async fn publish(&self, record: Record) -> ClusterResult<()>;
    /// False while records cannot reach the other nodes.
    fn healthy(&self) -> bool;
}

/// Presence, occupancy, counts and node liveness across the cluster.
#[async_trait]
pub trait ClusterState: Send + Sync + 'static {
    /// A user's first socket on this node joined a presence channel. `Join::Joined { first }` says
    /// whether the user is new to the whole cluster (then `member_added` is announced).
    async fn presence_join(&self, app_id: &str, channel: &str, member: &MemberData, max: usize) -> ClusterResult<Join>;
    /// A user's last socket on this node left; true when the user is gone from the whole cluster.
    async fn presence_leave(&self, app_id: &str, channel: &str, user_id: &str) -> ClusterResult<bool>;
    /// Presence members of a channel across the cluster, each once, sorted by id.
    async fn members(&self, app_id: &str, channel: &str) -> ClusterResult<Vec<Member>>;
    /// The channel got its first subscriber on this node; true when it is the first in the cluster
    /// (`channel_occupied` is then sent, once per cluster).
    async fn occupied(&self, app_id: &str, channel: &str) -> ClusterResult<bool>;
    /// The channel lost its last subscriber on this node; true when no node has one left.
    async fn vacated(&self, app_id: &str, channel: &str) -> ClusterResult<bool>;
    /// Subscribers of a channel across the cluster.
    async fn subscription_count(&self, app_id: &str, channel: &str) -> ClusterResult<usize>;
    /// Occupied channels of an app across the cluster.
    async fn channels(&self, app_id: &str) -> ClusterResult<Vec<ChannelCounts>>;
    /// Open connections of an app across the cluster.
    async fn connection_count(&self, app_id: &str) -> ClusterResult<usize>;
    /// A channel's subscriber count on this node changed by `delta`.
    async fn subscription_changed(&self, app_id: &str, channel: &str, delta: i64) -> ClusterResult<()>;
    /// An app's connection count on this node changed by `delta`.
    async fn connection_changed(&self, app_id: &str, delta: i64) -> ClusterResult<()>;
    /// A user's first signed-in connection on this node; true when the user was signed in
    /// nowhere in the cluster before (its watchers are then told it is online).
    async fn user_online(&self, app_id: &str, user_id: &str) -> ClusterResult<bool>;
    /// A user's last signed-in connection on this node closed; true when none is left anywhere.
    async fn user_offline(&self, app_id: &str, user_id: &str) -> ClusterResult<bool>;
    /// Which of `user_ids` are signed in somewhere in the cluster, in the same order.
    async fn users_online(&self, app_id: &str, user_ids: &[String]) -> ClusterResult<Vec<bool>>;
    /// Keeps the last event of a cache channel for [`crate::hub::registry::CACHE_TTL`], where
    /// every node finds it (the single-process state keeps nothing: the registry's cache is it).
    async fn cache_event(&self, app_id: &str, channel: &str, frame: &Frame) -> ClusterResult<()>;
    /// The last event of a cache channel kept by any node, with how long it stays fresh.
    async fn cached_event(&self, app_id: &str, channel: &str) -> ClusterResult<Option<(Frame, std::time::Duration)>>;
    /// Claims `key` for at least `ttl`: true for the first claim in the whole cluster, false for
    /// every later one (a single-use SSE ticket redeemed twice, on this node or another).
    async fn claim_once(&self, key: &str, ttl: std::time::Duration) -> ClusterResult<bool>;
    /// False while the state cannot be trusted (unreachable, or not yet rewritten after a loss).
    fn healthy(&self) -> bool;
    /// Changes noticed without any local socket (a dead node's members and channels), for the hub
    /// to announce. Taken once.
    fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<ClusterEvent>>;
    /// This node holds the HTTP fallback session `session` and serves it at `url`, for `ttl` (each
    /// receive request it serves renews it), so other nodes relay that session's requests here.
    async fn hold_http_session(&self, session: &str, url: &str, ttl: std::time::Duration) -> ClusterResult<()>;
    /// The URL of the node holding the HTTP fallback session `session`, if any node does.
    async fn http_session_holder(&self, session: &str) -> ClusterResult<Option<String>>;
}

/// Something the cluster noticed that no local socket did: a dead node's member or channel gone,
/// or, once Redis is back, a member this node holds that the rest of the cluster had lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    MemberGone {
        app_id: String,
        channel: String,
        user_id: String,
    },
    MemberBack {
        app_id: String,
        channel: String,
        member: crate::protocol::presence::MemberData,
    },
    /// This node's state was rewritten after Redis was away: its own clients may have missed
    /// members meanwhile (a join served locally lists only the joiner).
    Resynced,
    ChannelGone {
        app_id: String,
        channel: String,
    },
}

/// The two halves a hub is given, built where the server is assembled.
#[derive(Clone)]
pub struct Cluster {
    pub broker: Arc<dyn Broker>,
    pub state: Arc<dyn ClusterState>,
    pub history: Arc<dyn history::History>,
}

impl Cluster {
    /// One process, no peers.
    pub fn memory(local: Arc<dyn LocalNode>) -> Cluster {
        Cluster {
            broker: Arc::new(memory::MemoryBroker),
            state: Arc::new(memory::MemoryState::new(local)),
            history: Arc::new(memory_history::MemoryHistory::new()),
        }
    }

    /// Whether records reach the other nodes and the shared state can be trusted.
    pub fn healthy(&self) -> bool {
        self.broker.healthy() && self.state.healthy()
    }
}
