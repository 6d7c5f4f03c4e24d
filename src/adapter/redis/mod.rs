//! The Redis adapter: many Herald nodes behind a load balancer act as one server.
//!
//! - **Messages**: every publish is delivered to this node's sockets at once and queued for one
//!   Redis channel; a publisher task sends whatever has queued up as one PUBLISH, in order, and
//!   every other node delivers it to its own sockets. At most one message per event, never one
//!   per subscriber; under load, one per batch of events.
//! - **State**: each node keeps its subscription and connection counts in its own Redis hashes,
//!   and presence/occupancy in shared hashes updated by Lua scripts (see `scripts`). Questions
//!   about the cluster (channel info, users) are answered from Redis, with no request/response
//!   round over the bus.
//! - **Failure**: nodes heartbeat into a sorted set. A node whose heartbeat stops (SIGKILL, a lost
//!   machine) is reaped by another: its presence members are removed cluster-wide, with
//!   `member_removed` sent, and its channels vacated. When Redis itself is away, nodes keep serving
//!   their own sockets, reconnect with backoff, and rewrite their state when it is back.

mod bus;
mod conn;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::Script;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::presence::{Join, Member};
use super::{Adapter, Broadcast, ClusterEvent, LocalNode};
use crate::protocol::presence::MemberData;
use bus::Envelope;
use conn::Commands;

/// Settings of the Redis adapter.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL for a single server; several for a Redis Cluster's seed nodes.
    pub urls: Vec<String>,
    /// Prefix of every key, and the pub/sub channel: lets deployments share a Redis.
    pub prefix: String,
    /// A node silent this long is considered dead and reaped.
    pub node_timeout: Duration,
}

pub struct RedisAdapter {
    local: Arc<dyn LocalNode>,
    node: u32,
    settings: RedisSettings,
    commands: Commands,
    app_ids: Vec<String>,
    healthy: AtomicBool,
    /// This node's presence contributions, to re-announce after Redis comes back.
    joined: Mutex<HashMap<(String, String, String), String>>,
    /// This node's occupied channels, likewise.
    occupied_here: Mutex<HashSet<(String, String)>>,
    events: Mutex<Option<mpsc::Receiver<ClusterEvent>>>,
    events_tx: mpsc::Sender<ClusterEvent>,
    scripts: Scripts,
    /// Encoded bus records waiting for the publisher task, which sends what has queued up as one
    /// PUBLISH. Bounded: when Redis is slower than the publishers, they wait.
    outbox: mpsc::Sender<Vec<u8>>,
}

/// Records queued for the bus before publishers wait.
const OUTBOX: usize = 8192;
/// Most records in one PUBLISH.
const MAX_RECORDS_PER_PUBLISH: usize = 64;

struct Scripts {
    join: Script,
    leave: Script,
    occupy: Script,
    vacate: Script,
    count_delta: Script,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl RedisAdapter {
    /// Connects (failing start-up if Redis cannot be reached at all) and starts the subscriber,
    /// heartbeat and reaper tasks.
    pub async fn start(
        local: Arc<dyn LocalNode>,
        node: u32,
        app_ids: Vec<String>,
        settings: RedisSettings,
    ) -> anyhow::Result<Arc<RedisAdapter>> {
        let commands = Commands::connect(&settings.urls)
            .await
            .map_err(|e| anyhow::anyhow!("[scaling] cannot connect to Redis at {}: {e}", redact(&settings.urls)))?;
        let (events_tx, events) = mpsc::channel(10_000);
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let adapter = Arc::new(RedisAdapter {
            outbox,
            local,
            node,
            settings,
            commands,
            app_ids,
            healthy: AtomicBool::new(false),
            joined: Mutex::new(HashMap::new()),
            occupied_here: Mutex::new(HashSet::new()),
            events: Mutex::new(Some(events)),
            events_tx,
            scripts: Scripts {
                join: scripts::presence_join(),
                leave: scripts::presence_leave(),
                occupy: scripts::occupy(),
                vacate: scripts::vacate(),
                count_delta: scripts::count_delta(),
            },
        });
        adapter.heartbeat().await;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(adapter.clone().subscribe_loop(ready_tx));
        tokio::spawn(adapter.clone().heartbeat_loop());
        tokio::spawn(adapter.clone().publish_loop(outbox_rx));
        // Serve only once cross-node delivery works (bounded: a slow Redis is reported, not awaited forever).
        if tokio::time::timeout(Duration::from_secs(10), ready_rx).await.is_err() {
            warn!("Redis subscription not ready after 10 s; serving local traffic meanwhile");
        }
        Ok(adapter)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.settings.prefix)
    }

