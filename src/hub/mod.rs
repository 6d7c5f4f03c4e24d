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

pub use outbound::{Outbound, OutboundReceiver, Outgoing, OverflowSignal};
pub use registry::{Registry, Subscribed};

/// An app as served: its configuration, shared by every connection and request of the app.
pub type App = Arc<AppConfig>;

pub struct Hub {
    by_id: HashMap<String, App>,
    by_key: HashMap<String, App>,
    registry: Arc<Registry>,
    adapter: Arc<dyn Adapter>,
    node: u32,
    next_seq: AtomicU64,
}

impl Hub {
    /// A hub for `apps` on a single node.
    pub fn local(apps: &[AppConfig]) -> Arc<Hub> {
        let registry = Arc::new(Registry::new(apps.iter().map(|a| a.id.as_str())));
        let adapter = Arc::new(LocalAdapter::new(registry.clone()));
        Hub::with_adapter(apps, registry, adapter)
    }

    /// A hub whose peers are reached through `adapter` (which delivers locally through `registry`).
    pub fn with_adapter(apps: &[AppConfig], registry: Arc<Registry>, adapter: Arc<dyn Adapter>) -> Arc<Hub> {
        let apps: Vec<App> = apps.iter().cloned().map(Arc::new).collect();
        Arc::new(Hub {
            by_id: apps.iter().map(|a| (a.id.clone(), a.clone())).collect(),
            by_key: apps.iter().map(|a| (a.key.clone(), a.clone())).collect(),
            registry,
            adapter,
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

    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
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
