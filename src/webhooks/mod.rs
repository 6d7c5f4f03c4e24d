//! Webhooks: telling the application when channels fill and empty, members come and go, and
//! clients send events, the way Pusher does (so the SDKs' webhook verification works unchanged).
//!
//! The WebSocket path only ever calls [`Webhooks::emit`], a non-blocking push into a bounded
//! queue. Per app, a dispatcher task batches events over a short window, holds back
//! `channel_vacated` / `member_removed` for a moment so that a page reload does not produce a
//! vacated/occupied pair, and hands each webhook its own batch. Per webhook, a sender task delivers
//! batches in order, retrying with backoff. A full queue drops the event, counts it and logs it.

mod dispatcher;
mod event;
mod sender;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use tokio::sync::mpsc;
use tracing::warn;

use crate::apps::{App, AppStore};
use crate::config::AppConfig;

pub use event::{wants, WebhookEvent};

/// Events waiting for an app's dispatcher.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Delivery counters, for metrics and tests.
#[derive(Default, Debug)]
pub struct WebhookStats {
    /// Batches accepted by a receiver (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (non-2xx, timeout, connection error) and were retried.
    pub failed_attempts: AtomicU64,
    /// Batches given up after retrying for the whole retry window.
    pub given_up: AtomicU64,
    /// Events dropped because a queue was full.
    pub dropped: AtomicU64,
}

struct AppHooks {
    tx: mpsc::Sender<WebhookEvent>,
    /// The configuration the dispatcher was started with: a changed app gets a new dispatcher.
    app: App,
}

/// The process's webhook machinery. Each app's dispatcher is started by the app's first event and
/// let go when the app is removed or its configuration changes.
pub struct Webhooks {
    apps: Arc<dyn AppStore>,
    hooks: DashMap<String, AppHooks>,
    pub stats: Arc<WebhookStats>,
}

/// Whether the app has a webhook that wants events named `name`.
pub fn app_wants(app: &AppConfig, name: &str) -> bool {
    app.webhooks.iter().any(|w| w.event_types.is_empty() || w.event_types.iter().any(|t| t == name))
}

impl Webhooks {
    pub fn new(apps: Arc<dyn AppStore>) -> Self {
        Webhooks { apps, hooks: DashMap::new(), stats: Arc::new(WebhookStats::default()) }
    }

    /// Queues an event without waiting. A full queue drops it: counted, and logged. Must be
    /// called inside the runtime (it may start the app's dispatcher).
    pub fn emit(&self, app_id: &str, event: WebhookEvent) {
        let Some(app) = self.apps.by_id(app_id) else { return };
        if !app.webhooks.iter().any(|w| wants(w, &event)) {
            return;
        }
        let start = |app: App| {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            dispatcher::spawn(app.clone(), rx, self.stats.clone());
            AppHooks { tx, app }
        };
        let tx = {
            // Under the entry's lock, so concurrent first events start one dispatcher, in order.
            let mut hooks = self.hooks.entry(app_id.to_owned()).or_insert_with(|| start(app.clone()));
            if !Arc::ptr_eq(&hooks.app, &app) {
                // Replacing drops the old sender: the old dispatcher ends after its queue.
                *hooks = start(app);
            }
            hooks.tx.clone()
        };
        if tx.try_send(event).is_err() {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(app_id, dropped, "webhook queue full: events dropped");
            }
        }
    }

    /// Lets go of a removed app's dispatcher (it delivers what it already has, then ends).
    pub fn forget(&self, app_id: &str) {
        self.hooks.remove(app_id);
    }
}
