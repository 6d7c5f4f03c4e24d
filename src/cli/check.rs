//! `herald config`: prints the sample configuration, or with `--check FILE` loads a file the way
//! `herald start` would (with the environment on top) and says whether it would start, without
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
}

pub fn main(args: ConfigArgs) -> ExitCode {
    let Some(path) = args.check else {
        print!("{SAMPLE}");
        return ExitCode::SUCCESS;
    };
    let env = |name: &str| std::env::var(name).ok();
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
