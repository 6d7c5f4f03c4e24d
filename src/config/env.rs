//! Reverb's environment variable names, so that a Laravel `.env` configures Herald unchanged.

use super::{AppConfig, AppsDriver, Config, ConfigError};

/// Applies the `REVERB_*` (and `REDIS_*`) variables found by `env` on top of `config`.
///
/// `REVERB_APP_ID`/`KEY`/`SECRET` describe the single app of a Reverb set-up; they are refused when a
/// config file already declares apps, because silently picking one of the two would serve the wrong
/// credentials. The per-app settings (`REVERB_APP_PING_INTERVAL`, ...) apply to every app.
pub fn apply_env(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    if let Some(host) = get("REVERB_SERVER_HOST") {
        config.server.host = host;
    }
    if let Some(port) = get("REVERB_SERVER_PORT") {
        config.server.port = parse_number("REVERB_SERVER_PORT", &port)?;
    }
    if let Some(path) = env("REVERB_SERVER_PATH") {
        config.server.path = path;
    }
    if let Some(size) = get("REVERB_MAX_REQUEST_SIZE") {
        config.server.max_request_size = parse_number("REVERB_MAX_REQUEST_SIZE", &size)?;
    }
    if let Some(enabled) = get("REVERB_SCALING_ENABLED") {
        config.scaling.enabled = parse_bool("REVERB_SCALING_ENABLED", &enabled)?;
    }
    if let Some(channel) = get("REVERB_SCALING_CHANNEL") {
        config.scaling.channel = Some(channel);
    }
    // Herald's own: a pod or container knows its address only at run time (Kubernetes' status.podIP).
    if let Some(url) = get("HERALD_NODE_URL") {
        config.scaling.node_url = Some(url);
    }
    if let Some(url) = get("REDIS_URL") {
        config.scaling.redis_url = Some(url);
    } else if let Some(host) = get("REDIS_HOST") {
        // Laravel's separate settings, as Reverb reads them.
        let port = get("REDIS_PORT").unwrap_or_else(|| "6379".into());
        let auth = match (get("REDIS_USERNAME"), get("REDIS_PASSWORD")) {
            (Some(user), Some(password)) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            _ => String::new(),
        };
        let db = get("REDIS_DB").map(|db| format!("/{db}")).unwrap_or_default();
        config.scaling.redis_url = Some(format!("redis://{auth}{host}:{port}{db}"));
    }

    apply_apps_store_env(config, &get)?;

    let credentials = [get("REVERB_APP_ID"), get("REVERB_APP_KEY"), get("REVERB_APP_SECRET")];
    if credentials.iter().any(Option::is_some) {
        let names = ["REVERB_APP_ID", "REVERB_APP_KEY", "REVERB_APP_SECRET"];
        let set: Vec<&str> = credentials.iter().zip(names).filter(|(v, _)| v.is_some()).map(|(_, n)| n).collect();
        for (value, name) in credentials.iter().zip(names) {
            if value.is_none() {
                return Err(ConfigError::Env {
                    name,
                    message: format!(
                        "is missing, but {} {} set: REVERB_APP_ID, REVERB_APP_KEY and REVERB_APP_SECRET go together",
                        set.join(" and "),
                        if set.len() == 1 { "is" } else { "are" }
                    ),
                });
            }
        }
        if !config.apps.is_empty() {
            return Err(ConfigError::Env {
                name: "REVERB_APP_ID",
                message: "the config file declares [[apps]]; set REVERB_APP_* or the file's apps, not both".into(),
            });
        }
        let [id, key, secret] = credentials.map(Option::unwrap_or_default);
        config.apps.push(AppConfig::new(&id, &key, &secret));
    }
    Ok(())
}

