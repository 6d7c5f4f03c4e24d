//! [`RedisBroker`]: records to and from the other nodes over one Redis pub/sub channel.
//!
//! Publishing never waits for Redis: records go into a bounded outbox, and one publisher task
//! sends whatever has queued up as one PUBLISH (so under load a batch of events crosses Redis
//! once, at idle each goes out at once). One subscriber task reads the channel, skips this node's
//! own records and delivers the others to this node's sockets; when the subscription comes back
//! after a loss it has the state rewritten, since Redis may have restarted empty.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::connection::{bounded, CONNECT_TIMEOUT};
use super::state::RedisState;
use super::{bus, Shared};
use crate::cluster::{Broker, ClusterError, ClusterResult, LocalNode, Record};

/// Records queued for the bus before publishers wait.
const OUTBOX: usize = 8192;
/// Most records in one PUBLISH.
const MAX_RECORDS_PER_PUBLISH: usize = 64;

pub struct RedisBroker {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<Outgoing>,
}

/// What waits in the outbox: a ready record, or a history event still to be given its position.
pub(super) enum Outgoing {
    Record(Vec<u8>),
    History(HistoryRecord),
}

/// A broadcast on a history channel, appended to its stream by the batch's script.
pub(super) struct HistoryRecord {
    pub broadcast: crate::cluster::Broadcast,
    pub stream: String,
    pub size: usize,
    pub ttl_ms: u64,
}

impl RedisBroker {
    /// Starts the publisher and subscriber tasks; the receiver resolves once the subscription is up.
    pub(super) fn start(
        shared: Arc<Shared>,
        local: Arc<dyn LocalNode>,
        state: Arc<RedisState>,
    ) -> (Arc<RedisBroker>, oneshot::Receiver<()>) {
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(publish_loop(shared.clone(), local.clone(), outbox_rx));
        tokio::spawn(subscribe_loop(shared.clone(), local, state, ready_tx));
        (Arc::new(RedisBroker { shared, outbox }), ready_rx)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, record: Record) -> ClusterResult<()> {
        self.send(Outgoing::Record(bus::encode(self.shared.node, &record))).await
    }

    fn healthy(&self) -> bool {
        self.shared.health.subscribed.load(Ordering::Acquire)
    }
}

impl RedisBroker {
    async fn send(&self, item: Outgoing) -> ClusterResult<()> {
        self.outbox.send(item).await.map_err(|_| {
            warn!("the Redis publisher task has stopped: cross-node delivery is off");
            ClusterError::Unavailable("the Redis publisher has stopped".into())
        })
    }

    /// Queues a history channel's event: the batch's script gives it its position and publishes
    /// it, and every node (this one too) delivers it from the bus.
    /// False when the publisher task has stopped.
    pub(super) async fn publish_history(&self, record: HistoryRecord) -> bool {
        self.outbox.send(Outgoing::History(record)).await.is_ok()
    }
}

async fn publish_loop(shared: Arc<Shared>, local: Arc<dyn LocalNode>, mut outbox: mpsc::Receiver<Outgoing>) {
    let mut items = Vec::new();
    while outbox.recv_many(&mut items, MAX_RECORDS_PER_PUBLISH).await > 0 {
        if items.iter().any(|i| matches!(i, Outgoing::History(_))) {
            super::history::publish_batch(&shared, local.as_ref(), std::mem::take(&mut items)).await;
            continue;
        }
        let mut records: Vec<Vec<u8>> = items
            .drain(..)
            .filter_map(|i| match i {
                Outgoing::Record(r) => Some(r),
                Outgoing::History(_) => None,
            })
            .collect();
        let payload = match records.len() {
            1 => records.pop().unwrap_or_default(),
            _ => bus::encode_many(&records),
        };
        let cmd = redis::cmd("PUBLISH").arg(shared.keys.bus()).arg(payload).clone();
        if let Err(e) = shared.commands.query::<i64>(&cmd).await {
            shared.failed("publish", &e);
        }
    }
}

