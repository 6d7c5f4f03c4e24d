//! `herald connect`: an interactive Pusher client for the terminal, like `wscat`.
//!
//! Every frame received is printed on one line prefixed `< `, every frame sent on one line prefixed
//! `> ` (both on stdout, so a script can parse them); diagnostics go to stderr. Lines typed (or piped)
//! on stdin are sent as they are, except the `/` helpers (see [`HELP`]). At the end of stdin the tool
//! waits `--wait` milliseconds for replies, closes the socket and exits.
//!
//! `--secret` lets the tool sign private/presence subscriptions and sign-ins itself. That needs the
//! app secret on the command line: a development convenience, never something to do in production,
//! where an app's own auth endpoint signs.
//!
//! Exit codes: 0 normal end; 1 the connection failed (or was lost, or the arguments are wrong);
//! 2 the server closed the connection with an error code (a Pusher 4xxx code, or an RFC 6455 code
//! other than 1000/1001).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::protocol::signature::{channel_auth_message, make_auth, signin_message};

/// How long connecting (TCP, TLS, WebSocket handshake) and then waiting for
/// `pusher:connection_established` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take once the tool has sent its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

const HELP: &str = "\
/subscribe CHANNEL                   subscribe; private-/presence- channels are signed with --secret
/unsubscribe CHANNEL                 unsubscribe
/trigger [CHANNEL] client-EVENT [JSON]  send a client event (default channel: the last private/presence one subscribed)
/ping                                send pusher:ping
/signin [USER_ID]                    sign in as USER_ID (default --user-id; needs --secret)
/quit                                close the connection and exit
/help                                this text
anything else                        sent as it is";

/// `herald connect` flags.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// WebSocket URL, e.g. `ws://127.0.0.1:8080/app/app-key` (instead of --app-key/--host/--port/--path).
    /// `?protocol=7&client=herald-connect&version=...` is added when it has no query.
    pub url: Option<String>,
    /// App key.
    #[arg(long, visible_alias = "key", env = "REVERB_APP_KEY", default_value = "app-key")]
    pub app_key: String,
    /// Server host.
    #[arg(long, env = "REVERB_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, env = "REVERB_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Deployment path prefix (Herald's `[server] path`, e.g. `/ws`).
    #[arg(long, default_value = "")]
    pub path: String,
    /// Connect with TLS (`wss://`); also implied by a `wss://` URL or REVERB_SCHEME=https.
    #[arg(long)]
    pub tls: bool,
    /// A PEM file of extra CA certificates to trust for TLS (besides the webpki roots), e.g. mkcert's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The app secret, to sign private/presence subscriptions and /signin in this tool. A development
    /// convenience only: it puts the secret on a command line; in production your app's auth endpoint signs.
    #[arg(long)]
    pub secret: Option<String>,
    /// Presence `user_id` and the default /signin id (default: a random id).
    #[arg(long)]
    pub user_id: Option<String>,
    /// Presence / sign-in `user_info`, as JSON (e.g. '{"name":"Ann"}').
    #[arg(long)]
    pub user_info: Option<String>,
    /// Milliseconds to wait for replies after the end of stdin, before closing.
    #[arg(long, default_value_t = 500)]
    pub wait: u64,
    /// Hide pusher:ping / pusher:pong frames (except the answer to a typed /ping).
    #[arg(long)]
    pub quiet_pings: bool,
}

/// Runs `herald connect` to completion and returns its exit code.
pub fn main(args: ConnectArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald connect: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(run(args)))
}

/// Where to connect.
#[derive(Debug, PartialEq)]
struct Target {
    url: String,
    host: String,
    port: u16,
    tls: bool,
    /// The app key, as the URL names it (for signing).
    key: Option<String>,
}

fn default_query() -> String {
    format!("protocol=7&client=herald-connect&version={}", env!("CARGO_PKG_VERSION"))
}

