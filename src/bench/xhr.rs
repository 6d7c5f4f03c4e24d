//! `--transport xhr_streaming`: a subscriber speaking pusher-js's `xhr_streaming` fallback, for the
//! `fanout` and `idle` scenarios of `stream`.
//!
//! As pusher-js does: `POST /pusher/app/{key}/{server}/{session}/xhr_streaming` held open, one
//! frame per line in its body (`o`, `a[...]`, `h`, `c[...]`), and every message sent with a short
//! `POST .../xhr_send` of a JSON array. Raw HTTP/1.1 over a TcpStream with a 4 KiB read buffer,
//! like the other bench clients; the body may be chunked or close-delimited (both are read), so
//! the same client measures any way the server frames it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use super::latency::Latencies;
use super::stream::Subscriber;
use super::{stamp, target};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest line accepted (a line that never ends is a broken server).
const MAX_LINE: usize = 1 << 20;

/// One `xhr_streaming` session.
pub struct Client {
    tcp: TcpStream,
    body: Body,
    /// `{key}/{server}/{session}`, for `xhr_send`.
    session: String,
    source: Ipv4Addr,
    to: SocketAddr,
}

impl Subscriber for Client {
    const NAME: &'static str = "xhr_streaming";

    /// Opens a session, waits for `connection_established`, subscribes with `xhr_send`, and waits
    /// for the subscription's confirmation.
    async fn connect(source: Ipv4Addr, to: SocketAddr, key: &str, channel: &str) -> anyhow::Result<Client> {
        let session = format!("{key}/{}/{}", rand::random::<u16>() % 1000, session_id());
        let mut tcp = open(source, to).await?;
        let request = format!(
            "POST /pusher/app/{session}/xhr_streaming?protocol=7&client=js&version=8.4.0&t={}&n=0 HTTP/1.1\r\n\
             Host: {to}\r\nContent-Length: 0\r\n\r\n",
            stamp::now_nanos()
        );
        tcp.write_all(request.as_bytes()).await.context("send request")?;
        let (head, rest) = read_head(&mut tcp).await?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("refused: {}", head.lines().next().unwrap_or(""));
        }
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        let mut client = Client { tcp, body: Body::new(chunked), session, source, to };
        client.body.feed(&rest)?;
        client.until_line(|line| line.contains("pusher:connection_established")).await?;
        let subscribe = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#);
        send(source, to, &client.session, &subscribe).await?;
        client.until_line(|line| line.contains("pusher_internal:subscription_succeeded")).await?;
        Ok(client)
    }

    async fn run(mut self, index: usize, stop: CancellationToken, counters: Arc<Counters>, latencies: Arc<Latencies>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                read = self.tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        Counters::add(&counters.disconnects, 1);
                        counters.note("stream ended");
                        return;
                    }
                    Ok(n) => n,
                },
            };
            let now = stamp::now_nanos();
            let mut pinged = false;
            let mut closed = None;
            let outcome = self.body.feed(&buf[..n]).and_then(|()| {
                self.body.take_lines(|line| {
                    let text = std::str::from_utf8(line).unwrap_or("");
                    if text.starts_with("a[") {
                        for micros in stamp::each_stamp(text).map(|sent| now.saturating_sub(sent) / 1_000) {
                            Counters::add(&counters.delivered, 1);
                            latencies.record(index, micros);
                        }
                        if text.contains(r#"\"event\":\"pusher:error\""#) {
                            Counters::add(&counters.server_errors, 1);
                            counters.note(&format!("server said: {text}"));
                        }
                        pinged |= text.contains(r#"\"event\":\"pusher:ping\""#);
                    } else if text.starts_with("c[") {
                        closed = Some(text.to_owned());
                    }
                })
            });
            if let Err(e) = outcome {
                Counters::add(&counters.disconnects, 1);
                counters.note(&format!("{e:#}"));
                return;
            }
            if let Some(close) = closed {
                Counters::add(&counters.disconnects, 1);
                counters.note(&format!("session closed: {close}"));
                return;
            }
            if pinged {
                // Off this loop: a slow answer must not hold up reading.
                let (source, to, session) = (self.source, self.to, self.session.clone());
                tokio::spawn(async move { send(source, to, &session, r#"{"event":"pusher:pong","data":{}}"#).await });
            }
        }
    }
}

impl Client {
    /// Reads until a line for which `wanted` holds; a `c[...]` line first is a refusal.
    async fn until_line(&mut self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let (mut found, mut closed) = (false, None);
            self.body.take_lines(|line| {
                let text = String::from_utf8_lossy(line);
                found |= wanted(&text);
                if text.starts_with("c[") {
                    closed = Some(text.into_owned());
                }
            })?;
            if found {
                return Ok(());
            }
            if let Some(close) = closed {
                bail!("session closed: {close}");
            }
            let n = self.tcp.read(&mut buf).await.context("read stream")?;
            if n == 0 {
                bail!("stream ended before the subscription was confirmed");
            }
            self.body.feed(&buf[..n])?;
        }
    }
}

/// Eight characters of `[0-9a-z]`, as pusher-js picks.
fn session_id() -> String {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..8).map(|_| char::from(CHARS[usize::from(rand::random::<u8>()) % CHARS.len()])).collect()
}

