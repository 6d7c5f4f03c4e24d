//! [`MemoryHistory`]: one node's history channels, each a ring of its last `size` events, each
//! event kept `ttl_s` seconds.
//!
//! Positions are `ms-seq` like Redis Stream ids (this node's clock in milliseconds, a sequence
//! within the millisecond, never going back), so they compare the same way in a single node and a
//! cluster. A ring's floor starts at the position where it was made: a position from before (this
//! node's previous life, whose memory is gone) is older than the floor, so its reader is told to
//! reset rather than given silence.
//!
//! Memory is bounded four ways: `size` per channel, [`MAX_CHANNELS_PER_APP`] history channels,
//! [`MAX_EVENTS_PER_APP`] events and [`MAX_BYTES_PER_APP`] bytes of event text per app (past either,
//! a channel gives up its own oldest events for each new one, and a channel with none to give up
//! keeps nothing new until the app is under the cap again: clients can write history with client
//! events, so the cap must hold however large their messages are), and rings left empty for their
//! TTL are dropped. A ring keeps bare copies of its frames (text only), so the compressed and
//! SSE forms a delivery renders are not kept with them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tracing::{debug, warn};

use super::history::{Appended, History, Replay};
use super::{Broadcast, ClusterError, ClusterResult};
use crate::config::HistoryRule;
use crate::protocol::position::Position;
use crate::protocol::Frame;

/// Most channels of one app that keep a history at once.
pub const MAX_CHANNELS_PER_APP: usize = 10_000;
/// Most events kept over all of one app's history channels.
pub const MAX_EVENTS_PER_APP: usize = 1_000_000;
/// Most bytes of event text kept over all of one app's history channels.
pub const MAX_BYTES_PER_APP: usize = 64 << 20;
/// Appends between two sweeps of an app's idle rings.
const SWEEP_EVERY: u64 = 4096;

struct Ring {
    /// The newest position this ring no longer has (or where it began).
    floor: Position,
    events: VecDeque<(Frame, Instant)>,
    touched: Instant,
}

impl Ring {
    fn head(&self) -> Position {
        self.events.back().and_then(|(f, _)| f.history()).map_or(self.floor, |(_, p)| p)
    }

    /// Forgets the oldest event, counting it into `gone`; false when there was none.
    fn pop(&mut self, gone: &mut Freed) -> bool {
        let Some((frame, _)) = self.events.pop_front() else { return false };
        if let Some((_, position)) = frame.history() {
            self.floor = position;
        }
        gone.events += 1;
        gone.bytes += frame.len();
        true
    }

    /// Forgets events older than `ttl`.
    fn expire(&mut self, ttl: Duration, now: Instant) -> Freed {
        let mut gone = Freed::default();
        while self.events.front().is_some_and(|(_, at)| now.duration_since(*at) >= ttl) {
            self.pop(&mut gone);
        }
        gone
    }
}

/// What forgetting events gave back.
#[derive(Default, Clone, Copy)]
struct Freed {
    events: usize,
    bytes: usize,
}

#[derive(Default)]
struct AppHistory {
    rings: HashMap<Box<str>, Ring>,
    events: usize,
    /// Bytes of the frames kept.
    bytes: usize,
    appends: u64,
}

impl AppHistory {
    /// The channel's ring, made now (its floor: `start`) if it has none; `None` at the cap.
    fn ring(&mut self, channel: &str, start: impl FnOnce() -> Position) -> Option<&mut Ring> {
        if !self.rings.contains_key(channel) {
            if self.rings.len() >= MAX_CHANNELS_PER_APP {
                return None;
            }
            let ring = Ring { floor: start(), events: VecDeque::new(), touched: Instant::now() };
            self.rings.insert(channel.into(), ring);
        }
        self.rings.get_mut(channel)
    }

    /// Drops expired events everywhere, and rings that stayed empty for `ttl` (the longest rule's).
    fn sweep(&mut self, ttl_of: impl Fn(&str) -> Duration, now: Instant) {
        let mut gone = Freed::default();
        self.rings.retain(|name, ring| {
            let ttl = ttl_of(name);
            let freed = ring.expire(ttl, now);
            gone.events += freed.events;
            gone.bytes += freed.bytes;
            !ring.events.is_empty() || now.duration_since(ring.touched) < ttl
        });
        self.forget(gone);
    }

