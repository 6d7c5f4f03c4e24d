//! This node's channels and subscribers, per app, and the fan-out loop.
//!
//! Channels live in a sharded map so that subscribes on different channels do not contend. Fan-out
//! holds one shard's read lock while it pushes the same shared frame into each subscriber's queue;
//! a push never waits on a socket, so no lock is ever held across a write. Everything a subscriber
//! must see in order (the confirmation, the cached event, member changes) is pushed under the
//! channel's lock, so it can never overtake or be overtaken by the channel's events.
//!
//! An app's state here is made by its first connection (or a cache channel's first event) and
//! freed once it has no connection, no channel and no cached event left: a server hosting many
//! apps pays only for those in use, and an app removed from the store leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::outbound::Outbound;
use crate::apps::AppStore;
use crate::cluster::{Broadcast, BroadcastKind, LocalNode};
use crate::config::AppConfig;
use crate::protocol::channel::user_channel;
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
    count_events: AtomicBool,
    /// Whether count changes are collected at all (for the events, or for a webhook).
    track_counts: AtomicBool,
    channels: DashMap<Box<str>, Channel>,
    /// Counted apart from `sockets` so that the quota check is one atomic step.
    connections: AtomicUsize,
    /// Every open connection's queue, so that an app leaving the store can close them all.
    sockets: DashMap<SocketId, Outbound>,
    /// Last event of each cache channel, with when it was published.
    cache: DashMap<Box<str>, (Frame, Instant)>,
    /// While `cache` is full: when expired entries were last swept out, and the warning's throttle.
    cache_full: Mutex<CacheFull>,
}

/// A full cache is swept at most once a second (a sweep walks every entry, and clients can publish
/// to cache channels) and warned about at most every 10 s, with how many events it refused since.
struct CacheFull {
    swept: Option<Instant>,
    warned: Option<Instant>,
    refused: u64,
}

const CACHE_SWEEP_EVERY: Duration = Duration::from_secs(1);
const CACHE_WARN_EVERY: Duration = Duration::from_secs(10);

/// Local subscriptions of every app in use on this node.
pub struct Registry {
    /// Where an app's configuration is found when its state is made.
    store: Arc<dyn AppStore>,
    apps: DashMap<Box<str>, Arc<AppChannels>>,
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

/// A channel whose subscriber count changed on this node since the last round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountChange {
    pub app_id: String,
    pub channel: String,
    /// This node's subscribers now.
    pub local: usize,
    /// Whether the app sends `pusher_internal:subscription_count` to subscribers.
    pub send_events: bool,
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
    fn new(app: &AppConfig) -> Self {
        AppChannels {
            count_events: AtomicBool::new(app.subscription_count_events),
            // A `subscription_count` webhook needs the changes even when clients are not told.
            track_counts: AtomicBool::new(Self::tracks_counts(app)),
            channels: DashMap::new(),
            connections: AtomicUsize::new(0),
            sockets: DashMap::new(),
            cache: DashMap::new(),
            cache_full: Mutex::new(CacheFull { swept: None, warned: None, refused: 0 }),
        }
    }

    /// A `subscription_count` webhook needs the changes even when clients are not told.
    fn tracks_counts(app: &AppConfig) -> bool {
        app.subscription_count_events || crate::webhooks::app_wants(app, "subscription_count")
    }

    /// Nothing left worth keeping: no connection, no channel, no cached event still fresh.
    fn unused(&self) -> bool {
        if self.connections.load(Ordering::Acquire) != 0 || !self.channels.is_empty() {
            return false;
        }
        self.cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        self.cache.is_empty()
    }
}

impl Registry {
    pub fn new(store: Arc<dyn AppStore>) -> Self {
        Registry { store, apps: DashMap::new(), count_changed: Mutex::new(HashSet::new()) }
    }

