//! One handle for Redis commands, to a single server or to a Redis Cluster.

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};

/// Commands go through a reconnecting multiplexed connection (single server) or the cluster
/// client (which routes each key to its shard). Both are cheap to clone and safe to share.
#[derive(Clone)]
pub enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Commands {
    pub async fn connect(urls: &[String]) -> RedisResult<Commands> {
        if urls.len() == 1 {
            let client = redis::Client::open(urls[0].as_str())?;
            Ok(Commands::Single(client.get_connection_manager().await?))
        } else {
            let client = redis::cluster::ClusterClient::new(urls.iter().map(String::as_str).collect::<Vec<_>>())?;
            Ok(Commands::Cluster(client.get_async_connection().await?))
        }
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self.clone() {
            Commands::Single(mut c) => cmd.query_async(&mut c).await,
            Commands::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    pub async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self.clone() {
            Commands::Single(mut c) => script.invoke_async(&mut c).await,
            Commands::Cluster(mut c) => script.invoke_async(&mut c).await,
        }
    }
}
