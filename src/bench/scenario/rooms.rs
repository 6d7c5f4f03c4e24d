//! `rooms`: N clients in private rooms (chat), each sending a `client-` event at a fixed rate that the
//! server relays to the other members. Measures the client-event path: parse, authorise, relay to a small
//! group, with every connection both reading and writing. The app needs `enable_client_messages = true`.

use std::time::Duration;

use tokio::time::Instant;

use super::{measure_talkers, Groups, Receivers, Run};
use crate::bench::client::{TalkKind, Talker};

fn room_channel(room: usize) -> String {
    format!("private-bench-room-{room}")
}

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let size = plan.args.room_size;
    let (groups, clients, setup) = Groups::open(run, room_channel).await?;
    let n = clients.len();
    let period = Duration::from_secs_f64(1.0 / plan.args.rate);
    let start = Instant::now() + plan.settle + Duration::from_millis(50);
    let until = start + plan.duration;
    let mut order = 0usize;
    let receivers = Receivers::start(run, clients, |i| {
        // Spread first sends over one period so that clients do not all send in the same instant.
        let offset = period.mul_f64(order as f64 / n as f64);
        order += 1;
        Some(Talker {
            channel: room_channel(i / size),
            peers: groups.peers_of(i),
            payload: plan.args.payload,
            payload_kind: plan.args.payload_kind,
            period,
            next: start + offset,
            until,
            seq: 0,
            kind: TalkKind::ClientEvent,
        })
    });
    measure_talkers(run, receivers, setup, (start, until), plan.args.rate * n as f64).await;
    Ok(())
}