    /// An app's state, if it has any on this node (the shard lock is let go at once).
    fn app(&self, app_id: &str) -> Option<Arc<AppChannels>> {
        self.apps.get(app_id).map(|a| a.clone())
    }

    /// Frees an app's state if nothing in it is in use. Checked under the map's write lock, which
    /// also guards creation, so a connection arriving at the same moment is never lost.
    fn release_if_unused(&self, app_id: &str) {
        self.apps.remove_if(app_id, |_, app| app.unused());
    }

    /// Drops an app's state whatever it holds (the app was removed from the store), closing its
    /// connections with 4001: the app no longer exists.
    pub fn forget_app(&self, app_id: &str) -> usize {
        let Some((_, app)) = self.apps.remove(app_id) else { return 0 };
        for socket in app.sockets.iter() {
            socket.value().close(ErrorCode::AppNotFound, "The app no longer exists");
        }
        app.sockets.len()
    }

    /// An app's configuration changed: what the registry took from it follows. (Connections keep
    /// the configuration they opened with; new ones get the new one.)
    pub fn app_updated(&self, app: &AppConfig) {
        if let Some(state) = self.app(&app.id) {
            state.count_events.store(app.subscription_count_events, Ordering::Relaxed);
            state.track_counts.store(AppChannels::tracks_counts(app), Ordering::Relaxed);
        }
    }

    /// Apps with state on this node.
    pub fn active_apps(&self) -> usize {
        self.apps.len()
    }

    /// Counts one more socket of a presence user in a channel; true when it is the user's first on
    /// this node (the cluster's presence store must then hear of it). Call before `subscribe`;
    /// undo with `remove_local_user` if the subscribe is then refused.
    pub fn add_local_user(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        let Some(app) = self.app(app_id) else { return false };
        let mut entry = app.channels.entry(channel.into()).or_default();
        let sockets = entry.local_users.entry(Arc::from(user_id)).or_insert(0);
        *sockets += 1;
        *sockets == 1
    }

    /// Tells each presence subscriber of `channel` here about every member in `added` (user id,
    /// its `member_added` frame) except itself, as Pusher never announces a member to itself.
    pub fn retell_members(&self, app_id: &str, channel: &str, added: &[(String, Frame)]) -> usize {
        let Some(app) = self.app(app_id) else { return 0 };
        let Some(channel) = app.channels.get(channel) else { return 0 };
        let mut told = 0;
        for sub in channel.subscribers.values() {
            for (user_id, frame) in added {
                if sub.user_id.as_deref() != Some(user_id.as_str()) && sub.out.push(frame.clone()) {
                    told += 1;
                }
            }
        }
        told
    }

    /// How many of this node's sockets are in `channel` as `user_id`.
    pub fn local_user_sockets(&self, app_id: &str, channel: &str, user_id: &str) -> usize {
        let Some(app) = self.app(app_id) else { return 0 };
        app.channels.get(channel).and_then(|c| c.local_users.get(user_id).copied()).unwrap_or(0)
    }

    /// Takes back an `add_local_user`; true when it was the user's last socket here.
    pub fn remove_local_user(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        let Some(app) = self.app(app_id) else { return false };
        let last = match app.channels.get_mut(channel) {
            Some(mut entry) => Self::release_user(&mut entry, user_id),
            None => false,
        };
        self.drop_if_empty(&app, channel);
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
        let app = self.app(app_id)?;
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
        if app.track_counts.load(Ordering::Relaxed) && channel.kind.counts_subscriptions() {
            self.mark_count_changed(app_id, name);
        }
        Some(Subscribed { new: previous.is_none(), occupied, cache_miss, replaced_last_socket_of })
    }

    /// Subscribes a socket to a server-made channel (its user's `#server-to-user-{id}`, a watched
    /// user's `#watchlist-{id}`), silently. True when it is the channel's first socket here.
    pub fn join_server_channel(&self, app_id: &str, name: &str, out: &Outbound) -> bool {
        let Some(app) = self.app(app_id) else { return false };
        let mut entry = app.channels.entry(name.into()).or_default();
        let first = entry.subscribers.is_empty();
        entry.subscribers.insert(out.socket_id(), Subscriber { out: out.clone(), user_id: None });
        first
    }

