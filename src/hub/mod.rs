//! The hub: apps, channels and subscriptions, and the one place where a publish fans out.
//!
//! It knows nothing of sockets or HTTP. Connections hand it an [`Outbound`] queue when they
//! subscribe; publishers hand it an event. A publish is serialised once into a [`Frame`] and passed
//! to the adapter, which delivers it on every node (see [`crate::adapter`]).

pub mod outbound;
pub mod registry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::adapter::{Adapter, Broadcast, LocalAdapter};
use crate::config::AppConfig;
use crate::protocol::{Frame, SocketId};
use crate::webhooks::{WebhookEvent, Webhooks};

pub use outbound::{Outbound, OutboundReceiver, Outgoing, OverflowSignal};
pub use registry::{Presence, Registry, SubscribeError, Subscribed, Unsubscribed};

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
}

impl Hub {
    /// A hub for `apps` on a single node.
    pub fn local(apps: &[AppConfig]) -> Arc<Hub> {
        let mut registry = Registry::new(apps.iter().map(|a| (a.id.as_str(), a.subscription_count_events)));
        let webhooks = Webhooks::new(apps);
        for app in apps {
            if webhooks.wants(&app.id, "subscription_count") {
                registry.track_counts(&app.id);
            }
        }
        let registry = Arc::new(registry);
        let adapter = Arc::new(LocalAdapter::new(registry.clone()));
        Hub::with_adapter(apps, registry, adapter, webhooks)
    }

    /// A hub whose peers are reached through `adapter` (which delivers locally through `registry`).
    pub fn with_adapter(
        apps: &[AppConfig],
        registry: Arc<Registry>,
        adapter: Arc<dyn Adapter>,
        webhooks: Webhooks,
    ) -> Arc<Hub> {
        let apps: Vec<App> = apps.iter().cloned().map(Arc::new).collect();
        Arc::new(Hub {
            by_id: apps.iter().map(|a| (a.id.clone(), a.clone())).collect(),
            by_key: apps.iter().map(|a| (a.key.clone(), a.clone())).collect(),
            registry,
            adapter,
            webhooks,
            // Random, so socket ids stay unique across nodes without coordination.
            node: rand::random::<u32>() % 1_000_000_000,
            next_seq: AtomicU64::new(1),
        })
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
        self.adapter.publish(broadcast).await
    }
}
