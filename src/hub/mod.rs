//! The hub: apps, channels and subscriptions, and the one place where a publish fans out.
//!
//! It knows nothing of sockets or HTTP. Connections hand it an [`Outbound`] queue when they
//! subscribe; publishers hand it an event. A publish is serialised once into a [`Frame`] and passed
//! to the adapter, which delivers it on every node (see [`crate::adapter`]).

pub mod feed;
mod member_lock;
pub mod outbound;
pub mod registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::adapter::redis::{RedisAdapter, RedisSettings};
use crate::adapter::{Adapter, Broadcast, ClusterEvent, Join, LocalAdapter};
use crate::config::AppConfig;
use crate::protocol::presence::{presence_succeeded_json, removed_json, MemberData};
use crate::protocol::ChannelName;
use crate::protocol::{Frame, SocketId};
use crate::webhooks::{WebhookEvent, Webhooks};

pub use outbound::{Outbound, OutboundReceiver, Outgoing, OverflowSignal};
pub use registry::{Registry, Subscribed, Unsubscribed};

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    UnknownApp,
    /// The presence channel is at its member cap.
    PresenceFull(usize),
}

/// How often changed subscription counts are announced: the throttle.
pub const SUBSCRIPTION_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1000);

/// An app as served: its configuration, shared by every connection and request of the app.
pub type App = Arc<AppConfig>;

pub struct Hub {
    by_id: HashMap<String, App>,
    by_key: HashMap<String, App>,
    registry: Arc<Registry>,
    adapter: Arc<dyn Adapter>,
    webhooks: Webhooks,
    node: u32,
    next_seq: AtomicU64,
    /// Recent activity for the dashboard (recording is off unless the dashboard is on).
    pub feed: feed::Feed,
    /// Orders one node's joins and leaves of the same presence member.
    member_locks: member_lock::MemberLocks,
}

impl Hub {
    /// A hub for `apps` on a single node.
    pub fn local(apps: &[AppConfig]) -> Arc<Hub> {
        let (registry, webhooks) = Hub::parts(apps);
        let adapter = Arc::new(LocalAdapter::new(registry.clone()));
        Hub::with_adapter(apps, registry, adapter, webhooks, Hub::new_node_id())
    }

    /// A hub for `apps` that is one node of a Redis-backed cluster.
    pub async fn clustered(apps: &[AppConfig], settings: RedisSettings) -> anyhow::Result<Arc<Hub>> {
        let (registry, webhooks) = Hub::parts(apps);
        let node = Hub::new_node_id();
        let app_ids = apps.iter().map(|a| a.id.clone()).collect();
        let adapter = RedisAdapter::start(registry.clone(), node, app_ids, settings).await?;
        Ok(Hub::with_adapter(apps, registry, adapter, webhooks, node))
    }

    fn parts(apps: &[AppConfig]) -> (Arc<Registry>, Webhooks) {
        let mut registry = Registry::new(apps.iter().map(|a| (a.id.as_str(), a.subscription_count_events)));
        let webhooks = Webhooks::new(apps);
        for app in apps {
            if webhooks.wants(&app.id, "subscription_count") {
                registry.track_counts(&app.id);
            }
        }
        (Arc::new(registry), webhooks)
    }

    /// Random, so socket ids stay unique across nodes without coordination.
    pub fn new_node_id() -> u32 {
        rand::random::<u32>() % 1_000_000_000
    }

    /// A hub whose peers are reached through `adapter` (which delivers locally through `registry`).
    pub fn with_adapter(
        apps: &[AppConfig],
        registry: Arc<Registry>,
        adapter: Arc<dyn Adapter>,
        webhooks: Webhooks,
        node: u32,
    ) -> Arc<Hub> {
        let apps: Vec<App> = apps.iter().cloned().map(Arc::new).collect();
        Arc::new(Hub {
            by_id: apps.iter().map(|a| (a.id.clone(), a.clone())).collect(),
            by_key: apps.iter().map(|a| (a.key.clone(), a.clone())).collect(),
            registry,
            adapter,
            webhooks,
            node,
            next_seq: AtomicU64::new(1),
            feed: feed::Feed::new(false),
            member_locks: member_lock::MemberLocks::default(),
        })
    }

    /// Turns on the activity feed (for the dashboard). Call before sharing the hub.
    pub fn with_feed(mut self: Arc<Self>) -> Arc<Self> {
        if let Some(hub) = Arc::get_mut(&mut self) {
            hub.feed = feed::Feed::new(true);
        }
        self
    }

    pub fn app_by_id(&self, id: &str) -> Option<&App> {
        self.by_id.get(id)
    }

    pub fn app_by_key(&self, key: &str) -> Option<&App> {
        self.by_key.get(key)
    }

    pub fn apps(&self) -> impl Iterator<Item = &App> {
        self.by_id.values()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
    }

