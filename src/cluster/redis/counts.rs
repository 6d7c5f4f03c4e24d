//! Subscription and connection counts: each node keeps its own in Redis hashes, and a
//! cluster-wide count is the sum over the live nodes.

use std::collections::HashMap;

use super::keys::Keys;
use super::state::RedisState;
use crate::cluster::{ChannelCounts, ClusterResult};
use crate::protocol::ChannelKind;

impl RedisState {
    pub(super) async fn add_subscriptions(&self, app_id: &str, channel: &str, delta: i64) -> ClusterResult<()> {
        let mut call = self.scripts.count_delta.key(self.shared.keys.subscriptions(app_id, self.shared.node));
        call.arg(channel).arg(delta);
        self.shared.invoke::<i64>("subscription count", &call).await.map(drop)
    }

    pub(super) async fn add_connections(&self, app_id: &str, delta: i64) -> ClusterResult<()> {
        let cmd =
            redis::cmd("HINCRBY").arg(self.shared.keys.connections(self.shared.node)).arg(app_id).arg(delta).clone();
        self.shared.query::<i64>("connection count", &cmd).await.map(drop)
    }

    /// The sum of one field of a per-node hash over the live nodes.
    pub(super) async fn sum_over_nodes(
        &self,
        key_of: impl Fn(&Keys, u32) -> String,
        field: &str,
    ) -> ClusterResult<usize> {
        let mut total = 0;
        for node in self.live_nodes().await? {
            let cmd = redis::cmd("HGET").arg(key_of(&self.shared.keys, node)).arg(field).clone();
            let n: Option<i64> = self.shared.query("count", &cmd).await?;
            total += n.unwrap_or(0).max(0) as usize;
        }
        Ok(total)
    }

    /// An app's occupied channels over the live nodes, with presence member counts.
    pub(super) async fn channel_counts(&self, app_id: &str) -> ClusterResult<Vec<ChannelCounts>> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for node in self.live_nodes().await? {
            let cmd = redis::cmd("HGETALL").arg(self.shared.keys.subscriptions(app_id, node)).clone();
            let list: Vec<(String, i64)> = self.shared.query("channels", &cmd).await?;
            for (channel, n) in list {
                *counts.entry(channel).or_default() += n.max(0) as usize;
            }
        }
        let mut out = Vec::with_capacity(counts.len());
        for (name, subscriptions) in counts.into_iter().filter(|(_, n)| *n > 0) {
            let users = if ChannelKind::of(&name) == ChannelKind::Presence {
                self.member_count(app_id, &name).await?
            } else {
                0
            };
            out.push(ChannelCounts { name, subscriptions, users });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::{ChannelCounts, ClusterState};

    #[tokio::test]
    async fn counts_are_summed_over_live_nodes() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        a.heartbeat().await;
        b.heartbeat().await;
        a.subscription_changed("1", "orders", 2).await.unwrap();
        b.subscription_changed("1", "orders", 1).await.unwrap();
        b.subscription_changed("1", "presence-r", 1).await.unwrap();
        a.connection_changed("1", 3).await.unwrap();
        b.connection_changed("1", 1).await.unwrap();
        assert_eq!(a.subscription_count("1", "orders").await, Ok(3));
        assert_eq!(a.connection_count("1").await, Ok(4));
        let channels = b.channels("1").await.unwrap();
        assert_eq!(
            channels,
            vec![
                ChannelCounts { name: "orders".into(), subscriptions: 3, users: 0 },
                ChannelCounts { name: "presence-r".into(), subscriptions: 1, users: 0 },
            ]
        );
        b.subscription_changed("1", "orders", -1).await.unwrap();
        assert_eq!(a.subscription_count("1", "orders").await, Ok(2));
        b.subscription_changed("1", "orders", -5).await.unwrap();
        assert_eq!(a.subscription_count("1", "orders").await, Ok(2), "a count never goes below zero");
    }
}