/// Works out the URL from the positional URL or the flags.
fn target(args: &ConnectArgs, scheme_env: Option<&str>) -> Result<Target, String> {
    let raw = match &args.url {
        Some(url) => {
            let url = url.trim();
            if url.contains("://") {
                url.to_owned()
            } else {
                format!("{}://{url}", if args.tls { "wss" } else { "ws" })
            }
        }
        None => {
            let tls = args.tls || scheme_env.is_some_and(|s| s.eq_ignore_ascii_case("https"));
            let host = if args.host.contains(':') && !args.host.starts_with('[') {
                format!("[{}]", args.host)
            } else {
                args.host.clone()
            };
            let path = args.path.trim_end_matches('/');
            let path = if path.is_empty() || path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
            format!("{}://{host}:{}{path}/app/{}", if tls { "wss" } else { "ws" }, args.port, args.app_key)
        }
    };
    let mut url = Url::parse(&raw).map_err(|e| format!("invalid URL {raw}: {e}"))?;
    let scheme = match url.scheme() {
        "ws" | "http" if args.tls => "wss",
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => return Err(format!("invalid URL {raw}: scheme {other} (use ws:// or wss://)")),
    };
    if url.scheme() != scheme {
        // `Url::set_scheme` refuses some special-to-special changes; rebuild instead.
        let rest = &url.as_str()[url.scheme().len()..];
        url = Url::parse(&format!("{scheme}{rest}")).map_err(|e| format!("invalid URL {raw}: {e}"))?;
    }
    if url.query().is_none() {
        url.set_query(Some(&default_query()));
    }
    let host = url.host_str().ok_or_else(|| format!("invalid URL {raw}: no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().unwrap_or(if scheme == "wss" { 443 } else { 80 });
    let key = url.path_segments().and_then(|segments| {
        let segments: Vec<&str> = segments.collect();
        segments.windows(2).rev().find(|w| w[0] == "app" && !w[1].is_empty()).map(|w| w[1].to_owned())
    });
    Ok(Target { url: url.to_string(), host, port, tls: scheme == "wss", key })
}

async fn run(args: ConnectArgs) -> u8 {
    let scheme_env = std::env::var("REVERB_SCHEME").ok();
    let target = match target(&args, scheme_env.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("herald connect: {e}");
            return 1;
        }
    };
    let user_info = match args.user_info.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("herald connect: --user-info is not JSON: {e}");
            return super::USAGE_ERROR;
        }
    };
    let session = Session {
        key: target.key.clone().unwrap_or_else(|| args.app_key.clone()),
        secret: args.secret.clone(),
        user_id: args.user_id.clone().unwrap_or_else(|| format!("user-{}", rand::random::<u32>())),
        user_info,
        quiet_pings: args.quiet_pings,
        socket_id: None,
        auth_channels: Vec::new(),
        typed_pings: 0,
        last_error: None,
    };
    let wait = Duration::from_millis(args.wait);

    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((target.host.as_str(), target.port))).await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return connect_failed(&target, &e.to_string()),
        Err(_) => return connect_failed(&target, "timed out"),
    };
    let _ = tcp.set_nodelay(true);
    if target.tls {
        let connector = match tls_connector(args.ca_file.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("herald connect: {e}");
                return 1;
            }
        };
        let Ok(name) = ServerName::try_from(target.host.clone()) else {
            return connect_failed(&target, "the host is not a valid TLS server name");
        };
        let tls = match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return connect_failed(&target, &format!("TLS: {e}")),
            Err(_) => return connect_failed(&target, "TLS handshake timed out"),
        };
        handshake_and_run(&target, tls, session, wait).await
    } else {
        handshake_and_run(&target, tcp, session, wait).await
    }
}

fn connect_failed(target: &Target, why: &str) -> u8 {
    eprintln!("herald connect: cannot connect to {}: {why}", target.url);
    1
}

fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--ca-file: cannot read {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--ca-file: {} is not a PEM certificate file: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--ca-file: {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("--ca-file: {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn handshake_and_run<S>(target: &Target, stream: S, session: Session, wait: Duration) -> u8
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::client_async(target.url.as_str(), stream))
        .await
    {
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let why = format!("the server answered {status} {}", body.trim()).trim_end().to_owned();
            return connect_failed(target, &why);
        }
        Ok(Err(e)) => return connect_failed(target, &e.to_string()),
        Err(_) => return connect_failed(target, "WebSocket handshake timed out"),
    };
    if std::io::stdin().is_terminal() {
        eprintln!("connected to {} (type /help for commands, Ctrl-D to quit)", target.url);
    }
    run_session(ws, session, wait).await
}

/// What one line of input asks for.
#[derive(Debug, PartialEq)]
enum Input {
    /// Send this text frame.
    Send(String),
    /// Print the help.
    Help,
    /// Close and exit.
    Quit,
    /// Nothing (an empty line).
    Nothing,
}

