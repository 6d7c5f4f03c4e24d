//! The single-process adapter: the cluster is this node.

use std::sync::Arc;

use async_trait::async_trait;

use super::presence::{Join, Member, MemoryPresence};
use super::{Adapter, Broadcast, LocalNode};
use crate::protocol::presence::MemberData;

pub struct LocalAdapter {
    node: Arc<dyn LocalNode>,
    presence: MemoryPresence,
}

impl LocalAdapter {
    pub fn new(node: Arc<dyn LocalNode>) -> Self {
        LocalAdapter { node, presence: MemoryPresence::default() }
    }
}

#[async_trait]
impl Adapter for LocalAdapter {
    async fn publish(&self, broadcast: Broadcast) -> usize {
        self.node.deliver(&broadcast)
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.node.subscription_count(app_id, channel)
    }

    async fn presence_join(&self, app_id: &str, channel: &str, member: &MemberData, max_members: usize) -> Join {
        self.presence.join(app_id, channel, member, max_members)
    }

    async fn presence_leave(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        self.presence.leave(app_id, channel, user_id)
    }

    async fn members(&self, app_id: &str, channel: &str) -> Vec<Member> {
        self.presence.members(app_id, channel)
    }

    async fn occupied(&self, _app_id: &str, _channel: &str) -> bool {
        true
    }

    async fn vacated(&self, _app_id: &str, _channel: &str) -> bool {
        true
    }

    async fn channels(&self, app_id: &str) -> Vec<(String, usize, usize)> {
        let users = self.presence.counts(app_id);
        self.node
            .channels(app_id)
            .into_iter()
            .map(|(name, subscriptions)| {
                let members = users.get(&name).copied().unwrap_or(0);
                (name, subscriptions, members)
            })
            .collect()
    }

    async fn connection_count(&self, app_id: &str) -> usize {
        self.node.connection_count(app_id)
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.node.terminate_user(app_id, user_id);
    }
}
