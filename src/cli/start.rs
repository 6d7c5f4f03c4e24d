//! `herald start`: load the configuration, bind, serve until SIGINT/SIGTERM.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use super::{LogFormat, StartArgs};
use crate::apps::database::DatabaseApps;
use crate::apps::{AppStore, LiveApps};
use crate::cluster::redis::RedisSettings;
use crate::cluster::Cluster;
use crate::config::{Config, Overrides};
use crate::hub::{Hub, Registry};
use crate::server::Server;

pub fn init_logging(debug: bool, format: LogFormat, log_payloads: bool) {
    crate::logging::set_payloads(log_payloads);
    let default = if debug { "herald=debug,info" } else { "herald=info,warn" };
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Logs on stderr, the start-up banner on stdout: `--log-format json` then yields clean JSON lines.
    // Colours only on a terminal: a log file or a pipe gets plain text that grep and parsers read.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        // A log line that cannot be written is lost, nothing more: by default the subscriber
        // reports the failure with `eprintln!`, which panics on a closed stderr (a log pipe whose
        // reader died) inside whichever task logged, such as the one that stops the server on
        // SIGTERM.
        .log_internal_errors(false);
    match format {
        // One event, one line: peer-given names cannot forge lines (see `log_lines`).
        LogFormat::Text => builder.with_writer(super::log_lines::EscapedStderr { keep_escape: ansi }).init(),
        LogFormat::Json => builder.with_writer(std::io::stderr).json().init(),
    }
}

pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let dotenv = read_env_file(args.env_file.as_deref())?;
    let env = |name: &str| std::env::var(name).ok().or_else(|| dotenv.get(name).cloned());
    let overrides = Overrides { host: args.host.clone(), port: args.port };
    let mut config = Config::load(args.config.as_deref(), &env, &overrides)?;
    if args.debug {
        // reverb:start --debug shows everything; Herald also opens its dashboard and demo.
        config.demo_from_debug = !config.server.demo;
        config.server.dashboard = true;
        config.server.demo = true;
    } else if config.server.dashboard && config.server.dashboard_password.is_none() {
        anyhow::bail!("[server] dashboard = true needs dashboard_password (or run with --debug for development)");
    }
    if args.log_payloads {
        warn!("--log-payloads: debug lines carry event data, user_data and frames; never use it in production");
    }
    crate::metrics::install();
    let shutdown = CancellationToken::new();
    // The server is assembled here: where apps come from, this node's registry, and how it
    // reaches its peers.
    let (apps, reload): (std::sync::Arc<dyn AppStore>, Reload) = if config.apps_store.driver.is_database() {
        let database = DatabaseApps::start(&config.apps_store, shutdown.clone()).await?;
        (database.clone(), Reload::Database(database))
    } else {
        let grace = std::time::Duration::from_secs(config.apps_store.secret_grace_seconds);
        let file = LiveApps::with_secret_grace(&config.apps, grace);
        (file.clone(), Reload::File(file))
    };
    let registry = std::sync::Arc::new(Registry::new(apps.clone()));
    let node = Hub::new_node_id();
    let cluster = if config.scaling.enabled {
        let settings = RedisSettings {
            urls: config.scaling.urls(),
            prefix: config.scaling.prefix(),
            node_timeout: config.scaling.node_timeout(),
        };
        info!(prefix = %settings.prefix, nodes = settings.urls.len(), "scaling through Redis");
        crate::cluster::redis::start(registry.clone(), node, apps.clone(), settings).await?
    } else {
        Cluster::memory(registry.clone())
    };
    let hub = Hub::new(apps, registry, cluster, node, config.server.dashboard);
    hub.spawn_background(shutdown.clone());
    let server = Server::bind(config.clone(), hub, shutdown.clone()).await?;
    let addr = server.local_addr()?;
    print_banner(&config, addr, server.is_tls());

    tokio::spawn(reload_on_hangup(args, reload));
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
        info!("signal received");
    });
    server.run().await
}