    fn presence_keys(&self, app_id: &str, channel: &str) -> [String; 3] {
        let tag = format!("{{{app_id}:{channel}}}");
        [self.key(&format!("{tag}:refs")), self.key(&format!("{tag}:members")), self.key(&format!("{tag}:counts"))]
    }

    fn occupancy_keys(&self, app_id: &str) -> [String; 2] {
        [self.key(&format!("{{{app_id}}}:occ:holders")), self.key(&format!("{{{app_id}}}:occ:counts"))]
    }

    fn subs_key(&self, app_id: &str, node: u32) -> String {
        self.key(&format!("{{{app_id}}}:subs:{node}"))
    }

    fn conns_key(&self, node: u32) -> String {
        self.key(&format!("conns:{node}"))
    }

    fn node_presence_key(&self, node: u32) -> String {
        self.key(&format!("node:{node}:presence"))
    }

    fn node_occupancy_key(&self, node: u32) -> String {
        self.key(&format!("node:{node}:occ"))
    }

    /// Logs a failed Redis call and marks the adapter degraded.
    fn failed(&self, what: &str, e: &redis::RedisError) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            warn!(error = %e, "Redis unavailable ({what}): serving local traffic only until it is back");
        } else {
            debug!(error = %e, "Redis call failed: {what}");
        }
    }

    /// Queues a record for the bus; the publisher task sends it, in order, with whatever else is queued.
    async fn publish_envelope(&self, envelope: &Envelope) {
        if self.outbox.send(bus::encode(self.node, envelope)).await.is_err() {
            warn!("the Redis publisher task has stopped: cross-node delivery is off");
        }
    }

    /// Sends the queued records, as many as have queued up (up to a limit) in one PUBLISH: under load
    /// a batch of events crosses Redis as one message, at idle each goes out at once.
    async fn publish_loop(self: Arc<Self>, mut outbox: mpsc::Receiver<Vec<u8>>) {
        let mut records = Vec::new();
        while outbox.recv_many(&mut records, MAX_RECORDS_PER_PUBLISH).await > 0 {
            let payload = match records.len() {
                1 => records.pop().unwrap_or_default(),
                _ => bus::encode_many(&records),
            };
            records.clear();
            let cmd = redis::cmd("PUBLISH").arg(&self.settings.prefix).arg(payload).clone();
            if let Err(e) = self.commands.query::<i64>(&cmd).await {
                self.failed("publish", &e);
            }
        }
    }

    /// Nodes whose heartbeat is recent (this one included).
    async fn live_nodes(&self) -> Vec<u32> {
        let since = now_ms() - self.settings.node_timeout.as_millis() as i64;
        let cmd = redis::cmd("ZRANGEBYSCORE").arg(self.key("nodes")).arg(since).arg("+inf").clone();
        let mut nodes: Vec<u32> = match self.commands.query::<Vec<String>>(&cmd).await {
            Ok(list) => list.iter().filter_map(|n| n.parse().ok()).collect(),
            Err(e) => {
                self.failed("live nodes", &e);
                Vec::new()
            }
        };
        if !nodes.contains(&self.node) {
            nodes.push(self.node);
        }
        nodes
    }

    async fn subscribe_loop(self: Arc<Self>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            match self.subscribe_once().await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(100);
                    if connected_before {
                        info!("Redis is back: resuming cross-node delivery");
                        self.resync().await;
                    }
                    connected_before = true;
                    self.healthy.store(true, Ordering::Release);
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    while let Some(message) = stream.next().await {
                        self.on_bus_message(message.get_payload_bytes()).await;
                    }
                    self.healthy.store(false, Ordering::Release);
                    warn!("lost the Redis subscription: serving local traffic only, reconnecting");
                }
                Err(e) => self.failed("subscribe", &e),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn subscribe_once(&self) -> redis::RedisResult<redis::aio::PubSubStream> {
        // Classic pub/sub is broadcast across a Redis Cluster's nodes, so any one of them will do.
        let client = redis::Client::open(self.settings.urls[0].as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&self.settings.prefix).await?;
        Ok(pubsub.into_on_message())
    }

    async fn on_bus_message(&self, payload: &[u8]) {
        for record in bus::decode_all(payload) {
            let Some((from, envelope)) = record else {
                debug!("ignored a malformed message on the Redis channel");
                continue;
            };
            if from == self.node {
                continue;
            }
            match envelope {
                Envelope::Broadcast(b) => {
                    self.local.deliver(&b);
                }
                Envelope::Terminate { app_id, user_id } => {
                    self.local.terminate_user(&app_id, &user_id);
                }
            }
        }
    }

    async fn heartbeat(&self) {
        let cmd = redis::cmd("ZADD").arg(self.key("nodes")).arg(now_ms()).arg(self.node).clone();
        if let Err(e) = self.commands.query::<i64>(&cmd).await {
            self.failed("heartbeat", &e);
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let every = (self.settings.node_timeout / 5).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            self.heartbeat().await;
            self.reap_dead_nodes().await;
        }
    }

    /// Finds nodes whose heartbeat stopped and removes what they held, once (a lock per dead node).
    async fn reap_dead_nodes(&self) {
        let before = now_ms() - self.settings.node_timeout.as_millis() as i64;
        let cmd = redis::cmd("ZRANGEBYSCORE").arg(self.key("nodes")).arg("-inf").arg(before).clone();
        let Ok(dead) = self.commands.query::<Vec<String>>(&cmd).await else { return };
        for node in dead.iter().filter_map(|n| n.parse::<u32>().ok()).filter(|n| *n != self.node) {
            let lock = redis::cmd("SET")
                .arg(self.key(&format!("reap:{node}")))
                .arg(self.node)
                .arg("NX")
                .arg("PX")
                .arg(self.settings.node_timeout.as_millis() as u64)
                .clone();
            if !matches!(self.commands.query::<Option<String>>(&lock).await, Ok(Some(_))) {
                continue;
            }
            info!(node, "reaping a node whose heartbeat stopped");
            self.reap(node).await;
        }
    }

    async fn reap(&self, dead: u32) {
        let members: Vec<String> = self
            .commands
            .query(&redis::cmd("SMEMBERS").arg(self.node_presence_key(dead)).clone())
            .await
            .unwrap_or_default();
        for entry in members {
            let mut parts = entry.splitn(3, '\t');
            let (Some(app_id), Some(channel), Some(user_id)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if self.leave_as(dead, app_id, channel, user_id).await {
                let _ = self.events_tx.try_send(ClusterEvent::MemberGone {
                    app_id: app_id.into(),
                    channel: channel.into(),
                    user_id: user_id.into(),
                });
            }
        }
        let occupied: Vec<String> = self
            .commands
            .query(&redis::cmd("SMEMBERS").arg(self.node_occupancy_key(dead)).clone())
            .await
            .unwrap_or_default();
        for entry in occupied {
            let Some((app_id, channel)) = entry.split_once('\t') else { continue };
            if self.vacate_as(dead, app_id, channel).await {
                let _ = self
                    .events_tx
                    .try_send(ClusterEvent::ChannelGone { app_id: app_id.into(), channel: channel.into() });
            }
        }
        let mut del = redis::cmd("DEL");
        del.arg(self.node_presence_key(dead)).arg(self.node_occupancy_key(dead)).arg(self.conns_key(dead));
        let _ = self.commands.query::<i64>(&del).await;
        for app_id in &self.app_ids {
            let _ = self.commands.query::<i64>(&redis::cmd("DEL").arg(self.subs_key(app_id, dead)).clone()).await;
        }
        let _ = self.commands.query::<i64>(&redis::cmd("ZREM").arg(self.key("nodes")).arg(dead).clone()).await;
    }

    /// Runs a script that answers 1 or 0; `None` (logged, adapter marked degraded) when Redis fails.
    async fn script_flag(&self, what: &str, call: &redis::ScriptInvocation<'_>) -> Option<bool> {
        match self.commands.invoke::<i64>(call).await {
            Ok(flag) => Some(flag == 1),
            Err(e) => {
                self.failed(what, &e);
                None
            }
        }
    }

    /// Adds `entry` to (or removes it from) one of a node's record sets, which the reaper reads back.
    async fn node_record(&self, add: bool, key: String, entry: String) {
        let cmd = redis::cmd(if add { "SADD" } else { "SREM" }).arg(key).arg(entry).clone();
        if let Err(e) = self.commands.query::<i64>(&cmd).await {
            self.failed("node record", &e);
        }
    }

    async fn leave_as(&self, node: u32, app_id: &str, channel: &str, user_id: &str) -> bool {
        let [refs, members, counts] = self.presence_keys(app_id, channel);
        let mut call = self.scripts.leave.key(refs);
        call.key(members).key(counts).arg(user_id).arg(node);
        let gone = self.script_flag("presence leave", &call).await.unwrap_or(false);
        self.node_record(false, self.node_presence_key(node), format!("{app_id}\t{channel}\t{user_id}")).await;
        gone
    }

    async fn vacate_as(&self, node: u32, app_id: &str, channel: &str) -> bool {
        let [holders, counts] = self.occupancy_keys(app_id);
        let mut call = self.scripts.vacate.key(holders);
        call.key(counts).arg(channel).arg(node);
        let last = self.script_flag("vacate", &call).await.unwrap_or(false);
        self.node_record(false, self.node_occupancy_key(node), format!("{app_id}\t{channel}")).await;
        last
    }

    /// After Redis comes back (it may have lost everything): rewrite this node's counts, presence
    /// and occupancy. Idempotent, so a mere network blip changes nothing.
    async fn resync(&self) {
        self.heartbeat().await;
        for app_id in &self.app_ids {
            let key = self.subs_key(app_id, self.node);
            let _ = self.commands.query::<i64>(&redis::cmd("DEL").arg(&key).clone()).await;
            for (channel, count) in self.local.channels(app_id) {
                let _ = self.commands.query::<i64>(&redis::cmd("HSET").arg(&key).arg(channel).arg(count).clone()).await;
            }
            let conns = self.local.connection_count(app_id);
            let _ = self
                .commands
                .query::<i64>(&redis::cmd("HSET").arg(self.conns_key(self.node)).arg(app_id).arg(conns).clone())
                .await;
        }
        let joined: Vec<_> = self.joined.lock().map(|j| j.clone().into_iter().collect()).unwrap_or_default();
        for ((app_id, channel, user_id), info) in joined {
            let member = MemberData { user_id, user_info: (!info.is_empty()).then_some(info) };
            self.join_as(&app_id, &channel, &member, usize::MAX).await;
        }
        let occupied: Vec<_> = self.occupied_here.lock().map(|o| o.iter().cloned().collect()).unwrap_or_default();
        for (app_id, channel) in occupied {
            self.occupy_as(&app_id, &channel).await;
        }
    }

    async fn join_as(&self, app_id: &str, channel: &str, member: &MemberData, max_members: usize) -> Option<Join> {
        let [refs, members, counts] = self.presence_keys(app_id, channel);
        let info = member.user_info.clone().unwrap_or_default();
        let mut call = self.scripts.join.key(refs);
        call.key(members)
            .key(counts)
            .arg(&member.user_id)
            .arg(self.node)
            .arg(&info)
            .arg(max_members.min(i64::MAX as usize));
        let (first, flat): (i64, Vec<String>) = match self.commands.invoke(&call).await {
            Ok(result) => result,
            Err(e) => {
                self.failed("presence join", &e);
                return None;
            }
        };
        if first < 0 {
            return Some(Join::Full);
        }
        let entry = format!("{app_id}\t{channel}\t{}", member.user_id);
        self.node_record(true, self.node_presence_key(self.node), entry).await;
        let members = flat.chunks(2).map(|p| (p[0].clone(), p.get(1).filter(|i| !i.is_empty()).cloned())).collect();
        Some(Join::Joined { first: first == 1, members })
    }

    async fn occupy_as(&self, app_id: &str, channel: &str) -> bool {
        let [holders, counts] = self.occupancy_keys(app_id);
        let mut call = self.scripts.occupy.key(holders);
        call.key(counts).arg(channel).arg(self.node);
        // With Redis away, assume first: a duplicate `channel_occupied` beats a missing one.
        let first = self.script_flag("occupy", &call).await.unwrap_or(true);
        self.node_record(true, self.node_occupancy_key(self.node), format!("{app_id}\t{channel}")).await;
        first
    }

    async fn sum_over_nodes(&self, key_of: impl Fn(u32) -> String, field: &str) -> usize {
        let mut total = 0;
        for node in self.live_nodes().await {
            let cmd = redis::cmd("HGET").arg(key_of(node)).arg(field).clone();
            match self.commands.query::<Option<i64>>(&cmd).await {
                Ok(n) => total += n.unwrap_or(0).max(0) as usize,
                Err(e) => self.failed("count", &e),
            }
        }
        total
    }
}