/// `[apps_store]` from the environment: Herald's names, the common `DATABASE_URL`, and Soketi's
/// names (`SOKETI_APP_MANAGER_DRIVER`, `SOKETI_DB_POSTGRES_HOST`...), so a Soketi deployment's
/// environment finds its database unchanged.
fn apply_apps_store_env(config: &mut Config, get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for name in ["HERALD_APPS_DRIVER", "SOKETI_APP_MANAGER_DRIVER"] {
        if let Some(value) = get(name) {
            config.apps_store.driver = AppsDriver::parse(&value).ok_or_else(|| ConfigError::Env {
                name,
                message: format!("expected file, postgres or mysql, got {value:?}"),
            })?;
            break;
        }
    }
    let soketi = match config.apps_store.driver {
        AppsDriver::Postgres => Some(("POSTGRES", "postgres", "5432")),
        AppsDriver::Mysql => Some(("MYSQL", "mysql", "3306")),
        AppsDriver::File => None,
    };
    if let Some(url) = get("HERALD_APPS_URL").or_else(|| get("DATABASE_URL")) {
        config.apps_store.url = Some(url);
    } else if let Some((db, scheme, default_port)) = soketi {
        if let Some(host) = get(&format!("SOKETI_DB_{db}_HOST")) {
            let port = get(&format!("SOKETI_DB_{db}_PORT")).unwrap_or_else(|| default_port.into());
            let user = get(&format!("SOKETI_DB_{db}_USERNAME")).unwrap_or_else(|| "root".into());
            let password = get(&format!("SOKETI_DB_{db}_PASSWORD")).map(|p| format!(":{}", url_part(&p)));
            let database = get(&format!("SOKETI_DB_{db}_DATABASE")).unwrap_or_else(|| "main".into());
            let auth = format!("{}{}@", url_part(&user), password.unwrap_or_default());
            config.apps_store.url = Some(format!("{scheme}://{auth}{host}:{port}/{}", url_part(&database)));
        }
    }
    let soketi_table = soketi.and_then(|(db, _, _)| get(&format!("SOKETI_APP_MANAGER_{db}_TABLE")));
    if let Some(table) = get("HERALD_APPS_TABLE").or(soketi_table) {
        config.apps_store.table = table;
    }
    if let Some(v) = get("HERALD_APPS_REFRESH_INTERVAL_MS") {
        config.apps_store.refresh_interval_ms = parse_number("HERALD_APPS_REFRESH_INTERVAL_MS", &v)?;
    }
    if let Some(v) = get("HERALD_APPS_MAX_APPS") {
        config.apps_store.max_apps = parse_number("HERALD_APPS_MAX_APPS", &v)?;
    }
    if let Some(v) = get("HERALD_APPS_SECRET_GRACE_SECONDS") {
        config.apps_store.secret_grace_seconds = parse_number("HERALD_APPS_SECRET_GRACE_SECONDS", &v)?;
    }
    Ok(())
}

/// A user name, password or database name as it may stand in a URL.
fn url_part(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Applies the per-app `REVERB_APP_*` settings to every app (the embedded demo app included).
pub fn apply_app_env(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    for app in &mut config.apps {
        if let Some(v) = get("REVERB_APP_PING_INTERVAL") {
            app.ping_interval = parse_number("REVERB_APP_PING_INTERVAL", &v)?;
        }
        if let Some(v) = get("REVERB_APP_ACTIVITY_TIMEOUT") {
            app.activity_timeout = parse_number("REVERB_APP_ACTIVITY_TIMEOUT", &v)?;
        }
        if let Some(v) = get("REVERB_APP_MAX_MESSAGE_SIZE") {
            app.max_message_size = parse_number("REVERB_APP_MAX_MESSAGE_SIZE", &v)?;
        }
        if let Some(v) = get("REVERB_APP_MAX_CONNECTIONS") {
            app.max_connections = Some(parse_number("REVERB_APP_MAX_CONNECTIONS", &v)?);
        }
        if let Some(v) = get("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM") {
            app.accept_client_events_from = match v.trim().to_ascii_lowercase().as_str() {
                "members" => super::ClientEventsFrom::Members,
                "all" => super::ClientEventsFrom::All,
                _ => {
                    return Err(ConfigError::Env {
                        name: "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM",
                        message: format!("expected members or all, got {v:?}"),
                    })
                }
            };
        }
        if let Some(v) = get("REVERB_APP_RATE_LIMITING_ENABLED") {
            app.rate_limiting.enabled = parse_bool("REVERB_APP_RATE_LIMITING_ENABLED", &v)?;
        }
        if let Some(v) = get("REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS") {
            app.rate_limiting.max_attempts = parse_number("REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS", &v)?;
        }
        if let Some(v) = get("REVERB_APP_RATE_LIMIT_DECAY_SECONDS") {
            app.rate_limiting.decay_seconds = parse_number("REVERB_APP_RATE_LIMIT_DECAY_SECONDS", &v)?;
        }
        if let Some(v) = get("REVERB_APP_RATE_LIMIT_TERMINATE") {
            app.rate_limiting.terminate = parse_bool("REVERB_APP_RATE_LIMIT_TERMINATE", &v)?;
        }
    }
    Ok(())
}

fn parse_number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::Env { name, message: format!("expected a whole number, got {value:?}") })
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env { name, message: format!("expected true or false, got {value:?}") }),
    }
}
