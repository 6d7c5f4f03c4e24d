//! `herald-floor`: the floor baseline for `herald bench`. The least a Pusher-shaped broadcast server can do,
//! on the same parts as Herald (tokio, hyper, Herald's own WebSocket transport), so that Herald / floor
//! measures what Herald's protocol layer costs and nothing else.
//!
//! What it does, and nothing more:
//! - `GET /app/{anything}` with a WebSocket upgrade: 101, then a canned `pusher:connection_established`
//!   (socket id `1.N`).
//! - `pusher:subscribe`: reads the channel name, answers a canned `pusher_internal:subscription_succeeded`,
//!   and adds the socket to that channel's broadcast list (one list per channel name, so that `rooms` and
//!   `idle` have something to compare with; `fanout` uses one channel, i.e. one list).
//! - `pusher:ping` gets `pusher:pong`; a `client-*` event is relayed to the channel's other sockets.
//! - `POST /apps/{id}/batch_events` (and `/events` with `channel`): takes each event's name, channel and data
//!   with one serde pass over borrowed strings, builds the frame once, and queues the same bytes to every
//!   socket of the channel. Answers 200 `{"batch":[{},...]}`.
//! - Writing: as Herald, a per-connection unbounded queue and one task per socket that takes everything
//!   queued (up to 256 frames) and writes it with one vectored write.
//! - `GET /up`: 200.
//!
//! What it skips (each is work Herald does): app lookup by key or id and every `pusher:error` / close code;
//! protocol-version check; HTTP API signatures (`auth_signature`, `body_md5`, timestamp window); private
//! channel auth (any `private-` subscribe succeeds); validation of channel names, event names, sizes and
//! batch length; `socket_id` exclusion and `info` on publish; the per-connection byte limit and slow-consumer
//! disconnect (queues are unbounded); activity timeouts and server pings; per-connection channel limits;
//! connection counting and quotas; graceful shutdown; logging and tracing spans; message size limits
//! (it takes up to 64 MiB). It is a measuring stick, never a server to deploy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use clap::Parser;
use herald::transport::{Message, OpCode, WebSocket};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The same allocator as Herald, so that Herald / floor compares servers, not allocators.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Most frames written in one flush, as in Herald.
const MAX_BATCH: usize = 256;
/// No limit of its own: large enough for any benchmark message.
const MAX_MESSAGE: usize = 64 << 20;
/// Largest HTTP body read.
const MAX_BODY: usize = 1 << 20;

#[derive(Parser)]
#[command(name = "herald-floor", about = "Minimal broadcast server: the floor baseline for `herald bench`")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Listen backlog: 4096 by default, as Herald's listener (a connection storm larger than the backlog
    /// sees SYNs dropped and retried after 1 s, so `storm` compares servers only at equal backlogs).
    #[arg(long, default_value_t = 4096)]
    backlog: u32,
}

type Queue = mpsc::UnboundedSender<Bytes>;

#[derive(Default)]
struct State {
    next_id: AtomicU64,
    /// Channel name -> (socket number, its queue).
    channels: Mutex<HashMap<String, Vec<(u64, Queue)>>>,
}

