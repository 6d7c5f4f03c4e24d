//! `herald trigger` and `herald channels`: signed HTTP API calls from the shell.
//!
//! Settings come from the flags, then the `REVERB_*` variables a Laravel app uses to reach the server
//! (`REVERB_APP_ID`, `REVERB_APP_KEY`, `REVERB_APP_SECRET`, `REVERB_HOST`, `REVERB_PORT`,
//! `REVERB_SCHEME`), then the demo app's defaults. The server's JSON answer is printed on stdout.
//!
//! Exit codes: 0 on 200; 1 the server cannot be reached (or another unexpected answer); 3 on a 4xx
//! (status and the server's `error` on stderr); 4 on a 5xx.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::protocol::signature::sign_api_request;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server is and which app to act as.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Server host.
    #[arg(long, env = "REVERB_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, env = "REVERB_PORT", default_value_t = 8080)]
    pub port: u16,
    /// `http` or `https`.
    #[arg(long, env = "REVERB_SCHEME", default_value = "http", value_parser = ["http", "https"])]
    pub scheme: String,
    /// Shorthand for --scheme https.
    #[arg(long)]
    pub tls: bool,
    /// A PEM file of extra CA certificates to trust for https (e.g. mkcert's).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Deployment path prefix (Herald's `[server] path`, e.g. `/ws`); the signature still covers `/apps/...`.
    #[arg(long, default_value = "")]
    pub path: String,
    /// App id.
    #[arg(long, env = "REVERB_APP_ID", default_value = "123456")]
    pub app_id: String,
    /// App key.
    #[arg(long, visible_alias = "app-key", env = "REVERB_APP_KEY", default_value = "app-key")]
    pub key: String,
    /// App secret.
    #[arg(long, env = "REVERB_APP_SECRET", hide_env_values = true, default_value = "app-secret")]
    pub secret: String,
}

/// `herald trigger` flags.
#[derive(clap::Args, Debug)]
pub struct TriggerArgs {
    /// Channel to publish to (repeat for several, up to 100).
    #[arg(long = "channel", short = 'c', required = true)]
    pub channels: Vec<String>,
    /// Event name.
    #[arg(long, short = 'e')]
    pub event: String,
    /// The event's data, passed through as it is (usually JSON); `-` reads it from stdin.
    #[arg(long, short = 'd')]
    pub data: String,
    /// Socket id to exclude from the recipients.
    #[arg(long)]
    pub socket_id: Option<String>,
    /// Ask for channel attributes in the answer, e.g. `subscription_count,user_count`.
    #[arg(long)]
    pub info: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `herald channels` flags.
#[derive(clap::Args, Debug)]
pub struct ChannelsArgs {
    /// Only channels whose name starts with this (`filter_by_prefix`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Attributes per channel, e.g. `subscription_count` (`user_count` needs a `presence-` prefix).
    #[arg(long)]
    pub info: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `herald trigger`: `POST /apps/{id}/events`.
pub fn trigger_main(args: TriggerArgs) -> ExitCode {
    let data = if args.data == "-" {
        let mut data = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut data) {
            eprintln!("herald trigger: cannot read the data from stdin: {e}");
            return ExitCode::from(1);
        }
        data.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        args.data
    };
    let mut body = serde_json::Map::new();
    body.insert("name".into(), args.event.into());
    body.insert("channels".into(), args.channels.into());
    body.insert("data".into(), data.into());
    if let Some(socket_id) = args.socket_id {
        body.insert("socket_id".into(), socket_id.into());
    }
    if let Some(info) = args.info {
        body.insert("info".into(), info.into());
    }
    let body = Value::Object(body).to_string();
    run("trigger", &args.api, "POST", "events", Some(body), &[])
}

/// `herald channels`: `GET /apps/{id}/channels`.
pub fn channels_main(args: ChannelsArgs) -> ExitCode {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(prefix) = args.prefix.as_deref() {
        query.push(("filter_by_prefix", prefix));
    }
    if let Some(info) = args.info.as_deref() {
        query.push(("info", info));
    }
    run("channels", &args.api, "GET", "channels", None, &query)
}

fn run(tool: &str, api: &ApiArgs, method: &str, tail: &str, body: Option<String>, query: &[(&str, &str)]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald {tool}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match call(api, method, tail, body, query).await {
            Ok(answer) => report(tool, answer),
            Err(e) => {
                eprintln!("herald {tool}: {e}");
                1
            }
        }
    });
    ExitCode::from(code)
}