/// URLs for logs, without credentials.
fn redact(urls: &[String]) -> String {
    urls.iter()
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &u[..scheme + 3], &u[at..]),
            _ => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait]
impl Adapter for RedisAdapter {
    async fn publish(&self, broadcast: Broadcast) -> usize {
        let delivered = self.local.deliver(&broadcast);
        self.publish_envelope(&Envelope::Broadcast(broadcast)).await;
        delivered
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        if !self.healthy.load(Ordering::Acquire) {
            return self.local.subscription_count(app_id, channel);
        }
        self.sum_over_nodes(|node| self.subs_key(app_id, node), channel).await
    }

    async fn presence_join(&self, app_id: &str, channel: &str, member: &MemberData, max_members: usize) -> Join {
        match self.join_as(app_id, channel, member, max_members).await {
            Some(join) => {
                if matches!(join, Join::Joined { .. }) {
                    if let Ok(mut joined) = self.joined.lock() {
                        let key = (app_id.to_owned(), channel.to_owned(), member.user_id.clone());
                        joined.insert(key, member.user_info.clone().unwrap_or_default());
                    }
                }
                join
            }
            // Redis is away: the member is served locally and announced when Redis is back.
            None => Join::Joined { first: true, members: vec![(member.user_id.clone(), member.user_info.clone())] },
        }
    }

