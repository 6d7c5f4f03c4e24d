//! Adapters: how a hub reaches its peers.
//!
//! A hub never delivers a publish to its own sockets directly: it hands the message to its adapter,
//! which delivers it to every node of the deployment, this one included. [`LocalAdapter`] is the
//! single-process case and simply calls back into this node; a Redis adapter publishes on Redis and
//! each node's subscriber loop calls back into its own node. Cluster-wide questions (how many
//! subscribers, which channels are occupied) are answered here for the same reason.

mod local;
pub mod presence;
pub mod redis;

use async_trait::async_trait;

use crate::protocol::{Frame, SocketId};

pub use local::LocalAdapter;
pub use presence::{Join, Member};

use crate::protocol::presence::MemberData;

/// One message for every subscriber of a channel, on every node.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub app_id: String,
    pub channel: String,
    /// The complete message, serialised once.
    pub frame: Frame,
    /// A socket that must not receive it (the publisher's own, for `socket_id` exclusion).
    pub except: Option<SocketId>,
}

/// What a node offers its adapter: local delivery and local counts.
pub trait LocalNode: Send + Sync + 'static {
    /// Delivers to this node's subscribers; returns how many sockets the frame was queued for.
    fn deliver(&self, broadcast: &Broadcast) -> usize;
    /// This node's subscriber count for a channel.
    fn subscription_count(&self, app_id: &str, channel: &str) -> usize;
    /// This node's occupied channels of an app: (name, subscriptions).
    fn channels(&self, app_id: &str) -> Vec<(String, usize)>;
    /// This node's open connections of an app.
    fn connection_count(&self, app_id: &str) -> usize;
    /// Closes this node's connections of a signed-in user; returns how many.
    fn terminate_user(&self, app_id: &str, user_id: &str) -> usize;
}

/// The cluster as a hub sees it.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Delivers a broadcast on every node. Returns the number of local deliveries (for metrics).
    async fn publish(&self, broadcast: Broadcast) -> usize;
    /// Subscribers of a channel across the cluster.
    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize;
    /// A user's first socket on this node joined a presence channel. `Join::Joined { first }` says
    /// whether the user is new to the whole cluster (then `member_added` is announced).
    async fn presence_join(&self, app_id: &str, channel: &str, member: &MemberData, max_members: usize) -> Join;
    /// A user's last socket on this node left; true when the user is gone from the whole cluster.
    async fn presence_leave(&self, app_id: &str, channel: &str, user_id: &str) -> bool;
    /// Presence members of a channel across the cluster, each once, with their `user_info`.
    async fn members(&self, app_id: &str, channel: &str) -> Vec<Member>;
    /// The channel got its first subscriber on this node; true when it is the first in the cluster
    /// (`channel_occupied` is then sent, once per cluster).
    async fn occupied(&self, app_id: &str, channel: &str) -> bool;
    /// The channel lost its last subscriber on this node; true when no node has one left.
    async fn vacated(&self, app_id: &str, channel: &str) -> bool;
    /// Occupied channels across the cluster: (name, subscriptions, presence members).
    async fn channels(&self, app_id: &str) -> Vec<(String, usize, usize)>;
    /// Open connections of an app across the cluster.
    async fn connection_count(&self, app_id: &str) -> usize;
    /// Closes a signed-in user's connections on every node.
    async fn terminate_user(&self, app_id: &str, user_id: &str);

    /// A channel's subscriber count on this node changed by `delta`.
    async fn subscription_changed(&self, _app_id: &str, _channel: &str, _delta: i64) {}
    /// An app's connection count on this node changed by `delta`.
    async fn connection_changed(&self, _app_id: &str, _delta: i64) {}
    /// False while the cluster cannot be reached (this node then serves its own sockets only).
    fn healthy(&self) -> bool {
        true
    }
    /// Changes the adapter noticed by itself (a dead node's members and channels), for the hub to
    /// announce. Taken once.
    fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<ClusterEvent>> {
        None
    }
}

/// Something the cluster noticed that no local socket did: a dead node's member or channel gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    MemberGone { app_id: String, channel: String, user_id: String },
    ChannelGone { app_id: String, channel: String },
}