/// What SIGHUP reloads: the file's apps, or the database's table (read again at once).
enum Reload {
    File(std::sync::Arc<LiveApps>),
    Database(std::sync::Arc<DatabaseApps>),
}

/// SIGHUP reads the configuration again and serves its apps: new apps are served at once, changed
/// ones are used for new connections and requests, removed ones have their connections closed
/// (4001). A configuration that does not load is refused with a log line and the old one kept.
/// Server settings (`[server]`, `[scaling]`, `[apps_store]`) need a restart. With a database
/// store, SIGHUP reads the table again instead.
async fn reload_on_hangup(args: StartArgs, reload: Reload) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        while hangups.recv().await.is_some() {
            let apps = match &reload {
                Reload::File(apps) => apps,
                Reload::Database(database) => {
                    info!("SIGHUP: reading the apps store again");
                    database.refresh_now();
                    continue;
                }
            };
            let reloaded = read_env_file(args.env_file.as_deref()).and_then(|dotenv| {
                let env = |name: &str| std::env::var(name).ok().or_else(|| dotenv.get(name).cloned());
                let overrides = Overrides { host: args.host.clone(), port: args.port };
                Config::load(args.config.as_deref(), &env, &overrides).map_err(anyhow::Error::from)
            });
            match reloaded {
                Ok(config) => {
                    apps.replace(&config.apps);
                    info!(apps = config.apps.len(), "SIGHUP: configuration reloaded (server settings need a restart)");
                }
                Err(e) => warn!("SIGHUP: configuration refused, the previous one is kept: {e:#}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (args, reload);
}

/// Reads a `.env` file without touching the process environment; a missing default `./.env` is fine,
/// a missing file named with `--env-file` is an error.
pub(super) fn read_env_file(
    path: Option<&std::path::Path>,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (std::path::PathBuf::from(".env"), false),
    };
    if !required && !path.exists() {
        return Ok(Default::default());
    }
    let mut vars = std::collections::HashMap::new();
    let iter = dotenvy::from_path_iter(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    for item in iter {
        let (k, v) = item.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        vars.insert(k, v);
    }
    info!(file = %path.display(), "read environment file");
    Ok(vars)
}

/// What a user needs to connect, on stdout. Secrets are shown only for the embedded demo app. A
/// closed stdout loses the banner, never the server.
fn print_banner(config: &Config, addr: std::net::SocketAddr, tls: bool) {
    use std::fmt::Write as _;
    let path = &config.server.path;
    let (ws, http) = if tls { ("wss", "https") } else { ("ws", "http") };
    let mut banner = String::new();
    let _ = writeln!(banner, "Herald {} listening on {addr}", env!("CARGO_PKG_VERSION"));
    for app in &config.apps {
        let _ = writeln!(banner, "  app id={} key={}  ->  {ws}://{addr}{path}/app/{}", app.id, app.key, app.key);
    }
    if config.apps_store.driver.is_database() {
        let store = &config.apps_store;
        let (driver, table) = (&store.driver, &store.table);
        let _ = writeln!(banner, "  apps from the {driver:?} table {table:?}  ->  {ws}://{addr}{path}/app/{{key}}");
    }
    if config.uses_default_app() {
        let app = &config.apps[0];
        let _ = writeln!(
            banner,
            "  demo credentials: REVERB_APP_ID={} REVERB_APP_KEY={} REVERB_APP_SECRET={}",
            app.id, app.key, app.secret
        );
        warn!("serving the embedded demo app: set REVERB_APP_* or --config for production");
        if config.demo_loopback {
            let _ = writeln!(
                banner,
                "  the demo app's secret is public: 127.0.0.1 only (--host 0.0.0.0 to serve other machines)"
            );
            warn!("the embedded demo app listens on 127.0.0.1 only: give --host or REVERB_SERVER_HOST to listen elsewhere");
        }
    }
    let _ = writeln!(banner, "  HTTP API: {http}://{addr}{path}/apps/{{id}}/events   health: {http}://{addr}/up");
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, banner.as_bytes()).and_then(|()| std::io::Write::flush(&mut stdout));
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
