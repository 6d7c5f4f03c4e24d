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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::warn;

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
    /// Taken by `start`.
    rx: Mutex<Option<mpsc::Receiver<WebhookEvent>>>,
    app: Arc<AppConfig>,
}

/// The process's webhook machinery.
pub struct Webhooks {
    apps: HashMap<String, AppHooks>,
    pub stats: Arc<WebhookStats>,
}

impl Webhooks {
    pub fn new(apps: &[AppConfig]) -> Self {
        let apps = apps
            .iter()
            .filter(|app| !app.webhooks.is_empty())
            .map(|app| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                (app.id.clone(), AppHooks { tx, rx: Mutex::new(Some(rx)), app: Arc::new(app.clone()) })
            })
            .collect();
        Webhooks { apps, stats: Arc::new(WebhookStats::default()) }
    }

    /// Whether the app has a webhook that wants events named `name`.
    pub fn wants(&self, app_id: &str, name: &str) -> bool {
        self.apps.get(app_id).is_some_and(|hooks| {
            hooks.app.webhooks.iter().any(|w| w.event_types.is_empty() || w.event_types.iter().any(|t| t == name))
        })
    }

    /// Queues an event without waiting. A full queue drops it: counted, and logged.
    pub fn emit(&self, app_id: &str, event: WebhookEvent) {
        let Some(hooks) = self.apps.get(app_id) else { return };
        if !hooks.app.webhooks.iter().any(|w| wants(w, &event)) {
            return;
        }
        if hooks.tx.try_send(event).is_err() {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(app_id, dropped, "webhook queue full: events dropped");
            }
        }
    }

    /// Spawns the dispatcher and sender tasks. Call once, inside the runtime.
    pub fn start(&self) {
        for hooks in self.apps.values() {
            let Some(rx) = hooks.rx.lock().ok().and_then(|mut rx| rx.take()) else { continue };
            dispatcher::spawn(hooks.app.clone(), rx, self.stats.clone());
        }
    }
}