async fn subscribe_loop(
    shared: Arc<Shared>,
    local: Arc<dyn LocalNode>,
    state: Arc<RedisState>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        match subscribe_once(&shared).await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                if connected_before {
                    info!("Redis is back: resuming cross-node delivery");
                    // Untrusted until rewritten (what was published meanwhile never arrived);
                    // a failed rewrite is retried by the heartbeat.
                    shared.health.commands_ok.store(false, Ordering::Release);
                    shared.health.subscribed.store(true, Ordering::Release);
                    state.resync().await;
                }
                connected_before = true;
                shared.health.subscribed.store(true, Ordering::Release);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                while let Some(message) = stream.next().await {
                    on_message(&shared, local.as_ref(), message.get_payload_bytes());
                }
                shared.health.subscribed.store(false, Ordering::Release);
                warn!("lost the Redis subscription: serving local traffic only, reconnecting");
            }
            Err(e) => {
                shared.failed("subscribe", &e);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_once(shared: &Shared) -> redis::RedisResult<redis::aio::PubSubStream> {
    bounded(CONNECT_TIMEOUT, "subscribe", async {
        // Classic pub/sub is broadcast across a Redis Cluster's nodes, so any one of them will do.
        let client = redis::Client::open(shared.settings.urls[0].as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(shared.keys.bus()).await?;
        Ok(pubsub.into_on_message())
    })
    .await
}

fn on_message(shared: &Shared, local: &dyn LocalNode, payload: &[u8]) {
    for record in bus::decode_all(payload) {
        let Some((from, record)) = record else {
            debug!("ignored a malformed record on the Redis channel");
            continue;
        };
        // This node's own records were delivered here already, except history events, which
        // only the bus gives their position.
        let positioned = matches!(&record, Record::Broadcast(b) if b.frame.history().is_some());
        if from == shared.node && !positioned {
            continue;
        }
        match record {
            Record::Broadcast(b) => {
                local.deliver(&b);
            }
            Record::Terminate { app_id, user_id } => {
                local.terminate_user(&app_id, &user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::cluster::redis::test_server::{shared_on, state_on, RecordingNode, TestRedis};
    use crate::cluster::{Broadcast, BroadcastKind, Broker, Record};
    use crate::protocol::{Channel, Frame, SocketId};

    fn record(n: usize) -> Record {
        Record::Broadcast(Broadcast {
            app_id: "1".into(),
            channel: Channel::parse("orders").unwrap(),
            kind: BroadcastKind::Event,
            frame: Frame::event("e", "orders", &n.to_string()),
            except: Some(SocketId { node: 1, seq: 1 }),
        })
    }

    #[tokio::test]
    async fn records_reach_the_other_node_in_order_and_never_come_back() {
        let redis = TestRedis::start();
        let (a_seen, b_seen) = (Arc::new(RecordingNode::default()), Arc::new(RecordingNode::default()));
        let (a, a_ready) =
            super::RedisBroker::start(shared_on(&redis, 1, "b").await, a_seen.clone(), state_on(&redis, 1, "b").await);
        let (_b, b_ready) =
            super::RedisBroker::start(shared_on(&redis, 2, "b").await, b_seen.clone(), state_on(&redis, 2, "b").await);
        a_ready.await.unwrap();
        b_ready.await.unwrap();
        assert!(a.healthy());
        for n in 0..200 {
            a.publish(record(n)).await.unwrap();
        }
        a.publish(Record::Terminate { app_id: "1".into(), user_id: "42".into() }).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b_seen.seen().len() < 201 {
            assert!(std::time::Instant::now() < deadline, "only {} records arrived", b_seen.seen().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = b_seen.seen();
        for (n, line) in seen.iter().take(200).enumerate() {
            assert!(line.starts_with("1/orders: ") && line.ends_with(&format!("\"data\":\"{n}\"}}")), "{n}: {line}");
        }
        assert_eq!(seen[200], "terminate 1/42");
        assert!(a_seen.seen().is_empty(), "a node skips its own records");
    }
}
