//! Whether a channel is occupied anywhere in the cluster, so `channel_occupied` and
//! `channel_vacated` are sent once per cluster, not once per node.

use super::state::RedisState;
use crate::cluster::ClusterResult;

impl RedisState {
    /// This node now holds the channel; true when no node held it before.
    pub(super) async fn occupy_as(&self, app_id: &str, channel: &str) -> ClusterResult<bool> {
        let [holders, counts] = self.shared.keys.occupancy(app_id);
        let mut call = self.scripts.occupy.key(holders);
        call.key(counts).arg(channel).arg(self.shared.node);
        let first: i64 = self.shared.invoke("occupy", &call).await?;
        self.node_record(true, self.shared.keys.node_occupancy(self.shared.node), format!("{app_id}\t{channel}"))
            .await?;
        Ok(first == 1)
    }

    /// `node` (this one, or a dead one) no longer holds the channel; true when no node does.
    pub(super) async fn vacate_as(&self, node: u32, app_id: &str, channel: &str) -> ClusterResult<bool> {
        let [holders, counts] = self.shared.keys.occupancy(app_id);
        let mut call = self.scripts.vacate.key(holders);
        call.key(counts).arg(channel).arg(node);
        let last: i64 = self.shared.invoke("vacate", &call).await?;
        self.node_record(false, self.shared.keys.node_occupancy(node), format!("{app_id}\t{channel}")).await?;
        Ok(last == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::ClusterState;

    #[tokio::test]
    async fn first_holder_occupies_and_last_holder_vacates() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        assert_eq!(a.occupied("1", "orders").await, Ok(true));
        assert_eq!(b.occupied("1", "orders").await, Ok(false), "already occupied through node 1");
        assert_eq!(a.occupied("1", "orders").await, Ok(false), "occupying again changes nothing");
        assert_eq!(a.vacated("1", "orders").await, Ok(false), "node 2 still holds it");
        assert_eq!(b.vacated("1", "orders").await, Ok(true));
        assert_eq!(b.vacated("1", "orders").await, Ok(false), "vacating twice is a no-op");
        assert_eq!(a.occupied("1", "other-app-channel").await, Ok(true), "channels are independent");
    }
}