async fn open(source: Ipv4Addr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    target::assert_loopback(to)?;
    let socket = TcpSocket::new_v4().context("socket")?;
    socket.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("bind {source}"))?;
    let tcp = socket.connect(to).await.context("connect")?;
    tcp.set_nodelay(true).context("nodelay")?;
    Ok(tcp)
}

/// The response head (as text) and whatever of the body came with it.
async fn read_head(tcp: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut got = Vec::with_capacity(1024);
    loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(at + 4);
            return Ok((String::from_utf8_lossy(&got).into_owned(), rest));
        }
        if got.len() > MAX_HEAD || tcp.read_buf(&mut got).await.context("read response")? == 0 {
            bail!("no response head");
        }
    }
}

/// One `xhr_send` of `message` on a connection of its own, as a browser's XHR may; 204 expected.
async fn send(source: Ipv4Addr, to: SocketAddr, session: &str, message: &str) -> anyhow::Result<()> {
    let body = serde_json::to_string(&[message]).context("encode")?;
    let mut tcp = open(source, to).await?;
    let request = format!(
        "POST /pusher/app/{session}/xhr_send?t={}&n=1 HTTP/1.1\r\nHost: {to}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        stamp::now_nanos(),
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.context("send xhr_send")?;
    let (head, _) = read_head(&mut tcp).await?;
    if !head.starts_with("HTTP/1.1 204") {
        bail!("xhr_send refused: {}", head.lines().next().unwrap_or(""));
    }
    Ok(())
}

/// A response body taken apart into lines, through its chunked framing when it has one.
struct Body {
    chunks: Option<Chunks>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
}

/// Where a chunked body's decoder stands.
enum Chunks {
    /// Reading a chunk's size line (what of it came so far).
    Size(Vec<u8>),
    /// Bytes of the current chunk still to come.
    Data(usize),
    /// The CRLF after a chunk's data, bytes still to skip.
    DataEnd(u8),
    /// The last (empty) chunk came: the body ended.
    Done,
}

impl Body {
    fn new(chunked: bool) -> Body {
        Body { chunks: chunked.then(|| Chunks::Size(Vec::new())), partial: Vec::new() }
    }

    /// Adds bytes read from the socket.
    fn feed(&mut self, mut input: &[u8]) -> anyhow::Result<()> {
        let Some(chunks) = &mut self.chunks else {
            self.partial.extend_from_slice(input);
            return Ok(());
        };
        while !input.is_empty() {
            match chunks {
                Chunks::Size(line) => {
                    let Some(at) = input.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(input);
                        if line.len() > 64 {
                            bail!("a chunk size line longer than 64 bytes");
                        }
                        return Ok(());
                    };
                    line.extend_from_slice(&input[..at]);
                    input = &input[at + 1..];
                    let text = String::from_utf8_lossy(line);
                    let digits = text.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(digits, 16).with_context(|| format!("chunk size {digits:?}"))?;
                    *chunks = if size == 0 { Chunks::Done } else { Chunks::Data(size) };
                }
                Chunks::Data(left) => {
                    let take = (*left).min(input.len());
                    self.partial.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *left -= take;
                    if *left == 0 {
                        *chunks = Chunks::DataEnd(2);
                    }
                }
                Chunks::DataEnd(left) => {
                    input = &input[1..];
                    *left -= 1;
                    if *left == 0 {
                        *chunks = Chunks::Size(Vec::new());
                    }
                }
                Chunks::Done => bail!("bytes after the body's last chunk"),
            }
        }
        Ok(())
    }

    /// Hands every complete line (without its `\n`) to `each`, keeping the unfinished rest.
    fn take_lines(&mut self, mut each: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let mut start = 0;
        while let Some(at) = self.partial[start..].iter().position(|b| *b == b'\n') {
            each(&self.partial[start..start + at]);
            start += at + 1;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            bail!("a line longer than {MAX_LINE} bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(body: &mut Body) -> Vec<String> {
        let mut seen = Vec::new();
        body.take_lines(|l| seen.push(String::from_utf8(l.to_vec()).unwrap())).unwrap();
        seen
    }

    #[test]
    fn a_chunked_body_is_unframed_into_lines_across_reads() {
        let mut body = Body::new(true);
        body.feed(b"2\r\no\n\r\n6\r\na[\"x").unwrap();
        assert_eq!(lines(&mut body), ["o"]);
        body.feed(b"\"]\r\n3;ext\r\n\nh\n\r").unwrap();
        assert_eq!(lines(&mut body), ["a[\"x\"]", "h"]);
        body.feed(b"\n0\r\n").unwrap();
        assert!(body.feed(b"junk").is_err(), "nothing may follow the last chunk");
        assert!(Body::new(true).feed(b"zz\r\n").is_err(), "a size is hex");
    }

    #[test]
    fn a_close_delimited_body_is_split_as_it_comes() {
        let mut body = Body::new(false);
        body.feed(b"o\na[\"").unwrap();
        assert_eq!(lines(&mut body), ["o"]);
        body.feed(b"y\"]\n").unwrap();
        assert_eq!(lines(&mut body), ["a[\"y\"]"]);
    }

    #[test]
    fn session_ids_have_pusher_js_shape() {
        let id = session_id();
        assert!(crate::protocol::http_fallback::valid_session_path("1", &id), "{id}");
        assert_ne!(id, session_id());
    }
}
