//! The network edge: the TCP listener, HTTP routing (health, HTTP API) and the WebSocket upgrade.
//!
//! Every accepted socket is served by hyper (HTTP/1.1, keep-alive, a deadline on reading the
//! request head). A WebSocket upgrade takes the raw TCP stream back from hyper, so that once a
//! connection is upgraded no HTTP machinery sits between the socket and the connection task.

mod api_limits;
mod dashboard;
mod demo;
mod history_api;
mod http_api;
mod limits;
mod plain;
mod routes;
pub(crate) mod sse;
mod sse_tickets;
mod takeover;
mod tls;
mod websocket;
mod xhr;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::hub::Hub;
use limits::{ConnInfo, ConnectionLimits};

/// Pending connections the kernel may hold (capped by net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

/// Idle time before the kernel probes a silent peer.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
    /// Open WebSocket connections, so shutdown can wait for their goodbyes.
    pub open_sockets: Arc<AtomicUsize>,
    /// Each app's HTTP API request budget (`api_rate_limit`).
    pub api_limits: Arc<api_limits::ApiLimits>,
    /// Wrong dashboard passwords per client address (see `dashboard::AuthBackoff`).
    pub dashboard_backoff: Arc<dashboard::AuthBackoff>,
    /// The caps on open connections; HTTP fallback sessions hold a permit each too.
    pub connection_limits: Arc<ConnectionLimits>,
    /// pusher-js's HTTP fallback sessions on this node.
    pub http_sessions: Arc<crate::connection::http_fallback::HttpSessions>,
    /// With several nodes: how requests for a session another node holds reach it.
    pub relay: Option<Arc<xhr::Relay>>,
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Binds the configured address.
    pub async fn bind(config: Config, hub: Arc<Hub>, shutdown: CancellationToken) -> anyhow::Result<Server> {
        let addr = format!("{}:{}", config.server.host, config.server.port);
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = listen(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let api_limits = Arc::new(api_limits::ApiLimits::default());
        let mut changes = hub.app_changes();
        let forget = api_limits.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match changes.recv().await {
                    Ok(crate::apps::AppChange::Removed(app_id)) => forget.forget(&app_id),
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        let connection_limits = ConnectionLimits::new(&config.server);
        let http_sessions = crate::connection::http_fallback::HttpSessions::new(
            Duration::from_millis(config.server.http_session_timeout_ms),
            config.server.max_outbound_buffer,
        );
        let relay = match (config.scaling.enabled, config.scaling.node_url(&config.server)) {
            (true, Some(url)) => {
                Some(Arc::new(xhr::Relay::new(url, Duration::from_millis(config.server.http_session_timeout_ms))?))
            }
            (true, None) => {
                warn!("[scaling] node_url is not set and [server] host is not a specific address: HTTP fallback sessions are not relayed between nodes, so the load balancer must keep each on one node");
                None
            }
            (false, _) => None,
        };
        let state = AppState {
            relay,
            hub,
            connection_limits,
            http_sessions,
            config: Arc::new(config),
            shutdown,
            open_sockets: Arc::new(AtomicUsize::new(0)),
            api_limits,
            dashboard_backoff: Arc::default(),
        };
        Ok(Server { listener, state, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether clients must use `wss://` and `https://`.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts connections until shutdown, then gives open WebSockets a bounded time to close.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server { listener, state, tls } = self;
        let router = routes::router(state.clone());
        let header_timeout = Duration::from_millis(state.config.server.handshake_timeout_ms);
        let limits = state.connection_limits.clone();
        // After a shutdown signal, connections are still accepted while HTTP fallback sessions are
        // saying goodbye: a polling client is between two polls (on a new connection, for
        // pusher-js's Node build) when the signal comes, and its next poll must get its 4200.
        let mut drain_until = None;
        loop {
            let draining = drain_until.is_some();
            if draining && state.http_sessions.count() == 0 {
                break;
            }
            let (stream, peer) = tokio::select! {
                _ = state.shutdown.cancelled(), if !draining => {
                    info!("shutting down: closing connections with 4200 so clients reconnect");
                    drain_until = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(20)), if draining => {
                    if drain_until.is_some_and(|until| tokio::time::Instant::now() >= until) {
                        break;
                    }
                    continue;
                }
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Over a cap: closed before any TLS or HTTP work is done for it.
            let permit = match limits.admit(peer.ip()) {
                Ok(permit) => permit,
                Err(refusal) => {
                    crate::metrics::connection_refused(refusal.label());
                    debug!(%peer, reason = refusal.label(), "connection refused: over the connection cap");
                    drop(stream);
                    continue;
                }
            };
            let info = ConnInfo { peer, permit: Arc::new(permit) };
            let _ = stream.set_nodelay(true);
            // Half-open connections (a peer that vanished without a FIN) are also caught by the
            // ping/pong timeout; keepalive lets the kernel find them when nothing is being sent.
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE).with_interval(TCP_KEEPALIVE);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let router = router.clone();
            let shutdown = Shutdown { signal: state.shutdown.clone(), http_sessions: state.http_sessions.clone() };
            match tls.clone() {
                None => {
                    tokio::spawn(serve_http(stream, router, header_timeout, shutdown, info));
                }
                Some(acceptor) => {
                    tokio::spawn(async move {
                        // The TLS handshake shares the request-head deadline.
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => serve_http(stream, router, header_timeout, shutdown, info).await,
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while state.open_sockets.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Binds with a deep accept backlog: after a deploy, thousands of clients reconnect at once, and a
/// short backlog (tokio's default is 1024 only on some paths; 128 is common) makes the kernel drop
/// SYNs that are then retried a whole second later.
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        let socket =
            if resolved.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(resolved).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("the address resolved to nothing")))
}

/// Serves HTTP/1.1 (with upgrades) on one accepted stream, plain or TLS.
async fn serve_http<S>(stream: S, router: axum::Router, header_timeout: Duration, shutdown: Shutdown, info: ConnInfo)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    // A handler may take the socket back from hyper (an SSE stream, see `takeover`).
    let (stream, takeover) = takeover::Detachable::new(stream);
    // Every request carries the connection's peer address and permit (see `limits`).
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(info.clone());
        request.extensions_mut().insert(takeover.clone());
        tower_service::Service::call(&mut router.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        _ = shutdown.http_sessions_gone() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// What an HTTP connection watches to know when to wind down.
struct Shutdown {
    signal: CancellationToken,
    http_sessions: Arc<crate::connection::http_fallback::HttpSessions>,
}

impl Shutdown {
    /// Resolves once the server is shutting down and no HTTP fallback session is left (or the
    /// grace is over): until then a keep-alive connection still carries a browser's next poll, which
    /// gets the session's 4200.
    async fn http_sessions_gone(&self) {
        self.signal.cancelled().await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.http_sessions.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