/// The connection's state, as far as the helpers need it.
struct Session {
    key: String,
    secret: Option<String>,
    user_id: String,
    user_info: Option<Value>,
    quiet_pings: bool,
    socket_id: Option<String>,
    /// Private and presence channels subscribed to, oldest first: `/trigger`'s default is the last.
    auth_channels: Vec<String>,
    /// `/ping`s typed whose `pusher:pong` is still to come (shown even with --quiet-pings).
    typed_pings: usize,
    /// The last `pusher:error` received: code and message.
    last_error: Option<(u16, String)>,
}

/// A JSON object with its fields in the given order (`serde_json` maps sort their keys); each value
/// is JSON text already.
fn object(fields: &[(&str, String)]) -> String {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", Value::from(*k))).collect();
    format!("{{{}}}", fields.join(","))
}

fn string(s: &str) -> String {
    Value::from(s).to_string()
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (s, ""),
    }
}

impl Session {
    /// Turns one line of input into what to do, or a message for stderr.
    fn input(&mut self, line: &str) -> Result<Input, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(Input::Nothing);
        }
        let Some(command) = line.strip_prefix('/') else {
            return Ok(Input::Send(line.to_owned()));
        };
        let (name, rest) = split_word(command);
        match name {
            "subscribe" | "sub" => self.subscribe(rest).map(Input::Send),
            "unsubscribe" | "unsub" => {
                let (channel, _) = split_word(rest);
                if channel.is_empty() {
                    return Err("usage: /unsubscribe CHANNEL".into());
                }
                self.auth_channels.retain(|c| c != channel);
                let data = object(&[("channel", string(channel))]);
                Ok(Input::Send(object(&[("event", string("pusher:unsubscribe")), ("data", data)])))
            }
            "trigger" => self.trigger(rest).map(Input::Send),
            "ping" => {
                self.typed_pings += 1;
                Ok(Input::Send(object(&[("event", string("pusher:ping")), ("data", "{}".into())])))
            }
            "signin" => self.signin(rest).map(Input::Send),
            "quit" | "exit" | "q" => Ok(Input::Quit),
            "help" | "?" => Ok(Input::Help),
            other => Err(format!("unknown command /{other} (type /help)")),
        }
    }

    fn signing(&self, what: &str) -> Result<(&str, &str), String> {
        let Some(secret) = self.secret.as_deref() else {
            return Err(format!(
                "{what} needs a signature: give --secret (the app secret; a development convenience, not for production)"
            ));
        };
        let Some(socket_id) = self.socket_id.as_deref() else {
            return Err(format!("{what}: no socket_id yet (waiting for pusher:connection_established)"));
        };
        Ok((secret, socket_id))
    }

    fn user_info_field(&self) -> Vec<(&'static str, String)> {
        self.user_info.iter().map(|info| ("user_info", info.to_string())).collect()
    }

    fn subscribe(&mut self, rest: &str) -> Result<String, String> {
        let (channel, _) = split_word(rest);
        if channel.is_empty() {
            return Err("usage: /subscribe CHANNEL".into());
        }
        let presence = channel.starts_with("presence-");
        let private = channel.starts_with("private-");
        let mut data = vec![("channel", string(channel))];
        if presence || private {
            let (secret, socket_id) = self.signing(channel)?;
            if presence {
                let mut fields = vec![("user_id", string(&self.user_id))];
                fields.extend(self.user_info_field());
                let channel_data = object(&fields);
                let auth = make_auth(&self.key, secret, &channel_auth_message(socket_id, channel, Some(&channel_data)));
                data.push(("auth", string(&auth)));
                data.push(("channel_data", string(&channel_data)));
            } else {
                let auth = make_auth(&self.key, secret, &channel_auth_message(socket_id, channel, None));
                data.push(("auth", string(&auth)));
            }
            self.auth_channels.retain(|c| c != channel);
            self.auth_channels.push(channel.to_owned());
        }
        Ok(object(&[("event", string("pusher:subscribe")), ("data", object(&data))]))
    }

    fn trigger(&self, rest: &str) -> Result<String, String> {
        const USAGE: &str = "usage: /trigger [CHANNEL] client-EVENT [JSON]";
        let (first, after_first) = split_word(rest);
        if first.is_empty() {
            return Err(USAGE.into());
        }
        let (channel, event, data) = if first.starts_with("client-") {
            let Some(channel) = self.auth_channels.last() else {
                return Err(format!(
                    "no private or presence channel subscribed yet: /trigger CHANNEL {first} ... names one"
                ));
            };
            (channel.as_str(), first, after_first)
        } else {
            let (event, data) = split_word(after_first);
            if event.is_empty() {
                return Err(USAGE.into());
            }
            (first, event, data)
        };
        if !event.starts_with("client-") {
            return Err(format!("client events are named client-*, not {event} ({USAGE})"));
        }
        let data = match data.trim() {
            "" => "{}".to_owned(),
            text => match serde_json::from_str::<Value>(text) {
                Ok(v) => v.to_string(),
                Err(_) => string(text),
            },
        };
        Ok(object(&[("event", string(event)), ("channel", string(channel)), ("data", data)]))
    }

    fn signin(&self, rest: &str) -> Result<String, String> {
        let (user_id, _) = split_word(rest);
        let user_id = if user_id.is_empty() { self.user_id.as_str() } else { user_id };
        let (secret, socket_id) = self.signing("/signin")?;
        let mut fields = vec![("id", string(user_id))];
        fields.extend(self.user_info_field());
        let user_data = object(&fields);
        let auth = make_auth(&self.key, secret, &signin_message(socket_id, &user_data));
        let data = object(&[("auth", string(&auth)), ("user_data", string(&user_data))]);
        Ok(object(&[("event", string("pusher:signin")), ("data", data)]))
    }

    /// Looks at a text frame received: records the socket id and errors; returns whether to print it
    /// and what to answer (a `pusher:pong` to the server's `pusher:ping`).
    fn received(&mut self, text: &str) -> (bool, Option<String>) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return (true, None);
        };
        let data = match &message["data"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        match message["event"].as_str().unwrap_or_default() {
            "pusher:connection_established" => {
                self.socket_id = data["socket_id"].as_str().map(str::to_owned);
                (true, None)
            }
            "pusher:error" => {
                let code = data["code"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(0);
                self.last_error = Some((code, data["message"].as_str().unwrap_or_default().to_owned()));
                (true, None)
            }
            "pusher:ping" => {
                let pong = object(&[("event", string("pusher:pong")), ("data", "{}".into())]);
                (!self.quiet_pings, Some(pong))
            }
            "pusher:pong" => {
                let typed = self.typed_pings > 0;
                self.typed_pings = self.typed_pings.saturating_sub(1);
                (!self.quiet_pings || typed, None)
            }
            _ => (true, None),
        }
    }
}

