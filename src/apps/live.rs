//! The apps being served, whatever their source: the file (replaced on SIGHUP) or a database
//! (replaced on every refresh).
//!
//! The set is an immutable snapshot swapped in whole: a lookup is an atomic load and a hash
//! lookup, never a lock. [`LiveApps::replace`] installs a new set and announces the difference,
//! and keeps a rotated-out secret beside the new one for the configured grace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use super::{App, AppChange, AppStore};
use crate::config::{AppConfig, PreviousSecret};

/// Changes buffered for a slow listener before it is told it lagged.
const CHANGE_BUFFER: usize = 1024;

#[derive(Default)]
struct Snapshot {
    ordered: Vec<App>,
    by_id: HashMap<String, App>,
    by_key: HashMap<String, App>,
}

impl Snapshot {
    fn new(apps: &[AppConfig]) -> Snapshot {
        let ordered: Vec<App> = apps.iter().cloned().map(Arc::new).collect();
        Snapshot {
            by_id: ordered.iter().map(|a| (a.id.clone(), a.clone())).collect(),
            by_key: ordered.iter().map(|a| (a.key.clone(), a.clone())).collect(),
            ordered,
        }
    }
}

pub struct LiveApps {
    snapshot: ArcSwap<Snapshot>,
    changes: broadcast::Sender<AppChange>,
    secret_grace: Duration,
}

impl LiveApps {
    /// A store with no secret grace, for tests.
    #[cfg(test)]
    pub fn new(apps: &[AppConfig]) -> Arc<LiveApps> {
        LiveApps::with_secret_grace(apps, Duration::ZERO)
    }

    /// A store that, when an app's secret changes, keeps accepting the old one for `grace`.
    pub fn with_secret_grace(apps: &[AppConfig], grace: Duration) -> Arc<LiveApps> {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Arc::new(LiveApps { snapshot: ArcSwap::from_pointee(Snapshot::new(apps)), changes, secret_grace: grace })
    }

    /// Serves `apps` from now on and announces what differs: apps added or whose configuration
    /// changed, and apps removed. Unchanged apps keep their `Arc` (and so their state).
    pub fn replace(&self, apps: &[AppConfig]) {
        let old = self.snapshot.load_full();
        let now = Instant::now();
        let apps: Vec<AppConfig> = apps
            .iter()
            .map(|app| {
                let mut app = app.clone();
                if let Some(previous) = old.by_id.get(&app.id) {
                    app.previous_secret =
                        self.carried_secret((&previous.secret, &previous.previous_secret), &app.secret, now);
                    app.previous_jwt_secret = self.carried_secret(
                        (previous.jwt_signing_secret(), &previous.previous_jwt_secret),
                        app.jwt_signing_secret(),
                        now,
                    );
                }
                app
            })
            .collect();
        let mut next = Snapshot::new(&apps);
        let mut changes = Vec::new();
        for app in next.ordered.iter_mut() {
            match old.by_id.get(&app.id) {
                Some(previous) if **previous == **app => *app = previous.clone(),
                _ => changes.push(AppChange::Updated(app.clone())),
            }
        }
        next.by_id = next.ordered.iter().map(|a| (a.id.clone(), a.clone())).collect();
        next.by_key = next.ordered.iter().map(|a| (a.key.clone(), a.clone())).collect();
        for id in old.by_id.keys().filter(|id| !next.by_id.contains_key(*id)) {
            changes.push(AppChange::Removed(id.clone()));
        }
        self.snapshot.store(Arc::new(next));
        for change in changes {
            // No listener is fine: nothing keeps state yet.
            let _ = self.changes.send(change);
        }
    }
}

impl LiveApps {
    /// What a new configuration keeps of a secret `served` (the secret served now, and the one it
    /// still accepts from before): after a rotation, the secret being replaced (for the grace);
    /// without one, whatever was already kept, so an unchanged app compares equal and keeps its
    /// `Arc`.
    fn carried_secret(
        &self,
        (served, kept): (&str, &Option<PreviousSecret>),
        secret: &str,
        now: Instant,
    ) -> Option<PreviousSecret> {
        if served == secret {
            return kept.clone();
        }
        (!self.secret_grace.is_zero())
            .then(|| PreviousSecret { secret: served.to_owned(), until: now + self.secret_grace })
    }
}

impl AppStore for LiveApps {
    fn by_key(&self, key: &str) -> Option<App> {
        self.snapshot.load().by_key.get(key).cloned()
    }

