//! This node's channels and subscribers, per app, and the fan-out loop.
//!
//! Channels live in a sharded map so that subscribes on different channels do not contend. Fan-out
//! holds one shard's read lock while it pushes the same shared frame into each subscriber's queue;
//! a push never waits on a socket, so no lock is ever held across a write. Everything a subscriber
//! must see in order (the confirmation, the cached event, member changes) is pushed under the
//! channel's lock, so it can never overtake or be overtaken by the channel's events.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::outbound::Outbound;
use crate::adapter::{Broadcast, LocalNode};
use crate::protocol::channel::USER_CHANNEL_PREFIX;
use crate::protocol::{ChannelKind, ChannelName, ErrorCode, Frame, SocketId};

/// How long a cache channel keeps its last event (Pusher keeps it 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);
/// Most cache channels remembered per app: every cache has a size.
pub const MAX_CACHED_CHANNELS: usize = 10_000;

struct Subscriber {
    out: Outbound,
    /// The presence member this socket joined as.
    user_id: Option<Arc<str>>,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<SocketId, Subscriber>,
    /// Sockets of each presence user on this node: a user is one member however many tabs it
    /// has, so the cluster's presence store hears only of a user's first and last socket here.
    local_users: HashMap<Arc<str>, usize>,
}

struct AppChannels {
    /// Whether `pusher_internal:subscription_count` is sent for this app.
    count_events: bool,
    /// Whether count changes are collected at all (for the events, or for a webhook).
    track_counts: bool,
    channels: DashMap<Box<str>, Channel>,
    connections: AtomicUsize,
    /// Last event of each cache channel, with when it was published.
    cache: DashMap<Box<str>, (Frame, Instant)>,
}

/// Local subscriptions of every app served by this node.
pub struct Registry {
    apps: HashMap<String, AppChannels>,
    /// Channels whose subscriber count changed since the last `subscription_count` round.
    count_changed: Mutex<HashSet<(String, String)>>,
}

/// What a subscribe changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The socket was not subscribed before.
    pub new: bool,
    /// The channel had no local subscriber before.
    pub occupied: bool,
    /// A cache channel had no event to replay.
    pub cache_miss: bool,
    /// Re-subscribing as another presence user released the previous user's last socket here.
    pub replaced_last_socket_of: Option<String>,
}

/// What an unsubscribe changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribed {
    /// The channel has no local subscriber left.
    pub vacated: bool,
    /// The presence user whose last socket on this node just left.
    pub last_local_socket_of: Option<String>,
}

impl AppChannels {
    fn new(count_events: bool) -> Self {
        AppChannels {
            count_events,
            track_counts: count_events,
            channels: DashMap::new(),
            connections: AtomicUsize::new(0),
            cache: DashMap::new(),
        }
    }
}

