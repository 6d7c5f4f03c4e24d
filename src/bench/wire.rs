//! What the bench client reads off the socket: its bytes counted (the wire cost of a delivery) and,
//! when the server agreed to permessage-deflate, compressed messages inflated before tungstenite sees
//! them (tungstenite has no permessage-deflate and refuses a frame with RSV1 set).
//!
//! [`Wire`] sits between the TCP stream and tungstenite. Until the HTTP response head has gone by, it
//! passes bytes through and reads the head for `Sec-WebSocket-Extensions`. Without the extension it
//! stays a pass-through that counts. With it, every server frame is taken apart: a compressed one
//! (RSV1, FIN) is inflated and handed on as a plain frame of the same opcode, anything else is handed
//! on as it came. The server side of the extension is Herald's: `server_no_context_takeover` is always
//! agreed, so every message inflates on its own, with one inflater per thread reset in between.
//!
//! Inflating costs the generator more than the server's share of a delivery, so at a million
//! deliveries a second the bench, not the server, would be the limit. Only a sample of the clients
//! (`--inflate-sample`) therefore inflates, checks and times every message; the others count each
//! compressed text message as a delivery without opening it, which in the bench's scenarios only
//! stamped events are (everything else the server sends is under its compression threshold).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::counters::Counters;

/// What the client offers: what browsers send.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Largest message inflated (the bench's tungstenite limit is the same).
const MAX_INFLATED: usize = 1 << 20;
/// Most bytes of response head looked at; Herald's is a few hundred.
const MAX_HEAD: usize = 8 * 1024;
const SCRATCH: usize = 16 * 1024;
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    /// One inflater per thread: ~40 KB of state and window, too much to make per message or to keep
    /// per connection when a process holds 19,000 of them.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

enum State {
    /// The response head, read so far.
    Head(Vec<u8>),
    /// After the head, the extension not agreed: bytes pass through.
    Plain,
    /// After the head, the extension agreed: frames are decoded.
    Deflate,
}

pub struct Wire<S> {
    io: S,
    /// Where the bytes read are counted (`wire_bytes`).
    counters: Arc<Counters>,
    state: State,
    /// Bytes read that do not make a whole frame yet (deflate only). Empty between frames.
    raw: BytesMut,
    /// Frames ready for tungstenite (deflate only).
    out: BytesMut,
    /// Whether compressed messages are inflated for the client, or counted and dropped here.
    inflate: bool,
}

impl<S> Wire<S> {
    /// `inflate`: hand compressed messages on inflated; otherwise count each as a delivery and drop it.
    pub fn new(io: S, counters: Arc<Counters>, inflate: bool) -> Self {
        Wire { io, counters, state: State::Head(Vec::new()), raw: BytesMut::new(), out: BytesMut::new(), inflate }
    }

    /// Whether the server's response head agreed to permessage-deflate.
    pub fn deflate_agreed(&self) -> bool {
        matches!(self.state, State::Deflate)
    }

    /// Looks at bytes of the response head; once it is complete, decides the state and returns
    /// how many of `bytes` were head (the rest are frames).
    fn see_head(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let State::Head(head) = &mut self.state else { return Ok(0) };
        let before = head.len();
        head.extend_from_slice(bytes);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > MAX_HEAD {
                return Err(io::Error::other("response head too long"));
            }
            return Ok(bytes.len());
        };
        let agreed = agrees(&head[..end]);
        self.state = if agreed { State::Deflate } else { State::Plain };
        Ok(end + 4 - before)
    }

    /// Moves every whole frame of `raw` into `out`, inflating the compressed ones.
    fn decode_frames(&mut self) -> io::Result<()> {
        while let Some((header_len, payload_len)) = frame_size(&self.raw)? {
            let b0 = self.raw[0];
            if b0 & 0x40 == 0 {
                self.out.extend_from_slice(&self.raw[..header_len + payload_len]);
            } else {
                if b0 & 0x80 == 0 {
                    return Err(io::Error::other("a fragmented compressed message (the bench reads whole ones)"));
                }
                if self.inflate {
                    let text = inflate(&self.raw[header_len..header_len + payload_len])?;
                    push_header(&mut self.out, b0 & !0x40, text.len());
                    self.out.extend_from_slice(&text);
                } else if b0 & 0x0f == 0x1 {
                    Counters::add(&self.counters.delivered, 1);
                    Counters::add(&self.counters.unopened, 1);
                }
            }
            self.raw.advance(header_len + payload_len);
        }
        if self.raw.is_empty() {
            self.raw = BytesMut::new();
        }
        Ok(())
    }
}

