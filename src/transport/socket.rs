//! A server-side WebSocket over any byte stream: reads messages through the [`codec`], writes
//! batches of frames with one vectored write.
//!
//! An idle socket owns no buffer. Reads land in a scratch buffer on the stack of the poll that
//! made them, and only the bytes of an unfinished frame are kept (then freed once it completes).
//! A batch of frames goes out in one system call: small batches joined into one buffer, large ones
//! as each frame's header beside its shared payload (`writev`), so a big broadcast frame is never
//! copied per subscriber.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::codec::{self, Decoded, Decoder, Message, OpCode, ReadError};
use super::deflate::Deflate;

/// Bytes read per poll when no frame is in progress; enough for a typical client message.
const SCRATCH: usize = 2048;
/// Linux refuses a `writev` of more than 1,024 slices.
const MAX_SLICES: usize = 1024;
/// Batches up to this size are copied into one buffer and written with `write`; larger ones go out
/// with `writev` of headers and shared payloads (see BENCHMARKS.md for the measurement).
const JOIN_BELOW: usize = 4 * 1024;
/// Most buffer reserved ahead for a frame still arriving: a peer that announces a large frame and
/// then trickles it gets memory as its bytes come, not all at once from the header.
const MAX_RESERVE: usize = 64 * 1024;

/// One frame to write: its opcode, whether its payload is compressed (RSV1), and the payload.
pub trait WireFrame {
    fn opcode(&self) -> OpCode;
    fn payload(&self) -> &[u8];
    fn compressed(&self) -> bool {
        false
    }
}

impl WireFrame for (OpCode, &[u8]) {
    fn opcode(&self) -> OpCode {
        self.0
    }
    fn payload(&self) -> &[u8] {
        self.1
    }
}

/// `(opcode, compressed, payload)`.
impl WireFrame for (OpCode, bool, &[u8]) {
    fn opcode(&self) -> OpCode {
        self.0
    }
    fn payload(&self) -> &[u8] {
        self.2
    }
    fn compressed(&self) -> bool {
        self.1
    }
}

fn encode_header(header: &mut [u8; codec::MAX_SERVER_HEADER], frame: &impl WireFrame) -> usize {
    let len = codec::encode_header(header, frame.opcode(), frame.payload().len());
    if frame.compressed() {
        header[0] |= codec::RSV1;
    }
    len
}

pub struct WebSocket<S> {
    io: S,
    /// Bytes of a frame that is not complete yet. Empty (and unallocated) between frames.
    pending: BytesMut,
    decoder: Decoder,
    /// The stream ended, failed, or the peer's close frame arrived: nothing more will be read.
    read_done: bool,
    /// A write was interrupted mid-frame: the stream is no longer framed, so nothing more is written.
    write_broken: bool,
    close_sent: bool,
    /// permessage-deflate, when negotiated.
    deflate: Option<Deflate>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps an upgraded stream; `read_ahead` holds bytes the HTTP layer read past the handshake.
    pub fn new(io: S, read_ahead: &[u8], max_message: usize) -> Self {
        WebSocket {
            io,
            pending: BytesMut::from(read_ahead),
            decoder: Decoder::new(max_message),
            read_done: false,
            write_broken: false,
            close_sent: false,
            deflate: None,
        }
    }

    /// Turns permessage-deflate on (as negotiated in the handshake): compressed messages are read,
    /// and the connection may send them.
    pub fn set_deflate(&mut self, deflate: Option<Deflate>) {
        if deflate.is_some() {
            self.decoder.enable_deflate();
        }
        self.deflate = deflate;
    }

