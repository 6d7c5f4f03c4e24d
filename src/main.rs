/// jemalloc rather than the system allocator: measured, glibc's heap kept the holes left by
/// thousands of handshakes resident (idle RSS per connection 3.0-4.1 KB from run to run), jemalloc
/// settles at ~2.3 KB every run and costs less CPU per delivery (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

use herald::cli::{start, Cli, Command, USAGE_ERROR};

use std::io::Write as _;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come this way too: they print to stdout and succeed.
            let _ = e.print();
            return if e.use_stderr() {
                std::process::ExitCode::from(USAGE_ERROR)
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Config(args) => herald::cli::check::main(args),
        Command::Bench(args) => herald::bench::main(args),
        Command::Connect(args) => herald::cli::connect::main(args),
        Command::Trigger(args) => herald::cli::trigger::trigger_main(args),
        Command::Channels(args) => herald::cli::trigger::channels_main(args),
        Command::Start(args) => {
            start::init_logging(args.debug, args.log_format, args.log_payloads);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "herald: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(start::run(args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    // Not `eprintln!`: a closed stderr must not turn exit code 2 into a panic's 101.
                    let _ = writeln!(std::io::stderr(), "herald: {e:#}");
                    std::process::ExitCode::from(2)
                }
            }
        }
    }
}