/// Whether a response head agrees to permessage-deflate.
fn agrees(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && value.trim().to_ascii_lowercase().starts_with("permessage-deflate")
        })
    })
}

/// `(header length, payload length)` of the server frame at the start of `buf`, once it is all there.
fn frame_size(buf: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let [_, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err(io::Error::other("a masked server frame"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).map_err(|_| io::Error::other("frame too long"))?;
    if len > MAX_INFLATED {
        return Err(io::Error::other("frame too long"));
    }
    Ok((buf.len() >= at + len).then_some((at, len)))
}

fn push_header(out: &mut BytesMut, b0: u8, len: usize) {
    out.extend_from_slice(&[b0]);
    match len {
        0..=125 => out.extend_from_slice(&[len as u8]),
        126..=0xffff => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// One compressed message inflated (the sync-flush tail put back), at most [`MAX_INFLATED`] bytes.
fn inflate(data: &[u8]) -> io::Result<Vec<u8>> {
    let corrupt = || io::Error::other("invalid compressed message");
    INFLATER.with(|cell| {
        let mut d = cell.try_borrow_mut().map_err(|_| corrupt())?;
        d.reset(false);
        let mut out = Vec::with_capacity((data.len() * 4).clamp(256, MAX_INFLATED));
        // Bounded: each round takes input or fills the output, which grows to MAX_INFLATED at most.
        for _ in 0..64 {
            let taken = usize::try_from(d.total_in()).map_err(|_| corrupt())?;
            let rest = if taken < data.len() { &data[taken..] } else { &TAIL[(taken - data.len()).min(4)..] };
            let status = d.decompress_vec(rest, &mut out, FlushDecompress::Sync).map_err(|_| corrupt())?;
            let all_in = d.total_in() as usize >= data.len() + TAIL.len();
            if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                if out.len() >= MAX_INFLATED {
                    return Err(io::Error::other("compressed message inflates past 1 MiB"));
                }
                out.reserve(out.len().min(MAX_INFLATED - out.len()));
            }
        }
        Err(corrupt())
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                if this.out.is_empty() {
                    this.out = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Plain) {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                Counters::add(&this.counters.wire_bytes, (buf.filled().len() - before) as u64);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; SCRATCH];
            let mut read = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let bytes = read.filled();
            if bytes.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let head = this.see_head(bytes)?;
            // The head goes to tungstenite as it is, and is not a delivery's cost.
            this.out.extend_from_slice(&bytes[..head]);
            let frames = &bytes[head..];
            Counters::add(&this.counters.wire_bytes, frames.len() as u64);
            match this.state {
                State::Head(_) => {}
                State::Plain => this.out.extend_from_slice(frames),
                State::Deflate => {
                    this.raw.extend_from_slice(frames);
                    this.decode_frames()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        push_header(&mut out, b0, payload.len());
        out.extend_from_slice(payload);
        out.to_vec()
    }

    async fn read_through(head: &str, frames: &[u8]) -> (Vec<u8>, bool, u64) {
        let (mut server, client) = duplex(1 << 16);
        let counters = Arc::new(Counters::default());
        let mut wire = Wire::new(client, counters.clone(), true);
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(frames);
        // In small pieces, so that heads and frames are cut anywhere.
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(5) {
                server.write_all(chunk).await.unwrap();
            }
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 100];
        loop {
            let n = wire.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        (got, wire.deflate_agreed(), Counters::get(&counters.wire_bytes))
    }

    const HEAD_PLAIN: &str = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
    const HEAD_DEFLATE: &str = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate; \
                                server_no_context_takeover; client_no_context_takeover\r\n\r\n";

    #[tokio::test]
    async fn without_the_extension_bytes_pass_and_are_counted() {
        let frames = [frame(0x81, b"hello"), frame(0x81, &[b'a'; 300])].concat();
        let (got, agreed, counted) = read_through(HEAD_PLAIN, &frames).await;
        assert!(!agreed);
        assert_eq!(got, [HEAD_PLAIN.as_bytes(), &frames].concat());
        assert_eq!(counted, frames.len() as u64);
    }

    #[tokio::test]
    async fn compressed_frames_are_inflated_and_the_wire_counts_compressed_bytes() {
        let text = r#"{"event":"update","channel":"news","data":"{\"items\":[1,2,3,4,5,6,7,8,9]}"}"#.repeat(20);
        let packed = crate::transport::deflate::compress(text.as_bytes(), 15).unwrap();
        let frames = [frame(0x81, b"plain"), frame(0xC1, &packed), frame(0x89, b"")].concat();
        let (got, agreed, counted) = read_through(HEAD_DEFLATE, &frames).await;
        assert!(agreed);
        let expected =
            [HEAD_DEFLATE.as_bytes(), &frame(0x81, b"plain"), &frame(0x81, text.as_bytes()), &frame(0x89, b"")]
                .concat();
        assert_eq!(got, expected);
        assert_eq!(counted, frames.len() as u64);
        assert!(counted < text.len() as u64 / 4);
    }

    /// What the bench's JSON events (both kinds) compress to at each size (BENCHMARKS.md), with the
    /// server's compressor, and what one compression and one inflation take here:
    /// `cargo test --release --lib measure_json_compression -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_json_compression() {
        const EVENTS: usize = 200;
        use crate::bench::{args::PayloadKind, payload};
        for (kind, size) in [PayloadKind::Json, PayloadKind::Eloquent]
            .into_iter()
            .flat_map(|kind| [512, 1024, 2048, 4096, 8192, 16384].map(|size| (kind, size)))
        {
            let events: Vec<String> = (0..EVENTS as u64)
                .map(|seq| {
                    let data = serde_json::to_string(&payload::data(kind, 1, seq, size)).unwrap();
                    format!(r#"{{"event":"bench","channel":"bench-fanout","data":{data}}}"#)
                })
                .collect();
            let started = std::time::Instant::now();
            let packed: Vec<Vec<u8>> = (0..10)
                .flat_map(|_| events.iter())
                .map(|text| crate::transport::deflate::compress(text.as_bytes(), 15).unwrap())
                .collect();
            let compress = started.elapsed() / packed.len() as u32;
            let started = std::time::Instant::now();
            for p in &packed {
                assert!(inflate(p).is_ok());
            }
            let inflate = started.elapsed() / packed.len() as u32;
            let plain = events.iter().map(String::len).sum::<usize>() / EVENTS;
            let out = packed.iter().take(EVENTS).map(Vec::len).sum::<usize>() / EVENTS;
            println!(
                "{kind:?} {size:>6} bytes of JSON data: {plain:>6}-byte event -> {out:>6} bytes ({}%), compress {compress:?}, inflate {inflate:?}",
                out * 100 / plain
            );
        }
    }

    #[tokio::test]
    async fn unsampled_clients_count_compressed_text_unopened() {
        let packed = crate::transport::deflate::compress(&[b'a'; 1000], 15).unwrap();
        let (mut server, client) = duplex(1 << 16);
        let counters = Arc::new(Counters::default());
        let mut wire = Wire::new(client, counters.clone(), false);
        let frames = [frame(0xC1, &packed), frame(0x81, b"plain"), frame(0xC1, &packed), frame(0xC2, &packed)];
        server.write_all(&[HEAD_DEFLATE.as_bytes(), &frames.concat()].concat()).await.unwrap();
        drop(server);
        let mut got = Vec::new();
        wire.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [HEAD_DEFLATE.as_bytes(), &frame(0x81, b"plain")].concat());
        // Two compressed text messages; the binary one is not a delivery.
        assert_eq!((Counters::get(&counters.delivered), Counters::get(&counters.unopened)), (2, 2));
    }

    #[tokio::test]
    async fn corrupt_or_fragmented_compressed_frames_are_errors() {
        for bad in [frame(0xC1, &[0xff, 0xff, 0xff]), frame(0x41, b"xx")] {
            let (mut server, client) = duplex(1 << 16);
            let mut wire = Wire::new(client, Arc::new(Counters::default()), true);
            server.write_all(&[HEAD_DEFLATE.as_bytes(), &bad].concat()).await.unwrap();
            drop(server);
            let mut got = Vec::new();
            assert!(wire.read_to_end(&mut got).await.is_err());
        }
    }
}
