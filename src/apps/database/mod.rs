//! Apps from a database table (PostgreSQL or MySQL/MariaDB), served from memory.
//!
//! Lookups never touch the database: the table is read whole into a [`LiveApps`] at start-up,
//! again every `refresh_interval_ms`, on SIGHUP, and (PostgreSQL) whenever a `NOTIFY herald_apps`
//! arrives ([`listen`]). Each read replaces the served set, so an added app is served, a
//! disabled or deleted one is removed (its connections closed with 4001) and a changed one is
//! used for new connections. A read that fails changes nothing: the last good apps keep being
//! served, the store reports itself unhealthy (`/up` says `DEGRADED`) and counts the failure.
//! A row that does not make a valid app is skipped, with one log line naming it.

mod listen;
mod rows;
mod source;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{App, AppChange, AppStore, LiveApps};
use crate::config::{AppConfig, AppsStoreConfig};
use source::Source;

/// Longest a read of the table may take (connecting included) before it counts as failed.
const READ_DEADLINE: Duration = Duration::from_secs(10);

pub struct DatabaseApps {
    live: Arc<LiveApps>,
    healthy: AtomicBool,
    failed_refreshes: AtomicU64,
    wake: Notify,
}

impl DatabaseApps {
    /// Reads the table once (a database that cannot be reached yet leaves the store empty and
    /// unhealthy, not the server stopped), then keeps it fresh until `shutdown`.
    pub async fn start(config: &AppsStoreConfig, shutdown: CancellationToken) -> anyhow::Result<Arc<DatabaseApps>> {
        let url = config.client_url().ok_or_else(|| anyhow::anyhow!("apps_store.url is not set"))?;
        let source = Source::connect_lazy(config.driver, &url).map_err(|e| anyhow::anyhow!("apps_store.url: {e}"))?;
        let grace = Duration::from_secs(config.secret_grace_seconds);
        let apps = Arc::new(DatabaseApps {
            live: LiveApps::with_secret_grace(&[], grace),
            healthy: AtomicBool::new(true),
            failed_refreshes: AtomicU64::new(0),
            wake: Notify::new(),
        });
        let mut refresher = Refresher {
            apps: apps.clone(),
            source,
            table: config.table.clone(),
            max_apps: config.max_apps,
            skipped: HashMap::new(),
        };
        let started = std::time::Instant::now();
        refresher.refresh().await;
        let ms = started.elapsed().as_millis() as u64;
        info!(driver = ?config.driver, table = %config.table, apps = apps.live.list().len(), ms, "apps store read");
        if let Some(pool) = refresher.source.postgres_pool() {
            tokio::spawn(listen::notifications(pool.clone(), apps.clone(), shutdown.clone()));
        }
        let interval = Duration::from_millis(config.refresh_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                    _ = refresher.apps.wake.notified() => {}
                }
                refresher.refresh().await;
            }
        });
        Ok(apps)
    }

    /// Reads the table again now (SIGHUP, a notification), without waiting for the interval.
    pub fn refresh_now(&self) {
        self.wake.notify_one();
    }
}

impl AppStore for DatabaseApps {
    fn by_key(&self, key: &str) -> Option<App> {
        self.live.by_key(key)
    }

    fn by_id(&self, id: &str) -> Option<App> {
        self.live.by_id(id)
    }

    fn list(&self) -> Vec<App> {
        self.live.list()
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<AppChange> {
        self.live.changes()
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn failed_refreshes(&self) -> u64 {
        self.failed_refreshes.load(Ordering::Relaxed)
    }
}

/// The one task that reads the table; it remembers which rows it skipped, so each bad row is
/// logged when it appears (or changes), not on every refresh.
struct Refresher {
    apps: Arc<DatabaseApps>,
    source: Source,
    table: String,
    max_apps: usize,
    skipped: HashMap<String, String>,
}

impl Refresher {
    async fn refresh(&mut self) {
        let started = std::time::Instant::now();
        let read = match tokio::time::timeout(READ_DEADLINE, self.source.read(&self.table, self.max_apps)).await {
            Ok(read) => read,
            Err(_) => Err(format!("no answer within {} s", READ_DEADLINE.as_secs())),
        };
        let records = match read {
            Ok(records) => records,
            Err(e) => {
                self.apps.failed_refreshes.fetch_add(1, Ordering::Relaxed);
                if self.apps.healthy.swap(false, Ordering::Relaxed) {
                    warn!("apps store unreadable, serving the last good apps ({}): {e}", self.apps.live.list().len());
                }
                return;
            }
        };
        let mut apps: Vec<AppConfig> = Vec::with_capacity(records.len());
        let mut skipped = HashMap::new();
        for record in &records {
            let name = record.get("id").cloned().unwrap_or_else(|| "(no id)".into());
            match rows::app_from_record(record) {
                Ok(Some(app)) => apps.push(app),
                Ok(None) => {}
                Err(reason) => {
                    skipped.insert(name, reason);
                }
            }
        }
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
        apps.retain(|app| {
            let unique = ids.insert(app.id.clone()) && keys.insert(app.key.clone());
            if !unique {
                skipped.insert(app.id.clone(), format!("another row has id {:?} or key {:?}", app.id, app.key));
            }
            unique
        });
        for (id, reason) in &skipped {
            if self.skipped.get(id) != Some(reason) {
                warn!(table = %self.table, row = %id, "apps store: row skipped: {reason}");
            }
        }
        self.skipped = skipped;
        self.apps.live.replace(&apps);
        crate::metrics::apps_store_read(started.elapsed());
        if !self.apps.healthy.swap(true, Ordering::Relaxed) {
            info!(apps = apps.len(), "apps store readable again");
        }
    }
}
