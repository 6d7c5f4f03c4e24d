//! Herald: a real-time server speaking the Pusher protocol v7.
//!
//! Layers, each a folder, imports pointing down only:
//! `cli` -> `server` -> `connection` (transports) -> `session` -> `hub` -> `cluster` -> `apps`/`config`
//! -> `protocol`, with `transport` (WebSocket framing) under `connection` and `metrics` under all.
//! A message enters at `server::http_api` (HTTP publish) or a session (client events), fans out in
//! `hub::Registry::deliver` (and, through the cluster's broker, on every other node), and leaves
//! through each connection's writer in `connection`.
//!
//! Only what the binaries and the integration tests use is public.

mod apps;
pub mod bench;
pub mod cli;
mod cluster;
pub mod config;
mod connection;
#[doc(hidden)]
pub mod fuzzing;
mod hub;
mod logging;
mod metrics;
pub mod protocol;
mod server;
mod session;
pub mod transport;
mod webhooks;
