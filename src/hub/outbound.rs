//! A connection's outbound queue, bounded in bytes.
//!
//! The hub pushes shared frames without blocking and without waiting for any socket: a push is an
//! atomic add and a queue insert. When a client stops reading and its queue passes the byte limit,
//! further frames are refused and the connection is told to close as a slow consumer (4100), so one
//! slow reader can neither grow the server's memory nor hold up anyone else's delivery.
//!
//! The queue is a `VecDeque` behind a short mutex plus a `Notify`, not a channel: an idle
//! connection then holds no preallocated block (a tokio mpsc allocates ~1.3 KB up front), and the
//! queue's buffer is released once a burst has drained.
//!
//! Every entry is counted at what it really holds: its payload plus the entry itself, so a flood
//! of tiny frames is bounded like a few large ones, and the number of entries is capped as well.
//! Answers to a client's WebSocket pings wait apart from the queue, at most
//! [`MAX_PENDING_PONGS`] of them: a client that sends a few pings gets every answer (the Autobahn
//! TestSuite checks it), a flood keeps only the latest ones (RFC 6455 allows answering only the most
//! recent ping), so it costs at most a few kilobytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::protocol::position::Position;
use crate::protocol::{Frame, SocketId};

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Frame),
    /// A binary message (only the conformance echo endpoint sends these).
    Binary(bytes::Bytes),
    /// A WebSocket ping control frame (for clients that only answer those).
    Ping,
    /// The answer to a client's WebSocket ping, with its payload.
    Pong(bytes::Bytes),
    /// Send `pusher:error` with this code and close the socket with it.
    Close {
        code: crate::protocol::ErrorCode,
        message: String,
    },
}

/// What one queue entry costs beyond its payload.
const ENTRY_COST: usize = std::mem::size_of::<Outgoing>();
/// Most entries one queue holds, whatever their size.
pub const MAX_QUEUED_ENTRIES: usize = 65_536;
/// Most pongs waiting to be written (each at most 125 bytes); older ones are dropped first.
pub const MAX_PENDING_PONGS: usize = 16;

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    /// Answers to the latest WebSocket pings, oldest first, written before anything queued.
    pongs: VecDeque<bytes::Bytes>,
    /// History channels this connection resumed, each with the last position it was given: a
    /// live event at or before it is one it already has (see [`Outbound::splice_replay`]).
    /// A boxed slice: most connections never resume, and none costs a pointer, not a `Vec`.
    floors: Option<Floors>,
}

/// Each resumed channel with the last position the connection was given.
type Floors = Box<[(Box<str>, Position)]>;

struct Shared {
    socket_id: SocketId,
    queued_bytes: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    /// Wakes a writer stuck on a socket that does not drain, so it can drop the client at once.
    kill: Notify,
    queue: Mutex<Queue>,
    /// Wakes the writer when something is queued.
    ready: Notify,
    /// The connection is gone: pushes are refused.
    closed: AtomicBool,
}

impl Shared {
    fn enqueue(&self, item: Outgoing) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.queue.lock() {
            Ok(mut queue) if queue.items.len() < MAX_QUEUED_ENTRIES => queue.items.push_back(item),
            Ok(_) => {
                self.overflow();
                return false;
            }
            Err(_) => return false,
        }
        self.ready.notify_one();
        true
    }

    fn overflow(&self) {
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            self.kill.notify_one();
        }
    }
}

/// What an entry counts against the queue's byte limit: its payload and the entry itself.
/// Control entries (ping, close) are not counted: at most one of each kind matters.
pub fn cost(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(frame) => ENTRY_COST + frame.len(),
        Outgoing::Binary(data) => ENTRY_COST + data.len(),
        Outgoing::Ping | Outgoing::Pong(_) | Outgoing::Close { .. } => 0,
    }
}

/// The hub's handle on a connection: cheap to clone, safe to push to from any thread.
#[derive(Clone)]
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The connection's end of the queue. Dropping it refuses all further pushes.
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Ok(mut queue) = self.shared.queue.lock() {
            *queue = Queue::default();
        }
    }
}

