//! [`RedisHistory`]: history channels as Redis Streams, one per channel (`{app}:hist:{channel}`).
//!
//! A position is the stream entry id Redis assigns, so it is the same on every node: the publish
//! path hands a history event to the broker's outbox instead of delivering it, the batch's one
//! script ([`scripts::history_publish`]) appends it and publishes the record with its id, and every
//! node, this one included, delivers it from the bus. Publishes to other channels are untouched.
//!
//! On a single Redis, a batch is one script call whatever apps its events belong to. On a Redis
//! Cluster a script may only touch keys of one slot: history streams share their app's `{app}`
//! tag, so a batch is one script call per app with history events in it (other records ride in
//! the first), still one round trip for the usual single-app batch.
//!
//! The stream's first entry is its floor (a marker written when the stream is made, or the
//! newest entry trimmed by size or TTL): it is never returned, and a reader older than it is told
//! to reset. A Redis restart without persistence loses the streams; the next read or publish
//! makes a new marker, later than any position handed out before, so every older reader resets.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use tracing::debug;

use super::broker::{HistoryRecord, Outgoing, RedisBroker};
use super::connection::Commands;
use super::{bus, scripts, Shared};
use crate::cluster::history::{Appended, History, Replay};
use crate::cluster::{Broadcast, ClusterResult, LocalNode};
use crate::config::HistoryRule;
use crate::protocol::position::Position;
use crate::protocol::Frame;

fn publish_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(scripts::history_publish)
}

fn read_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(scripts::history_read)
}

pub struct RedisHistory {
    shared: Arc<Shared>,
    broker: Arc<RedisBroker>,
}

impl RedisHistory {
    pub(super) fn new(shared: Arc<Shared>, broker: Arc<RedisBroker>) -> Self {
        RedisHistory { shared, broker }
    }

    /// One script call: (first id, last id, events).
    async fn read_once(
        &self,
        key: &str,
        channel: &str,
        since: Option<Position>,
        limit: usize,
        ttl_ms: u64,
    ) -> ClusterResult<(Position, Position, Vec<Frame>, bool)> {
        let since_arg = since.map(|p| p.to_string()).unwrap_or_default();
        let mut call = read_script().prepare_invoke();
        call.key(key).arg(since_arg).arg(limit).arg(ttl_ms);
        let reply: Vec<Vec<u8>> = self.shared.invoke("history read", &call).await?;
        let id = |b: &[u8]| std::str::from_utf8(b).ok().and_then(Position::parse);
        let (Some(first), Some(last)) = (reply.first().and_then(|b| id(b)), reply.get(1).and_then(|b| id(b))) else {
            return Err(crate::cluster::ClusterError::Unavailable("history read: unexpected reply".into()));
        };
        let mut events: Vec<Frame> = reply[2..]
            .chunks_exact(2)
            .filter_map(|pair| {
                let position = id(&pair[0])?;
                let mut text = pair[1].clone();
                text.extend_from_slice(format!(r#","position":"{position}"}}"#).as_bytes());
                Frame::kept_at(Bytes::from(text), channel, position)
            })
            .collect();
        if since.is_none() {
            events.reverse();
        }
        let more = events.len() > limit;
        if more {
            // Newest first was read without a position: the extra one is the oldest.
            if since.is_none() {
                events.remove(0);
            } else {
                events.truncate(limit);
            }
        }
        Ok((first, last, events, more))
    }
}

#[async_trait]
impl History for RedisHistory {
    async fn append(&self, broadcast: Broadcast, rule: &HistoryRule) -> Appended {
        let stream = self.shared.keys.history(&broadcast.app_id, &broadcast.channel.name);
        let fallback = broadcast.clone();
        let record = HistoryRecord { broadcast, stream, size: rule.size, ttl_ms: rule.ttl_s * 1000 };
        if self.broker.publish_history(record).await {
            Appended::Sent
        } else {
            Appended::Deliver(fallback)
        }
    }

    async fn read(
        &self,
        app_id: &str,
        channel: &str,
        rule: &HistoryRule,
        since: Option<Position>,
        limit: usize,
    ) -> ClusterResult<Replay> {
        let key = self.shared.keys.history(app_id, channel);
        let ttl_ms = rule.ttl_s * 1000;
        let (first, head, events, more) = self.read_once(&key, channel, since, limit, ttl_ms).await?;
        if since.is_some_and(|p| p < first || p > head) {
            let (_, head, events, more) = self.read_once(&key, channel, None, limit, ttl_ms).await?;
            return Ok(Replay { events, reset: true, head, more });
        }
        Ok(Replay { events, reset: false, head, more })
    }
}

/// Publishes a batch that holds history events: one script call per group (see the module doc).
/// When it fails, the batch's history events are delivered on this node without a position (the
/// other nodes miss them, as they miss every record while Redis is away).
pub(super) async fn publish_batch(shared: &Shared, local: &dyn LocalNode, items: Vec<Outgoing>) {
    let groups: Vec<Vec<Outgoing>> = match shared.commands {
        Commands::Single(_) => vec![items],
        Commands::Cluster(_) => by_app(items),
    };
    for group in groups {
        let mut keys: Vec<&str> = Vec::new();
        let mut call = publish_script().prepare_invoke();
        call.arg(shared.keys.bus());
        for item in &group {
            match item {
                Outgoing::Record(bytes) => {
                    call.arg("r").arg(bytes.as_slice());
                }
                Outgoing::History(h) => {
                    let index = match keys.iter().position(|k| *k == h.stream) {
                        Some(i) => i + 1,
                        None => {
                            keys.push(&h.stream);
                            keys.len()
                        }
                    };
                    let (head, frame) = bus::encode_history_heads(shared.node, &h.broadcast);
                    call.arg("h").arg(index).arg(h.size).arg(h.ttl_ms).arg(head).arg(frame);
                }
            }
        }
        for key in &keys {
            call.key(*key);
        }
        if let Err(e) = shared.invoke::<i64>("history publish", &call).await {
            debug!(error = %e, "history events delivered on this node only, without a position");
            for item in &group {
                if let Outgoing::History(h) = item {
                    local.deliver(&h.broadcast);
                }
            }
        }
    }
}

/// A Redis Cluster's groups: each app's history events together (their streams share a slot),
/// the other records with the first group.
fn by_app(items: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut groups: Vec<(Option<String>, Vec<Outgoing>)> = vec![(None, Vec::new())];
    for item in items {
        let app = match &item {
            Outgoing::History(h) => Some(h.broadcast.app_id.clone()),
            Outgoing::Record(_) => None,
        };
        match app {
            None => groups[0].1.push(item),
            Some(app) => match groups.iter_mut().find(|(a, _)| a.as_deref() == Some(app.as_str())) {
                Some(group) => group.1.push(item),
                None => groups.push((Some(app), vec![item])),
            },
        }
    }
    // The plain records ride with the first app's group (a group of records alone is a script
    // that only publishes).
    let mut groups: Vec<Vec<Outgoing>> = groups.into_iter().map(|(_, g)| g).filter(|g| !g.is_empty()).collect();
    if groups.len() > 1 && groups[0].iter().all(|i| matches!(i, Outgoing::Record(_))) {
        let records = groups.remove(0);
        groups[0].splice(0..0, records);
    }
    groups
}
