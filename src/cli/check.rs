//! `herald config`: prints the sample configuration, or with `--check FILE` loads a file the way
//! `herald start` would (with the environment and `.env` on top) and says whether it would start, without
//! starting. Run it before sending SIGHUP: a file it refuses, a running server refuses too.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, Overrides, SAMPLE};

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Validate this configuration file (and the REVERB_* / HERALD_* environment) and exit: 0 when
    /// it is valid, 1 with the reason when not.
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
    /// The `.env` file `herald start` would read (default: `./.env` when it exists), checked with
    /// the file.
    #[arg(long, value_name = "FILE", requires = "check")]
    pub env_file: Option<PathBuf>,
}

pub fn main(args: ConfigArgs) -> ExitCode {
    let Some(path) = args.check else {
        print!("{SAMPLE}");
        return ExitCode::SUCCESS;
    };
    // What `start` reads, in the same order: the process environment first, then the `.env` file.
    let dotenv = match super::start::read_env_file(args.env_file.as_deref()) {
        Ok(dotenv) => dotenv,
        Err(e) => {
            eprintln!("herald: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let env = |name: &str| std::env::var(name).ok().or_else(|| dotenv.get(name).cloned());
    match Config::load(Some(&path), &env, &Overrides::default()) {
        Ok(config) => {
            let store = &config.apps_store;
            if store.driver.is_database() {
                println!(
                    "{}: valid; apps come from the {:?} table {:?} (read when the server starts)",
                    path.display(),
                    store.driver,
                    store.table
                );
            } else {
                let ids: Vec<&str> = config.apps.iter().map(|a| a.id.as_str()).collect();
                println!("{}: valid; {} app(s): {}", path.display(), ids.len(), ids.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald: {} is not valid: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