    /// This node's subscribers of a channel.
    pub fn subscription_count_local(&self, app_id: &str, channel: &str) -> usize {
        self.app(app_id).and_then(|a| a.channels.get(channel).map(|c| c.subscribers.len())).unwrap_or(0)
    }

    /// Closes every local connection of a user (the HTTP API's `terminate_connections`).
    pub fn terminate_user(&self, app_id: &str, user_id: &str) -> usize {
        let Some(app) = self.app(app_id) else { return 0 };
        let name = user_channel(user_id);
        let Some(channel) = app.channels.get(name.as_str()) else { return 0 };
        for sub in channel.subscribers.values() {
            sub.out.close(ErrorCode::Unauthorized, "Connection terminated by the application");
        }
        channel.subscribers.len()
    }

    /// Removes a subscriber. Returns `None` when it was not subscribed.
    pub fn unsubscribe(&self, app_id: &str, channel: &str, socket_id: SocketId) -> Option<Unsubscribed> {
        let app = self.app(app_id)?;
        let last_local_socket_of = {
            let mut entry = app.channels.get_mut(channel)?;
            let sub = entry.subscribers.remove(&socket_id)?;
            match sub.user_id {
                Some(user_id) if Self::release_user(&mut entry, &user_id) => Some(user_id.to_string()),
                _ => None,
            }
        };
        let vacated = self.drop_if_empty(&app, channel);
        if app.track_counts.load(Ordering::Relaxed) && ChannelKind::of(channel).counts_subscriptions() {
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

    /// Every channel whose count changed here since the last call, with this node's count and
    /// whether its app sends `subscription_count` events. Called on a coarse shared tick, which
    /// is what throttles them; the hub asks the cluster for the count to announce.
    pub fn take_count_changes(&self) -> Vec<CountChange> {
        let changed = match self.count_changed.lock() {
            Ok(mut changed) => std::mem::take(&mut *changed),
            Err(_) => return Vec::new(),
        };
        let mut counts = Vec::with_capacity(changed.len());
        for (app_id, channel) in changed {
            let (local, send_events) = match self.app(&app_id) {
                Some(app) => (
                    app.channels.get(channel.as_str()).map_or(0, |entry| entry.subscribers.len()),
                    app.count_events.load(Ordering::Relaxed),
                ),
                // The app's last connection here closed: other nodes' subscribers still hear of it.
                None => match self.store.by_id(&app_id) {
                    Some(config) => (0, config.subscription_count_events),
                    None => continue,
                },
            };
            counts.push(CountChange { app_id, channel, local, send_events });
        }
        counts
    }

    /// Keeps a cache channel's last event read from the cluster, as fresh as it is there, unless
    /// this node has one already (it saw every event since it started, so its own is as new).
    pub fn remember_from_cluster(&self, app_id: &str, channel: &str, frame: Frame, fresh_for: Duration) {
        let Some(app) = self.app(app_id) else { return };
        let published = Instant::now().checked_sub(CACHE_TTL.saturating_sub(fresh_for)).unwrap_or_else(Instant::now);
        app.cache.entry(channel.into()).or_insert((frame, published));
    }

    /// Whether a cache channel has a fresh event on this node.
    pub fn has_cached(&self, app_id: &str, channel: &str) -> bool {
        self.app(app_id).is_some_and(|a| a.cache.get(channel).is_some_and(|c| c.1.elapsed() < CACHE_TTL))
    }

    /// Counts a new connection against the app's quota (`max_connections`), making the app's state
    /// if this is its first; false when the quota is full.
    pub fn try_add_connection(&self, app: &AppConfig, out: &Outbound) -> bool {
        let limit = app.max_connections.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let added = {
            // The entry's lock is held while counting, so a concurrent release cannot free it.
            let state = self.apps.entry(app.id.as_str().into()).or_insert_with(|| Arc::new(AppChannels::new(app)));
            let added = state
                .connections
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
                .is_ok();
            if added {
                state.sockets.insert(out.socket_id(), out.clone());
            }
            added
        };
        if !added {
            self.release_if_unused(&app.id);
        }
        added
    }

    /// A connection counted by `try_add_connection` closed; the app's state goes with its last.
    pub fn remove_connection(&self, app_id: &str, socket_id: SocketId) {
        if let Some(app) = self.app(app_id) {
            if app.sockets.remove(&socket_id).is_some() {
                app.connections.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.release_if_unused(app_id);
    }

    /// This node's open connections of an app.
    pub fn connection_count_local(&self, app_id: &str) -> usize {
        self.app(app_id).map_or(0, |a| a.connections.load(Ordering::Acquire))
    }

    /// Total subscriptions of every app (proves nothing leaks).
    pub fn total_subscriptions(&self) -> usize {
        self.apps.iter().map(|a| a.channels.iter().map(|c| c.subscribers.len()).sum::<usize>()).sum()
    }

    /// Total channels of every app.
    pub fn total_channels(&self) -> usize {
        self.apps.iter().map(|a| a.channels.len()).sum()
    }

    /// Keeps the last event of a cache channel; makes the app's state if it has none here (a
    /// cache channel remembers its event with nobody subscribed).
    fn remember(&self, b: &Broadcast) {
        match self.app(&b.app_id) {
            Some(app) => Self::remember_in(&app, &b.channel.name, &b.frame),
            None => {
                let Some(config) = self.store.by_id(&b.app_id) else { return };
                let app =
                    self.apps.entry(b.app_id.as_str().into()).or_insert_with(|| Arc::new(AppChannels::new(&config)));
                Self::remember_in(&app, &b.channel.name, &b.frame);
            }
        }
    }

    fn remember_in(app: &AppChannels, channel: &str, frame: &Frame) {
        if app.cache.len() >= MAX_CACHED_CHANNELS && !app.cache.contains_key(channel) {
            let Ok(mut full) = app.cache_full.lock() else { return };
            let due = |at: Option<Instant>, every: Duration| at.is_none_or(|at| at.elapsed() >= every);
            if due(full.swept, CACHE_SWEEP_EVERY) {
                app.cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                full.swept = Some(Instant::now());
            }
            if app.cache.len() >= MAX_CACHED_CHANNELS {
                full.refused += 1;
                if due(full.warned, CACHE_WARN_EVERY) {
                    tracing::warn!(
                        channel,
                        refused = full.refused,
                        "cache channel not remembered: {MAX_CACHED_CHANNELS} cache channels already are \
                         (refused is the count since the last such line)"
                    );
                    full.warned = Some(Instant::now());
                    full.refused = 0;
                }
                return;
            }
        }
        app.cache.insert(channel.into(), (frame.clone(), Instant::now()));
    }
}

/// A `member_removed` for a user with a socket on this node is stale: a member stays until its last
/// socket in the cluster leaves. It comes from a node that reaped this one while it was cut off,
/// delivered late once the link is back (after this node had re-announced its members).
fn removes_a_user_held_here(b: &Broadcast, local_users: &HashMap<Arc<str>, usize>) -> bool {
    if b.kind != BroadcastKind::Internal || local_users.is_empty() {
        return false;
    }
    let text = b.frame.as_str();
    if !text.contains("pusher_internal:member_removed") {
        return false;
    }
    let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else { return false };
    let Some(data) = frame.get("data").and_then(|d| d.as_str()) else { return false };
    let Ok(data) = serde_json::from_str::<serde_json::Value>(data) else { return false };
    data.get("user_id").and_then(|u| u.as_str()).is_some_and(|user| local_users.get(user).is_some_and(|n| *n > 0))
}

impl LocalNode for Registry {
    fn deliver(&self, b: &Broadcast) -> usize {
        // The last *event*: member_added/removed on a presence-cache channel are bookkeeping, not events.
        if b.channel.cache && b.kind != BroadcastKind::Internal {
            self.remember(b);
        }
        let Some(app) = self.apps.get(b.app_id.as_str()) else { return 0 };
        let Some(channel) = app.channels.get(b.channel.name.as_str()) else { return 0 };
        if removes_a_user_held_here(b, &channel.local_users) {
            return 0;
        }
        let mut delivered = 0;
        for (socket_id, sub) in &channel.subscribers {
            if Some(*socket_id) != b.except && sub.out.push(b.frame.clone()) {
                delivered += 1;
            }
        }
        delivered
    }

    fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.subscription_count_local(app_id, channel)
    }

    fn channels(&self, app_id: &str) -> Vec<(String, usize)> {
        let Some(app) = self.app(app_id) else { return Vec::new() };
        app.channels
            .iter()
            .filter(|c| !c.subscribers.is_empty() && ChannelKind::of(c.key()).is_listed())
            .map(|c| (c.key().to_string(), c.subscribers.len()))
            .collect()
    }

    fn connection_count(&self, app_id: &str) -> usize {
        self.connection_count_local(app_id)
    }

    fn terminate_user(&self, app_id: &str, user_id: &str) -> usize {
        Registry::terminate_user(self, app_id, user_id)
    }

    fn app_ids(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.key().to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbound::{OutboundReceiver, Outgoing};

    /// A registry serving app "a" (which sends subscription counts), with one connection open so
    /// that the app has state.
    fn registry() -> Registry {
        let mut app = AppConfig::new("a", "key-a", "secret-a");
        app.subscription_count_events = true;
        let reg = Registry::new(crate::apps::LiveApps::new(std::slice::from_ref(&app)));
        assert!(reg.try_add_connection(&app, &Outbound::new(sid(1000), 1 << 20).0));
        reg
    }

    fn broadcast(channel: &str, frame: Frame, except: Option<SocketId>) -> Broadcast {
        let channel = crate::protocol::Channel::parse(channel).unwrap();
        Broadcast { app_id: "a".into(), channel, kind: BroadcastKind::Event, frame, except }
    }

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
        let reg = registry();
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, mut r2) = Outbound::new(sid(2), 1 << 20);
        let s1 = reg.subscribe("a", &chan("c"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert!(s1.new && s1.occupied);
        let s2 = reg.subscribe("a", &chan("c"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert!(s2.new && !s2.occupied);
        let frame = Frame::event("e", "c", "d");
        let b = broadcast("c", frame.clone(), Some(sid(1)));
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
        let reg = registry();
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
        let reg = registry();
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

    #[test]
    fn a_full_cache_refuses_new_channels_and_warns_and_sweeps_at_most_once_a_second() {
        let app = AppChannels::new(&AppConfig::new("a", "k", "s"));
        let frame = Frame::event("e", "cache-x", "d");
        for i in 0..MAX_CACHED_CHANNELS {
            Registry::remember_in(&app, &format!("cache-{i}"), &frame);
        }
        for i in 0..100 {
            Registry::remember_in(&app, &format!("cache-new-{i}"), &frame);
        }
        assert_eq!(app.cache.len(), MAX_CACHED_CHANNELS, "a new channel is refused while all are fresh");
        assert!(app.cache.contains_key("cache-0") && !app.cache.contains_key("cache-new-0"));
        let full = app.cache_full.lock().unwrap();
        // The first refusal warned (and reset the count); the 99 after it are counted for the next line.
        assert_eq!(full.refused, 99);
        let (swept, warned) = (full.swept, full.warned);
        assert!(swept.is_some() && warned.is_some());
        drop(full);
        // An entry that expired meanwhile is not swept out within the second: no sweep per event.
        if let Some(mut entry) = app.cache.get_mut("cache-1") {
            entry.1 = Instant::now().checked_sub(CACHE_TTL + Duration::from_secs(1)).unwrap_or(entry.1);
        }
        Registry::remember_in(&app, "cache-new-late", &frame);
        assert!(app.cache.contains_key("cache-1") && !app.cache.contains_key("cache-new-late"));
        let full = app.cache_full.lock().unwrap();
        assert_eq!((full.swept, full.warned, full.refused), (swept, warned, 100), "neither swept nor warned again");
        drop(full);
        Registry::remember_in(&app, "cache-7", &Frame::event("e", "cache-7", "newer"));
        assert!(
            app.cache.get("cache-7").is_some_and(|c| c.0 == Frame::event("e", "cache-7", "newer")),
            "a known channel still updates"
        );
    }

    #[tokio::test]
    async fn cache_channels_replay_the_last_event_or_say_miss() {
        let reg = registry();
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        reg.subscribe("a", &chan("cache-prices"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        let saw = drain(&mut r1).await;
        assert_eq!(saw[1]["event"], "pusher:cache_miss");
        for price in ["1", "2"] {
            let frame = Frame::event("price", "cache-prices", price);
            reg.deliver(&broadcast("cache-prices", frame, None));
        }
        let (o2, mut r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("cache-prices"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        let saw = drain(&mut r2).await;
        assert_eq!(saw[0]["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(saw[1]["data"], "2", "the last event, right after the confirmation");
        // Non-cache channels keep nothing.
        reg.deliver(&broadcast("plain", Frame::pong(), None));
        assert_eq!(reg.app("a").unwrap().cache.len(), 1);
    }

    #[tokio::test]
    async fn subscription_counts_are_batched_per_round() {
        let reg = registry();
        let (o1, _r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("c"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        reg.subscribe("a", &chan("c"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        let change = CountChange { app_id: "a".into(), channel: "c".into(), local: 2, send_events: true };
        assert_eq!(reg.take_count_changes(), vec![change], "two changes, one announcement");
        assert!(reg.take_count_changes().is_empty());
    }

    #[tokio::test]
    async fn a_cached_event_from_the_cluster_is_replayed_but_never_replaces_a_local_one() {
        let reg = registry();
        assert!(!reg.has_cached("a", "cache-x"));
        reg.remember_from_cluster("a", "cache-x", Frame::event("e", "cache-x", "remote"), CACHE_TTL);
        assert!(reg.has_cached("a", "cache-x"));
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let s = reg.subscribe("a", &chan("cache-x"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert!(!s.cache_miss);
        assert_eq!(drain(&mut r1).await[1]["data"], "remote");
        reg.deliver(&broadcast("cache-x", Frame::event("e", "cache-x", "local"), None));
        reg.remember_from_cluster("a", "cache-x", Frame::event("e", "cache-x", "older"), CACHE_TTL);
        let (o2, mut r2) = Outbound::new(sid(2), 1 << 20);
        reg.subscribe("a", &chan("cache-x"), &o2, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        assert_eq!(drain(&mut r2).await[1]["data"], "local");
        // An event with no freshness left is as good as none.
        reg.remember_from_cluster("a", "cache-y", Frame::event("e", "cache-y", "stale"), Duration::ZERO);
        assert!(!reg.has_cached("a", "cache-y"));
    }

    #[tokio::test]
    async fn terminate_user_closes_each_of_its_sockets() {
        let reg = registry();
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        assert!(reg.join_server_channel("a", &user_channel("42"), &o1), "the user's first socket here");
        assert!(!reg.join_server_channel("a", &user_channel("42"), &o2));
        assert_eq!(reg.terminate_user("a", "42"), 2);
        assert_eq!(reg.terminate_user("a", "43"), 0);
        let mut got = Vec::new();
        r1.recv_many(&mut got, 10).await;
        assert!(matches!(got[0], Outgoing::Close { code: ErrorCode::Unauthorized, .. }));
        assert!(reg.channels("a").is_empty(), "user channels are not listed");
    }

    #[test]
    fn connection_quota() {
        let mut app = AppConfig::new("a", "key-a", "secret-a");
        app.max_connections = Some(2);
        let reg = Registry::new(crate::apps::LiveApps::new(std::slice::from_ref(&app)));
        let queues: Vec<_> = (1..=4).map(|n| Outbound::new(sid(n), 1 << 20)).collect();
        assert!(reg.try_add_connection(&app, &queues[0].0));
        assert!(reg.try_add_connection(&app, &queues[1].0));
        assert!(!reg.try_add_connection(&app, &queues[2].0));
        reg.remove_connection("a", sid(3));
        assert_eq!(reg.connection_count_local("a"), 2, "a refused connection was never counted");
        reg.remove_connection("a", sid(1));
        assert!(reg.try_add_connection(&app, &queues[3].0));
    }

    #[tokio::test]
    async fn an_apps_state_is_made_by_its_first_connection_and_freed_after_its_last() {
        let app = AppConfig::new("a", "key-a", "secret-a");
        let reg = Registry::new(crate::apps::LiveApps::new(std::slice::from_ref(&app)));
        assert_eq!(reg.active_apps(), 0, "nothing before the first connection");
        assert!(reg.subscribe("a", &chan("c"), &Outbound::new(sid(9), 1 << 20).0, Frame::pong(), None).is_none());
        let (o1, _r1) = Outbound::new(sid(1), 1 << 20);
        let (o2, _r2) = Outbound::new(sid(2), 1 << 20);
        assert!(reg.try_add_connection(&app, &o1) && reg.try_add_connection(&app, &o2));
        assert_eq!(reg.active_apps(), 1);
        reg.subscribe("a", &chan("c"), &o1, Frame::subscription_succeeded("c", "{}"), None).unwrap();
        reg.remove_connection("a", sid(2));
        assert_eq!(reg.active_apps(), 1, "one connection is still open");
        reg.unsubscribe("a", "c", sid(1)).unwrap();
        reg.remove_connection("a", sid(1));
        assert_eq!(reg.active_apps(), 0, "freed with its last connection");

        // A cache channel's event is kept with nobody connected, and keeps the state alive.
        reg.deliver(&broadcast("cache-x", Frame::event("e", "cache-x", "1"), None));
        assert_eq!(reg.active_apps(), 1);
        assert!(reg.try_add_connection(&app, &o1));
        reg.remove_connection("a", sid(1));
        assert_eq!(reg.active_apps(), 1, "the cached event is still fresh");
        // An app the store does not know gets no state.
        let b = Broadcast { app_id: "nope".into(), ..broadcast("cache-x", Frame::pong(), None) };
        reg.deliver(&b);
        assert_eq!(reg.active_apps(), 1);
    }

    #[tokio::test]
    async fn forgetting_an_app_closes_its_connections_with_4001() {
        let app = AppConfig::new("a", "key-a", "secret-a");
        let reg = Registry::new(crate::apps::LiveApps::new(std::slice::from_ref(&app)));
        let (o1, mut r1) = Outbound::new(sid(1), 1 << 20);
        assert!(reg.try_add_connection(&app, &o1));
        assert_eq!(reg.forget_app("a"), 1);
        assert_eq!(reg.active_apps(), 0);
        let mut got = Vec::new();
        r1.recv_many(&mut got, 10).await;
        assert!(matches!(got[0], Outgoing::Close { code: ErrorCode::AppNotFound, .. }), "{got:?}");
        reg.remove_connection("a", sid(1));
        assert_eq!(reg.forget_app("a"), 0, "nothing left");
    }
}
