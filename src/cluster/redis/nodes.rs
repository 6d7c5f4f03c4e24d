//! Node liveness: heartbeats into a sorted set, and the reaper that removes what a dead node held.
//!
//! The heartbeat is also how a node notices that Redis works again after a failed command (a
//! timeout does not drop the subscription): a successful heartbeat on a degraded node rewrites
//! its state and clears the degraded flag. And how it notices it was taken for dead: a Redis
//! stalled longer than the node timeout, or a network cut, makes the others reap a node that is
//! alive; its heartbeat then finds its entry gone, and it rewrites (and re-announces) its state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::info;

use super::state::RedisState;
use crate::cluster::{ClusterEvent, ClusterResult};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl RedisState {
    /// Records that this node is alive; false when Redis did not take it.
    pub(super) async fn heartbeat(&self) -> bool {
        self.beat().await.is_some()
    }

    /// A heartbeat: `Some(true)` when this node had no entry (it was reaped, or Redis is new),
    /// `None` when Redis did not take it.
    async fn beat(&self) -> Option<bool> {
        let cmd = redis::cmd("ZADD").arg(self.shared.keys.nodes()).arg(now_ms()).arg(self.shared.node).clone();
        match self.shared.commands.query::<i64>(&cmd).await {
            Ok(added) => Some(added == 1),
            Err(e) => {
                self.shared.failed("heartbeat", &e);
                None
            }
        }
    }

    /// Nodes whose heartbeat is recent (this one included).
    pub(super) async fn live_nodes(&self) -> ClusterResult<Vec<u32>> {
        let since = now_ms() - self.shared.settings.node_timeout.as_millis() as i64;
        let cmd = redis::cmd("ZRANGEBYSCORE").arg(self.shared.keys.nodes()).arg(since).arg("+inf").clone();
        let list: Vec<String> = self.shared.query("live nodes", &cmd).await?;
        let mut nodes: Vec<u32> = list.iter().filter_map(|n| n.parse().ok()).collect();
        if !nodes.contains(&self.shared.node) {
            nodes.push(self.shared.node);
        }
        Ok(nodes)
    }

    /// Heartbeats, recovers from failed commands, and reaps dead nodes, forever.
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let every = (self.shared.settings.node_timeout / 5).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    /// One round of the heartbeat loop.
    pub(super) async fn tick(&self) {
        let beat = self.beat().await;
        let health = &self.shared.health;
        if beat == Some(true) {
            // Reaped while alive: the cluster dropped this node's members and counts.
            info!("this node was taken for dead (its heartbeat was late): rewriting its state");
            health.commands_ok.store(false, Ordering::Release);
        }
        if beat.is_some() && !health.commands_ok.load(Ordering::Acquire) && health.subscribed.load(Ordering::Acquire) {
            info!("Redis answers again: rewriting this node's state");
            self.resync().await;
        }
        if beat.is_some() {
            self.reap_dead_nodes().await;
        }
    }

    /// Finds nodes whose heartbeat stopped and removes what they held, once (a lock per dead node).
    pub(super) async fn reap_dead_nodes(&self) {
        let before = now_ms() - self.shared.settings.node_timeout.as_millis() as i64;
        let cmd = redis::cmd("ZRANGEBYSCORE").arg(self.shared.keys.nodes()).arg("-inf").arg(before).clone();
        let Ok(dead) = self.shared.commands.query::<Vec<String>>(&cmd).await else { return };
        for node in dead.iter().filter_map(|n| n.parse::<u32>().ok()).filter(|n| *n != self.shared.node) {
            let lock = redis::cmd("SET")
                .arg(self.shared.keys.reap_lock(node))
                .arg(self.shared.node)
                .arg("NX")
                .arg("PX")
                .arg(self.shared.settings.node_timeout.as_millis() as u64)
                .clone();
            if !matches!(self.shared.commands.query::<Option<String>>(&lock).await, Ok(Some(_))) {
                continue;
            }
            info!(node, "reaping a node whose heartbeat stopped");
            if let Err(e) = self.reap(node).await {
                tracing::warn!(node, error = %e, "reaping stopped early; another node will retry");
            }
        }
    }

    /// Removes a dead node's members (announced as gone), channels, counts and heartbeat.
    async fn reap(&self, dead: u32) -> ClusterResult<()> {
        let keys = &self.shared.keys;
        let members: Vec<String> =
            self.shared.query("reap members", redis::cmd("SMEMBERS").arg(keys.node_presence(dead))).await?;
        for entry in members {
            let mut parts = entry.splitn(3, '\t');
            let (Some(app_id), Some(channel), Some(user_id)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if self.leave_as(dead, app_id, channel, user_id).await? {
                let _ = self.events_tx.try_send(ClusterEvent::MemberGone {
                    app_id: app_id.into(),
                    channel: channel.into(),
                    user_id: user_id.into(),
                });
            }
        }
        let occupied: Vec<String> =
            self.shared.query("reap channels", redis::cmd("SMEMBERS").arg(keys.node_occupancy(dead))).await?;
        for entry in occupied {
            let Some((app_id, channel)) = entry.split_once('\t') else { continue };
            if self.vacate_as(dead, app_id, channel).await? {
                let _ = self
                    .events_tx
                    .try_send(ClusterEvent::ChannelGone { app_id: app_id.into(), channel: channel.into() });
            }
        }
        let mut dead_keys = vec![keys.node_presence(dead), keys.node_occupancy(dead), keys.connections(dead)];
        dead_keys.extend(self.apps.list().iter().map(|app| keys.subscriptions(&app.id, dead)));
        // One DEL per key: on a Redis Cluster the keys live in different slots.
        for key in dead_keys {
            let _ = self.shared.commands.query::<i64>(redis::cmd("DEL").arg(key)).await;
        }
        let _ = self.shared.commands.query::<i64>(redis::cmd("ZREM").arg(keys.nodes()).arg(dead)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::{ClusterEvent, ClusterState, Join};
    use crate::protocol::presence::MemberData;

    #[tokio::test]
    async fn a_dead_nodes_members_and_channels_are_reaped_and_announced() {
        let redis = TestRedis::start();
        let (alive, dead) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        let mut events = alive.take_events().unwrap();
        assert!(dead.heartbeat().await);
        let ann = MemberData { user_id: "ann".into(), user_info: None };
        assert!(matches!(dead.presence_join("1", "presence-r", &ann, 10).await, Ok(Join::Joined { first: true, .. })));
        dead.occupied("1", "presence-r").await.unwrap();
        dead.subscription_changed("1", "presence-r", 1).await.unwrap();
        assert!(alive.heartbeat().await);
        assert_eq!(
            alive.live_nodes().await.map(|mut n| {
                n.sort();
                n
            }),
            Ok(vec![1, 2])
        );

        // Node 2 stops heartbeating; after the node timeout (500 ms here) node 1 reaps it.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert!(alive.heartbeat().await);
        alive.reap_dead_nodes().await;
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        assert_eq!(
            seen,
            vec![
                ClusterEvent::MemberGone { app_id: "1".into(), channel: "presence-r".into(), user_id: "ann".into() },
                ClusterEvent::ChannelGone { app_id: "1".into(), channel: "presence-r".into() },
            ]
        );
        assert_eq!(alive.members("1", "presence-r").await, Ok(vec![]));
        assert_eq!(alive.subscription_count("1", "presence-r").await, Ok(0));
        assert_eq!(alive.live_nodes().await, Ok(vec![1]));
        assert_eq!(alive.occupied("1", "presence-r").await, Ok(true), "the channel is free to be occupied again");
    }

    #[tokio::test]
    async fn a_node_taken_for_dead_while_alive_rewrites_and_reannounces_its_members() {
        let redis = TestRedis::start();
        let (alive, late) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        let mut late_events = late.take_events().unwrap();
        let ann = MemberData { user_id: "ann".into(), user_info: None };
        assert!(late.heartbeat().await);
        late.presence_join("1", "presence-r", &ann, 10).await.unwrap();
        // Node 2's heartbeat is late (a stalled Redis, a network cut): node 1 reaps it.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert!(alive.heartbeat().await);
        alive.reap_dead_nodes().await;
        assert_eq!(alive.members("1", "presence-r").await, Ok(vec![]));
        assert!(late.healthy(), "node 2 saw no error: only its heartbeat can tell it was reaped");

        late.tick().await;
        assert_eq!(alive.members("1", "presence-r").await, Ok(vec![("ann".into(), None)]), "written back");
        let back = ClusterEvent::MemberBack { app_id: "1".into(), channel: "presence-r".into(), member: ann };
        let seen: Vec<_> = std::iter::from_fn(|| late_events.try_recv().ok()).collect();
        assert_eq!(seen, vec![back, ClusterEvent::Resynced]);
        assert!(late.healthy());
        late.tick().await;
        assert!(late_events.try_recv().is_err(), "a timely heartbeat changes nothing");
    }
}