    async fn presence_leave(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        if let Ok(mut joined) = self.joined.lock() {
            joined.remove(&(app_id.to_owned(), channel.to_owned(), user_id.to_owned()));
        }
        self.leave_as(self.node, app_id, channel, user_id).await
    }

    async fn members(&self, app_id: &str, channel: &str) -> Vec<Member> {
        let [_, members, _] = self.presence_keys(app_id, channel);
        match self.commands.query::<Vec<(String, String)>>(&redis::cmd("HGETALL").arg(members).clone()).await {
            Ok(list) => {
                let mut list: Vec<Member> =
                    list.into_iter().map(|(id, info)| (id, (!info.is_empty()).then_some(info))).collect();
                list.sort();
                list
            }
            Err(e) => {
                self.failed("members", &e);
                Vec::new()
            }
        }
    }

    async fn occupied(&self, app_id: &str, channel: &str) -> bool {
        if let Ok(mut here) = self.occupied_here.lock() {
            here.insert((app_id.to_owned(), channel.to_owned()));
        }
        self.occupy_as(app_id, channel).await
    }

    async fn vacated(&self, app_id: &str, channel: &str) -> bool {
        if let Ok(mut here) = self.occupied_here.lock() {
            here.remove(&(app_id.to_owned(), channel.to_owned()));
        }
        self.vacate_as(self.node, app_id, channel).await
    }

