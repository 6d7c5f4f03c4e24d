//! `herald bench`: a load generator that speaks the Pusher protocol itself, for the scenarios of
//! docs/benchmarking.md (`fanout`, `rooms`, `idle`, `storm`, `presence`).
//!
//! Why in the binary: the same tool drives Herald and the `herald-floor` baseline with no Node in the loop,
//! so a ratio measured in one run compares servers, not clients. It opens up to 19,000 WebSocket connections
//! per process (the fd cap is 20,000) from several loopback source addresses, publishes through the signed
//! HTTP API or client events at a fixed offered rate, stamps every event with its send time on a
//! process-local monotonic clock, and reports deliveries/s, latency percentiles (HDR histogram), set-up rate,
//! lost events, and the server's RSS and CPU from /proc.
//!
//! Safety: it only targets 127.0.0.0/8, and every phase has a timeout, so a run always ends by itself.
//!
//! One idea per file: [`args`] (flags and limits), [`target`] (loopback only), [`client`] (one Pusher
//! client), [`connect`] (many of them), [`http`] and [`publisher`] (the signed HTTP API at a fixed rate),
//! [`stamp`] (send times), [`latency`] (histograms), [`counters`], [`procfs`] (server and kernel figures),
//! [`progress`] (a line a second), [`report`] (table and JSON), [`scenario`] (the runs themselves), [`wire`]
//! (bytes on the socket counted, permessage-deflate inflated for `--compression`), [`stream`] (fanout and
//! idle with HTTP subscribers: [`sse`] and [`xhr`] for `xhr_streaming`).

mod args;
mod client;
mod connect;
mod counters;
mod http;
mod latency;
mod payload;
mod procfs;
mod progress;
mod publisher;
mod report;
mod scenario;
mod sse;
mod stamp;
mod stream;
mod target;
mod wire;
mod xhr;

use std::process::ExitCode;

pub use args::{BenchArgs, Scenario, Transport, MAX_CONNECTIONS};
pub use latency::Percentiles;
pub use report::Report;

/// Runs `herald bench` to its end: prints progress to stderr, the table to stdout, and writes the JSON
/// report when asked. Exit status: 0 when the run completed (held or not: the report says), 1 when it
/// could not run (nothing subscribed, deadline passed), 64 for invalid flags (as every subcommand).
pub fn main(args: BenchArgs) -> ExitCode {
    let plan = match args::Plan::new(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("herald bench: {e:#}");
            return ExitCode::from(crate::cli::USAGE_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    stamp::start_clock();
    let json = plan.args.json.clone();
    let deadline = plan.hard_deadline();
    let outcome = runtime.block_on(async move {
        match tokio::time::timeout(deadline, scenario::run(plan)).await {
            Ok(result) => result,
            Err(_) => {
                Err(anyhow::anyhow!("the run passed its hard deadline of {} s and was stopped", deadline.as_secs()))
            }
        }
    });
    // Leftover sockets and tasks are dropped with the runtime, without waiting for them.
    runtime.shutdown_background();
    match outcome {
        Ok(report) => {
            print!("{}", report.table());
            if let Some(path) = json {
                if let Err(e) = report.write_json(&path) {
                    eprintln!("herald bench: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