/// Prints one line on stdout, ignoring a closed stdout (`| head`).
fn out(prefix: &str, text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{prefix}{}", one_line(text));
    let _ = stdout.flush();
}

/// A frame's text on one line: JSON is re-encoded compactly, anything else has its line breaks escaped.
fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_owned();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => v.to_string(),
        Err(_) => text.replace('\r', "\\r").replace('\n', "\\n"),
    }
}

/// How the session ended.
enum End {
    /// The server closed (with a close frame or not) or the connection broke.
    Server(Option<CloseFrame>),
    Lost(String),
    /// We decided to close (end of input, /quit, Ctrl-C).
    Ours,
}

async fn run_session<S>(mut ws: WebSocketStream<S>, mut session: Session, wait: Duration) -> u8
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // stdin is read on a plain thread: tokio's stdin would keep the runtime from shutting down while
    // a read is pending.
    let (tx, mut lines) = mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let established_by = Instant::now() + CONNECT_TIMEOUT;
    let mut stdin_open = true;
    let mut closing_at: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let end = loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let (show, reply) = session.received(text.as_str());
                    if show {
                        out("< ", text.as_str());
                    }
                    if let Some(reply) = reply {
                        if !session.quiet_pings {
                            out("> ", &reply);
                        }
                        if let Err(e) = ws.send(Message::text(reply)).await {
                            break End::Lost(e.to_string());
                        }
                    }
                }
                Some(Ok(Message::Binary(bytes))) => out("< ", &format!("[binary frame, {} bytes]", bytes.len())),
                Some(Ok(Message::Close(frame))) => break End::Server(frame),
                Some(Ok(_)) => {} // WebSocket pings are answered by tungstenite.
                Some(Err(e)) => break End::Lost(e.to_string()),
                None => break End::Server(None),
            },
            line = lines.recv(), if stdin_open && session.socket_id.is_some() => match line {
                None => {
                    stdin_open = false;
                    closing_at = Some(Instant::now() + wait);
                }
                Some(line) => match session.input(&line) {
                    Ok(Input::Send(text)) => {
                        out("> ", &text);
                        if let Err(e) = ws.send(Message::text(text)).await {
                            break End::Lost(e.to_string());
                        }
                    }
                    Ok(Input::Help) => eprintln!("{HELP}"),
                    Ok(Input::Quit) => break End::Ours,
                    Ok(Input::Nothing) => {}
                    Err(message) => eprintln!("herald connect: {message}"),
                },
            },
            _ = tokio::time::sleep_until(closing_at.unwrap_or(established_by)), if closing_at.is_some() => break End::Ours,
            _ = tokio::time::sleep_until(established_by), if session.socket_id.is_none() => {
                eprintln!("herald connect: no pusher:connection_established within {} s", CONNECT_TIMEOUT.as_secs());
                return 1;
            }
            _ = &mut ctrl_c => break End::Ours,
        }
    };

    match end {
        End::Ours => {
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).await;
            // Print what still arrives until the server's close (bounded).
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        if session.received(text.as_str()).0 {
                            out("< ", text.as_str());
                        }
                    }
                }
            })
            .await;
            0
        }
        End::Server(frame) => {
            // Let tungstenite finish the closing handshake (it queued the answer).
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async { while ws.next().await.is_some() {} }).await;
            server_closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())), session.last_error)
        }
        End::Lost(why) => match session.last_error {
            Some((code, message)) if (4000..5000).contains(&code) => {
                eprintln!("herald connect: the server closed the connection: {code} {message}");
                2
            }
            _ => {
                eprintln!("herald connect: connection lost: {why}");
                1
            }
        },
    }
}

