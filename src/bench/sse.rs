//! `--transport sse`: the Server-Sent Events subscriber of the `fanout` and `idle` scenarios
//! (`GET /sse/{key}?channels=...`); the scenarios themselves are in `stream`.
//!
//! The client is raw HTTP/1.1 over a TcpStream (what `EventSource` sends): it reads the response
//! head, waits for `pusher:subscription_succeeded`, then splits the body on blank lines and looks
//! for the stamp in each event, as the WebSocket client does in each frame. Its read buffer is
//! 4 KiB, like the WebSocket client's, so 19,000 of them stay cheap.

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
/// Largest event accepted (an event that never ends is a broken server).
const MAX_EVENT: usize = 1 << 20;

/// One SSE subscriber.
pub struct Client {
    tcp: TcpStream,
    /// The start of an event whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Subscriber for Client {
    const NAME: &'static str = "sse";

    /// Asks for the stream of `channel`, and waits for its confirmation.
    async fn connect(source: Ipv4Addr, to: SocketAddr, key: &str, channel: &str) -> anyhow::Result<Client> {
        target::assert_loopback(to)?;
        let socket = TcpSocket::new_v4().context("socket")?;
        socket.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("bind {source}"))?;
        let mut tcp = socket.connect(to).await.context("connect")?;
        tcp.set_nodelay(true).context("nodelay")?;
        let request =
            format!("GET /sse/{key}?channels={channel} HTTP/1.1\r\nHost: {to}\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.context("send request")?;
        let mut got = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if got.len() > MAX_HEAD || tcp.read_buf(&mut got).await.context("read response")? == 0 {
                bail!("no response head");
            }
        };
        if !got.starts_with(b"HTTP/1.1 200") {
            let shown =
                String::from_utf8_lossy(&got[..head_end.min(got.len())]).lines().next().unwrap_or("").to_owned();
            bail!("refused: {shown}");
        }
        let mut client = Client { tcp, partial: got.split_off(head_end) };
        loop {
            let mut subscribed = false;
            client.take_events(|event| subscribed |= contains(event, b"event: pusher:subscription_succeeded"))?;
            if subscribed {
                return Ok(client);
            }
            let mut buf = [0u8; 4096];
            let n = client.tcp.read(&mut buf).await.context("read stream")?;
            if n == 0 {
                bail!("stream ended before its subscription was confirmed");
            }
            client.partial.extend_from_slice(&buf[..n]);
        }
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
            self.partial.extend_from_slice(&buf[..n]);
            let now = stamp::now_nanos();
            let outcome = self.take_events(|event| {
                let text = std::str::from_utf8(event).unwrap_or("");
                if let Some(micros) = stamp::latency_micros(text, now) {
                    Counters::add(&counters.delivered, 1);
                    latencies.record(index, micros);
                } else if text.contains("event: pusher:error") {
                    Counters::add(&counters.server_errors, 1);
                    counters.note(&format!("server said: {text}"));
                }
            });
            if let Err(e) = outcome {
                Counters::add(&counters.disconnects, 1);
                counters.note(&format!("{e:#}"));
                return;
            }
        }
    }
}

impl Client {
    /// Hands every complete event in `partial` to `each`, keeping the unfinished rest.
    fn take_events(&mut self, mut each: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let mut start = 0;
        while let Some(at) = find_blank_line(&self.partial[start..]) {
            each(&self.partial[start..start + at]);
            start += at + 2;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_EVENT {
            bail!("an event longer than {MAX_EVENT} bytes");
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where the first `\n\n` (the end of an event) starts.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|b| *b == b'\n') {
        let at = from + at;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_and_the_rest_is_kept() {
        let (a, _b) = std::net::TcpListener::bind("127.0.0.1:0").map(|l| (l.local_addr().unwrap(), l)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let tcp = TcpStream::connect(a).await.unwrap();
            let mut client =
                Client { tcp, partial: b"retry: 1\n\nevent: e\ndata: {}\nid: 1\n\nevent: f\ndata".to_vec() };
            let mut seen = Vec::new();
            client.take_events(|e| seen.push(String::from_utf8(e.to_vec()).unwrap())).unwrap();
            assert_eq!(seen, ["retry: 1", "event: e\ndata: {}\nid: 1"]);
            assert_eq!(client.partial, b"event: f\ndata");
        });
        assert_eq!(find_blank_line(b"a\nb\n\nc"), Some(3));
        assert_eq!(find_blank_line(b"a\nb\n"), None);
    }
}
