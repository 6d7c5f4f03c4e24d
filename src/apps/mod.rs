//! Where apps come from: the [`AppStore`] seam.
//!
//! Every lookup of an app (by key at a WebSocket handshake, by id on the HTTP API) goes through
//! one store, so that apps can come from a file today and from a database later, and change while
//! clients stay connected. Lookups are synchronous and lock-free (a snapshot behind an `ArcSwap`);
//! only loading may be slow, and it happens off the request path. Whoever keeps per-app state
//! (the hub's channels, webhooks, API limits) creates it on first use and listens to
//! [`AppStore::changes`] to let it go when an app is removed.
//!
//! A new source of apps is one file beside [`file`] implementing [`AppStore`].

mod file;

use std::sync::Arc;

use crate::config::AppConfig;

pub use file::StaticApps;

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
}
