//! One handle for Redis commands, to a single server or to a Redis Cluster, with deadlines.
//!
//! Every call is bounded in time: a Redis that accepts connections but stops answering (stalled,
//! swapping, SIGSTOPped) must turn into an error the caller can act on, never into a wait that
//! holds a subscribe, a presence lock or an HTTP request open indefinitely.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, ScriptInvocation};

/// Longest a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one command may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to reconnect the command connection.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Commands go through a reconnecting multiplexed connection (single server) or the cluster
/// client (which routes each key to its shard). Both are cheap to clone and safe to share.
#[derive(Clone)]
pub enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::IoError, "timed out", what.to_owned()))
}

/// Runs `call`, turning a missed deadline into an error.
pub async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| Err(timed_out(what)))
}

impl Commands {
    pub async fn connect(urls: &[String]) -> RedisResult<Commands> {
        bounded(CONNECT_TIMEOUT, "connect", async {
            if urls.len() == 1 {
                let client = redis::Client::open(urls[0].as_str())?;
                // The crate's `factor` multiplies the wait between reconnection attempts (from 1 s);
                // its default of 100 made the second attempt wait a minute, so a Redis back after a
                // few seconds went unused that long. Double it instead, never past RECONNECT_MAX.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_factor(2)
                    .set_max_delay(RECONNECT_MAX.as_millis() as u64);
                Ok(Commands::Single(client.get_connection_manager_with_config(config).await?))
            } else {
                let client = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()?;
                Ok(Commands::Cluster(client.get_async_connection().await?))
            }
        })
        .await
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        bounded(RESPONSE_TIMEOUT, "command", async {
            match self.clone() {
                Commands::Single(mut c) => cmd.query_async(&mut c).await,
                Commands::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    pub async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> RedisResult<T> {
        bounded(RESPONSE_TIMEOUT, "script", async {
            match self.clone() {
                Commands::Single(mut c) => script.invoke_async(&mut c).await,
                Commands::Cluster(mut c) => script.invoke_async(&mut c).await,
            }
        })
        .await
    }
}
