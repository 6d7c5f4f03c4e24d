use clap::Parser;

use herald::cli::{start, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{}", herald::config::SAMPLE);
            std::process::ExitCode::SUCCESS
        }
        Command::Bench(args) => herald::bench::main(args),
        Command::Connect(args) => herald::cli::connect::main(args),
        Command::Trigger(args) => herald::cli::trigger::trigger_main(args),
        Command::Channels(args) => herald::cli::trigger::channels_main(args),
        Command::Start(args) => {
            start::init_logging(args.debug, args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("herald: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(start::run(args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald: {e:#}");
                    std::process::ExitCode::from(2)
                }
            }
        }
    }
}
