//! Where apps come from: the [`AppStore`] seam.
//!
//! Every lookup of an app (by key at a WebSocket handshake, by id on the HTTP API) goes through
//! one store, so that apps can come from a file today and from a database later, and change while
//! clients stay connected. Lookups are synchronous and lock-free (a snapshot behind an `ArcSwap`);
//! only loading may be slow, and it happens off the request path. Whoever keeps per-app state
//! (the hub's channels, webhooks, API limits) creates it on first use and listens to
//! [`AppStore::changes`] to let it go when an app is removed.
//!
//! The file's apps live in a [`LiveApps`], replaced on SIGHUP; a database's ([`database`]) live in
//! one too, replaced by a refresher. A new source of apps is one more module that feeds a
//! `LiveApps` and implements [`AppStore`].

pub mod database;
mod live;

use std::sync::Arc;

use crate::config::AppConfig;

pub use live::LiveApps;

/// An app as served: its configuration, shared by every connection and request of the app.
pub type App = Arc<AppConfig>;

/// What changed in a store, for those who keep state per app.
#[derive(Debug, Clone)]
pub enum AppChange {
    /// A new app, or a new configuration of an existing one (same id).
    Updated(App),
    /// The app with this id is gone.
    Removed(String),
}

/// The apps this server serves.
pub trait AppStore: Send + Sync + 'static {
    fn by_key(&self, key: &str) -> Option<App>;
    fn by_id(&self, id: &str) -> Option<App>;
    /// Every app, in a stable order (the configured one).
    fn list(&self) -> Vec<App>;
    /// Changes from now on. A receiver that falls behind gets `Lagged` and should re-read `list`.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<AppChange>;
    /// False while the source cannot be read (the last good apps are being served).
    fn healthy(&self) -> bool {
        true
    }
    /// Reads of the source that failed since start-up.
    fn failed_refreshes(&self) -> u64 {
        0
    }
}