    /// The negotiated permessage-deflate, if any.
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    /// The next message; `None` once the stream has ended (EOF, an I/O error, or after the peer's
    /// close frame). After an `Err`, the caller closes with its code.
    ///
    /// Cancel-safe: everything read is kept in `self`, so dropping this future loses nothing.
    pub async fn next(&mut self) -> Option<Result<Message, ReadError>> {
        loop {
            if self.read_done {
                return None;
            }
            let need = match self.decoder.decode(&self.pending) {
                Err(e) => {
                    self.read_done = true;
                    return Some(Err(e));
                }
                Ok(Decoded::NeedMore(need)) => need,
                Ok(Decoded::Fragment { consumed }) => {
                    self.consume(consumed);
                    continue;
                }
                Ok(Decoded::Message { consumed, message }) => {
                    self.consume(consumed);
                    if matches!(message, Message::Close(_)) {
                        self.read_done = true;
                    }
                    return Some(Ok(message));
                }
            };
            match poll_fn(|cx| self.poll_fill(cx, need)).await {
                Ok(0) | Err(_) => {
                    self.read_done = true;
                    return None;
                }
                Ok(_) => {}
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.pending.advance(n);
        if self.pending.is_empty() {
            // Let go of the allocation: an idle socket keeps no buffer.
            self.pending = BytesMut::new();
        }
    }

    /// Reads what is available towards a frame of `need` bytes.
    fn poll_fill(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<io::Result<usize>> {
        if self.pending.is_empty() {
            // Between frames: read into the stack, keep only what arrived.
            let mut scratch = [0u8; SCRATCH];
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            self.pending.extend_from_slice(buf.filled());
            return Poll::Ready(Ok(buf.filled().len()));
        }
        // Mid-frame: read straight into the frame's buffer, grown towards the frame's size.
        let missing = need.saturating_sub(self.pending.len()).clamp(SCRATCH, MAX_RESERVE);
        self.pending.reserve(missing);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.pending)
    }

    /// Writes frames back to back, with one system call when the stream takes vectored writes.
    ///
    /// If this is cancelled after part of a frame went out, the stream is no longer framed: the
    /// socket then refuses every later write (and the connection is dropped without a goodbye).
    pub async fn send_frames<F: WireFrame>(&mut self, frames: &[F]) -> io::Result<()> {
        if self.write_broken || self.close_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total: usize = frames.iter().map(|f| f.payload().len() + codec::MAX_SERVER_HEADER).sum();
        if total <= JOIN_BELOW || !self.io.is_write_vectored() {
            // Small batches (the usual case: a few events of a few hundred bytes) are joined into one
            // buffer: copying them costs less than the kernel walking two slices per frame.
            let mut joined = Vec::with_capacity(total);
            for frame in frames {
                let mut header = [0u8; codec::MAX_SERVER_HEADER];
                let len = encode_header(&mut header, frame);
                joined.extend_from_slice(&header[..len]);
                joined.extend_from_slice(frame.payload());
            }
            let mut rest = &joined[..];
            while !rest.is_empty() {
                let n = poll_fn(|cx| Pin::new(&mut self.io).poll_write(cx, rest)).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                rest = &rest[n..];
                // Part of the batch is out: until the rest is, a cancelled write breaks the framing.
                self.write_broken = !rest.is_empty();
            }
        } else {
            // Large batches: each frame's header beside its shared payload, nothing copied.
            let mut headers = vec![[0u8; codec::MAX_SERVER_HEADER]; frames.len()];
            let mut header_lens = Vec::with_capacity(frames.len());
            for (frame, header) in frames.iter().zip(headers.iter_mut()) {
                header_lens.push(encode_header(header, frame));
            }
            let mut slices = Vec::with_capacity(frames.len() * 2);
            for ((header, len), frame) in headers.iter().zip(&header_lens).zip(frames) {
                slices.push(IoSlice::new(&header[..*len]));
                let payload = frame.payload();
                if !payload.is_empty() {
                    slices.push(IoSlice::new(payload));
                }
            }
            let mut slices = &mut slices[..];
            while !slices.is_empty() {
                let window = slices.len().min(MAX_SLICES);
                let n = poll_fn(|cx| Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..window])).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut slices, n);
                self.write_broken = !slices.is_empty();
            }
        }
        poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx)).await?;
        self.write_broken = false;
        Ok(())
    }

    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.send_frames(&[(OpCode::Text, text)]).await
    }

    pub async fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frames(&[(OpCode::Pong, payload)]).await
    }

    /// Sends a close frame (once): the code, and the reason cut to fit.
    pub async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let payload = codec::close_frame_payload(code, reason);
        self.send_frames(&[(OpCode::Close, &payload[..])]).await?;
        self.close_sent = true;
        Ok(())
    }

    /// Answers the peer's close frame: the same code back (1000 when it gave none).
    pub async fn answer_close(&mut self, theirs: &Option<(u16, String)>) -> io::Result<()> {
        if self.close_sent {
            return Ok(());
        }
        match theirs {
            Some((code, _)) => self.send_close(*code, "").await,
            None => {
                self.send_frames(&[(OpCode::Close, &[][..])]).await?;
                self.close_sent = true;
                Ok(())
            }
        }
    }

    /// Shuts the write side down so the peer sees the end of the stream.
    pub async fn shutdown(&mut self) {
        let _ = poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
    }

    /// Reads and drops whatever the peer still sends until it closes (the caller bounds the time).
    /// Closing a socket with unread input makes the kernel send a reset, which can destroy the
    /// close frame just sent; after a refused frame the rest of it is usually still arriving.
    pub async fn discard_input(&mut self) {
        self.pending = BytesMut::new();
        loop {
            let read = poll_fn(|cx| {
                let mut scratch = [0u8; SCRATCH];
                let mut buf = ReadBuf::new(&mut scratch);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
                Poll::Ready(io::Result::Ok(buf.filled().len()))
            })
            .await;
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        }
    }

    /// Whether reading has ended (end of stream, a refused frame, or the peer's close frame).
    pub fn read_done(&self) -> bool {
        self.read_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        codec::apply_mask(&mut body, mask);
        frame.extend(body);
        frame
    }

    #[tokio::test]
    async fn reads_frames_split_and_joined_across_reads_and_frees_its_buffer() {
        let (mut client, server) = duplex(64);
        let mut ws = WebSocket::new(server, &masked(0x1, b"ahead"), 1 << 16);
        assert_eq!(ws.next().await, Some(Ok(Message::Text("ahead".into()))));
        assert_eq!(ws.pending.capacity(), 0, "no buffer kept between messages");
        let big = vec![b'z'; 5000];
        let mut bytes = masked(0x1, b"one");
        bytes.extend(masked(0x2, &big));
        bytes.extend(masked(0x9, b"ping"));
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(7) {
                client.write_all(chunk).await.unwrap();
            }
            client
        });
        assert_eq!(ws.next().await, Some(Ok(Message::Text("one".into()))));
        assert_eq!(ws.next().await, Some(Ok(Message::Binary(big))));
        assert_eq!(ws.next().await, Some(Ok(Message::Ping(b"ping".to_vec()))));
        assert_eq!(ws.pending.capacity(), 0);
        drop(writer.await.unwrap());
        assert_eq!(ws.next().await, None, "end of stream");
    }

    #[tokio::test]
    async fn writes_frames_back_to_back_and_closes_once() {
        let (mut client, server) = duplex(1 << 16);
        let mut ws = WebSocket::new(server, &[], 1024);
        let long = vec![b'x'; 300];
        let frames: [(OpCode, &[u8]); 3] = [(OpCode::Text, b"hi"), (OpCode::Binary, &long), (OpCode::Ping, b"")];
        ws.send_frames(&frames).await.unwrap();
        ws.send_close(4100, "slow").await.unwrap();
        assert!(ws.send_text(b"after close").await.is_err());
        drop(ws);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let mut expected = vec![0x81, 2, b'h', b'i', 0x82, 126, 1, 44];
        expected.extend(&long);
        expected.extend([0x89, 0, 0x88, 6, 0x10, 0x04]);
        expected.extend(b"slow");
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn large_batches_go_out_vectored_and_arrive_intact() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut ws = WebSocket::new(server, &[], 1024);
        assert!(ws.io.is_write_vectored());
        let payloads: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 10_000]).collect();
        let frames: Vec<(OpCode, &[u8])> = payloads.iter().map(|p| (OpCode::Text, &p[..])).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 3 * (4 + 10_000)];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        ws.send_frames(&frames).await.unwrap();
        let got = reader.await.unwrap();
        for (i, frame) in got.chunks(4 + 10_000).enumerate() {
            assert_eq!(frame[..4], [0x81, 126, 0x27, 0x10], "frame {i}");
            assert!(frame[4..].iter().all(|b| *b == b'a' + i as u8), "frame {i}");
        }
    }

    #[tokio::test]
    async fn a_bad_frame_ends_reading_with_its_error() {
        let (mut client, server) = duplex(64);
        let mut ws = WebSocket::new(server, &[], 1024);
        client.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap(); // unmasked
        assert!(matches!(ws.next().await, Some(Err(ReadError::Protocol(_)))));
        assert_eq!(ws.next().await, None);
    }
}
