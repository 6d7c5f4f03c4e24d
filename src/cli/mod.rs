//! The command line: parses, then calls the layers below. Nothing here is needed by a library user.

pub mod check;
pub mod connect;
mod log_lines;
pub mod start;
pub mod trigger;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// The exit code of every subcommand for a command line it cannot use (an unknown flag, a value
/// that does not parse): sysexits' EX_USAGE, not clap's default 2, because `herald connect` and
/// `herald start` already give 2 its own meaning, and a script must tell "you called me wrong"
/// from "the server refused".
pub const USAGE_ERROR: u8 = 64;

#[derive(Parser)]
#[command(name = "herald", version, about = "A real-time WebSocket server speaking the Pusher protocol v7")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (like `php artisan reverb:start`).
    Start(StartArgs),
    /// Print a commented sample configuration file, or check one (`--check FILE`).
    Config(check::ConfigArgs),
    /// Load generator: drive a server on this machine with a benchmark scenario and report.
    Bench(crate::bench::BenchArgs),
    /// Interactive Pusher client for the terminal, like wscat (also driven from scripts through stdin).
    Connect(connect::ConnectArgs),
    /// Publish an event through the signed HTTP API (POST /apps/{id}/events).
    Trigger(trigger::TriggerArgs),
    /// List occupied channels through the signed HTTP API (GET /apps/{id}/channels).
    Channels(trigger::ChannelsArgs),
}

#[derive(clap::Args)]
pub struct StartArgs {
    /// Address to bind (overrides REVERB_SERVER_HOST and the file).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind (overrides REVERB_SERVER_PORT and the file).
    #[arg(long)]
    pub port: Option<u16>,
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// A Laravel-style `.env` file to read `REVERB_*` variables from (default: `./.env` when it
    /// exists). Variables already set in the environment win.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Verbose logging: every connection and message event, with sizes and ids but no payloads.
    #[arg(long)]
    pub debug: bool,
    /// Also log payloads (event data, user_data, channel_data, frames sent) in debug lines.
    /// Unsafe for production: logs then carry what users send.
    #[arg(long, env = "HERALD_LOG_PAYLOADS", value_parser = clap::builder::BoolishValueParser::new())]
    pub log_payloads: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