impl Registry {
    /// A registry for apps given as (id, whether subscription_count events are sent).
    pub fn new<'a>(apps: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        Registry {
            apps: apps.into_iter().map(|(id, count_events)| (id.to_owned(), AppChannels::new(count_events))).collect(),
            count_changed: Mutex::new(HashSet::new()),
        }
    }

    /// Counts one more socket of a presence user in a channel; true when it is the user's first on
    /// this node (the cluster's presence store must then hear of it). Call before `subscribe`;
    /// undo with `remove_local_user` if the subscribe is then refused.
    pub fn add_local_user(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        let Some(app) = self.apps.get(app_id) else { return false };
        let mut entry = app.channels.entry(channel.into()).or_default();
        let sockets = entry.local_users.entry(Arc::from(user_id)).or_insert(0);
        *sockets += 1;
        *sockets == 1
    }

    /// How many of this node's sockets are in `channel` as `user_id`.
    pub fn local_user_sockets(&self, app_id: &str, channel: &str, user_id: &str) -> usize {
        let Some(app) = self.apps.get(app_id) else { return 0 };
        app.channels.get(channel).and_then(|c| c.local_users.get(user_id).copied()).unwrap_or(0)
    }

    /// Takes back an `add_local_user`; true when it was the user's last socket here.
    pub fn remove_local_user(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        let Some(app) = self.apps.get(app_id) else { return false };
        let last = match app.channels.get_mut(channel) {
            Some(mut entry) => Self::release_user(&mut entry, user_id),
            None => false,
        };
        self.drop_if_empty(app, channel);
        last
    }

    fn release_user(entry: &mut Channel, user_id: &str) -> bool {
        let Some(sockets) = entry.local_users.get_mut(user_id) else { return false };
        *sockets -= 1;
        if *sockets == 0 {
            entry.local_users.remove(user_id);
            return true;
        }
        false
    }

    /// Adds a subscriber and, under the channel's lock, queues `confirmation` (normally
    /// `subscription_succeeded`, with the member list on presence channels) and, on cache channels,
    /// the cached event (or `pusher:cache_miss`), so neither can be overtaken by the channel's next
    /// event.
    pub fn subscribe(
        &self,
        app_id: &str,
        channel: &ChannelName<'_>,
        out: &Outbound,
        confirmation: Frame,
        user_id: Option<&str>,
    ) -> Option<Subscribed> {
        let app = self.apps.get(app_id)?;
        let name = channel.name;
        let mut entry = app.channels.entry(name.into()).or_default();
        let occupied = entry.subscribers.is_empty();
        let socket_id = out.socket_id();
        let previous =
            entry.subscribers.insert(socket_id, Subscriber { out: out.clone(), user_id: user_id.map(Arc::from) });
        let mut replaced_last_socket_of = None;
        if let Some(old_user) = previous.as_ref().and_then(|p| p.user_id.clone()) {
            // Subscribing again: this subscription's user count replaces the earlier one.
            if Self::release_user(&mut entry, &old_user) {
                replaced_last_socket_of = Some(old_user.to_string());
            }
        }
        out.push(confirmation);
        let mut cache_miss = false;
        if channel.cache {
            match app.cache.get(name).filter(|c| c.1.elapsed() < CACHE_TTL) {
                Some(cached) => {
                    out.push(cached.0.clone());
                }
                None => {
                    cache_miss = true;
                    out.push(Frame::cache_miss(name));
                }
            }
        }
        drop(entry);
        if app.track_counts && channel.kind != ChannelKind::Presence {
            self.mark_count_changed(app_id, name);
        }
        Some(Subscribed { new: previous.is_none(), occupied, cache_miss, replaced_last_socket_of })
    }

    /// Subscribes a signed-in socket to its user's `#server-to-user-{id}` channel, silently.
    pub fn join_user_channel(&self, app_id: &str, user_id: &str, out: &Outbound) {
        if let Some(app) = self.apps.get(app_id) {
            let name = format!("{USER_CHANNEL_PREFIX}{user_id}");
            app.channels
                .entry(name.into())
                .or_default()
                .subscribers
                .insert(out.socket_id(), Subscriber { out: out.clone(), user_id: None });
        }
    }

    /// Closes every local connection of a user (the HTTP API's `terminate_connections`).
    pub fn terminate_user(&self, app_id: &str, user_id: &str) -> usize {
        let Some(app) = self.apps.get(app_id) else { return 0 };
        let name = format!("{USER_CHANNEL_PREFIX}{user_id}");
        let Some(channel) = app.channels.get(name.as_str()) else { return 0 };
        for sub in channel.subscribers.values() {
            sub.out.close(ErrorCode::Unauthorized, "Connection terminated by the application");
        }
        channel.subscribers.len()
    }

    /// Removes a subscriber. Returns `None` when it was not subscribed.
    pub fn unsubscribe(&self, app_id: &str, channel: &str, socket_id: SocketId) -> Option<Unsubscribed> {
        let app = self.apps.get(app_id)?;
        let last_local_socket_of = {
            let mut entry = app.channels.get_mut(channel)?;
            let sub = entry.subscribers.remove(&socket_id)?;
            match sub.user_id {
                Some(user_id) if Self::release_user(&mut entry, &user_id) => Some(user_id.to_string()),
                _ => None,
            }
        };
        let vacated = self.drop_if_empty(app, channel);
        if app.track_counts && !channel.starts_with("presence-") && !channel.starts_with(USER_CHANNEL_PREFIX) {
            self.mark_count_changed(app_id, channel);
        }
        Some(Unsubscribed { vacated, last_local_socket_of })
    }

    /// Frees a channel with no subscriber left; re-checked under the write lock, since a subscribe
    /// may have slipped in.
    fn drop_if_empty(&self, app: &AppChannels, channel: &str) -> bool {
        app.channels.remove_if(channel, |_, c| c.subscribers.is_empty() && c.local_users.is_empty()).is_some()
    }

    fn mark_count_changed(&self, app_id: &str, channel: &str) {
        if let Ok(mut changed) = self.count_changed.lock() {
            changed.insert((app_id.to_owned(), channel.to_owned()));
        }
    }

    /// Also collects count changes of `app_id` when it does not send them to clients (a
    /// `subscription_count` webhook needs them).
    pub fn track_counts(&mut self, app_id: &str) {
        if let Some(app) = self.apps.get_mut(app_id) {
            app.track_counts = true;
        }
    }

    /// Sends `pusher_internal:subscription_count` to every channel whose count changed since the
    /// last call (where the app sends them), and returns the changes as (app, channel, count).
    /// Called on a coarse shared tick, which is what throttles it.
    pub fn flush_subscription_counts(&self) -> Vec<(String, String, usize)> {
        let changed = match self.count_changed.lock() {
            Ok(mut changed) => std::mem::take(&mut *changed),
            Err(_) => return Vec::new(),
        };
        let mut counts = Vec::with_capacity(changed.len());
        for (app_id, channel) in changed {
            let Some(app) = self.apps.get(&app_id) else { continue };
            let count = match app.channels.get(channel.as_str()) {
                Some(entry) => {
                    if app.count_events {
                        let frame = Frame::subscription_count(&channel, entry.subscribers.len());
                        for sub in entry.subscribers.values() {
                            sub.out.push(frame.clone());
                        }
                    }
                    entry.subscribers.len()
                }
                None => 0,
            };
            counts.push((app_id, channel, count));
        }
        counts
    }

    /// Counts a new connection against the app's quota; false when at `max`.
    pub fn try_add_connection(&self, app_id: &str, max: Option<u64>) -> bool {
        let Some(app) = self.apps.get(app_id) else { return false };
        let limit = max.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        app.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    pub fn remove_connection(&self, app_id: &str) {
        if let Some(app) = self.apps.get(app_id) {
            app.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// This node's open connections of an app.
    pub fn connection_count_local(&self, app_id: &str) -> usize {
        self.apps.get(app_id).map_or(0, |a| a.connections.load(Ordering::Acquire))
    }

    /// Total subscriptions of every app (proves nothing leaks).
    pub fn total_subscriptions(&self) -> usize {
        self.apps.values().map(|a| a.channels.iter().map(|c| c.subscribers.len()).sum::<usize>()).sum()
    }

    /// Total channels of every app.
    pub fn total_channels(&self) -> usize {
        self.apps.values().map(|a| a.channels.len()).sum()
    }

    /// Keeps the last event of a cache channel.
    fn remember(&self, app: &AppChannels, channel: &str, frame: &Frame) {
        if app.cache.len() >= MAX_CACHED_CHANNELS && !app.cache.contains_key(channel) {
            app.cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if app.cache.len() >= MAX_CACHED_CHANNELS {
                tracing::warn!(
                    channel,
                    "cache channel not remembered: {MAX_CACHED_CHANNELS} cache channels already are"
                );
                return;
            }
        }
        app.cache.insert(channel.into(), (frame.clone(), Instant::now()));
    }
}

impl LocalNode for Registry {
    fn deliver(&self, b: &Broadcast) -> usize {
        let Some(app) = self.apps.get(&b.app_id) else { return 0 };
        // The last *event*: member_added/removed on a presence-cache channel are bookkeeping, not events.
        let internal = b.frame.as_str().starts_with(r#"{"event":"pusher_internal:"#);
        if !internal && ChannelName::parse_for_publish(&b.channel).is_ok_and(|c| c.cache) {
            self.remember(app, &b.channel, &b.frame);
        }
        let Some(channel) = app.channels.get(b.channel.as_str()) else { return 0 };
        let mut delivered = 0;
        for (socket_id, sub) in &channel.subscribers {
            if Some(*socket_id) != b.except && sub.out.push(b.frame.clone()) {
                delivered += 1;
            }
        }
        delivered
    }

    fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.apps.get(app_id).and_then(|a| a.channels.get(channel).map(|c| c.subscribers.len())).unwrap_or(0)
    }

    fn channels(&self, app_id: &str) -> Vec<(String, usize)> {
        let Some(app) = self.apps.get(app_id) else { return Vec::new() };
        app.channels
            .iter()
            .filter(|c| !c.subscribers.is_empty() && !c.key().starts_with(USER_CHANNEL_PREFIX))
            .map(|c| (c.key().to_string(), c.subscribers.len()))
            .collect()
    }

    fn connection_count(&self, app_id: &str) -> usize {
        self.apps.get(app_id).map_or(0, |a| a.connections.load(Ordering::Acquire))
    }

    fn terminate_user(&self, app_id: &str, user_id: &str) -> usize {
        Registry::terminate_user(self, app_id, user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbound::{OutboundReceiver, Outgoing};

    fn sid(seq: u64) -> SocketId {
        SocketId { node: 1, seq }
    }

    fn chan(name: &str) -> ChannelName<'_> {
        ChannelName::parse(name).unwrap()
    }

    async fn drain(rx: &mut OutboundReceiver) -> Vec<serde_json::Value> {
        let mut got = Vec::new();
        let mut out = Vec::new();
        while let Ok(n) = tokio::time::timeout(Duration::from_millis(20), rx.recv_many(&mut got, 100)).await {
            if n == 0 {
                break;
            }
            for item in got.drain(..) {
                if let Outgoing::Frame(f) = item {
                    out.push(serde_json::from_str(f.as_str()).unwrap());
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn fan_out_shares_one_frame_and_honours_exclusion() {
        let reg = Registry::new([("a", true)]);
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, mut r2) = Outbound::new(sid(2), 1 << 20);
        let s1 = reg.subscribe("a", &chan("c"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert!(s1.new && s1.occupied);
        let s2 = reg.subscribe("a", &chan("c"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert!(s2.new && !s2.occupied);
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
        assert_eq!(drain(&mut r1).await.len(), 1, "only the confirmation: the event was excluded");
    }

    #[test]
    fn unsubscribing_the_last_socket_vacates_and_frees_the_channel() {
        let reg = Registry::new([("a", true)]);
        let (o1, _r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("c"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        reg.subscribe("a", &chan("c"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert_eq!(reg.subscription_count("a", "c"), 2);
        assert_eq!(
            reg.unsubscribe("a", "c", sid(1)),
            Some(Unsubscribed { vacated: false, last_local_socket_of: None })
        );
        assert_eq!(reg.unsubscribe("a", "c", sid(1)), None, "twice is a no-op");
        assert_eq!(reg.unsubscribe("a", "c", sid(2)), Some(Unsubscribed { vacated: true, last_local_socket_of: None }));
        assert_eq!(reg.total_channels(), 0);
        assert!(reg.channels("a").is_empty());
    }

    #[test]
    fn local_users_count_sockets_not_users() {
        let reg = Registry::new([("a", true)]);
        assert!(reg.add_local_user("a", "presence-r", "ann"), "first socket of ann");
        assert!(!reg.add_local_user("a", "presence-r", "ann"), "second tab");
        let (o1, _r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("presence-r"), &o1, Frame::subscription_succeeded("presence-r", "{}"), Some("ann"))
            .unwrap();
        reg.subscribe("a", &chan("presence-r"), &o2, Frame::subscription_succeeded("presence-r", "{}"), Some("ann"))
            .unwrap();
        assert_eq!(reg.unsubscribe("a", "presence-r", sid(1)).unwrap().last_local_socket_of, None);
        let left = reg.unsubscribe("a", "presence-r", sid(2)).unwrap();
        assert_eq!(left.last_local_socket_of.as_deref(), Some("ann"));
        assert!(left.vacated);
        assert_eq!(reg.total_channels(), 0);
        // A refused subscribe takes its count back and leaves nothing behind.
        assert!(reg.add_local_user("a", "presence-x", "bob"));
        assert!(reg.remove_local_user("a", "presence-x", "bob"));
        assert_eq!(reg.total_channels(), 0);
    }

    #[tokio::test]
    async fn cache_channels_replay_the_last_event_or_say_miss() {
        let reg = Registry::new([("a", true)]);
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        reg.subscribe("a", &chan("cache-prices"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        let saw = drain(&mut r1).await;
        assert_eq!(saw[1]["event"], "pusher:cache_miss");
        for price in ["1", "2"] {
            let frame = Frame::event("price", "cache-prices", price);
            reg.deliver(&Broadcast { app_id: "a".into(), channel: "cache-prices".into(), frame, except: None });
        }
        let (o2, mut r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("cache-prices"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        let saw = drain(&mut r2).await;
        assert_eq!(saw[0]["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(saw[1]["data"], "2", "the last event, right after the confirmation");
        // Non-cache channels keep nothing.
        reg.deliver(&Broadcast { app_id: "a".into(), channel: "plain".into(), frame: Frame::pong(), except: None });
        assert_eq!(reg.apps["a"].cache.len(), 1);
    }

    #[tokio::test]
    async fn subscription_counts_are_batched_per_round() {
        let reg = Registry::new([("a", true)]);
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("c"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        reg.subscribe("a", &chan("c"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        drain(&mut r1).await;
        assert_eq!(reg.flush_subscription_counts(), vec![("a".into(), "c".into(), 2)], "two changes, one message");
        let saw = drain(&mut r1).await;
        assert_eq!(saw.len(), 1);
        assert_eq!(saw[0]["data"], r#"{"subscription_count":2}"#);
        assert!(reg.flush_subscription_counts().is_empty());
    }

    #[tokio::test]
    async fn terminate_user_closes_each_of_its_sockets() {
        let reg = Registry::new([("a", true)]);
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        reg.join_user_channel("a", "42", &o1);
        reg.join_user_channel("a", "42", &o2);
        assert_eq!(reg.terminate_user("a", "42"), 2);
        assert_eq!(reg.terminate_user("a", "43"), 0);
        let mut got = Vec::new();
        r1.recv_many(&mut got, 10).await;
        assert!(matches!(got[0], Outgoing::Close { code: ErrorCode::Unauthorized, .. }));
        assert!(reg.channels("a").is_empty(), "user channels are not listed");
    }

    #[test]
    fn connection_quota() {
        let reg = Registry::new([("a", true)]);
        assert!(reg.try_add_connection("a", Some(2)));
        assert!(reg.try_add_connection("a", Some(2)));
        assert!(!reg.try_add_connection("a", Some(2)));
        reg.remove_connection("a");
        assert!(reg.try_add_connection("a", Some(2)));
        assert!(!reg.try_add_connection("unknown", None));
    }
}
