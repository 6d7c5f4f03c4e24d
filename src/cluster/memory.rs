//! The single-process cluster: no peers to reach, and the node's own counts are the cluster's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::memory_claims::MemoryClaims;
use super::memory_presence::MemoryPresence;
use super::{Broker, ChannelCounts, ClusterEvent, ClusterResult, ClusterState, Join, LocalNode, Member, Record};
use crate::protocol::presence::MemberData;
use crate::protocol::Frame;
use std::time::Duration;

/// Nothing to send: the hub has already delivered to the only node there is.
pub struct MemoryBroker;

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, _record: Record) -> ClusterResult<()> {
        Ok(())
    }

    fn healthy(&self) -> bool {
        true
    }
}

/// Presence in memory; counts read from the node itself.
pub struct MemoryState {
    local: Arc<dyn LocalNode>,
    presence: MemoryPresence,
    claims: MemoryClaims,
    /// Signed-in users as (app, user): the hub reports only a user's first and last connection.
    online: Mutex<HashSet<(String, String)>>,
}

impl MemoryState {
    pub fn new(local: Arc<dyn LocalNode>) -> Self {
        MemoryState {
            local,
            presence: MemoryPresence::default(),
            claims: MemoryClaims::default(),
            online: Mutex::default(),
        }
    }
}

#[async_trait]
impl ClusterState for MemoryState {
    async fn presence_join(&self, app_id: &str, channel: &str, member: &MemberData, max: usize) -> ClusterResult<Join> {
        Ok(self.presence.join(app_id, channel, member, max))
    }

    async fn presence_leave(&self, app_id: &str, channel: &str, user_id: &str) -> ClusterResult<bool> {
        Ok(self.presence.leave(app_id, channel, user_id))
    }

    async fn members(&self, app_id: &str, channel: &str) -> ClusterResult<Vec<Member>> {
        Ok(self.presence.members(app_id, channel))
    }

    async fn occupied(&self, _app_id: &str, _channel: &str) -> ClusterResult<bool> {
        Ok(true)
    }

    async fn vacated(&self, _app_id: &str, _channel: &str) -> ClusterResult<bool> {
        Ok(true)
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> ClusterResult<usize> {
        Ok(self.local.subscription_count(app_id, channel))
    }

    async fn channels(&self, app_id: &str) -> ClusterResult<Vec<ChannelCounts>> {
        let users = self.presence.counts(app_id);
        Ok(self
            .local
            .channels(app_id)
            .into_iter()
            .map(|(name, subscriptions)| {
                let users = users.get(&name).copied().unwrap_or(0);
                ChannelCounts { name, subscriptions, users }
            })
            .collect())
    }

    async fn connection_count(&self, app_id: &str) -> ClusterResult<usize> {
        Ok(self.local.connection_count(app_id))
    }

    async fn subscription_changed(&self, _app_id: &str, _channel: &str, _delta: i64) -> ClusterResult<()> {
        Ok(())
    }

    async fn connection_changed(&self, _app_id: &str, _delta: i64) -> ClusterResult<()> {
        Ok(())
    }

    async fn user_online(&self, app_id: &str, user_id: &str) -> ClusterResult<bool> {
        Ok(self.online.lock().map(|mut o| o.insert((app_id.to_owned(), user_id.to_owned()))).unwrap_or(true))
    }

    async fn user_offline(&self, app_id: &str, user_id: &str) -> ClusterResult<bool> {
        Ok(self.online.lock().map(|mut o| o.remove(&(app_id.to_owned(), user_id.to_owned()))).unwrap_or(true))
    }

    async fn users_online(&self, app_id: &str, user_ids: &[String]) -> ClusterResult<Vec<bool>> {
        let online = self.online.lock().map_err(|_| super::ClusterError::Unavailable("poisoned".into()))?;
        Ok(user_ids.iter().map(|u| online.contains(&(app_id.to_owned(), u.clone()))).collect())
    }

    async fn cache_event(&self, _app_id: &str, _channel: &str, _frame: &Frame) -> ClusterResult<()> {
        Ok(())
    }

    async fn cached_event(&self, _app_id: &str, _channel: &str) -> ClusterResult<Option<(Frame, Duration)>> {
        Ok(None)
    }

    async fn claim_once(&self, key: &str, ttl: std::time::Duration) -> ClusterResult<bool> {
        self.claims.claim(key, ttl)
    }

    fn healthy(&self) -> bool {
        true
    }

    fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<ClusterEvent>> {
        None
    }

    /// One node: every session is this node's.
    async fn hold_http_session(&self, _session: &str, _url: &str, _ttl: std::time::Duration) -> ClusterResult<()> {
        Ok(())
    }

    async fn http_session_holder(&self, _session: &str) -> ClusterResult<Option<String>> {
        Ok(None)
    }
}
