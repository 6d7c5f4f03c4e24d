//! A short history of what happened, for the dashboard's live event stream (like Pusher's debug
//! console). Off unless the dashboard is on: when off, recording is one branch.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many items are kept.
pub const FEED_CAPACITY: usize = 500;
/// Longest detail kept per item (event payloads are cut).
const MAX_DETAIL: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct FeedItem {
    /// Increases by one per item: clients ask for what came after the last one they saw.
    pub seq: u64,
    pub time_ms: u64,
    pub app_id: String,
    /// connection, disconnection, subscribed, unsubscribed, api_message, client_event, ...
    pub kind: &'static str,
    pub channel: Option<String>,
    pub socket_id: Option<String>,
    /// The event name and data, or other details; never secrets or signatures.
    pub detail: String,
}

pub struct Feed {
    enabled: bool,
    items: Mutex<(u64, VecDeque<FeedItem>)>,
}

impl Feed {
    pub fn new(enabled: bool) -> Self {
        Feed { enabled, items: Mutex::new((0, VecDeque::with_capacity(if enabled { FEED_CAPACITY } else { 0 }))) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn record(
        &self,
        app_id: &str,
        kind: &'static str,
        channel: Option<&str>,
        socket_id: Option<String>,
        detail: &str,
    ) {
        if !self.enabled {
            return;
        }
        let mut cut = detail.len().min(MAX_DETAIL);
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let Ok(mut items) = self.items.lock() else { return };
        items.0 += 1;
        let item = FeedItem {
            seq: items.0,
            time_ms,
            app_id: app_id.to_owned(),
            kind,
            channel: channel.map(str::to_owned),
            socket_id,
            detail: detail[..cut].to_owned(),
        };
        if items.1.len() == FEED_CAPACITY {
            items.1.pop_front();
        }
        items.1.push_back(item);
    }

    /// Items of `app_id` after `seq`, oldest first.
    pub fn since(&self, app_id: &str, seq: u64) -> Vec<FeedItem> {
        let Ok(items) = self.items.lock() else { return Vec::new() };
        items.1.iter().filter(|i| i.seq > seq && i.app_id == app_id).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_filtered_and_off_by_default() {
        let off = Feed::new(false);
        off.record("a", "connection", None, None, "x");
        assert!(off.since("a", 0).is_empty());

        let feed = Feed::new(true);
        for i in 0..(FEED_CAPACITY + 10) {
            feed.record(if i % 2 == 0 { "a" } else { "b" }, "api_message", Some("c"), None, &"é".repeat(2000));
        }
        let a = feed.since("a", 0);
        assert_eq!(a.len(), FEED_CAPACITY / 2);
        assert!(a.iter().all(|i| i.detail.len() <= MAX_DETAIL));
        let last = a.last().unwrap().seq;
        assert!(feed.since("a", last).is_empty());
    }
}
