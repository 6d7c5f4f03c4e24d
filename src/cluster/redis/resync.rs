//! After Redis comes back (it may have lost everything, or only missed some writes): rewrite this
//! node's counts, presence members and occupied channels. Idempotent, so a blip changes nothing.
//!
//! Presence is also reconciled for the other nodes' clients, which saw nothing while this node
//! was away: a member written back that the cluster had lost (Redis restarted empty, or this node
//! was reaped as dead) is announced again, and a member that left meanwhile, whose leave never
//! reached Redis, is removed and announced as gone. Without that, their member lists would stay
//! wrong until those users reconnect.

use std::collections::HashSet;

use super::state::RedisState;
use crate::cluster::{ClusterEvent, Join};
use crate::protocol::presence::MemberData;

impl RedisState {
    /// Rewrites what this node contributes; true when every write went through, and then the
    /// state is trusted again.
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
            let member = MemberData { user_id, user_info: (!info.is_empty()).then_some(info) };
            match self.join_as(&app_id, &channel, &member, usize::MAX, false).await {
                Ok(Join::Joined { first: true, .. }) => {
                    let _ = self.events_tx.try_send(ClusterEvent::MemberBack { app_id, channel, member });
                }
                Ok(_) => {}
                Err(_) => ok = false,
            }
        }
        ok &= self.forget_departed().await;
        let occupied: Vec<_> = self.occupied_here.lock().map(|o| o.iter().cloned().collect()).unwrap_or_default();
        for (app_id, channel) in occupied {
            ok &= self.occupy_as(&app_id, &channel).await.is_ok();
        }
        tracing::debug!(ok, "this node's state rewritten");
        if ok {
            // Trusted again before anyone hears so: the hub's answer to `Resynced` asks Redis for
            // every presence list, and a question to an untrusted state is refused.
            self.shared.health.commands_ok.store(true, std::sync::atomic::Ordering::Release);
            let _ = self.events_tx.try_send(ClusterEvent::Resynced);
        }
        ok
    }

    /// Removes this node's members that are no longer here (left while Redis was away, so their
    /// leave was never written) and announces those that no node holds any more.
    async fn forget_departed(&self) -> bool {
        let keys = &self.shared.keys;
        let node = self.shared.node;
        let smembers = redis::cmd("SMEMBERS").arg(keys.node_presence(node)).clone();
        let Ok(recorded) = self.shared.commands.query::<Vec<String>>(&smembers).await else { return false };
        let mut departed: HashSet<(String, String, String)> =
            self.left_while_away.lock().map(|l| l.clone()).unwrap_or_default();
        for entry in recorded {
            let mut parts = entry.splitn(3, '\t');
            if let (Some(app_id), Some(channel), Some(user_id)) = (parts.next(), parts.next(), parts.next()) {
                departed.insert((app_id.to_owned(), channel.to_owned(), user_id.to_owned()));
            }
        }
        let mut ok = true;
        for key in departed {
            // Checked for each: the user may have come back to this node meanwhile.
            if self.joined.lock().map(|j| j.contains_key(&key)).unwrap_or(true) {
                continue;
            }
            let (app_id, channel, user_id) = &key;
            if self.leave_as(node, app_id, channel, user_id).await.is_err() {
                ok = false;
                continue;
            }
            let [_, members, _] = keys.presence(app_id, channel);
            let Ok(present) = self.shared.commands.query::<bool>(redis::cmd("HEXISTS").arg(members).arg(user_id)).await
            else {
                ok = false;
                continue;
            };
            if let Ok(mut away) = self.left_while_away.lock() {
                away.remove(&key);
            }
            if !present {
                let (app_id, channel, user_id) = key;
                let _ = self.events_tx.try_send(ClusterEvent::MemberGone { app_id, channel, user_id });
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::{ClusterEvent, ClusterState};
    use crate::protocol::presence::MemberData;

    fn drain(events: &mut tokio::sync::mpsc::Receiver<ClusterEvent>) -> Vec<ClusterEvent> {
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_flushed_redis_gets_this_nodes_members_and_channels_back() {
        let redis = TestRedis::start();
        let a = state_on(&redis, 1, "t").await;
        let mut events = a.take_events().unwrap();
        let ann = MemberData { user_id: "ann".into(), user_info: Some("{}".into()) };
        a.presence_join("1", "presence-r", &ann, 10).await.unwrap();
        a.occupied("1", "presence-r").await.unwrap();
        assert!(a.resync().await);
        assert_eq!(drain(&mut events), vec![ClusterEvent::Resynced], "no member to announce while Redis has them all");
        let commands = redis.commands().await;
        commands.query::<String>(&redis::cmd("FLUSHALL")).await.unwrap();
        assert_eq!(a.members("1", "presence-r").await, Ok(vec![]), "Redis lost everything");
        assert!(a.resync().await);
        assert_eq!(a.members("1", "presence-r").await, Ok(vec![("ann".into(), Some("{}".into()))]));
        assert_eq!(a.occupied("1", "presence-r").await, Ok(false), "its channel is occupied again");
        // The other nodes' clients were told nothing while Redis was empty: the member is announced.
        let back = ClusterEvent::MemberBack { app_id: "1".into(), channel: "presence-r".into(), member: ann };
        assert_eq!(drain(&mut events), vec![back, ClusterEvent::Resynced]);
        assert!(a.resync().await, "idempotent");
        assert_eq!(a.members("1", "presence-r").await.map(|m| m.len()), Ok(1));
        assert_eq!(drain(&mut events), vec![ClusterEvent::Resynced], "announced once");
    }

    #[tokio::test]
    async fn a_member_who_left_while_redis_was_stalled_is_removed_and_announced_on_resync() {
        let redis = TestRedis::start();
        let a = state_on(&redis, 1, "t").await;
        let mut events = a.take_events().unwrap();
        for user in ["ann", "bob"] {
            let member = MemberData { user_id: user.into(), user_info: None };
            a.presence_join("1", "presence-r", &member, 10).await.unwrap();
        }
        redis.pause();
        assert!(a.presence_leave("1", "presence-r", "bob").await.is_err(), "the leave misses its deadline");
        redis.resume();
        // Whether or not the stalled command ran late, bob is gone once the state is rewritten, and
        // the cluster is told so (the other nodes' clients never heard of his leave).
        assert!(a.resync().await);
        assert_eq!(a.members_of("1", "presence-r").await, Ok(vec![("ann".into(), None)]));
        let gone = ClusterEvent::MemberGone { app_id: "1".into(), channel: "presence-r".into(), user_id: "bob".into() };
        assert_eq!(drain(&mut events), vec![gone, ClusterEvent::Resynced]);
        assert!(a.resync().await);
        assert_eq!(drain(&mut events), vec![ClusterEvent::Resynced], "announced once");
    }

    #[tokio::test]
    async fn a_member_still_held_by_another_node_is_not_announced_as_gone() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        let mut events = a.take_events().unwrap();
        let bob = MemberData { user_id: "bob".into(), user_info: None };
        a.presence_join("1", "presence-r", &bob, 10).await.unwrap();
        b.presence_join("1", "presence-r", &bob, 10).await.unwrap();
        redis.pause();
        assert!(a.presence_leave("1", "presence-r", "bob").await.is_err());
        redis.resume();
        assert!(a.resync().await);
        assert_eq!(a.members_of("1", "presence-r").await, Ok(vec![("bob".into(), None)]), "node 2 still holds bob");
        assert_eq!(drain(&mut events), vec![ClusterEvent::Resynced]);
    }
}
