//! Herald: a real-time WebSocket server speaking the Pusher protocol v7.
//!
//! Layers, each a folder, dependencies pointing down only:
//! `cli` -> `server` -> `connection` -> `hub` -> `adapter` -> `protocol`, with `config` read once at start-up;
//! `connection` reads and writes sockets through `transport` (WebSocket framing).
//! A message enters at [`server::http_api`] (HTTP publish) or [`connection`] (client events), fans out in
//! [`hub`], and leaves through each connection's writer in [`connection`].

pub mod adapter;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connection;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod transport;
pub mod webhooks;
