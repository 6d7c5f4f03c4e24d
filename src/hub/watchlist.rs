//! Watchlists (pusher-js `pusher.user.watchlist`): a signed-in socket names the users it watches,
//! and hears `pusher_internal:watchlist_events` when one of them comes online (their first
//! signed-in connection anywhere in the cluster) or goes offline (their last).
//!
//! A watcher is a subscriber of each watched user's server-made `#watchlist-{id}` channel, so a
//! change is one broadcast that the broker carries to every node like any other; who is online is
//! the cluster state's question ([`crate::cluster::ClusterState::user_online`]). This node tells
//! the cluster only of a user's first and last socket here (the `#server-to-user-{id}` channel
//! counts them), under the same per-user lock as presence, so a quick sign-out and sign-in cannot
//! reach the cluster in the wrong order.

use tracing::debug;

use super::{Hub, Outbound};
use crate::cluster::{BroadcastKind, ONLINE_USERS};
use crate::protocol::channel::{user_channel, watchlist_channel};
use crate::protocol::{Channel, Frame, SocketId};

impl Hub {
    /// Signs a socket in as `user_id`, watching `watchlist`. Returns the watched users' current
    /// state to send after `pusher:signin_success` (none for an empty watchlist, or while the
    /// cluster cannot say: an unknown state is not reported as offline).
    ///
    /// The socket watches before the state is read, so a change in between is not missed; it may
    /// then be heard twice, which a watcher takes as the same state.
    pub async fn sign_in(&self, app_id: &str, user_id: &str, out: &Outbound, watchlist: &[String]) -> Option<Frame> {
        {
            let _guard = self.member_locks.lock(app_id, ONLINE_USERS, user_id).await;
            if self.registry.join_server_channel(app_id, &user_channel(user_id), out) {
                // With the cluster away, assume first: a repeated `online` beats a missing one.
                let first = self.cluster.state.user_online(app_id, user_id).await.unwrap_or_else(|e| {
                    debug!(error = %e, "online announced without the cluster");
                    true
                });
                if first {
                    self.announce_watched(app_id, user_id, true).await;
                }
            }
        }
        if watchlist.is_empty() {
            return None;
        }
        for watched in watchlist {
            self.registry.join_server_channel(app_id, &watchlist_channel(watched), out);
        }
        match self.cluster.state.users_online(app_id, watchlist).await {
            Ok(states) => {
                let (mut online, mut offline) = (Vec::new(), Vec::new());
                for (id, is_online) in watchlist.iter().zip(states) {
                    if is_online {
                        online.push(id.as_str())
                    } else {
                        offline.push(id.as_str())
                    }
                }
                Some(Frame::watchlist_events(&online, &offline))
            }
            Err(e) => {
                debug!(error = %e, "watchlist state not sent: the cluster cannot say");
                None
            }
        }
    }

    /// A socket stops watching (it signed in again, or closed).
    pub fn unwatch(&self, app_id: &str, socket_id: SocketId, watchlist: &[String]) {
        for watched in watchlist {
            self.registry.unsubscribe(app_id, &watchlist_channel(watched), socket_id);
        }
    }

    /// The user's last signed-in socket on this node left: offline if it was their last anywhere.
    pub(super) async fn user_signed_out(&self, app_id: &str, user_id: &str) {
        let _guard = self.member_locks.lock(app_id, ONLINE_USERS, user_id).await;
        if self.registry.subscription_count_local(app_id, &user_channel(user_id)) > 0 {
            // Another socket of the user signed in here meanwhile: still online.
            return;
        }
        // With the cluster away, this node's watchers are still told: they heard the `online`.
        let gone = self.cluster.state.user_offline(app_id, user_id).await.unwrap_or_else(|e| {
            debug!(error = %e, "offline announced without the cluster");
            true
        });
        if gone {
            self.announce_watched(app_id, user_id, false).await;
        }
    }

    /// Tells every watcher of `user_id`, on every node, that it came online or went offline.
    pub(super) async fn announce_watched(&self, app_id: &str, user_id: &str, online: bool) {
        let frame =
            if online { Frame::watchlist_events(&[user_id], &[]) } else { Frame::watchlist_events(&[], &[user_id]) };
        self.publish(app_id, Channel::watchlist(user_id), BroadcastKind::Internal, frame, None).await;
    }
}