/// The exit code (and stderr line) for a connection the server ended.
fn server_closed(close: Option<(u16, String)>, last_error: Option<(u16, String)>) -> u8 {
    let (code, reason) = match close {
        Some((code, reason)) => (code, reason),
        None => match &last_error {
            Some((code, message)) if (4000..5000).contains(code) => (*code, message.clone()),
            _ => {
                eprintln!("herald connect: the server closed the connection");
                return 0;
            }
        },
    };
    let reason = match (reason.is_empty(), last_error) {
        (true, Some((error_code, message))) if error_code == code => message,
        _ => reason,
    };
    match code {
        1000 | 1001 | 1005 => {
            eprintln!("herald connect: the server closed the connection ({code})");
            0
        }
        _ => {
            eprintln!("herald connect: the server closed the connection: {code} {reason}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConnectArgs,
    }

    fn args(argv: &[&str]) -> ConnectArgs {
        Cli::try_parse_from(std::iter::once("connect").chain(argv.iter().copied())).unwrap().args
    }

    fn session(secret: Option<&str>) -> Session {
        Session {
            key: "278d425bdf160c739803".into(),
            secret: secret.map(str::to_owned),
            user_id: "10".into(),
            user_info: Some(serde_json::json!({"name": "Mr. Channels"})),
            quiet_pings: false,
            socket_id: Some("1234.1234".into()),
            auth_channels: Vec::new(),
            typed_pings: 0,
            last_error: None,
        }
    }

    #[test]
    fn urls() {
        let v = env!("CARGO_PKG_VERSION");
        let t = target(&args(&["--host", "example.com", "--port", "6001", "--app-key", "k"]), None).unwrap();
        assert_eq!(t.url, format!("ws://example.com:6001/app/k?protocol=7&client=herald-connect&version={v}"));
        assert_eq!((t.host.as_str(), t.port, t.tls, t.key.as_deref()), ("example.com", 6001, false, Some("k")));

        let t = target(&args(&["--port", "443", "--path", "ws/", "--tls"]), None).unwrap();
        assert!(t.url.starts_with("wss://127.0.0.1/ws/app/app-key?protocol=7"), "{}", t.url);
        assert!(t.tls);
        assert!(target(&args(&[]), Some("https")).unwrap().tls);

        let t = target(&args(&["ws://127.0.0.1:8080/app/app-key?protocol=6"]), None).unwrap();
        assert_eq!(t.url, "ws://127.0.0.1:8080/app/app-key?protocol=6");
        let t = target(&args(&["wss://h.example/prefix/app/xyz"]), None).unwrap();
        assert_eq!((t.port, t.tls, t.key.as_deref()), (443, true, Some("xyz")));
        assert!(t.url.contains("?protocol=7&client=herald-connect"));
        let t = target(&args(&["localhost:9000/app/key1", "--tls"]), None).unwrap();
        assert!(t.url.starts_with("wss://localhost:9000/app/key1?"), "{}", t.url);
        let t = target(&args(&["https://h.example/app/key1"]), None).unwrap();
        assert!(t.url.starts_with("wss://h.example/app/key1?"), "{}", t.url);
        assert!(target(&args(&["ftp://h/app/k"]), None).is_err());
    }

    #[test]
    fn helpers_build_pusher_frames() {
        let mut s = session(Some("7ad3773142a6692b25b8"));
        assert_eq!(
            s.input("/subscribe orders").unwrap(),
            Input::Send(r#"{"event":"pusher:subscribe","data":{"channel":"orders"}}"#.into())
        );
        // The protocol's test vector.
        let Input::Send(frame) = s.input("/subscribe private-foobar").unwrap() else { panic!() };
        assert!(frame.contains("278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"));
        let Input::Send(frame) = s.input("/subscribe presence-foobar").unwrap() else { panic!() };
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["data"]["channel_data"], r#"{"user_id":"10","user_info":{"name":"Mr. Channels"}}"#);
        assert!(v["data"]["auth"]
            .as_str()
            .unwrap()
            .ends_with(":4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800"));
        // /trigger defaults to the last private/presence channel.
        assert_eq!(
            s.input(r#"/trigger client-typing {"a": 1}"#).unwrap(),
            Input::Send(r#"{"event":"client-typing","channel":"presence-foobar","data":{"a":1}}"#.into())
        );
        assert_eq!(
            s.input("/trigger private-foobar client-x").unwrap(),
            Input::Send(r#"{"event":"client-x","channel":"private-foobar","data":{}}"#.into())
        );
        assert!(s.input("/trigger private-foobar typing {}").is_err());
        s.input("/unsubscribe presence-foobar").unwrap();
        let Input::Send(frame) = s.input("/trigger client-y hello there").unwrap() else { panic!() };
        assert_eq!(frame, r#"{"event":"client-y","channel":"private-foobar","data":"hello there"}"#);

        s.user_info = None;
        let Input::Send(frame) = s.input("/signin 12345").unwrap() else { panic!() };
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["data"]["user_data"], r#"{"id":"12345"}"#);
        assert!(v["data"]["auth"]
            .as_str()
            .unwrap()
            .ends_with(":4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"));

        assert_eq!(s.input(r#"{"event":"x"}"#).unwrap(), Input::Send(r#"{"event":"x"}"#.into()));
        assert_eq!(s.input("   ").unwrap(), Input::Nothing);
        assert_eq!(s.input("/quit").unwrap(), Input::Quit);
        assert!(s.input("/nope").is_err());
    }

    #[test]
    fn signing_needs_the_secret() {
        let mut s = session(None);
        let err = s.input("/subscribe private-x").unwrap_err();
        assert!(err.contains("--secret"), "{err}");
        assert!(s.input("/signin 1").unwrap_err().contains("--secret"));
        assert!(s.input("/trigger client-x {}").is_err(), "no private channel subscribed");
    }

    #[test]
    fn received_frames() {
        let mut s = session(None);
        s.socket_id = None;
        let established =
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":30}"}"#;
        assert_eq!(s.received(established), (true, None));
        assert_eq!(s.socket_id.as_deref(), Some("1.2"));
        let (show, reply) = s.received(r#"{"event":"pusher:ping","data":"{}"}"#);
        assert!(show);
        assert_eq!(reply.as_deref(), Some(r#"{"event":"pusher:pong","data":{}}"#));
        s.received(r#"{"event":"pusher:error","data":{"code":4001,"message":"no app"}}"#);
        assert_eq!(s.last_error, Some((4001, "no app".into())));
        s.quiet_pings = true;
        assert!(!s.received(r#"{"event":"pusher:pong","data":"{}"}"#).0);
        s.input("/ping").unwrap();
        assert!(s.received(r#"{"event":"pusher:pong","data":"{}"}"#).0, "the answer to a typed /ping shows");
        assert_eq!(one_line("{\n \"a\": 1\n}"), r#"{"a":1}"#);
        assert_eq!(one_line("a\nb"), "a\\nb");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(server_closed(Some((4001, String::new())), Some((4001, "App not found".into()))), 2);
        assert_eq!(server_closed(Some((1009, "too big".into())), None), 2);
        assert_eq!(server_closed(Some((1000, String::new())), None), 0);
        assert_eq!(server_closed(None, None), 0);
        assert_eq!(server_closed(None, Some((4009, "origin".into()))), 2);
    }
}
