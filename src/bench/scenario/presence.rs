//! `presence`: N clients in presence channels of --room-size members (one user per connection). In each
//! channel one member leaves and rejoins --rate times a second; every other member is owed a
//! `member_removed` and a `member_added` per cycle. Measures the presence path: member bookkeeping, the
//! signed `channel_data`, the member list sent to the rejoining client, and the announcements.
//! Latency is timed on `member_added` (its `user_info` carries the stamp); `member_removed` is counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{drain, traffic, Receivers, Run};
use crate::bench::client::{TalkKind, Talker};
use crate::bench::connect::open_clients;

fn presence_channel(room: usize) -> String {
    format!("presence-bench-{room}")
}

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let size = plan.args.room_size;
    let (clients, setup) =
        open_clients(&plan, plan.args.connect_concurrency, |i| presence_channel(i / size), &run.counters).await;
    if clients.is_empty() {
        run.connected(setup);
        anyhow::bail!("no client could subscribe: is the server running on {}?", plan.target);
    }
    // Members that did subscribe, per channel; the lowest-numbered one is the channel's churner.
    let mut members: HashMap<usize, u64> = HashMap::new();
    let mut churner: HashMap<usize, usize> = HashMap::new();
    for (i, _) in &clients {
        *members.entry(i / size).or_default() += 1;
        let first = churner.entry(i / size).or_insert(*i);
        *first = (*first).min(*i);
    }
    let rooms = churner.len();
    let period = Duration::from_secs_f64(1.0 / plan.args.rate);
    let start = Instant::now() + plan.settle + Duration::from_millis(50);
    let until = start + plan.duration;
    let (key, secret): (Arc<str>, Arc<str>) = (plan.args.key.as_str().into(), plan.args.secret.as_str().into());
    let receivers = Receivers::start(run, clients, |i| {
        let room = i / size;
        (churner.get(&room) == Some(&i)).then(|| Talker {
            channel: presence_channel(room),
            peers: members.get(&room).copied().unwrap_or(1).saturating_sub(1),
            payload: 0,
            period,
            // Spread the channels' cycles over one period.
            next: start + period.mul_f64(room as f64 / rooms.max(1) as f64),
            until,
            seq: 0,
            kind: TalkKind::Rejoin { key: key.clone(), secret: secret.clone() },
        })
    });
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);

    let server_from = run.begin_measure();
    tokio::time::sleep_until(until).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let drained = drain(&run.counters, plan.drain_timeout).await;
    run.measured(server_from);
    // Offered member events/s: a leave and a join per cycle in every channel.
    let offered = 2.0 * plan.args.rate * rooms as f64;
    run.report.traffic = Some(traffic(&run.counters, offered, start, until, drained, Duration::ZERO));
    run.report.latency = Some(run.latencies.total());
    receivers.stop().await;
    Ok(())
}