    fn by_id(&self, id: &str) -> Option<App> {
        self.snapshot.load().by_id.get(id).cloned()
    }

    fn list(&self) -> Vec<App> {
        self.snapshot.load().ordered.clone()
    }

    fn changes(&self) -> broadcast::Receiver<AppChange> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_key_and_id_and_announces_differences() {
        let store = LiveApps::new(&[AppConfig::new("1", "k1", "s1"), AppConfig::new("2", "k2", "s2")]);
        assert_eq!(store.by_key("k1").map(|a| a.id.clone()).as_deref(), Some("1"));
        assert_eq!(store.by_id("2").map(|a| a.key.clone()).as_deref(), Some("k2"));
        assert!(store.by_key("1").is_none() && store.by_id("k1").is_none());
        assert_eq!(store.list().iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);

        let mut changes = store.changes();
        let kept = store.by_id("1");
        let mut changed = AppConfig::new("2", "k2", "rotated");
        changed.max_connections = Some(3);
        store.replace(&[AppConfig::new("1", "k1", "s1"), changed, AppConfig::new("3", "k3", "s3")]);
        assert!(Arc::ptr_eq(&store.by_id("1").unwrap(), &kept.unwrap()), "an unchanged app keeps its Arc");
        assert_eq!(store.by_id("2").unwrap().secret, "rotated");
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            seen.push(match change {
                AppChange::Updated(app) => format!("updated {}", app.id),
                AppChange::Removed(id) => format!("removed {id}"),
            });
        }
        assert_eq!(seen, ["updated 2", "updated 3"]);
        store.replace(&[AppConfig::new("3", "k3", "s3")]);
        let mut removed: Vec<String> = std::iter::from_fn(|| changes.try_recv().ok())
            .filter_map(|c| match c {
                AppChange::Removed(id) => Some(id),
                AppChange::Updated(_) => None,
            })
            .collect();
        removed.sort();
        assert_eq!(removed, ["1", "2"]);
        assert!(store.by_key("k1").is_none());
    }

    #[test]
    fn a_rotated_secret_is_accepted_for_the_grace_only() {
        let secrets = |store: &LiveApps| -> Vec<String> {
            store.by_id("1").unwrap().accepted_secrets().map(str::to_owned).collect()
        };
        let store = LiveApps::with_secret_grace(&[AppConfig::new("1", "k", "old")], Duration::from_millis(200));
        store.replace(&[AppConfig::new("1", "k", "new")]);
        assert_eq!(secrets(&store), ["new", "old"]);
        let kept = store.by_id("1").unwrap();
        store.replace(&[AppConfig::new("1", "k", "new")]);
        assert!(Arc::ptr_eq(&kept, &store.by_id("1").unwrap()), "a refresh with no change keeps the app");
        assert_eq!(secrets(&store), ["new", "old"], "and its grace");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(secrets(&store), ["new"], "the old secret is refused after the grace");

        let jwt = |store: &LiveApps| -> Vec<String> {
            store.by_id("1").unwrap().accepted_jwt_secrets().map(str::to_owned).collect()
        };
        assert_eq!(jwt(&store), ["new"], "tokens signed with the app secret follow it");
        let with_jwt = |jwt_secret: Option<&str>, secret: &str| {
            let mut app = AppConfig::new("1", "k", secret);
            app.jwt_secret = jwt_secret.map(str::to_owned);
            app
        };
        store.replace(&[with_jwt(Some("jwt-1"), "new")]);
        assert_eq!(jwt(&store), ["jwt-1", "new"], "a jwt_secret set: tokens of the app secret for the grace");
        store.replace(&[with_jwt(Some("jwt-2"), "new")]);
        assert_eq!(jwt(&store), ["jwt-2", "jwt-1"], "jwt_secret rotated");
        assert_eq!(secrets(&store), ["new"], "and the app secret untouched");
        store.replace(&[with_jwt(Some("jwt-2"), "newer")]);
        assert_eq!(jwt(&store), ["jwt-2", "jwt-1"], "an app secret rotation leaves its own jwt_secret's grace");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(jwt(&store), ["jwt-2"]);

        let strict = LiveApps::new(&[AppConfig::new("1", "k", "old")]);
        strict.replace(&[AppConfig::new("1", "k", "new")]);
        assert_eq!(secrets(&strict), ["new"], "no grace configured: refused at once");
    }
}
