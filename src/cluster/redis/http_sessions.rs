//! Where each HTTP fallback session lives: a key per session holding its node's URL, with an
//! expiry, so that a load balancer without sticky sessions can send a session's requests to any
//! node and the others relay them to the one that holds it.

use std::time::Duration;

use super::state::RedisState;
use crate::cluster::ClusterResult;

impl RedisState {
    pub(super) async fn record_http_session(&self, session: &str, url: &str, ttl: Duration) -> ClusterResult<()> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = redis::cmd("SET").arg(self.shared.keys.http_session(session)).arg(url).arg("PX").arg(millis).clone();
        self.shared.query::<()>("http session holder", &cmd).await
    }

    pub(super) async fn find_http_session(&self, session: &str) -> ClusterResult<Option<String>> {
        let cmd = redis::cmd("GET").arg(self.shared.keys.http_session(session)).clone();
        self.shared.query("http session holder", &cmd).await
    }
}
