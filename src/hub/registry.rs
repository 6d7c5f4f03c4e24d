//! This node's channels and their subscribers, per app, and the fan-out loop.
//!
//! Channels live in a sharded map so that subscribes on different channels do not contend. Fan-out
//! holds one shard's read lock while it pushes the same shared frame into each subscriber's queue;
//! a push never waits on a socket, so no lock is ever held across a write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use super::outbound::Outbound;
use crate::adapter::{Broadcast, LocalNode};
use crate::protocol::{Frame, SocketId};

#[derive(Default)]
struct Channel {
    subscribers: HashMap<SocketId, Outbound>,
}

#[derive(Default)]
struct AppChannels {
    channels: DashMap<Box<str>, Channel>,
    connections: AtomicUsize,
}

/// Local subscriptions of every app served by this node.
pub struct Registry {
    apps: HashMap<String, AppChannels>,
}

/// What a subscribe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The socket was not subscribed before.
    pub new: bool,
    /// The channel had no local subscriber before.
    pub occupied: bool,
}

impl Registry {
    pub fn new<'a>(app_ids: impl IntoIterator<Item = &'a str>) -> Self {
        Registry { apps: app_ids.into_iter().map(|id| (id.to_owned(), AppChannels::default())).collect() }
    }

    /// Adds a subscriber and queues `succeeded` to it under the channel's lock, so that the
    /// confirmation always precedes the channel's first event.
    pub fn subscribe(&self, app_id: &str, channel: &str, out: &Outbound, succeeded: Frame) -> Subscribed {
        let Some(app) = self.apps.get(app_id) else {
            return Subscribed { new: false, occupied: false };
        };
        let mut entry = app.channels.entry(channel.into()).or_default();
        let occupied = entry.subscribers.is_empty();
        let new = entry.subscribers.insert(out.socket_id(), out.clone()).is_none();
        out.push(succeeded);
        Subscribed { new, occupied }
    }

    /// Removes a subscriber. Returns `Some(vacated)` when it was subscribed.
    pub fn unsubscribe(&self, app_id: &str, channel: &str, socket_id: SocketId) -> Option<bool> {
        let app = self.apps.get(app_id)?;
        let removed = {
            let mut entry = app.channels.get_mut(channel)?;
            entry.subscribers.remove(&socket_id).is_some()
        };
        if !removed {
            return None;
        }
        // Re-checked under the write lock: a subscribe may have slipped in between.
        let vacated = app.channels.remove_if(channel, |_, c| c.subscribers.is_empty()).is_some();
        Some(vacated)
    }

    /// Counts a new connection against the app's quota; false when at `max`.
    pub fn try_add_connection(&self, app_id: &str, max: Option<u64>) -> bool {
        let Some(app) = self.apps.get(app_id) else {
            return false;
        };
        let limit = max.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        app.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    pub fn remove_connection(&self, app_id: &str) {
        if let Some(app) = self.apps.get(app_id) {
            app.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Total subscriptions of every app (for tests and metrics: proves nothing leaks).
    pub fn total_subscriptions(&self) -> usize {
        self.apps.values().flat_map(|a| a.channels.iter().map(|c| c.subscribers.len()).collect::<Vec<_>>()).sum()
    }

    /// Total channels of every app.
    pub fn total_channels(&self) -> usize {
        self.apps.values().map(|a| a.channels.len()).sum()
    }
}

impl LocalNode for Registry {
    fn deliver(&self, b: &Broadcast) -> usize {
        let Some(app) = self.apps.get(&b.app_id) else {
            return 0;
        };
        let Some(channel) = app.channels.get(b.channel.as_str()) else {
            return 0;
        };
        let mut delivered = 0;
        for (socket_id, out) in &channel.subscribers {
            if Some(*socket_id) != b.except && out.push(b.frame.clone()) {
                delivered += 1;
            }
        }
        delivered
    }

    fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.apps.get(app_id).and_then(|a| a.channels.get(channel).map(|c| c.subscribers.len())).unwrap_or(0)
    }

    fn channels(&self, app_id: &str) -> Vec<(String, usize)> {
        let Some(app) = self.apps.get(app_id) else {
            return Vec::new();
        };
        app.channels
            .iter()
            .filter(|c| !c.subscribers.is_empty())
            .map(|c| (c.key().to_string(), c.subscribers.len()))
            .collect()
    }

    fn connection_count(&self, app_id: &str) -> usize {
        self.apps.get(app_id).map_or(0, |a| a.connections.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbound::Outgoing;

    fn sid(seq: u64) -> SocketId {
        SocketId { node: 1, seq }
    }

    #[tokio::test]
    async fn fan_out_shares_one_frame_and_honours_exclusion() {
        let reg = Registry::new(["a"]);
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, mut r2) = Outbound::new(sid(2), 1 << 20);
        let ok = Frame::subscription_succeeded("c", "{}");
        assert_eq!(reg.subscribe("a", "c", &o1, ok.clone()), Subscribed { new: true, occupied: true });
        assert_eq!(reg.subscribe("a", "c", &o2, ok.clone()), Subscribed { new: true, occupied: false });
        let frame = Frame::event("e", "c", "d");
        let b = Broadcast { app_id: "a".into(), channel: "c".into(), frame: frame.clone(), except: Some(sid(1)) };
        assert_eq!(reg.deliver(&b), 1);
        let mut got = Vec::new();
        r2.recv_many(&mut got, 10).await;
        assert_eq!(got.len(), 2, "succeeded then the event");
        match &got[1] {
            Outgoing::Frame(f) => assert_eq!(f.bytes().as_ptr(), frame.bytes().as_ptr(), "same bytes, not a copy"),
            other => panic!("{other:?}"),
        }
        got.clear();
        r1.recv_many(&mut got, 10).await;
        assert_eq!(got.len(), 1, "only the confirmation: the event was excluded");
    }

    #[test]
    fn unsubscribing_the_last_socket_vacates_and_frees_the_channel() {
        let reg = Registry::new(["a"]);
        let (o1, _r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", "c", &o1, Frame::pong());
        reg.subscribe("a", "c", &o2, Frame::pong());
        assert_eq!(reg.subscription_count("a", "c"), 2);
        assert_eq!(reg.unsubscribe("a", "c", sid(1)), Some(false));
        assert_eq!(reg.unsubscribe("a", "c", sid(1)), None, "twice is a no-op");
        assert_eq!(reg.unsubscribe("a", "c", sid(2)), Some(true));
        assert_eq!(reg.total_channels(), 0);
        assert!(reg.channels("a").is_empty());
    }

    #[test]
    fn connection_quota() {
        let reg = Registry::new(["a"]);
        assert!(reg.try_add_connection("a", Some(2)));
        assert!(reg.try_add_connection("a", Some(2)));
        assert!(!reg.try_add_connection("a", Some(2)));
        reg.remove_connection("a");
        assert!(reg.try_add_connection("a", Some(2)));
        assert!(!reg.try_add_connection("unknown", None));
    }
}