    fn forget(&mut self, gone: Freed) {
        self.events -= gone.events.min(self.events);
        self.bytes -= gone.bytes.min(self.bytes);
    }
}

/// The single-process history: every channel's ring in one map, behind one short lock.
#[derive(Default)]
pub struct MemoryHistory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last position handed out: the next is later, even if the clock steps back.
    last: Position,
    apps: HashMap<String, AppHistory>,
    /// Each channel's TTL as last given, for the sweep.
    ttls: HashMap<(String, Box<str>), Duration>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Inner {
    fn next_position(&mut self) -> Position {
        let ms = now_ms();
        self.last = if ms > self.last.ms { Position { ms, seq: 0 } } else { self.last.next() };
        self.last
    }
}

impl MemoryHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Events kept for `app_id`, over all its channels.
    #[cfg(test)]
    pub fn kept(&self, app_id: &str) -> usize {
        self.inner.lock().map(|i| i.apps.get(app_id).map_or(0, |a| a.events)).unwrap_or(0)
    }

    /// Bytes of frames kept for `app_id`.
    #[cfg(test)]
    fn kept_bytes(&self, app_id: &str) -> usize {
        self.inner.lock().map(|i| i.apps.get(app_id).map_or(0, |a| a.bytes)).unwrap_or(0)
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(&self, broadcast: Broadcast, rule: &HistoryRule) -> Appended {
        let Ok(mut inner) = self.inner.lock() else { return Appended::Deliver(broadcast) };
        let inner = &mut *inner;
        let now = Instant::now();
        let ttl = Duration::from_secs(rule.ttl_s);
        // Two positions: the floor of a ring made now, and this event's (a gap in `seq` is harmless).
        let floor_if_new = inner.next_position();
        let position = inner.next_position();
        if !inner.apps.contains_key(&broadcast.app_id) {
            inner.apps.insert(broadcast.app_id.clone(), AppHistory::default());
        }
        let Some(app) = inner.apps.get_mut(&broadcast.app_id) else { return Appended::Deliver(broadcast) };
        app.appends += 1;
        if app.appends % SWEEP_EVERY == 0 {
            let ttls = &inner.ttls;
            let app_id = &broadcast.app_id;
            let ttl_of = |name: &str| ttls.get(&(app_id.clone(), name.into())).copied().unwrap_or(ttl);
            app.sweep(ttl_of, now);
        }
        let (over_events, bytes_before) = (app.events >= MAX_EVENTS_PER_APP, app.bytes);
        let name = broadcast.channel.name.as_str();
        let ring_is_new = !app.rings.contains_key(name);
        let Some(ring) = app.ring(name, || floor_if_new) else {
            warn!(app_id = %broadcast.app_id, "history not kept: {MAX_CHANNELS_PER_APP} channels already keep one");
            return Appended::Deliver(broadcast);
        };
        let frame = broadcast.frame.at_position(name, position);
        let bytes_left = MAX_BYTES_PER_APP.saturating_sub(frame.len());
        let mut gone = ring.expire(ttl, now);
        while ring.events.len() >= rule.size
            || (over_events && gone.events == 0)
            || bytes_before.saturating_sub(gone.bytes) > bytes_left
        {
            if !ring.pop(&mut gone) {
                break;
            }
        }
        if bytes_before.saturating_sub(gone.bytes) > bytes_left {
            // Nothing of its own left to give up: the other channels hold the cap.
            app.forget(gone);
            debug!(app_id = %broadcast.app_id, channel = name, "history not kept: {MAX_BYTES_PER_APP} bytes already are");
            return Appended::Deliver(broadcast);
        }
        ring.events.push_back((frame.bare_copy(), now));
        ring.touched = now;
        app.events += 1;
        app.bytes += frame.len();
        app.forget(gone);
        if ring_is_new {
            inner.ttls.insert((broadcast.app_id.clone(), name.into()), ttl);
        }
        Appended::Deliver(Broadcast { frame, ..broadcast })
    }

    async fn read(
        &self,
        app_id: &str,
        channel: &str,
        rule: &HistoryRule,
        since: Option<Position>,
        limit: usize,
    ) -> ClusterResult<Replay> {
        let mut inner = self.inner.lock().map_err(|_| ClusterError::Unavailable("history lock poisoned".into()))?;
        let inner = &mut *inner;
        let start = inner.next_position();
        let app = inner.apps.entry(app_id.to_owned()).or_default();
        let Some(ring) = app.ring(channel, || start) else {
            return Err(ClusterError::Unavailable(format!("{MAX_CHANNELS_PER_APP} channels already keep a history")));
        };
        let gone = ring.expire(Duration::from_secs(rule.ttl_s), Instant::now());
        let head = ring.head();
        let reset = since.is_some_and(|p| p < ring.floor || p > head);
        let events: Vec<&Frame> = match since {
            Some(p) if !reset => {
                ring.events.iter().map(|(f, _)| f).filter(|f| f.history().is_some_and(|(_, q)| q > p)).collect()
            }
            _ => {
                let skip = ring.events.len().saturating_sub(limit);
                ring.events.iter().skip(skip).map(|(f, _)| f).collect()
            }
        };
        let more = events.len() > limit;
        let replay =
            Replay { events: events.into_iter().take(limit).map(Frame::bare_copy).collect(), reset, head, more };
        app.forget(gone);
        Ok(replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::BroadcastKind;
    use crate::protocol::Channel;

    fn rule(size: usize, ttl_s: u64) -> HistoryRule {
        HistoryRule { channels: "*".into(), size, ttl_s }
    }

    fn event(n: usize) -> Broadcast {
        Broadcast {
            app_id: "1".into(),
            channel: Channel::parse("chat-a").unwrap(),
            kind: BroadcastKind::Event,
            frame: Frame::event("e", "chat-a", &n.to_string()),
            except: None,
        }
    }

    async fn append(h: &MemoryHistory, n: usize, rule: &HistoryRule) -> Frame {
        match h.append(event(n), rule).await {
            Appended::Deliver(b) => b.frame,
            Appended::Sent => panic!("memory delivers itself"),
        }
    }

    #[tokio::test]
    async fn positions_increase_and_a_read_resumes_after_one() {
        let h = MemoryHistory::new();
        let r = rule(100, 60);
        let start = h.read("1", "chat-a", &r, None, 0).await.unwrap().head;
        let mut frames = Vec::new();
        for n in 0..10 {
            frames.push(append(&h, n, &r).await);
        }
        let positions: Vec<Position> = frames.iter().map(|f| f.history().unwrap().1).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        assert!(start < positions[0]);
        assert!(
            frames[0].as_str().ends_with(&format!(r#","position":"{}"}}"#, positions[0])),
            "{}",
            frames[0].as_str()
        );
        let all = h.read("1", "chat-a", &r, Some(start), 100).await.unwrap();
        assert!(!all.reset);
        assert_eq!(all.events, frames, "from where the channel began: everything");
        let rest = h.read("1", "chat-a", &r, Some(positions[6]), 2).await.unwrap();
        assert_eq!(rest.events, frames[7..9].to_vec());
        assert!(rest.more && !rest.reset);
        assert_eq!(rest.head, positions[9]);
        let newest = h.read("1", "chat-a", &r, None, 3).await.unwrap();
        assert_eq!(newest.events, frames[7..].to_vec(), "no position: the newest, oldest first");
    }

    #[tokio::test]
    async fn size_bounds_a_ring_and_a_trimmed_position_resets() {
        let h = MemoryHistory::new();
        let r = rule(5, 60);
        let first = append(&h, 0, &r).await.history().unwrap().1;
        for n in 1..100_000 {
            append(&h, n, &r).await;
        }
        assert_eq!(h.kept("1"), 5, "memory stays flat");
        let read = h.read("1", "chat-a", &r, Some(first), 100).await.unwrap();
        assert!(read.reset, "the event after it was trimmed");
        let fresh = MemoryHistory::new();
        let before_restart = fresh.read("1", "chat-a", &r, Some(first), 100).await.unwrap();
        assert!(before_restart.reset, "a position from before this ring began");
        let future = Position { ms: u64::MAX, seq: 0 };
        assert!(h.read("1", "chat-a", &r, Some(future), 100).await.unwrap().reset, "a position never handed out");
    }

    #[tokio::test]
    async fn bytes_are_bounded_per_app_however_large_the_events() {
        let h = MemoryHistory::new();
        let r = rule(100, 60);
        let big = "x".repeat(10_000);
        let channels = 100;
        // 4x the cap in 10 KB events over 100 channels, whose `size` alone would allow 1.5x the cap.
        let events = 4 * MAX_BYTES_PER_APP / big.len() / channels * channels;
        for n in 0..events {
            let name = format!("chat-{}", n % channels);
            let broadcast = Broadcast {
                channel: Channel::parse(&name).unwrap(),
                frame: Frame::event("e", &name, &big),
                ..event(n)
            };
            h.append(broadcast, &r).await;
        }
        let (kept, bytes) = (h.kept("1"), h.kept_bytes("1"));
        assert!(bytes <= MAX_BYTES_PER_APP, "{bytes} bytes kept");
        assert!(bytes > MAX_BYTES_PER_APP - 2 * 10_100, "the cap is used, not emptied: {bytes}");
        assert!(kept < channels * 100 && kept > 1000, "each channel keeps its newest events: {kept}");
        let newest = h.read("1", "chat-7", &r, None, 1000).await.unwrap();
        assert!(!newest.events.is_empty() && newest.events.len() < 100, "{}", newest.events.len());
    }

    #[tokio::test]
    async fn a_channel_with_nothing_to_give_up_keeps_nothing_while_the_cap_is_held() {
        let h = MemoryHistory::new();
        let big = "x".repeat(100_000);
        let hog = |name: &str| Broadcast {
            channel: Channel::parse(name).unwrap(),
            frame: Frame::event("e", name, &big),
            ..event(0)
        };
        // One channel takes the whole cap (its `size` allows 10x the cap).
        for _ in 0..MAX_BYTES_PER_APP / big.len() + 10 {
            h.append(hog("chat-hog"), &rule(10_000, 60)).await;
        }
        let held = h.kept_bytes("1");
        assert!(held <= MAX_BYTES_PER_APP && held > MAX_BYTES_PER_APP - 2 * big.len(), "{held}");
        // 100 new channels, each with nothing of its own: none of them pushes the app over.
        for n in 0..100 {
            match h.append(hog(&format!("chat-new-{n}")), &rule(10, 60)).await {
                Appended::Deliver(b) => assert!(b.frame.history().is_none(), "delivered, not kept"),
                Appended::Sent => panic!("memory delivers itself"),
            }
        }
        assert_eq!(h.kept_bytes("1"), held, "still within the cap");
        // The hog still rolls: its own oldest makes room for its newest.
        match h.append(hog("chat-hog"), &rule(10_000, 60)).await {
            Appended::Deliver(b) => assert!(b.frame.history().is_some(), "kept"),
            Appended::Sent => panic!("memory delivers itself"),
        }
        assert!(h.kept_bytes("1") <= MAX_BYTES_PER_APP);
    }

    #[tokio::test]
    async fn ttl_forgets_old_events() {
        let h = MemoryHistory::new();
        let r = rule(100, 1);
        let first = append(&h, 0, &r).await.history().unwrap().1;
        let start = h.read("1", "chat-a", &r, None, 0).await.unwrap();
        assert_eq!(start.head, first);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let read = h.read("1", "chat-a", &r, None, 100).await.unwrap();
        assert!(read.events.is_empty());
        assert_eq!(read.head, first, "the floor is the forgotten event: a reader that had it is complete");
        assert!(!h.read("1", "chat-a", &r, Some(first), 10).await.unwrap().reset);
        assert_eq!(h.kept("1"), 0);
    }
}