    /// Starts the hub's shared background work (one task for the whole process, not one per
    /// connection): the throttled `subscription_count` round.
    pub fn spawn_background(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        self.webhooks.start();
        if let Some(mut events) = self.adapter.take_events() {
            let hub = self.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    hub.on_cluster_event(event).await;
                }
            });
        }
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SUBSCRIPTION_COUNT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        for (app_id, channel, count) in hub.registry.flush_subscription_counts() {
                            hub.webhooks.emit(&app_id, WebhookEvent::SubscriptionCount { channel, count });
                        }
                    }
                }
            }
        });
    }

    /// Subscribes a connection's queue to a channel; on presence channels `member` is who it joins
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
        let guard = match member {
            Some(member) => Some(self.member_locks.lock(&app.id, name, &member.user_id).await),
            None => None,
        };
        let succeeded = match member {
            None => "{}".to_owned(),
            Some(member) => {
                let user = member.user_id.as_str();
                let members = if self.registry.add_local_user(&app.id, name, user) {
                    match self.adapter.presence_join(&app.id, name, member, app.max_presence_members).await {
                        Join::Joined { first, members } => {
                            announce = first;
                            members
                        }
                        Join::Full => {
                            self.registry.remove_local_user(&app.id, name, user);
                            return Err(SubscribeError::PresenceFull(app.max_presence_members));
                        }
                    }
                } else {
                    self.adapter.members(&app.id, name).await
                };
                presence_succeeded_json(members.iter().map(|(id, info)| (id.as_str(), info.as_deref())))
            }
        };
        let user_id = member.map(|m| m.user_id.as_str());
        let confirmation = confirmation.unwrap_or_else(|| Frame::subscription_succeeded(name, &succeeded));
        let Some(subscribed) = self.registry.subscribe(&app.id, channel, out, confirmation, user_id) else {
            return Err(SubscribeError::UnknownApp);
        };
        if subscribed.new {
            self.adapter.subscription_changed(&app.id, name, 1).await;
            self.feed.record(&app.id, "subscribed", Some(name), Some(out.socket_id().to_string()), "");
        }
        if subscribed.occupied && self.adapter.occupied(&app.id, name).await {
            self.webhooks.emit(&app.id, WebhookEvent::ChannelOccupied { channel: name.to_owned() });
        }
        if let (true, Some(member)) = (announce, member) {
            let frame = Frame::internal("pusher_internal:member_added", Some(name), &member.added_json());
            let except = Some(out.socket_id());
            self.publish(Broadcast { app_id: app.id.clone(), channel: name.to_owned(), frame, except }).await;
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

    /// Unsubscribes a socket; a presence user's last socket in the cluster is announced as gone.
    pub async fn unsubscribe(&self, app_id: &str, channel: &str, socket_id: SocketId) {
        let Some(left) = self.registry.unsubscribe(app_id, channel, socket_id) else { return };
        if channel.starts_with(crate::protocol::channel::USER_CHANNEL_PREFIX) {
            return;
        }
        self.adapter.subscription_changed(app_id, channel, -1).await;
        self.feed.record(app_id, "unsubscribed", Some(channel), Some(socket_id.to_string()), "");
        if let Some(user_id) = left.last_local_socket_of {
            self.user_left(app_id, channel, &user_id).await;
        }
        if left.vacated && self.adapter.vacated(app_id, channel).await {
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
        if self.adapter.presence_leave(app_id, channel, user_id).await {
            let frame = Frame::internal("pusher_internal:member_removed", Some(channel), &removed_json(user_id));
            self.publish(Broadcast { app_id: app_id.to_owned(), channel: channel.to_owned(), frame, except: None })
                .await;
            let user_id = user_id.to_owned();
            self.webhooks.emit(app_id, WebhookEvent::MemberRemoved { channel: channel.to_owned(), user_id });
        }
    }

    /// Counts a new connection against the app's quota (this node's); false when full.
    pub async fn connection_opened(&self, app: &AppConfig) -> bool {
        if !self.registry.try_add_connection(&app.id, app.max_connections) {
            self.feed.record(&app.id, "refused", None, None, "over the connection quota (4004)");
            return false;
        }
        self.adapter.connection_changed(&app.id, 1).await;
        true
    }

    pub async fn connection_closed(&self, app_id: &str) {
        self.registry.remove_connection(app_id);
        self.adapter.connection_changed(app_id, -1).await;
    }

    /// Whether the cluster can be reached (always, for a single node).
    pub fn healthy(&self) -> bool {
        self.adapter.healthy()
    }

    /// Announces what the adapter noticed by itself: a dead node's members and channels gone.
    async fn on_cluster_event(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::MemberGone { app_id, channel, user_id } => {
                let frame = Frame::internal("pusher_internal:member_removed", Some(&channel), &removed_json(&user_id));
                self.publish(Broadcast { app_id: app_id.clone(), channel: channel.clone(), frame, except: None }).await;
                self.webhooks.emit(&app_id, WebhookEvent::MemberRemoved { channel, user_id });
            }
            ClusterEvent::ChannelGone { app_id, channel } => {
                self.webhooks.emit(&app_id, WebhookEvent::ChannelVacated { channel });
            }
        }
    }

    /// Closes a signed-in user's connections on every node.
    pub async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.adapter.terminate_user(app_id, user_id).await;
    }

    /// A fresh socket id, unique across the cluster.
    pub fn next_socket_id(&self) -> SocketId {
        SocketId { node: self.node, seq: self.next_seq.fetch_add(1, Ordering::Relaxed) }
    }

    /// Publishes an application event to a channel on every node. The frame is built once here.
    pub async fn publish_event(
        &self,
        app_id: &str,
        channel: &str,
        event: &str,
        data: &str,
        except: Option<SocketId>,
    ) -> usize {
        let frame = Frame::event(event, channel, data);
        self.publish(Broadcast { app_id: app_id.to_owned(), channel: channel.to_owned(), frame, except }).await
    }

    /// Publishes a ready frame on every node.
    pub async fn publish(&self, broadcast: Broadcast) -> usize {
        if self.feed.enabled() {
            let kind =
                if broadcast.frame.as_str().contains("\"event\":\"client-") { "client_event" } else { "message" };
            let except = broadcast.except.map(|s| s.to_string());
            self.feed.record(&broadcast.app_id, kind, Some(&broadcast.channel), except, broadcast.frame.as_str());
        }
        let started = std::time::Instant::now();
        let delivered = self.adapter.publish(broadcast).await;
        crate::metrics::published(delivered, started.elapsed().as_secs_f64());
        delivered
    }
}