impl Outbound {
    /// A queue for `socket_id` holding at most `limit` bytes of frames.
    pub fn new(socket_id: SocketId, limit: usize) -> (Outbound, OutboundReceiver) {
        let shared = Arc::new(Shared {
            socket_id,
            queued_bytes: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            kill: Notify::new(),
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        });
        (Outbound { shared: shared.clone() }, OutboundReceiver { shared })
    }

    pub fn socket_id(&self) -> SocketId {
        self.shared.socket_id
    }

    /// Queues a frame. Returns false when it was refused: the connection is gone or over its limit.
    pub fn push(&self, frame: Frame) -> bool {
        if frame.history().is_some() && self.already_has(&frame) {
            return true;
        }
        self.push_counted(Outgoing::Frame(frame))
    }

    /// Whether a history event is at or before what this connection was replayed up to.
    fn already_has(&self, frame: &Frame) -> bool {
        let Some((channel, position)) = frame.history() else { return false };
        let Ok(queue) = self.shared.queue.lock() else { return false };
        queue.floors.as_ref().is_some_and(|f| f.iter().any(|(c, floor)| **c == *channel && position <= *floor))
    }

    /// Puts a resumed history channel's `replay` before its live events already queued (they
    /// arrived while the history was read), drops those of them at or before `floor` (the last
    /// position replayed) and refuses such later pushes too: replay then live, with no duplicate
    /// and no gap. False, with nothing changed, when the replay does not fit the queue's limits.
    pub fn splice_replay(&self, channel: &str, replay: Vec<Frame>, floor: Option<Position>) -> bool {
        let Ok(mut queue) = self.shared.queue.lock() else { return false };
        let of_channel = |item: &Outgoing| match item {
            Outgoing::Frame(f) => f.history().filter(|(c, _)| *c == channel).map(|(_, p)| p),
            _ => None,
        };
        let dropped: usize = match floor {
            Some(floor) => queue.items.iter().filter(|i| of_channel(i).is_some_and(|p| p <= floor)).map(cost).sum(),
            None => 0,
        };
        let added: usize = replay.iter().map(|f| ENTRY_COST + f.len()).sum();
        let queued = self.shared.queued_bytes.load(Ordering::Acquire);
        if queued + added - dropped.min(queued + added) > self.shared.limit
            || queue.items.len() + replay.len() > MAX_QUEUED_ENTRIES
        {
            return false;
        }
        if let Some(floor) = floor {
            queue.items.retain(|i| of_channel(i).is_none_or(|p| p > floor));
            let mut floors = queue.floors.take().map(Vec::from).unwrap_or_default();
            match floors.iter_mut().find(|(c, _)| **c == *channel) {
                Some(entry) => entry.1 = floor,
                None => floors.push((channel.into(), floor)),
            }
            queue.floors = Some(floors.into_boxed_slice());
        }
        let at = queue.items.iter().position(|i| of_channel(i).is_some()).unwrap_or(queue.items.len());
        let live = queue.items.split_off(at);
        queue.items.extend(replay.into_iter().map(Outgoing::Frame));
        queue.items.extend(live);
        self.shared.queued_bytes.fetch_add(added, Ordering::AcqRel);
        self.shared.queued_bytes.fetch_sub(dropped, Ordering::AcqRel);
        drop(queue);
        self.shared.ready.notify_one();
        true
    }

    /// Queues a binary message, counted against the same byte limit.
    pub fn push_binary(&self, data: bytes::Bytes) -> bool {
        self.push_counted(Outgoing::Binary(data))
    }

