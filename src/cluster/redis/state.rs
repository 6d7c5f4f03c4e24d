//! [`RedisState`]: the cluster's presence, occupancy and counts, read from and written to Redis.
//!
//! Each concern lives in its own file as `impl RedisState` (presence, occupancy, counts, nodes,
//! resync); this file holds what they share and answers the [`ClusterState`] questions with them.
//! Besides writing to Redis, the state remembers what this node contributed (its presence members
//! and occupied channels) so that it can write them again when Redis comes back empty.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redis::Script;
use tokio::sync::mpsc;

use super::{scripts, Shared};
use crate::apps::AppStore;
use crate::cluster::{ChannelCounts, ClusterEvent, ClusterResult, ClusterState, Join, LocalNode, Member};
use crate::protocol::presence::MemberData;

pub(super) struct Scripts {
    pub join: Script,
    pub leave: Script,
    pub occupy: Script,
    pub vacate: Script,
    pub count_delta: Script,
}

pub struct RedisState {
    pub(super) shared: Arc<Shared>,
    pub(super) local: Arc<dyn LocalNode>,
    pub(super) apps: Arc<dyn AppStore>,
    pub(super) scripts: Scripts,
    /// This node's presence members, (app, channel, user) -> user_info, to re-announce after a loss.
    pub(super) joined: Mutex<HashMap<(String, String, String), String>>,
    /// Members whose leave could not be written (Redis away): removed and announced on resync.
    pub(super) left_while_away: Mutex<HashSet<(String, String, String)>>,
    /// This node's occupied channels, likewise.
    pub(super) occupied_here: Mutex<HashSet<(String, String)>>,
    pub(super) events_tx: mpsc::Sender<ClusterEvent>,
    events: Mutex<Option<mpsc::Receiver<ClusterEvent>>>,
}

impl RedisState {
    pub(super) fn new(shared: Arc<Shared>, local: Arc<dyn LocalNode>, apps: Arc<dyn AppStore>) -> Arc<RedisState> {
        let (events_tx, events) = mpsc::channel(10_000);
        Arc::new(RedisState {
            shared,
            local,
            apps,
            scripts: Scripts {
                join: scripts::presence_join(),
                leave: scripts::presence_leave(),
                occupy: scripts::occupy(),
                vacate: scripts::vacate(),
                count_delta: scripts::count_delta(),
            },
            joined: Mutex::new(HashMap::new()),
            left_while_away: Mutex::new(HashSet::new()),
            occupied_here: Mutex::new(HashSet::new()),
            events_tx,
            events: Mutex::new(Some(events)),
        })
    }

    /// Fails fast while the state cannot be trusted, so a question gets an error, not a guess.
    fn trusted(&self) -> ClusterResult<()> {
        if self.shared.health.healthy() {
            Ok(())
        } else {
            Err(self.shared.unavailable())
        }
    }
}

#[async_trait]
impl ClusterState for RedisState {
    async fn presence_join(&self, app_id: &str, channel: &str, member: &MemberData, max: usize) -> ClusterResult<Join> {
        // Remembered first: if Redis is away, the member is written when it is back.
        let key = (app_id.to_owned(), channel.to_owned(), member.user_id.clone());
        if let Ok(mut left) = self.left_while_away.lock() {
            left.remove(&key);
        }
        if let Ok(mut joined) = self.joined.lock() {
            joined.insert(key, member.user_info.clone().unwrap_or_default());
        }
        let join = self.join_as(app_id, channel, member, max, true).await;
        if matches!(join, Ok(Join::Full)) {
            if let Ok(mut joined) = self.joined.lock() {
                joined.remove(&(app_id.to_owned(), channel.to_owned(), member.user_id.clone()));
            }
        }
        join
    }

    async fn presence_leave(&self, app_id: &str, channel: &str, user_id: &str) -> ClusterResult<bool> {
        let key = (app_id.to_owned(), channel.to_owned(), user_id.to_owned());
        if let Ok(mut joined) = self.joined.lock() {
            joined.remove(&key);
        }
        let left = self.leave_as(self.shared.node, app_id, channel, user_id).await;
        if left.is_err() {
            if let Ok(mut away) = self.left_while_away.lock() {
                away.insert(key);
            }
        }
        left
    }

    async fn members(&self, app_id: &str, channel: &str) -> ClusterResult<Vec<Member>> {
        self.trusted()?;
        self.members_of(app_id, channel).await
    }

    async fn occupied(&self, app_id: &str, channel: &str) -> ClusterResult<bool> {
        if let Ok(mut here) = self.occupied_here.lock() {
            here.insert((app_id.to_owned(), channel.to_owned()));
        }
        self.occupy_as(app_id, channel).await
    }

    async fn vacated(&self, app_id: &str, channel: &str) -> ClusterResult<bool> {
        if let Ok(mut here) = self.occupied_here.lock() {
            here.remove(&(app_id.to_owned(), channel.to_owned()));
        }
        self.vacate_as(self.shared.node, app_id, channel).await
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> ClusterResult<usize> {
        self.trusted()?;
        self.sum_over_nodes(|keys, node| keys.subscriptions(app_id, node), channel).await
    }

    async fn channels(&self, app_id: &str) -> ClusterResult<Vec<ChannelCounts>> {
        self.trusted()?;
        self.channel_counts(app_id).await
    }

    async fn connection_count(&self, app_id: &str) -> ClusterResult<usize> {
        self.trusted()?;
        self.sum_over_nodes(|keys, node| keys.connections(node), app_id).await
    }

    async fn subscription_changed(&self, app_id: &str, channel: &str, delta: i64) -> ClusterResult<()> {
        self.add_subscriptions(app_id, channel, delta).await
    }

    async fn connection_changed(&self, app_id: &str, delta: i64) -> ClusterResult<()> {
        self.add_connections(app_id, delta).await
    }

    async fn user_online(&self, app_id: &str, user_id: &str) -> ClusterResult<bool> {
        self.online_as(app_id, user_id).await
    }

    async fn user_offline(&self, app_id: &str, user_id: &str) -> ClusterResult<bool> {
        self.presence_leave(app_id, crate::cluster::ONLINE_USERS, user_id).await
    }

    async fn users_online(&self, app_id: &str, user_ids: &[String]) -> ClusterResult<Vec<bool>> {
        self.trusted()?;
        self.online_among(app_id, user_ids).await
    }

    async fn cache_event(&self, app_id: &str, channel: &str, frame: &crate::protocol::Frame) -> ClusterResult<()> {
        self.keep_cached(app_id, channel, frame).await
    }

    async fn cached_event(
        &self,
        app_id: &str,
        channel: &str,
    ) -> ClusterResult<Option<(crate::protocol::Frame, std::time::Duration)>> {
        self.trusted()?;
        self.read_cached(app_id, channel).await
    }

    /// Refused while the state cannot be trusted: a Redis that came back empty has forgotten the
    /// claims made before, and a ticket must not be usable twice.
    async fn claim_once(&self, key: &str, ttl: std::time::Duration) -> ClusterResult<bool> {
        self.trusted()?;
        self.claim(key, ttl).await
    }

    fn healthy(&self) -> bool {
        self.shared.health.healthy()
    }

    fn take_events(&self) -> Option<mpsc::Receiver<ClusterEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    async fn hold_http_session(&self, session: &str, url: &str, ttl: std::time::Duration) -> ClusterResult<()> {
        self.record_http_session(session, url, ttl).await
    }

    async fn http_session_holder(&self, session: &str) -> ClusterResult<Option<String>> {
        self.trusted()?;
        self.find_http_session(session).await
    }
}
