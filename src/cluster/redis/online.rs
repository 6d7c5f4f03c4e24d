//! Who is signed in, across nodes, for watchlists: the presence list [`ONLINE_USERS`] of each app,
//! so a node's users are rewritten after a Redis loss and reaped when the node dies (announced as
//! [`crate::cluster::ClusterEvent::MemberGone`] of that list) exactly like presence members.

use super::state::RedisState;
use crate::cluster::{ClusterResult, Join, ONLINE_USERS};
use crate::protocol::presence::MemberData;

impl RedisState {
    /// This node's first signed-in connection of `user_id`; true when it is the cluster's first.
    pub(super) async fn online_as(&self, app_id: &str, user_id: &str) -> ClusterResult<bool> {
        if let Ok(mut joined) = self.joined.lock() {
            joined.insert((app_id.to_owned(), ONLINE_USERS.to_owned(), user_id.to_owned()), String::new());
        }
        let member = MemberData { user_id: user_id.to_owned(), user_info: None };
        match self.join_as(app_id, ONLINE_USERS, &member, usize::MAX, false).await? {
            Join::Joined { first, .. } => Ok(first),
            // Not reachable with no cap; counted as already online rather than announced twice.
            Join::Full => Ok(false),
        }
    }

    /// Which of `user_ids` some node holds, in order: one HMGET however long the list.
    pub(super) async fn online_among(&self, app_id: &str, user_ids: &[String]) -> ClusterResult<Vec<bool>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let [_, members, _] = self.shared.keys.presence(app_id, ONLINE_USERS);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(members);
        for id in user_ids {
            cmd.arg(id);
        }
        let found: Vec<Option<String>> = self.shared.query("users online", &cmd).await?;
        Ok(found.iter().map(Option::is_some).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::{ClusterEvent, ClusterState, ONLINE_USERS};
    use crate::protocol::presence::MemberData;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_user_is_online_while_any_node_holds_it() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        assert_eq!(a.user_online("1", "ann").await, Ok(true), "first in the cluster");
        assert_eq!(b.user_online("1", "ann").await, Ok(false), "already online through node 1");
        assert_eq!(b.users_online("1", &ids(&["ann", "bob"])).await, Ok(vec![true, false]));
        assert_eq!(b.users_online("1", &[]).await, Ok(vec![]));
        assert_eq!(a.users_online("other-app", &ids(&["ann"])).await, Ok(vec![false]), "apps are apart");
        assert_eq!(a.user_offline("1", "ann").await, Ok(false), "node 2 still holds ann");
        assert_eq!(b.user_offline("1", "ann").await, Ok(true), "the last node let go");
        assert_eq!(a.users_online("1", &ids(&["ann"])).await, Ok(vec![false]));
        assert_eq!(b.user_offline("1", "ann").await, Ok(false), "twice is a no-op");
    }

    #[tokio::test]
    async fn a_flushed_redis_gets_the_online_users_back_and_a_dead_nodes_go_offline() {
        let redis = TestRedis::start();
        let (alive, dead) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        let mut events = alive.take_events().unwrap();
        assert_eq!(alive.user_online("1", "ann").await, Ok(true));
        redis.commands().await.query::<String>(&redis::cmd("FLUSHALL")).await.unwrap();
        assert!(alive.resync().await);
        assert_eq!(alive.users_online("1", &ids(&["ann"])).await, Ok(vec![true]), "rewritten");
        let ann = MemberData { user_id: "ann".into(), user_info: None };
        let back = ClusterEvent::MemberBack { app_id: "1".into(), channel: ONLINE_USERS.into(), member: ann };
        assert_eq!(events.try_recv().ok(), Some(back), "announced again: watchers may have heard it go");
        assert_eq!(events.try_recv().ok(), Some(ClusterEvent::Resynced));

        assert!(dead.heartbeat().await);
        assert_eq!(dead.user_online("1", "bob").await, Ok(true));
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert!(alive.heartbeat().await);
        alive.reap_dead_nodes().await;
        let gone = ClusterEvent::MemberGone { app_id: "1".into(), channel: ONLINE_USERS.into(), user_id: "bob".into() };
        assert_eq!(events.try_recv().ok(), Some(gone));
        assert_eq!(alive.users_online("1", &ids(&["ann", "bob"])).await, Ok(vec![true, false]));
    }
}
