//! Cache channels across nodes: the last event of each cache channel is kept in Redis with the
//! cache's TTL, so a node that has not seen it (started later, or away while it was published)
//! replays it, and a `cache_miss` is a miss for the whole cluster.

use std::time::Duration;

use bytes::Bytes;

use super::state::RedisState;
use crate::cluster::ClusterResult;
use crate::hub::registry::CACHE_TTL;
use crate::protocol::Frame;

impl RedisState {
    /// Keeps `frame` as the channel's last event for the cache's TTL.
    pub(super) async fn keep_cached(&self, app_id: &str, channel: &str, frame: &Frame) -> ClusterResult<()> {
        let cmd = redis::cmd("SET")
            .arg(self.shared.keys.cache(app_id, channel))
            .arg(frame.as_bytes())
            .arg("PX")
            .arg(CACHE_TTL.as_millis() as u64)
            .clone();
        self.shared.query::<()>("cache event", &cmd).await
    }

    /// The channel's last event, if any node kept one still fresh, with how long it stays so.
    pub(super) async fn read_cached(&self, app_id: &str, channel: &str) -> ClusterResult<Option<(Frame, Duration)>> {
        let key = self.shared.keys.cache(app_id, channel);
        let bytes: Option<Vec<u8>> = self.shared.query("cached event", redis::cmd("GET").arg(&key)).await?;
        let Some(bytes) = bytes else { return Ok(None) };
        let ttl: i64 = self.shared.query("cached event ttl", redis::cmd("PTTL").arg(&key)).await?;
        // Gone between the two reads (-2), or kept with no expiry by hand (-1): as Redis says.
        let fresh_for = match ttl {
            -2 => return Ok(None),
            t if t < 0 => CACHE_TTL,
            t => Duration::from_millis(t as u64).min(CACHE_TTL),
        };
        // Anything that is not a frame this server wrote is ignored, not replayed.
        Ok(Frame::from_text_bytes(Bytes::from(bytes)).map(|frame| (frame, fresh_for)))
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::ClusterState;
    use crate::protocol::Frame;

    #[tokio::test]
    async fn one_nodes_last_event_is_every_nodes() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        assert!(b.cached_event("1", "cache-x").await.unwrap().is_none());
        a.cache_event("1", "cache-x", &Frame::event("e", "cache-x", "1")).await.unwrap();
        a.cache_event("1", "cache-x", &Frame::event("e", "cache-x", "2")).await.unwrap();
        let (frame, fresh_for) = b.cached_event("1", "cache-x").await.unwrap().unwrap();
        assert_eq!(frame.as_str(), Frame::event("e", "cache-x", "2").as_str(), "the last one");
        assert!(fresh_for > std::time::Duration::from_secs(29 * 60), "{fresh_for:?}");
        assert!(b.cached_event("2", "cache-x").await.unwrap().is_none(), "apps are apart");
    }
}