/// An HTTP answer: status and body.
struct Answer {
    status: u16,
    reason: &'static str,
    body: String,
}

fn base_url(api: &ApiArgs) -> String {
    let scheme = if api.tls { "https" } else { api.scheme.as_str() };
    let host =
        if api.host.contains(':') && !api.host.starts_with('[') { format!("[{}]", api.host) } else { api.host.clone() };
    let prefix = api.path.trim_end_matches('/');
    let prefix = if prefix.is_empty() || prefix.starts_with('/') { prefix.to_owned() } else { format!("/{prefix}") };
    format!("{scheme}://{host}:{}{prefix}", api.port)
}

async fn call(
    api: &ApiArgs,
    method: &str,
    tail: &str,
    body: Option<String>,
    query: &[(&str, &str)],
) -> Result<Answer, String> {
    let path = format!("/apps/{}/{tail}", api.app_id);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let body = body.unwrap_or_default();
    let signed = sign_api_request(&api.key, &api.secret, method, &path, body.as_bytes(), query, now);
    let base = base_url(api);
    let url = format!("{base}{path}?{signed}");

    let mut client = reqwest::Client::builder().timeout(TIMEOUT).connect_timeout(TIMEOUT);
    if let Some(path) = &api.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file: cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file: {} is not a PEM certificate file: {e}", path.display()))?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client.build().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let request = if method == "GET" {
        client.get(&url)
    } else {
        client.post(&url).header("content-type", "application/json").body(body)
    };
    let response = request.send().await.map_err(|e| format!("cannot reach {base}: {}", error_chain(&e)))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("reading the answer from {base}: {}", error_chain(&e)))?;
    Ok(Answer { status: status.as_u16(), reason: status.canonical_reason().unwrap_or(""), body })
}

/// A reqwest error and its causes on one line, without the URL (whose query carries the signature).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![if e.is_timeout() { "timed out".to_owned() } else { String::new() }];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.retain(|p| !p.is_empty());
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.dedup();
    parts.join(": ")
}

/// Prints the answer and returns the exit code.
fn report(tool: &str, answer: Answer) -> u8 {
    let Answer { status, reason, body } = answer;
    if status == 200 {
        println!("{}", body.trim_end());
        return 0;
    }
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    eprintln!("herald {tool}: {status} {reason}: {message}");
    match status {
        400..=499 => 3,
        500..=599 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer { status, reason: "", body: body.into() }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(report("t", answer(200, "{}")), 0);
        assert_eq!(report("t", answer(401, r#"{"error":"invalid auth_signature"}"#)), 3);
        assert_eq!(report("t", answer(413, "too large")), 3);
        assert_eq!(report("t", answer(500, "")), 4);
        assert_eq!(report("t", answer(302, "")), 1);
    }

    #[test]
    fn urls() {
        let mut api = ApiArgs {
            host: "::1".into(),
            port: 6001,
            scheme: "http".into(),
            tls: false,
            ca_file: None,
            path: "ws/".into(),
            app_id: "1".into(),
            key: "k".into(),
            secret: "s".into(),
        };
        assert_eq!(base_url(&api), "http://[::1]:6001/ws");
        api.tls = true;
        api.host = "example.com".into();
        api.path = String::new();
        assert_eq!(base_url(&api), "https://example.com:6001");
    }
}
