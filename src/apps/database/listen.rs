//! PostgreSQL `LISTEN herald_apps`: a change to the table (announced by the trigger in README,
//! App store) is read at once instead of at the next interval.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::DatabaseApps;

/// The channel the documented trigger notifies.
pub const CHANNEL: &str = "herald_apps";

/// Pause before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// A connection and its `LISTEN` that take longer are given up (a stalled database) and retried.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// Wakes the refresher on every notification, and after every reconnection (notifications sent
/// while the connection was down are lost, so the table is read again).
pub async fn notifications(pool: PgPool, apps: Arc<DatabaseApps>, shutdown: CancellationToken) {
    loop {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                debug!("apps store: LISTEN {CHANNEL} failed: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        apps.refresh_now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = listener.try_recv() => match next {
                    Ok(_) => apps.refresh_now(),
                    Err(e) => {
                        debug!("apps store: LISTEN {CHANNEL} lost: {e}");
                        break;
                    }
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let listen = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    };
    tokio::time::timeout(CONNECT_DEADLINE, listen).await.unwrap_or_else(|_| {
        let late = format!("no connection listening within {} s", CONNECT_DEADLINE.as_secs());
        Err(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, late)))
    })
}
