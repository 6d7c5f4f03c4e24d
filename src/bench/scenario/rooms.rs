//! `rooms`: N clients in private rooms (chat), each sending a `client-` event at a fixed rate that the
//! server relays to the other members. Measures the client-event path: parse, authorise, relay to a small
//! group, with every connection both reading and writing. The app needs `enable_client_messages = true`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{drain, traffic, Receivers, Run};
use crate::bench::client::{TalkKind, Talker};
use crate::bench::connect::open_clients;

fn room_channel(room: usize) -> String {
    format!("private-bench-room-{room}")
}

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let size = plan.args.room_size;
    let (clients, setup) =
        open_clients(&plan, plan.args.connect_concurrency, |i| room_channel(i / size), &run.counters).await;
    if clients.is_empty() {
        run.connected(setup);
        anyhow::bail!("no client could subscribe: is the server running on {}?", plan.target);
    }
    // Owed deliveries per event: the members that did subscribe, less the sender.
    let mut members: HashMap<usize, u64> = HashMap::new();
    for (i, _) in &clients {
        *members.entry(i / size).or_default() += 1;
    }
    let n = clients.len();
    let period = Duration::from_secs_f64(1.0 / plan.args.rate);
    let start = Instant::now() + plan.settle + Duration::from_millis(50);
    let until = start + plan.duration;
    let payload = plan.args.payload;
    let mut order = 0usize;
    let receivers = Receivers::start(run, clients, |i| {
        // Spread first sends over one period so that clients do not all send in the same instant.
        let offset = period.mul_f64(order as f64 / n as f64);
        order += 1;
        Some(Talker {
            channel: room_channel(i / size),
            peers: members.get(&(i / size)).copied().unwrap_or(1).saturating_sub(1),
            payload,
            period,
            next: start + offset,
            until,
            seq: 0,
            kind: TalkKind::ClientEvent,
        })
    });
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);

    let server_from = run.begin_measure();
    tokio::time::sleep_until(until).await;
    // A send due just before `until` may still be on its way out.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let drained = drain(&run.counters, plan.drain_timeout).await;
    run.measured(server_from);
    let offered = plan.args.rate * n as f64;
    run.report.traffic = Some(traffic(&run.counters, offered, start, until, drained, Duration::ZERO));
    run.report.latency = Some(run.latencies.total());
    receivers.stop().await;
    Ok(())
}
