//! `idle`: N connections, each subscribed to its own channel (a per-user notification channel, the common
//! case), and no traffic. Measures what a connection costs at rest: server RSS per connection, kernel
//! socket memory, and the CPU the server burns with nothing to do (timers, pings).
//!
//! The clients keep answering `pusher:ping`, as real clients do, so a window longer than the server's ping
//! interval measures the ping traffic too.

use super::{Receivers, Run};
use crate::bench::connect::open_clients;

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let (clients, setup) =
        open_clients(&plan, plan.args.connect_concurrency, |i| format!("bench-idle-{i}"), &run.counters).await;
    if clients.is_empty() {
        run.connected(setup);
        anyhow::bail!("no client could subscribe: is the server running on {}?", plan.target);
    }
    let receivers = Receivers::start(run, clients, |_| None);
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);
    let server_from = run.begin_measure();
    tokio::time::sleep(plan.duration).await;
    run.measured(server_from);
    receivers.stop().await;
    Ok(())
}
