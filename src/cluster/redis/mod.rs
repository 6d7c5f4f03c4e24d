//! The Redis cluster: many Herald nodes behind a load balancer act as one server.
//!
//! - **Records** ([`broker`]): every publish is delivered to this node's sockets by the hub, then
//!   queued here for one Redis pub/sub channel; a publisher task sends whatever has queued up as one
//!   PUBLISH, in order ([`bus`] is the wire format), and every other node delivers it to its own
//!   sockets. At most one message per event, never one per subscriber.
//! - **State** ([`state`]): presence ([`presence`]) and occupancy ([`occupancy`]) in shared hashes
//!   kept by Lua scripts ([`scripts`]), subscription and connection counts per node ([`counts`]).
//!   Questions about the cluster are answered from Redis, with no request/response round over the bus.
//! - **Failure** ([`nodes`], [`resync`]): nodes heartbeat into a sorted set; a node whose heartbeat
//!   stops is reaped by another (its members removed cluster-wide with `member_removed`, its
//!   channels vacated). Every command has a deadline ([`connection`]). When Redis is away or slow,
//!   nodes keep serving their own sockets, answer cluster questions with an error, and rewrite their
//!   state once it is back.

mod broker;
mod cache;
// Crate-visible for the fuzz entry points (`crate::fuzzing`).
pub(crate) mod bus;
mod claims;
mod connection;
mod counts;
mod history;
mod http_sessions;
mod keys;
mod nodes;
mod occupancy;
mod online;
mod presence;
mod resync;
mod scripts;
mod state;
#[cfg(test)]
mod test_server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Cluster, ClusterError, ClusterResult, LocalNode};
use crate::apps::AppStore;
use connection::Commands;
use keys::Keys;

/// Settings of the Redis cluster.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL for a single server; several for a Redis Cluster's seed nodes.
    pub urls: Vec<String>,
    /// Prefix of every key, and the pub/sub channel: lets deployments share a Redis.
    pub prefix: String,
    /// A node silent this long is considered dead and reaped.
    pub node_timeout: Duration,
}

/// Whether this node can trust the cluster: its subscription is up, and its last commands worked.
#[derive(Default)]
struct Health {
    subscribed: AtomicBool,
    commands_ok: AtomicBool,
}

impl Health {
    fn healthy(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.commands_ok.load(Ordering::Acquire)
    }
}

/// What every part of the Redis implementation shares.
struct Shared {
    commands: Commands,
    keys: Keys,
    node: u32,
    settings: RedisSettings,
    health: Health,
}

impl Shared {
    /// Logs a failed Redis call, marks the node degraded, and says so to the caller.
    fn failed(&self, what: &str, e: &redis::RedisError) -> ClusterError {
        if self.health.commands_ok.swap(false, Ordering::AcqRel) {
            warn!(error = %e, "Redis unavailable ({what}): serving local traffic only until it is back");
        } else {
            debug!(error = %e, "Redis call failed: {what}");
        }
        ClusterError::Unavailable(format!("{what}: {e}"))
    }

    /// A command whose failure is logged, marks the node degraded and comes back as a `ClusterError`.
    async fn query<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> ClusterResult<T> {
        self.commands.query(cmd).await.map_err(|e| self.failed(what, &e))
    }

    /// A script call, likewise.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        what: &str,
        call: &redis::ScriptInvocation<'_>,
    ) -> ClusterResult<T> {
        self.commands.invoke(call).await.map_err(|e| self.failed(what, &e))
    }

    /// The error for a question asked while the state is not to be trusted.
    fn unavailable(&self) -> ClusterError {
        ClusterError::Unavailable("Redis is unreachable or not yet resynchronised".into())
    }
}

/// Connects (failing start-up if Redis cannot be reached at all) and starts the subscriber,
/// publisher, heartbeat and reaper tasks.
pub async fn start(
    local: Arc<dyn LocalNode>,
    node: u32,
    apps: Arc<dyn AppStore>,
    settings: RedisSettings,
) -> anyhow::Result<Cluster> {
    let commands = Commands::connect(&settings.urls)
        .await
        .map_err(|e| anyhow::anyhow!("[scaling] cannot connect to Redis at {}: {e}", redact(&settings.urls)))?;
    let shared = Arc::new(Shared {
        commands,
        keys: Keys::new(&settings.prefix),
        node,
        settings,
        health: Health { subscribed: AtomicBool::new(false), commands_ok: AtomicBool::new(true) },
    });
    let state = state::RedisState::new(shared.clone(), local.clone(), apps);
    state.heartbeat().await;
    let shared_for_history = shared.clone();
    let (broker, ready) = broker::RedisBroker::start(shared, local, state.clone());
    // Serve only once cross-node delivery works (bounded: a slow Redis is reported, not awaited forever).
    if tokio::time::timeout(Duration::from_secs(10), ready).await.is_err() {
        warn!("Redis subscription not ready after 10 s; serving local traffic meanwhile");
    } else {
        info!("Redis subscription ready");
    }
    tokio::spawn(state.clone().heartbeat_loop());
    let history = Arc::new(history::RedisHistory::new(shared_for_history, broker.clone()));
    Ok(Cluster { broker, state, history })
}

/// URLs for logs, without credentials.
fn redact(urls: &[String]) -> String {
    urls.iter()
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &u[..scheme + 3], &u[at..]),
            _ => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_logged_without_credentials() {
        let urls = vec!["redis://user:pw@host:6379/0".to_owned(), "redis://plain:1".to_owned()];
        assert_eq!(super::redact(&urls), "redis://***@host:6379/0,redis://plain:1");
    }
}
