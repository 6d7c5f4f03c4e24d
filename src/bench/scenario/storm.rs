//! `storm`: N clients connect and subscribe all at once, as after a deploy or a network blip when every
//! client reconnects. Measures time until all are subscribed and handshakes/s; the accept backlog, the
//! upgrade path and subscription all count.

use super::Run;
use crate::bench::connect::open_clients;

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let server_from = run.begin_measure();
    let n = plan.args.connections;
    let (clients, setup) = open_clients(&plan, n, |i| format!("bench-storm-{}", i % 100), &run.counters).await;
    run.connected(setup);
    run.measured(server_from);
    drop(clients);
    Ok(())
}
