//! `fanout`: one public channel, N subscribers, events published through `batch_events` at a fixed rate.
//! The scenario that measures the broadcast path: one event costs N deliveries.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{drain, traffic, Receivers, Run};
use crate::bench::connect::open_clients;
use crate::bench::publisher::{publish, PublishPlan};

pub const CHANNEL: &str = "bench-fanout";

pub async fn run(run: &mut Run) -> anyhow::Result<()> {
    let plan = run.plan.clone();
    let (clients, setup) =
        open_clients(&plan, plan.args.connect_concurrency, |_| CHANNEL.to_owned(), &run.counters).await;
    let subscribers = clients.len() as u64;
    if subscribers == 0 {
        run.connected(setup);
        anyhow::bail!("no client could subscribe: is the server running on {}?", plan.target);
    }
    let receivers = Receivers::start(run, clients, |_| None);
    tokio::time::sleep(plan.settle).await;
    run.connected(setup);

    let server_from = run.begin_measure();
    let start = Instant::now() + Duration::from_millis(50);
    let until = start + plan.duration;
    let publish_plan = Arc::new(PublishPlan {
        target: plan.target,
        app_id: plan.args.app_id.clone(),
        key: plan.args.key.clone(),
        secret: plan.args.secret.clone(),
        channel: CHANNEL.to_owned(),
        rate: plan.args.rate,
        payload: plan.args.payload,
        payload_kind: plan.args.payload_kind,
        publishers: plan.args.publishers,
        start,
        until,
        subscribers,
    });
    let outcome = publish(publish_plan, run.counters.clone()).await;
    let send_end = outcome.finished_at.unwrap_or(until).max(until);
    let drained = drain(&run.counters, plan.drain_timeout).await;
    run.measured(server_from);
    run.report.traffic = Some(traffic(&run.counters, plan.args.rate, start, send_end, drained, outcome.max_lag));
    run.report.latency = Some(run.latencies.total());
    receivers.stop().await;
    Ok(())
}
