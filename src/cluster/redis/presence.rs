//! Presence across nodes: one shared member list per channel, with a reference per node holding
//! the user, kept consistent by the `presence_join` / `presence_leave` scripts.

use super::state::RedisState;
use crate::cluster::{ClusterResult, Join, Member};
use crate::protocol::presence::MemberData;

impl RedisState {
    /// Adds this node's reference to a member; with `list`, the member list comes back in the
    /// same call (a re-announce or the online users' list has no use for it, and it can be long).
    pub(super) async fn join_as(
        &self,
        app_id: &str,
        channel: &str,
        member: &MemberData,
        max_members: usize,
        list: bool,
    ) -> ClusterResult<Join> {
        let [refs, members, counts] = self.shared.keys.presence(app_id, channel);
        let info = member.user_info.clone().unwrap_or_default();
        let mut call = self.scripts.join.key(refs);
        call.key(members)
            .key(counts)
            .arg(&member.user_id)
            .arg(self.shared.node)
            .arg(&info)
            .arg(max_members.min(i64::MAX as usize))
            .arg(if list { "1" } else { "0" });
        let (first, flat): (i64, Vec<String>) = self.shared.invoke("presence join", &call).await?;
        if first < 0 {
            return Ok(Join::Full);
        }
        let entry = format!("{app_id}\t{channel}\t{}", member.user_id);
        self.node_record(true, self.shared.keys.node_presence(self.shared.node), entry).await?;
        let mut members: Vec<Member> =
            flat.chunks(2).map(|p| (p[0].clone(), p.get(1).filter(|i| !i.is_empty()).cloned())).collect();
        members.sort();
        Ok(Join::Joined { first: first == 1, members })
    }

    /// Removes `node`'s reference to a member (this node's, or a dead one's); true when no node
    /// holds the user any more.
    pub(super) async fn leave_as(&self, node: u32, app_id: &str, channel: &str, user_id: &str) -> ClusterResult<bool> {
        let [refs, members, counts] = self.shared.keys.presence(app_id, channel);
        let mut call = self.scripts.leave.key(refs);
        call.key(members).key(counts).arg(user_id).arg(node);
        let gone: i64 = self.shared.invoke("presence leave", &call).await?;
        self.node_record(false, self.shared.keys.node_presence(node), format!("{app_id}\t{channel}\t{user_id}"))
            .await?;
        Ok(gone == 1)
    }

    /// The channel's members, each once, sorted by id.
    pub(super) async fn members_of(&self, app_id: &str, channel: &str) -> ClusterResult<Vec<Member>> {
        let [_, members, _] = self.shared.keys.presence(app_id, channel);
        let list: Vec<(String, String)> = self.shared.query("members", redis::cmd("HGETALL").arg(members)).await?;
        let mut list: Vec<Member> =
            list.into_iter().map(|(id, info)| (id, (!info.is_empty()).then_some(info))).collect();
        list.sort();
        Ok(list)
    }

    /// How many members a presence channel has.
    pub(super) async fn member_count(&self, app_id: &str, channel: &str) -> ClusterResult<usize> {
        let [_, members, _] = self.shared.keys.presence(app_id, channel);
        self.shared.query("member count", redis::cmd("HLEN").arg(members)).await
    }

    /// Adds `entry` to (or removes it from) one of a node's record sets, which the reaper reads back.
    pub(super) async fn node_record(&self, add: bool, key: String, entry: String) -> ClusterResult<()> {
        let cmd = redis::cmd(if add { "SADD" } else { "SREM" }).arg(key).arg(entry).clone();
        self.shared.query::<i64>("node record", &cmd).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::redis::test_server::{state_on, TestRedis};
    use crate::cluster::{ClusterState, Join};
    use crate::protocol::presence::MemberData;

    fn member(id: &str) -> MemberData {
        MemberData { user_id: id.into(), user_info: Some(format!(r#"{{"n":"{id}"}}"#)) }
    }

    #[tokio::test]
    async fn a_user_is_one_member_however_many_nodes_hold_it() {
        let redis = TestRedis::start();
        let (a, b) = (state_on(&redis, 1, "t").await, state_on(&redis, 2, "t").await);
        assert!(matches!(
            a.presence_join("1", "presence-r", &member("ann"), 10).await,
            Ok(Join::Joined { first: true, .. })
        ));
        match b.presence_join("1", "presence-r", &member("ann"), 10).await {
            Ok(Join::Joined { first, members }) => {
                assert!(!first, "already a member through node 1");
                assert_eq!(members, vec![("ann".to_owned(), Some(r#"{"n":"ann"}"#.to_owned()))]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.presence_leave("1", "presence-r", "ann").await, Ok(false), "node 2 still holds ann");
        assert_eq!(b.presence_leave("1", "presence-r", "ann").await, Ok(true), "the last node let go");
        assert_eq!(a.members("1", "presence-r").await, Ok(vec![]));
        assert_eq!(b.presence_leave("1", "presence-r", "ann").await, Ok(false), "leaving twice is a no-op");
    }

    #[tokio::test]
    async fn the_cap_counts_users_and_a_full_channel_refuses() {
        let redis = TestRedis::start();
        let a = state_on(&redis, 1, "t").await;
        a.presence_join("1", "presence-r", &member("1"), 2).await.unwrap();
        a.presence_join("1", "presence-r", &member("2"), 2).await.unwrap();
        assert_eq!(a.presence_join("1", "presence-r", &member("3"), 2).await, Ok(Join::Full));
        assert!(matches!(
            a.presence_join("1", "presence-r", &member("1"), 2).await,
            Ok(Join::Joined { first: false, .. })
        ));
        assert_eq!(a.member_count("1", "presence-r").await, Ok(2));
        let ids: Vec<String> = a.members("1", "presence-r").await.unwrap().into_iter().map(|m| m.0).collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[tokio::test]
    async fn a_stopped_redis_is_an_error_within_the_deadline_not_a_hang() {
        let redis = TestRedis::start();
        let a = state_on(&redis, 1, "t").await;
        redis.pause();
        let started = std::time::Instant::now();
        let join = a.presence_join("1", "presence-r", &member("1"), 10).await;
        assert!(join.is_err(), "{join:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded by the response deadline");
        assert!(!a.healthy(), "a timeout marks the node degraded");
        assert!(a.members("1", "presence-r").await.is_err(), "questions fail fast while degraded");
        redis.resume();
    }
}
