//! `presence`: N clients in presence channels of --room-size members (one user per connection). In each
//! channel one member leaves and rejoins --rate times a second; every other member is owed a
//! `member_removed` and a `member_added` per cycle. Measures the presence path: member bookkeeping, the
//! signed `channel_data`, the member list sent to the rejoining client, and the announcements.
//! Latency is timed on `member_added` (its `user_info` carries the stamp); `member_removed` is counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{measure_talkers, Groups, Receivers, Run};
use crate::bench::client::{TalkKind, Talker};

fn presence_channel(room: usize) -> String {
    format!("presence-bench-{room}")
}

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let size = plan.args.room_size;
    let (groups, clients, setup) = Groups::open(run, presence_channel).await?;
    // The lowest-numbered member that did subscribe is its channel's churner.
    let mut churner: HashMap<usize, usize> = HashMap::new();
    for (i, _) in &clients {
        let first = churner.entry(i / size).or_insert(*i);
        *first = (*first).min(*i);
    }
    let channels = churner.len();
    let period = Duration::from_secs_f64(1.0 / plan.args.rate);
    let start = Instant::now() + plan.settle + Duration::from_millis(50);
    let until = start + plan.duration;
    let (key, secret): (Arc<str>, Arc<str>) = (plan.args.key.as_str().into(), plan.args.secret.as_str().into());
    let receivers = Receivers::start(run, clients, |i| {
        let room = i / size;
        (churner.get(&room) == Some(&i)).then(|| Talker {
            channel: presence_channel(room),
            peers: groups.peers_of(i),
            payload: 0,
            payload_kind: plan.args.payload_kind,
            period,
            // Spread the channels' cycles over one period.
            next: start + period.mul_f64(room as f64 / channels.max(1) as f64),
            until,
            seq: 0,
            kind: TalkKind::Rejoin { key: key.clone(), secret: secret.clone() },
        })
    });
    // Offered member events/s: a leave and a join per cycle in every channel.
    measure_talkers(run, receivers, setup, (start, until), 2.0 * plan.args.rate * channels as f64).await;
    Ok(())
}
