//! Single-use claims across the cluster: one `SET key 1 NX PX ttl`, atomic on a single key (so it
//! also runs on a Redis Cluster), won by whichever node asks first; the key expires by itself.

use std::time::Duration;

use super::state::RedisState;
use crate::cluster::ClusterResult;

impl RedisState {
    /// True when this call set the key, false when it was already there.
    pub(super) async fn claim(&self, key: &str, ttl: Duration) -> ClusterResult<bool> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = redis::cmd("SET").arg(self.shared.keys.claim(key)).arg(1).arg("NX").arg("PX").arg(millis).clone();
        let set: Option<String> = self.shared.query("single-use claim", &cmd).await?;
        Ok(set.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::ClusterState;

    #[tokio::test]
    async fn a_key_is_claimed_once_across_nodes_until_it_expires() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        let minute = Duration::from_secs(60);
        assert_eq!(a.claim_once("app:ticket-1", minute).await, Ok(true));
        assert_eq!(b.claim_once("app:ticket-1", minute).await, Ok(false), "claimed on the other node");
        assert_eq!(a.claim_once("app:ticket-1", minute).await, Ok(false));
        assert_eq!(b.claim_once("app:ticket-2", Duration::from_millis(50)).await, Ok(true));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(a.claim_once("app:ticket-2", minute).await, Ok(true), "expired in Redis");
        // Another deployment sharing the Redis has claims of its own.
        let other = state_on(&redis, 3, "other").await;
        assert_eq!(other.claim_once("app:ticket-1", minute).await, Ok(true));
        // A stalled Redis is an error within the command deadline, not a claim.
        redis.pause();
        assert!(a.claim_once("app:ticket-3", minute).await.is_err());
        redis.resume();
    }
}
