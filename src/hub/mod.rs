//! The hub: channels and subscriptions of the apps in use, and the one place where a publish fans
//! out.
//!
//! It knows nothing of sockets or HTTP. Sessions hand it an [`Outbound`] queue when they
//! subscribe; publishers hand it an event. A publish is serialised once into a [`Frame`],
//! delivered to this node's subscribers by the [`Registry`], and handed to the cluster's broker for
//! every other node (see [`crate::cluster`]).

mod counts;
pub mod feed;
pub mod history_rules;
mod member_lock;
pub mod outbound;
pub mod registry;
mod resume;
mod watchlist;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tracing::debug;

use crate::apps::{App, AppChange, AppStore};
use crate::cluster::history::{Appended, Replay};
use crate::cluster::{
    Broadcast, BroadcastKind, Cluster, ClusterEvent, ClusterResult, Join, LocalNode, Record, ONLINE_USERS,
};
use crate::config::{AppConfig, HistoryRule};
use crate::protocol::channel::user_of_channel;
use crate::protocol::position::Position;
use crate::protocol::presence::{presence_succeeded_json, removed_json, MemberData};
use crate::protocol::{Channel, ChannelKind, ChannelName, Frame, SocketId};
use crate::webhooks::{WebhookEvent, Webhooks};

pub use outbound::{Outbound, OutboundReceiver, Outgoing, OverflowSignal};
pub use registry::{Registry, Subscribed};

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The app has no state on this node (its connection was not counted).
    UnknownApp,
    /// The presence channel is at its member cap.
    PresenceFull(usize),
}

/// How often changed subscription counts are announced: the throttle.
pub const SUBSCRIPTION_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1000);

pub struct Hub {
    apps: Arc<dyn AppStore>,
    registry: Arc<Registry>,
    cluster: Cluster,
    webhooks: Webhooks,
    node: u32,
    next_seq: AtomicU64,
    /// Recent activity for the dashboard (recording is off unless the dashboard is on).
    pub feed: feed::Feed,
    /// Orders one node's joins and leaves of the same presence member.
    member_locks: member_lock::MemberLocks,
    /// Some presence subscriber here was given a list without the cluster (a join served locally,
    /// a catch-up refused): every list is told again once the cluster is trusted, however the
    /// outage ended and whichever order its events came in.
    retell_owed: AtomicBool,
}

impl Hub {
    /// Random, so socket ids stay unique across nodes without coordination.
    pub fn new_node_id() -> u32 {
        rand::random::<u32>() % 1_000_000_000
    }