    fn push_counted(&self, item: Outgoing) -> bool {
        let len = cost(&item);
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.shared.limit {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared.overflow();
            return false;
        }
        if !self.shared.enqueue(item) {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Asks the connection to send `pusher:error` with `code` and close (e.g. terminate_connections).
    pub fn close(&self, code: crate::protocol::ErrorCode, message: impl Into<String>) {
        self.shared.enqueue(Outgoing::Close { code, message: message.into() });
    }
}

/// Resolves when a connection's queue has overflowed (see [`OutboundReceiver::overflow_signal`]).
#[derive(Clone)]
pub struct OverflowSignal(Arc<Shared>);

impl OverflowSignal {
    pub async fn wait(&self) {
        loop {
            let notified = self.0.kill.notified();
            if self.0.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Outbound {
    /// Queues a WebSocket ping control frame.
    pub fn ping(&self) {
        self.shared.enqueue(Outgoing::Ping);
    }

    /// Answers a client's ping; past [`MAX_PENDING_PONGS`] unwritten answers, the oldest is dropped.
    pub fn pong(&self, payload: bytes::Bytes) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.shared.queue.lock() {
            Ok(mut queue) => {
                if queue.pongs.len() >= MAX_PENDING_PONGS {
                    queue.pongs.pop_front();
                }
                queue.pongs.push_back(payload);
            }
            Err(_) => return false,
        }
        self.shared.ready.notify_one();
        true
    }
}

impl OutboundReceiver {
    /// Waits for at least one item and takes up to `max` (for one coalesced write). 0 when closed.
    pub async fn recv_many(&mut self, into: &mut Vec<Outgoing>, max: usize) -> usize {
        loop {
            // Registered before looking, so a push between the look and the wait is not missed.
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut queue) = self.shared.queue.lock() {
                if !queue.pongs.is_empty() || !queue.items.is_empty() {
                    let before = into.len();
                    // Taken whole (and the buffer with them): an idle connection keeps none.
                    into.extend(std::mem::take(&mut queue.pongs).into_iter().map(Outgoing::Pong));
                    let n = queue.items.len().min(max);
                    into.extend(queue.items.drain(..n));
                    if queue.items.is_empty() {
                        // An idle connection keeps no queue buffer.
                        queue.items = VecDeque::new();
                    }
                    return into.len() - before;
                }
            }
            notified.await;
        }
    }

    /// Records that `items` (taken by `recv_many`) left the queue: were handed to the socket.
    pub fn sent(&self, items: &[Outgoing]) {
        let bytes: usize = items.iter().map(cost).sum();
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether the queue is half full or more: the connection then stops reading from its client
    /// until it drains, so a client that sends without reading is slowed by TCP, not buffered here.
    pub fn backlogged(&self) -> bool {
        self.shared.queued_bytes.load(Ordering::Acquire) >= self.shared.limit / 2
    }

    /// Whether a push was refused because the client fell too far behind.
    #[cfg(test)]
    pub fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// A handle that resolves once the queue overflows, usable while the receiver is borrowed.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.shared.clone())
    }

    /// Bytes currently queued.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::event("e", "c", &"x".repeat(n))
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_flags_overflow() {
        let one = frame(100);
        let each = cost(&Outgoing::Frame(one.clone()));
        assert_eq!(each, one.len() + ENTRY_COST, "payload plus the entry");
        let (out, mut rx) = Outbound::new(SocketId { node: 1, seq: 1 }, each * 3);
        assert!(out.push(one.clone()) && out.push(one.clone()) && out.push(one.clone()));
        assert!(!rx.overflowed());
        assert!(!out.push(one.clone()), "the fourth frame exceeds the limit");
        assert!(rx.overflowed());
        rx.overflow_signal().wait().await; // must not hang once overflowed
        let mut got = Vec::new();
        assert!(rx.backlogged());
        assert_eq!(rx.recv_many(&mut got, 10).await, 3);
        rx.sent(&got);
        assert_eq!(rx.queued_bytes(), 0);
        assert!(!rx.backlogged());
    }

    #[tokio::test]
    async fn a_replay_goes_before_the_channels_live_events_without_duplicates() {
        let at = |n: u64| Frame::event("e", "h", &n.to_string()).at_position("h", Position { ms: n, seq: 0 });
        let (out, mut rx) = Outbound::new(SocketId { node: 1, seq: 6 }, 1 << 20);
        out.push(Frame::event("confirm", "h", ""));
        out.push(at(3));
        out.push(Frame::event("other", "o", ""));
        out.push(at(4));
        assert!(out.splice_replay("h", vec![at(2), at(3)], Some(Position { ms: 3, seq: 0 })));
        assert!(out.push(at(3)), "a late duplicate is accepted and dropped");
        out.push(at(5));
        let mut got = Vec::new();
        rx.recv_many(&mut got, 100).await;
        rx.sent(&got);
        let texts: Vec<String> = got
            .iter()
            .map(|o| match o {
                Outgoing::Frame(f) => f.history().map_or_else(|| "-".to_owned(), |(_, p)| p.ms.to_string()),
                _ => "?".into(),
            })
            .collect();
        assert_eq!(texts, ["-", "-", "2", "3", "4", "5"], "the replay before the live events of its channel; 3 once");
        assert_eq!(rx.queued_bytes(), 0, "every byte spliced or dropped is accounted");
        let (small, _rx) = Outbound::new(SocketId { node: 1, seq: 7 }, 10);
        assert!(!small.splice_replay("h", vec![at(1)], None), "a replay over the limit is refused");
    }

    #[tokio::test]
    async fn tiny_entries_are_bounded_by_count_and_by_their_real_cost() {
        let (out, rx) = Outbound::new(SocketId { node: 1, seq: 4 }, usize::MAX / 2);
        let tiny = Frame::pong();
        let accepted = (0..MAX_QUEUED_ENTRIES + 10).take_while(|_| out.push(tiny.clone())).count();
        assert_eq!(accepted, MAX_QUEUED_ENTRIES, "the entry cap holds whatever the byte limit");
        assert!(rx.overflowed());
        let (out, rx) = Outbound::new(SocketId { node: 1, seq: 5 }, 1 << 20);
        let accepted = (0..1 << 20).take_while(|_| out.push(tiny.clone())).count();
        assert_eq!(accepted, (1 << 20) / (tiny.len() + ENTRY_COST), "each entry costs more than its bytes");
        assert!(rx.overflowed());
    }

    #[tokio::test]
    async fn a_few_pongs_are_all_kept_a_flood_keeps_the_latest_and_they_go_first() {
        let (out, mut rx) = Outbound::new(SocketId { node: 1, seq: 6 }, 1 << 20);
        for n in 0..10u32 {
            assert!(out.pong(bytes::Bytes::from(n.to_string())));
        }
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 100).await, 10, "ten pings, ten answers");
        got.clear();
        assert!(out.push(frame(1)));
        for n in 0..10_000u32 {
            assert!(out.pong(bytes::Bytes::from(n.to_string())));
        }
        assert!(!rx.overflowed(), "pongs cost nothing against the limit");
        assert_eq!(rx.recv_many(&mut got, 10).await, MAX_PENDING_PONGS + 1);
        let pongs: Vec<u32> = got
            .iter()
            .filter_map(|item| match item {
                Outgoing::Pong(p) => std::str::from_utf8(p).ok()?.parse().ok(),
                _ => None,
            })
            .collect();
        let latest: Vec<u32> = (10_000 - MAX_PENDING_PONGS as u32..10_000).collect();
        assert_eq!(pongs, latest, "the latest answers, oldest first, before the queued frame");
        assert!(matches!(got.last(), Some(Outgoing::Frame(_))));
        rx.sent(&got);
        assert_eq!(rx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_and_gets_everything_in_order() {
        let (out, mut rx) = Outbound::new(SocketId { node: 1, seq: 3 }, 1 << 20);
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 100 {
                rx.recv_many(&mut got, 7).await;
            }
            got
        });
        for i in 0..100 {
            assert!(out.push(Frame::event("e", "c", &i.to_string())));
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await.unwrap().unwrap();
        for (i, item) in got.iter().enumerate() {
            match item {
                Outgoing::Frame(f) => assert!(f.as_str().ends_with(&format!("\"data\":\"{i}\"}}"))),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn push_after_the_connection_is_gone_is_refused() {
        let (out, rx) = Outbound::new(SocketId { node: 1, seq: 2 }, 1 << 20);
        drop(rx);
        assert!(!out.push(frame(1)));
    }
}
