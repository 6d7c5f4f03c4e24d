//! `subscription_count`, cluster-wide: once a second, every channel whose count changed on this
//! node gets the count the cluster state sums over every node, pushed to its subscribers on every
//! node (as a broadcast, so the broker carries it) and told to the app's webhook.
//!
//! A change on one node is announced by that node; the others' subscribers hear it through the
//! broker. With the cluster away, this node's own count is announced rather than nothing.

use super::registry::CountChange;
use super::Hub;
use crate::cluster::BroadcastKind;
use crate::protocol::{Channel, Frame};
use crate::webhooks::WebhookEvent;

impl Hub {
    /// One round of the throttle: announces every count that changed here since the last round.
    pub(super) async fn announce_subscription_counts(&self) {
        for CountChange { app_id, channel, local, send_events } in self.registry.take_count_changes() {
            let count = match self.cluster.state.subscription_count(&app_id, &channel).await {
                Ok(count) => count,
                Err(e) => {
                    tracing::debug!(error = %e, "subscription count of this node only");
                    local
                }
            };
            if send_events {
                if let Ok(parsed) = Channel::parse(&channel) {
                    let frame = Frame::subscription_count(&channel, count);
                    self.publish(&app_id, parsed, BroadcastKind::Internal, frame, None).await;
                }
            }
            self.webhooks.emit(&app_id, WebhookEvent::SubscriptionCount { channel, count });
        }
    }
}
