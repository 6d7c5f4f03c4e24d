//! Shared tallies of a run: atomics bumped by every client task and read by the progress printer.
//!
//! Plain relaxed atomics: each is an independent count, read once a second and at the end, so no ordering
//! between them is needed, and a relaxed add is the cheapest thing a receiver can do per delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub struct Counters {
    /// WebSocket handshakes completed (`pusher:connection_established` received).
    pub connected: AtomicU64,
    /// Subscriptions confirmed (`pusher_internal:subscription_succeeded`).
    pub subscribed: AtomicU64,
    /// Connections that failed to connect or subscribe in time.
    pub setup_failed: AtomicU64,
    /// Events accepted by the server (HTTP 200 for their batch) or sent as client events.
    pub events_sent: AtomicU64,
    /// HTTP API requests that did not answer 200, or failed.
    pub publish_errors: AtomicU64,
    /// Deliveries the server owes: each sent event times the subscribers that should get it.
    pub expected: AtomicU64,
    /// Stamped events received.
    pub delivered: AtomicU64,
    /// Connections the server closed (or that broke) while the run was on.
    pub disconnects: AtomicU64,
    /// `pusher:error` frames received.
    pub server_errors: AtomicU64,
    /// Bytes the clients read off their sockets after the handshake (frames as the server sent them,
    /// compressed or not).
    pub wire_bytes: AtomicU64,
    /// Connections whose handshake agreed to permessage-deflate.
    pub deflate_agreed: AtomicU64,
    /// Compressed messages counted as deliveries without being inflated (clients outside the
    /// `--inflate-sample`).
    pub unopened: AtomicU64,
    /// Most recent reasons, counted, to make failures diagnosable from the report.
    reasons: Mutex<BTreeMap<String, u64>>,
}

/// Distinct failure reasons kept (a run with thousands of failures usually has one or two causes).
const MAX_REASONS: usize = 20;

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Counts one occurrence of a failure reason (truncated so that ids in messages do not explode the map).
    pub fn note(&self, reason: &str) {
        let reason: String = reason.chars().take(120).collect();
        if let Ok(mut reasons) = self.reasons.lock() {
            if reasons.len() < MAX_REASONS || reasons.contains_key(&reason) {
                *reasons.entry(reason).or_default() += 1;
            }
        }
    }

    pub fn reasons(&self) -> BTreeMap<String, u64> {
        self.reasons.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