    /// A hub serving `apps`, on this node's `registry`, reaching its peers through `cluster`
    /// (whose broker delivers other nodes' records into the same registry).
    pub fn new(
        apps: Arc<dyn AppStore>,
        registry: Arc<Registry>,
        cluster: Cluster,
        node: u32,
        record_feed: bool,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            webhooks: Webhooks::new(apps.clone()),
            apps,
            registry,
            cluster,
            node,
            next_seq: AtomicU64::new(1),
            feed: feed::Feed::new(record_feed),
            member_locks: member_lock::MemberLocks::default(),
            retell_owed: AtomicBool::new(false),
        })
    }

    pub fn app_by_id(&self, id: &str) -> Option<App> {
        self.apps.by_id(id)
    }

    pub fn app_by_key(&self, key: &str) -> Option<App> {
        self.apps.by_key(key)
    }

    pub fn apps(&self) -> Vec<App> {
        self.apps.list()
    }

    /// Changes to the served apps, for state kept outside the hub.
    pub fn app_changes(&self) -> tokio::sync::broadcast::Receiver<AppChange> {
        self.apps.changes()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Cluster-wide questions (presence, counts), which may fail.
    pub fn cluster(&self) -> &dyn crate::cluster::ClusterState {
        self.cluster.state.as_ref()
    }

    /// Starts the hub's shared background work (one task each for the whole process, not one per
    /// connection): announcing what the cluster noticed, the throttled `subscription_count` round,
    /// and letting go of removed apps.
    pub fn spawn_background(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if let Some(mut events) = self.cluster.state.take_events() {
            let hub = self.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    hub.on_cluster_event(event).await;
                }
            });
        }
        let mut changes = self.apps.changes();
        let hub = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    change = changes.recv() => match change {
                        Ok(change) => hub.on_app_change(change),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SUBSCRIPTION_COUNT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        hub.announce_subscription_counts().await;
                        hub.retell_members_if_owed().await;
                    }
                }
            }
        });
    }

    fn on_app_change(&self, change: AppChange) {
        match change {
            AppChange::Updated(app) => self.registry.app_updated(&app),
            AppChange::Removed(app_id) => {
                let closed = self.registry.forget_app(&app_id);
                self.webhooks.forget(&app_id);
                tracing::info!(app_id, closed, "app removed: its connections were closed with 4001");
            }
        }
    }

    /// Subscribes a session's queue to a channel; on presence channels `member` is who it joins
    /// as. Announces a new member to the cluster and tells the app's webhooks what changed.
    pub async fn subscribe(
        &self,
        app: &AppConfig,
        channel: &ChannelName<'_>,
        out: &Outbound,
        member: Option<&MemberData>,
    ) -> Result<Subscribed, SubscribeError> {
        self.subscribe_confirmed(app, channel, out, member, None).await
    }

    /// As [`Hub::subscribe`], confirming with `confirmation` instead of `subscription_succeeded`
    /// (the plain endpoint's `herald:joined`).
    pub async fn subscribe_confirmed(
        &self,
        app: &AppConfig,
        channel: &ChannelName<'_>,
        out: &Outbound,
        member: Option<&MemberData>,
        confirmation: Option<Frame>,
    ) -> Result<Subscribed, SubscribeError> {
        let name = channel.name;
        let mut announce = false;
        // Held until the join is announced: a concurrent leave of the same user waits, then sees it.
        // Every await under it is a cluster call, each bounded by the cluster's own deadline.
        let guard = match member {
            Some(member) => Some(self.member_locks.lock(&app.id, name, &member.user_id).await),
            None => None,
        };
        let mut listed = Vec::new();
        let succeeded = match member {
            None => "{}".to_owned(),
            Some(member) => {
                let user = member.user_id.as_str();
                let members = if self.registry.add_local_user(&app.id, name, user) {
                    match self.cluster.state.presence_join(&app.id, name, member, app.max_presence_members).await {
                        Ok(Join::Joined { first, members }) => {
                            announce = first;
                            members
                        }
                        Ok(Join::Full) => {
                            self.registry.remove_local_user(&app.id, name, user);
                            return Err(SubscribeError::PresenceFull(app.max_presence_members));
                        }
                        // The cluster is away: the member is served here, and written to the
                        // cluster (and so announced to other nodes' lists) when it is back.
                        Err(e) => {
                            debug!(error = %e, "presence join served locally");
                            announce = true;
                            self.retell_owed.store(true, Ordering::Release);
                            vec![(member.user_id.clone(), member.user_info.clone())]
                        }
                    }
                } else {
                    self.cluster.state.members(&app.id, name).await.unwrap_or_else(|_| {
                        self.retell_owed.store(true, Ordering::Release);
                        vec![(member.user_id.clone(), member.user_info.clone())]
                    })
                };
                listed = members.iter().map(|(id, _)| id.clone()).collect();
                presence_succeeded_json(members.iter().map(|(id, info)| (id.as_str(), info.as_deref())))
            }
        };
        if channel.cache && !self.registry.has_cached(&app.id, name) {
            // A node started after the last event (or one that missed it) replays the cluster's.
            match self.cluster.state.cached_event(&app.id, name).await {
                Ok(Some((frame, fresh_for))) => self.registry.remember_from_cluster(&app.id, name, frame, fresh_for),
                Ok(None) => {}
                Err(e) => debug!(error = %e, "cache channel served from this node only"),
            }
        }
        let user_id = member.map(|m| m.user_id.as_str());
        let confirmation = confirmation.unwrap_or_else(|| Frame::subscription_succeeded(name, &succeeded));
        let Some(subscribed) = self.registry.subscribe(&app.id, channel, out, confirmation, user_id) else {
            return Err(SubscribeError::UnknownApp);
        };
        if subscribed.new {
            self.logged(self.cluster.state.subscription_changed(&app.id, name, 1).await);
            self.feed.record(&app.id, "subscribed", Some(name), Some(out.socket_id().to_string()), "");
            if member.is_some() {
                self.catch_up_members(&app.id, name, out, &listed).await;
            }
        }
        // With the cluster away, assume first: a duplicate `channel_occupied` beats a missing one.
        if subscribed.occupied && self.cluster.state.occupied(&app.id, name).await.unwrap_or(true) {
            self.webhooks.emit(&app.id, WebhookEvent::ChannelOccupied { channel: name.to_owned() });
        }
        if let (true, Some(member)) = (announce, member) {
            let frame = Frame::internal("pusher_internal:member_added", Some(name), &member.added_json());
            let except = Some(out.socket_id());
            self.publish(&app.id, channel.to_channel(), BroadcastKind::Internal, frame, except).await;
            let user_id = member.user_id.clone();
            self.webhooks.emit(&app.id, WebhookEvent::MemberAdded { channel: name.to_owned(), user_id });
        }
        drop(guard);
        if let Some(old_user) = &subscribed.replaced_last_socket_of {
            // After the guard: the old user may share its lock stripe.
            self.user_left(&app.id, name, old_user).await;
        }
        if subscribed.cache_miss {
            self.webhooks.emit(&app.id, WebhookEvent::CacheMiss { channel: name.to_owned() });
        }
        Ok(subscribed)
    }

    /// Tells a new presence subscriber of members who joined or left between the list it was given
    /// and the moment it started receiving the channel's broadcasts (another node's join in that
    /// gap reached this node's subscribers, but not this one yet), so its list is exact.
    async fn catch_up_members(&self, app_id: &str, name: &str, out: &Outbound, listed: &[String]) {
        let Ok(now) = self.cluster.state.members(app_id, name).await else {
            self.retell_owed.store(true, Ordering::Release);
            return;
        };
        let listed: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        let current: std::collections::HashSet<&str> = now.iter().map(|(id, _)| id.as_str()).collect();
        for (user_id, user_info) in &now {
            if !listed.contains(user_id.as_str()) {
                let json = MemberData { user_id: user_id.clone(), user_info: user_info.clone() }.added_json();
                out.push(Frame::internal("pusher_internal:member_added", Some(name), &json));
            }
        }
        for user_id in listed.difference(&current) {
            out.push(Frame::internal("pusher_internal:member_removed", Some(name), &removed_json(user_id)));
        }
    }

    /// Unsubscribes a socket; a presence user's last socket in the cluster is announced as gone,
    /// and so is a signed-in user's last socket (leaving its `#server-to-user-` channel) to its
    /// watchers.
    pub async fn unsubscribe(&self, app_id: &str, channel: &str, socket_id: SocketId) {
        let Some(left) = self.registry.unsubscribe(app_id, channel, socket_id) else { return };
        if ChannelKind::of(channel).server_made() {
            if let (true, Some(user_id)) = (left.vacated, user_of_channel(channel)) {
                self.user_signed_out(app_id, user_id).await;
            }
            return;
        }
        self.logged(self.cluster.state.subscription_changed(app_id, channel, -1).await);
        self.feed.record(app_id, "unsubscribed", Some(channel), Some(socket_id.to_string()), "");
        if let Some(user_id) = left.last_local_socket_of {
            self.user_left(app_id, channel, &user_id).await;
        }
        if left.vacated && self.cluster.state.vacated(app_id, channel).await.unwrap_or(false) {
            self.webhooks.emit(app_id, WebhookEvent::ChannelVacated { channel: channel.to_owned() });
        }
    }

    /// A presence user's last socket on this node left a channel: if it was the user's last in the
    /// cluster, everyone is told.
    async fn user_left(&self, app_id: &str, channel: &str, user_id: &str) {
        let _guard = self.member_locks.lock(app_id, channel, user_id).await;
        if self.registry.local_user_sockets(app_id, channel, user_id) > 0 {
            // Another socket of the user joined here meanwhile: the member stays.
            return;
        }
        // With the cluster away, this node's own subscribers are still told: they saw the join.
        let gone = match self.cluster.state.presence_leave(app_id, channel, user_id).await {
            Ok(gone) => gone,
            Err(e) => {
                debug!(error = %e, "presence leave announced locally");
                true
            }
        };
        if gone {
            self.member_removed(app_id, channel, user_id).await;
        }
    }

    async fn member_removed(&self, app_id: &str, channel: &str, user_id: &str) {
        let Ok(parsed) = Channel::parse(channel) else { return };
        let frame = Frame::internal("pusher_internal:member_removed", Some(channel), &removed_json(user_id));
        self.publish(app_id, parsed, BroadcastKind::Internal, frame, None).await;
        let user_id = user_id.to_owned();
        self.webhooks.emit(app_id, WebhookEvent::MemberRemoved { channel: channel.to_owned(), user_id });
    }

    /// Counts a new connection (whose queue is `out`) against the app's quota (this node's);
    /// false when full.
    pub async fn connection_opened(&self, app: &AppConfig, out: &Outbound) -> bool {
        if !self.registry.try_add_connection(app, out) {
            self.feed.record(&app.id, "refused", None, None, "over the connection quota (4004)");
            return false;
        }
        self.logged(self.cluster.state.connection_changed(&app.id, 1).await);
        true
    }

    pub async fn connection_closed(&self, app_id: &str, socket_id: SocketId) {
        self.registry.remove_connection(app_id, socket_id);
        self.logged(self.cluster.state.connection_changed(app_id, -1).await);
    }

    /// Cluster writes that fail are already logged (and the node marked degraded) by the cluster;
    /// they are rewritten when it is back.
    fn logged(&self, result: ClusterResult<()>) {
        if let Err(e) = result {
            debug!(error = %e, "cluster write skipped");
        }
    }

    /// Whether the cluster can be reached (always, for a single node).
    pub fn healthy(&self) -> bool {
        self.cluster.healthy()
    }

    /// Whether the app store could be read last time it was (a database's last good apps are
    /// served meanwhile).
    pub fn apps_healthy(&self) -> bool {
        self.apps.healthy()
    }

    pub fn failed_app_refreshes(&self) -> u64 {
        self.apps.failed_refreshes()
    }

    /// Announces what the cluster noticed by itself: a dead node's members and channels gone.
    async fn on_cluster_event(&self, event: ClusterEvent) {
        debug!(?event, "cluster event");
        match event {
            ClusterEvent::MemberGone { app_id, channel, user_id } if channel == ONLINE_USERS => {
                self.announce_watched(&app_id, &user_id, false).await;
            }
            ClusterEvent::MemberGone { app_id, channel, user_id } => {
                self.member_removed(&app_id, &channel, &user_id).await;
            }
            // Written back after an outage: watchers may have been told this user went offline
            // (its node taken for dead); telling them again that it is online costs nothing.
            ClusterEvent::MemberBack { app_id, channel, member } if channel == ONLINE_USERS => {
                self.announce_watched(&app_id, &member.user_id, true).await;
            }
            ClusterEvent::MemberBack { app_id, channel, member } => {
                let Ok(parsed) = Channel::parse(&channel) else { return };
                let frame = Frame::internal("pusher_internal:member_added", Some(&channel), &member.added_json());
                self.publish(&app_id, parsed, BroadcastKind::Internal, frame, None).await;
                let user_id = member.user_id;
                self.webhooks.emit(&app_id, WebhookEvent::MemberAdded { channel, user_id });
            }
            ClusterEvent::ChannelGone { app_id, channel } => {
                self.webhooks.emit(&app_id, WebhookEvent::ChannelVacated { channel });
            }
            ClusterEvent::Resynced => self.retell_members().await,
        }
    }

    /// Tells this node's presence subscribers every current member again, after an outage during
    /// which joins elsewhere may not have reached them (and joins here were answered with only the
    /// joiner). Delivered here only: every node does this for its own clients. pusher-js keeps one
    /// entry per member, so the lists end up exact (its `member_added` callback fires again for a
    /// member it had). Only adds: a missed `member_removed` is not repaired here.
    async fn retell_members(&self) {
        // Cleared first: a list served without the cluster while this runs owes another round.
        self.retell_owed.store(false, Ordering::Release);
        for app_id in self.registry.app_ids() {
            for (name, _) in self.registry.channels(&app_id) {
                let Ok(channel) = Channel::parse(&name) else { continue };
                if channel.kind != ChannelKind::Presence {
                    continue;
                }
                let Ok(members) = self.cluster.state.members(&app_id, &name).await else {
                    self.retell_owed.store(true, Ordering::Release);
                    return;
                };
                let added: Vec<(String, Frame)> = members
                    .into_iter()
                    .map(|(user_id, user_info)| {
                        let json = MemberData { user_id: user_id.clone(), user_info }.added_json();
                        (user_id, Frame::internal("pusher_internal:member_added", Some(&name), &json))
                    })
                    .collect();
                let told = self.registry.retell_members(&app_id, &name, &added);
                debug!(app_id, channel = name, members = added.len(), told, "presence list told again");
            }
        }
    }

    /// The safety net under `Resynced`: a list served without the cluster after the last retell
    /// (or a retell cut short) is told again on the first tick the cluster is trusted.
    async fn retell_members_if_owed(&self) {
        if self.retell_owed.load(Ordering::Acquire) && self.cluster.state.healthy() {
            self.retell_members().await;
        }
    }

    /// Closes a signed-in user's connections on every node.
    pub async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.registry.terminate_user(app_id, user_id);
        let record = Record::Terminate { app_id: app_id.to_owned(), user_id: user_id.to_owned() };
        if let Err(e) = self.cluster.broker.publish(record).await {
            debug!(error = %e, "terminate reached this node only");
        }
    }

    /// A fresh socket id, unique across the cluster.
    pub fn next_socket_id(&self) -> SocketId {
        SocketId { node: self.node, seq: self.next_seq.fetch_add(1, Ordering::Relaxed) }
    }

    /// Publishes an application event to a channel on every node. The frame is built once here.
    pub async fn publish_event(
        &self,
        app_id: &str,
        channel: Channel,
        event: &str,
        data: &str,
        except: Option<SocketId>,
    ) -> usize {
        let frame = Frame::event(event, &channel.name, data);
        self.publish(app_id, channel, BroadcastKind::Event, frame, except).await
    }

    /// The history rule of a channel, if its app keeps one for it.
    pub fn history_rule(&self, app_id: &str, channel: &str) -> Option<HistoryRule> {
        let app = self.apps.by_id(app_id)?;
        history_rules::rule_for(&app, channel).cloned()
    }

    /// A history channel's events after `since` (the newest without one), as the cluster keeps them.
    pub async fn history(
        &self,
        app_id: &str,
        channel: &str,
        rule: &HistoryRule,
        since: Option<Position>,
        limit: usize,
    ) -> ClusterResult<Replay> {
        self.cluster.history.read(app_id, channel, rule, since, limit).await
    }

    /// Publishes a ready frame on every node: this node's subscribers get it now, the others
    /// through the broker. Returns this node's deliveries.
    pub async fn publish(
        &self,
        app_id: &str,
        channel: Channel,
        kind: BroadcastKind,
        frame: Frame,
        except: Option<SocketId>,
    ) -> usize {
        let mut broadcast = Broadcast { app_id: app_id.to_owned(), channel, kind, frame, except };
        if kind != BroadcastKind::Internal {
            if let Some(rule) = self.history_rule(app_id, &broadcast.channel.name) {
                // Positioned before it fans out anywhere, so every node's subscribers see one id.
                let cached = broadcast.channel.cache.then(|| (broadcast.channel.name.clone(), broadcast.frame.clone()));
                match self.cluster.history.append(broadcast, &rule).await {
                    Appended::Deliver(positioned) => broadcast = positioned,
                    // Delivered from the bus on every node, this one too; a cache channel's last
                    // event is still kept for the nodes that start later.
                    Appended::Sent => {
                        if let Some((name, frame)) = cached {
                            self.logged(self.cluster.state.cache_event(app_id, &name, &frame).await);
                        }
                        return 0;
                    }
                }
            }
        }
        if self.feed.enabled() {
            let shown = if kind == BroadcastKind::ClientEvent { "client_event" } else { "message" };
            let except = broadcast.except.map(|s| s.to_string());
            self.feed.record(app_id, shown, Some(&broadcast.channel.name), except, broadcast.frame.as_str());
        }
        let started = std::time::Instant::now();
        let delivered = self.registry.deliver(&broadcast);
        crate::metrics::published(delivered, started.elapsed().as_secs_f64());
        if broadcast.channel.cache && kind != BroadcastKind::Internal {
            // Kept where every node finds it: a node started later replays it too.
            let kept = self.cluster.state.cache_event(app_id, &broadcast.channel.name, &broadcast.frame).await;
            self.logged(kept);
        }
        if let Err(e) = self.cluster.broker.publish(Record::Broadcast(broadcast)).await {
            debug!(error = %e, "broadcast reached this node only");
        }
        delivered
    }
}