impl State {
    fn broadcast(&self, channel: &str, frame: Bytes, except: Option<u64>) {
        if let Ok(channels) = self.channels.lock() {
            for (id, queue) in channels.get(channel).into_iter().flatten() {
                if Some(*id) != except {
                    let _ = queue.send(frame.clone());
                }
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-floor: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-floor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port).parse()?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(args.backlog)?;
    eprintln!("herald-floor listening on {} (backlog {})", listener.local_addr()?, args.backlog);
    let state = Arc::new(State::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                // Out of descriptors: back off, as Herald does.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| route(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let response = if path == "/up" {
        answer(StatusCode::OK, "OK")
    } else if path.starts_with("/app/") {
        upgrade(state, req)
    } else if req.method() == hyper::Method::POST && path.starts_with("/apps/") {
        let batch = path.ends_with("/batch_events");
        match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
            Ok(body) => publish(&state, &body, batch),
            Err(_) => answer(StatusCode::BAD_REQUEST, r#"{"error":"body"}"#),
        }
    } else {
        answer(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#)
    };
    Ok(response)
}

fn answer(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    name: &'a str,
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<Event<'a>>,
}

/// Minimal parsing: borrowed names, the data kept as the raw JSON string it came as (already escaped).
fn publish(state: &State, body: &[u8], batch: bool) -> Response<Body> {
    let events = if batch {
        serde_json::from_slice::<Batch<'_>>(body).map(|b| b.batch)
    } else {
        serde_json::from_slice::<Event<'_>>(body).map(|e| vec![e])
    };
    let Ok(events) = events else {
        return answer(StatusCode::BAD_REQUEST, r#"{"error":"json"}"#);
    };
    for event in &events {
        let Some(channel) = event.channel else { continue };
        state.broadcast(channel, frame(event.name, channel, event.data.get()), None);
    }
    let reply = if batch { format!(r#"{{"batch":[{}]}}"#, vec!["{}"; events.len()].join(",")) } else { "{}".into() };
    Response::new(Body::from(reply))
}

/// `{"event":NAME,"channel":CHANNEL,"data":DATA}` with `data` copied as raw JSON.
fn frame(event: &str, channel: &str, data_json: &str) -> Bytes {
    let mut out = String::with_capacity(40 + event.len() + channel.len() + data_json.len());
    out.push_str(r#"{"event":"#);
    out.push_str(&serde_json::to_string(event).unwrap_or_default());
    out.push_str(r#","channel":"#);
    out.push_str(&serde_json::to_string(channel).unwrap_or_default());
    out.push_str(r#","data":"#);
    out.push_str(data_json);
    out.push('}');
    Bytes::from(out)
}

fn upgrade(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(accept) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return answer(StatusCode::BAD_REQUEST, "WebSocket only");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // Copy the few bytes hyper read ahead and drop its read buffer now (as Herald does): kept
                // alive for the connection's life it would cost kilobytes per idle socket.
                let hyper::upgrade::Parts { io, read_buf, .. } = parts;
                let ws = WebSocket::new(io.into_inner(), &read_buf, MAX_MESSAGE);
                drop(read_buf);
                socket(state, ws).await;
            }
            Err(upgraded) => socket(state, WebSocket::new(TokioIo::new(upgraded), &[], MAX_MESSAGE)).await,
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("upgrade"));
    headers.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("websocket"));
    if let Ok(accept) = hyper::header::HeaderValue::from_str(&accept) {
        headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

#[derive(Deserialize)]
struct ClientMessage<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
}

/// One socket: read, answer, relay; write everything queued with one flush.
async fn socket<S>(state: Arc<State>, mut ws: WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let id = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let established = format!(
        r#"{{"event":"pusher:connection_established","data":"{{\"socket_id\":\"1.{id}\",\"activity_timeout\":30}}"}}"#
    );
    let _ = tx.send(Bytes::from(established));
    let mut joined: Vec<String> = Vec::new();
    let mut batch = Vec::with_capacity(16);
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => on_text(&state, id, &tx, &mut joined, &text),
                Some(Ok(Message::Ping(payload))) => {
                    if ws.send_pong(&payload).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                let frames: Vec<(OpCode, &[u8])> = batch.iter().map(|b| (OpCode::Text, &b[..])).collect();
                let written = ws.send_frames(&frames).await;
                drop(frames);
                batch.clear();
                if written.is_err() {
                    break;
                }
            }
        }
    }
    if let Ok(mut channels) = state.channels.lock() {
        for channel in joined {
            if let Some(list) = channels.get_mut(&channel) {
                list.retain(|(other, _)| *other != id);
                if list.is_empty() {
                    channels.remove(&channel);
                }
            }
        }
    }
}

fn on_text(state: &State, id: u64, tx: &Queue, joined: &mut Vec<String>, text: &str) {
    let Ok(message) = serde_json::from_str::<ClientMessage<'_>>(text) else { return };
    match message.event {
        "pusher:subscribe" => {
            let Some(Ok(data)) = message.data.map(|d| serde_json::from_str::<SubscribeData>(d.get())) else { return };
            let succeeded = format!(
                r#"{{"event":"pusher_internal:subscription_succeeded","channel":{},"data":"{{}}"}}"#,
                serde_json::to_string(&data.channel).unwrap_or_default()
            );
            let _ = tx.send(Bytes::from(succeeded));
            if let Ok(mut channels) = state.channels.lock() {
                channels.entry(data.channel.clone()).or_default().push((id, tx.clone()));
            }
            joined.push(data.channel);
        }
        "pusher:ping" => {
            let _ = tx.send(Bytes::from_static(br#"{"event":"pusher:pong","data":"{}"}"#));
        }
        event if event.starts_with("client-") => {
            if let (Some(channel), Some(data)) = (message.channel, message.data) {
                state.broadcast(channel, frame(event, channel, data.get()), Some(id));
            }
        }
        _ => {}
    }
}