    async fn channels(&self, app_id: &str) -> Vec<(String, usize, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        if self.healthy.load(Ordering::Acquire) {
            for node in self.live_nodes().await {
                let cmd = redis::cmd("HGETALL").arg(self.subs_key(app_id, node)).clone();
                match self.commands.query::<Vec<(String, i64)>>(&cmd).await {
                    Ok(list) => {
                        for (channel, n) in list {
                            *counts.entry(channel).or_default() += n.max(0) as usize;
                        }
                    }
                    Err(e) => self.failed("channels", &e),
                }
            }
        } else {
            counts.extend(self.local.channels(app_id));
        }
        let mut out = Vec::with_capacity(counts.len());
        for (channel, subscriptions) in counts.into_iter().filter(|(_, n)| *n > 0) {
            let users = if channel.starts_with("presence-") {
                let [_, members, _] = self.presence_keys(app_id, &channel);
                self.commands.query::<usize>(&redis::cmd("HLEN").arg(members).clone()).await.unwrap_or(0)
            } else {
                0
            };
            out.push((channel, subscriptions, users));
        }
        out
    }

    async fn connection_count(&self, app_id: &str) -> usize {
        if !self.healthy.load(Ordering::Acquire) {
            return self.local.connection_count(app_id);
        }
        self.sum_over_nodes(|node| self.conns_key(node), app_id).await
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.local.terminate_user(app_id, user_id);
        self.publish_envelope(&Envelope::Terminate { app_id: app_id.into(), user_id: user_id.into() }).await;
    }

    async fn subscription_changed(&self, app_id: &str, channel: &str, delta: i64) {
        let mut call = self.scripts.count_delta.key(self.subs_key(app_id, self.node));
        call.arg(channel).arg(delta);
        if let Err(e) = self.commands.invoke::<i64>(&call).await {
            self.failed("subscription count", &e);
        }
    }

    async fn connection_changed(&self, app_id: &str, delta: i64) {
        let cmd = redis::cmd("HINCRBY").arg(self.conns_key(self.node)).arg(app_id).arg(delta).clone();
        if let Err(e) = self.commands.query::<i64>(&cmd).await {
            self.failed("connection count", &e);
        }
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn take_events(&self) -> Option<mpsc::Receiver<ClusterEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }
}
