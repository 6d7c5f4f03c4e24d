//! After Redis comes back (it may have lost everything, or only missed some writes): rewrite this
//! node's counts, presence members and occupied channels. Idempotent, so a blip changes nothing.

use super::state::RedisState;

impl RedisState {
    /// Rewrites what this node contributes; true when every write went through.
    pub(super) async fn resync(&self) -> bool {
        let keys = &self.shared.keys;
        let commands = &self.shared.commands;
        let node = self.shared.node;
        let mut ok = self.heartbeat().await;
        let mut app_ids = self.local.app_ids();
        for app in self.apps.list() {
            if !app_ids.contains(&app.id) {
                app_ids.push(app.id.clone());
            }
        }
        for app_id in &app_ids {
            let key = keys.subscriptions(app_id, node);
            ok &= commands.query::<i64>(redis::cmd("DEL").arg(&key)).await.is_ok();
            for (channel, count) in self.local.channels(app_id) {
                ok &= commands.query::<i64>(redis::cmd("HSET").arg(&key).arg(channel).arg(count)).await.is_ok();
            }
            let conns = self.local.connection_count(app_id);
            ok &= commands
                .query::<i64>(redis::cmd("HSET").arg(keys.connections(node)).arg(app_id).arg(conns))
                .await
                .is_ok();
        }
        let joined: Vec<_> = self.joined.lock().map(|j| j.clone().into_iter().collect()).unwrap_or_default();
        for ((app_id, channel, user_id), info) in joined {
            let member =
                crate::protocol::presence::MemberData { user_id, user_info: (!info.is_empty()).then_some(info) };
            ok &= self.join_as(&app_id, &channel, &member, usize::MAX, false).await.is_ok();
        }
        let occupied: Vec<_> = self.occupied_here.lock().map(|o| o.iter().cloned().collect()).unwrap_or_default();
        for (app_id, channel) in occupied {
            ok &= self.occupy_as(&app_id, &channel).await.is_ok();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::ClusterState;
    use crate::protocol::presence::MemberData;

    #[tokio::test]
    async fn a_flushed_redis_gets_this_nodes_members_and_channels_back() {
        let redis = TestRedis::start();
        let a = state_on(&redis, 1, "t").await;
        let ann = MemberData { user_id: "ann".into(), user_info: Some("{}".into()) };
        a.presence_join("1", "presence-r", &ann, 10).await.unwrap();
        a.occupied("1", "presence-r").await.unwrap();
        let commands = redis.commands().await;
        commands.query::<String>(&redis::cmd("FLUSHALL")).await.unwrap();
        assert_eq!(a.members("1", "presence-r").await, Ok(vec![]), "Redis lost everything");
        assert!(a.resync().await);
        assert_eq!(a.members("1", "presence-r").await, Ok(vec![("ann".into(), Some("{}".into()))]));
        assert_eq!(a.occupied("1", "presence-r").await, Ok(false), "its channel is occupied again");
        assert!(a.resync().await, "idempotent");
        assert_eq!(a.members("1", "presence-r").await.map(|m| m.len()), Ok(1));
    }
}
