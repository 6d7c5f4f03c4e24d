//! permessage-deflate (RFC 7692): the offer negotiation, pure, and the compress / inflate glue over
//! flate2.
//!
//! Herald always answers `server_no_context_takeover` and `client_no_context_takeover`: every
//! message is compressed on its own, so one compressed copy of a broadcast serves every subscriber,
//! and no connection keeps a deflate or inflate window between messages (an idle socket's memory
//! does not grow). A client's `client_max_window_bits` needs nothing from the server (inflating with
//! a 32 KB window reads any smaller one) and is not echoed; `server_max_window_bits` is honoured
//! for 9 to 15 bits. 8 bits cannot be (zlib refuses a 256-byte window for raw deflate), so such an
//! offer is declined and the next one considered.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::codec::ReadError;

/// The tail a sync flush ends with, stripped from every compressed message (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The largest window, and the one every compressed broadcast is shared at.
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest server window flate2 (zlib-rs) can produce for raw deflate.
const MIN_SERVER_WINDOW_BITS: u8 = 9;
/// zlib's default level. Measured on Pusher-shaped JSON (`measure_compression` below), level 1 is
/// 2.5-3.5x faster (7 against 16 us at 500 bytes, 16 against 48 us at 5 KB) but its output is 15-45%
/// larger; a broadcast is compressed once for all its subscribers, so the bytes matter more.
const LEVEL: u32 = 6;

/// What a connection agreed to: compress outgoing messages of at least `threshold` bytes with a
/// window of `server_window_bits`, inflate what arrives with RSV1 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    pub server_window_bits: u8,
    pub threshold: usize,
}

/// Bench-only: built with `--features bench-per-subscriber-compression`, every subscriber
/// compresses each broadcast for itself, as a server without a shared compressed copy does. It
/// exists so that BENCHMARKS.md can measure what compress-once saves; never build a server with it.
const PER_SUBSCRIBER: bool = cfg!(feature = "bench-per-subscriber-compression");

impl Deflate {
    /// Whether this connection sends a broadcast's shared compressed copy: that copy is made at the
    /// full window, so a smaller agreed window compresses for the connection alone (as does the
    /// bench-only per-subscriber build).
    pub fn shares_broadcasts(&self) -> bool {
        self.server_window_bits == MAX_WINDOW_BITS && !PER_SUBSCRIBER
    }
}

/// An accepted offer: the window the server compresses with, and the response header's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub server_window_bits: u8,
    pub response: String,
}

/// Picks the first acceptable `permessage-deflate` offer among the client's
/// `Sec-WebSocket-Extensions` header values; `None` when there is none (answer without it).
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    for header in headers {
        for extension in split_outside_quotes(header, ',') {
            let mut parts = split_outside_quotes(extension, ';').into_iter();
            let name = parts.next().unwrap_or_default().trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                continue;
            }
            if let Some(agreement) = accept_offer(parts) {
                return Some(agreement);
            }
        }
    }
    None
}

/// Checks one offer's parameters (RFC 7692 section 7.1): unknown, repeated or malformed ones
/// decline it, and so does a server window the compressor cannot honour.
fn accept_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreement> {
    let (mut server_nct, mut client_nct) = (false, false);
    let (mut server_bits, mut client_bits): (Option<u8>, Option<Option<u8>>) = (None, None);
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if !server_nct && value.is_none() => server_nct = true,
            "client_no_context_takeover" if !client_nct && value.is_none() => client_nct = true,
            "server_max_window_bits" if server_bits.is_none() => server_bits = Some(window_bits(value?)?),
            "client_max_window_bits" if client_bits.is_none() => {
                client_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                })
            }
            _ => return None,
        }
    }
    let server_window_bits = match server_bits {
        Some(bits) if bits < MIN_SERVER_WINDOW_BITS => return None,
        Some(bits) => bits,
        None => MAX_WINDOW_BITS,
    };
    let mut response = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if server_bits.is_some() {
        response.push_str(&format!("; server_max_window_bits={server_window_bits}"));
    }
    Some(Agreement { server_window_bits, response })
}

/// A window size: a decimal 8 to 15 without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// A parameter value: a token, or a quoted string whose content is a token (RFC 7692 section 7.1).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => Some(value),
    }
}

/// Splits on `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

thread_local! {
    /// One compressor per window size per thread, reset between messages: a compressor is ~256 KB
    /// of tables, too much to allocate per message and never held by a connection.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
}

thread_local! {
    /// One inflater per thread, reset between messages: setting one up (its state and 32 KB window)
    /// cost more than inflating a client's typical small message, and no connection holds one.
    static INFLATERS: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// One message compressed on its own (no context carried over), the sync-flush tail removed.
/// `None` when compressing does not make it smaller (it then goes out as it is).
pub fn compress(data: &[u8], window_bits: u8) -> Option<Vec<u8>> {
    let bits = window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
    let out = COMPRESSORS.with(|cell| {
        let mut slots = cell.try_borrow_mut().ok()?;
        let slot = &mut slots[usize::from(bits - MIN_SERVER_WINDOW_BITS)];
        let compressor =
            slot.get_or_insert_with(|| Compress::new_with_window_bits(Compression::new(LEVEL), false, bits));
        compressor.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        // Each round either takes input or fills the output's free space; bounded all the same.
        for _ in 0..data.len() / 64 + 64 {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            let taken = usize::try_from(compressor.total_in()).ok()?;
            let rest = data.get(taken..)?;
            compressor.compress_vec(rest, &mut out, FlushCompress::Sync).ok()?;
            if compressor.total_in() as usize == data.len() && out.len() < out.capacity() {
                return Some(out);
            }
        }
        None
    })?;
    let mut out = out;
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    (out.len() < data.len()).then_some(out)
}

/// Inflates one message (the tail put back), refusing it with [`ReadError::TooBig`] as soon as the
/// output would pass `max`: a small frame that inflates to gigabytes is stopped at `max` bytes.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, ReadError> {
    INFLATERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let inflater = slot.get_or_insert_with(|| Decompress::new(false));
            inflater.reset(false);
            inflate_with(inflater, data, max)
        }
        // Not reached (nothing inflates while inflating), but a fresh inflater is always correct.
        Err(_) => inflate_with(&mut Decompress::new(false), data, max),
    })
}

fn inflate_with(inflater: &mut Decompress, data: &[u8], max: usize) -> Result<Vec<u8>, ReadError> {
    const CORRUPT: ReadError = ReadError::Protocol("Invalid compressed data");
    let mut out = Vec::new();
    let input_len = data.len() + TAIL.len();
    let mut stalled = 0;
    loop {
        let taken = inflater.total_in() as usize;
        // The message, then the tail: fed as two slices without copying the message.
        let input: &[u8] = if taken < data.len() { &data[taken..] } else { &TAIL[(taken - data.len()).min(4)..] };
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(ReadError::TooBig);
            }
            // Grow towards the limit, never past max + 1 (one byte over proves the message too big).
            let step = (out.len().max(data.len() * 2)).clamp(4096, 1 << 20);
            out.reserve_exact(step.min(max + 1 - out.len()));
        }
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let status = inflater.decompress_vec(input, &mut out, FlushDecompress::Sync).map_err(|_| CORRUPT)?;
        if out.len() > max {
            return Err(ReadError::TooBig);
        }
        let done_in = inflater.total_in() as usize >= input_len;
        if status == Status::StreamEnd || (done_in && out.len() < out.capacity()) {
            return Ok(out);
        }
        if inflater.total_in() == in_before && inflater.total_out() == out_before {
            // No progress with room to write: the input is truncated or stuck.
            stalled += 1;
            if stalled > 1 || out.len() < out.capacity() {
                return Err(CORRUPT);
            }
        } else {
            stalled = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(header: &str) -> Option<String> {
        negotiate([header]).map(|a| a.response)
    }

    const PLAIN: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn no_offer_no_extension() {
        assert_eq!(negotiate([]), None);
        assert_eq!(offer(""), None);
        assert_eq!(offer("x-webkit-deflate-frame"), None);
    }

    #[test]
    fn a_plain_offer_gets_both_no_context_takeovers() {
        let agreed = negotiate(["permessage-deflate"]).unwrap();
        assert_eq!(agreed.response, PLAIN);
        assert_eq!(agreed.server_window_bits, 15);
        assert_eq!(offer("Permessage-Deflate"), Some(PLAIN.into()));
        assert_eq!(
            offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            Some(PLAIN.into())
        );
    }

    #[test]
    fn client_max_window_bits_needs_nothing_from_the_server() {
        // What browsers send: the server inflates with the full window, so the value is not echoed.
        assert_eq!(offer("permessage-deflate; client_max_window_bits"), Some(PLAIN.into()));
        assert_eq!(offer("permessage-deflate; client_max_window_bits=10"), Some(PLAIN.into()));
        assert_eq!(offer("permessage-deflate; client_max_window_bits=\"8\""), Some(PLAIN.into()));
    }

    #[test]
    fn server_max_window_bits_is_honoured_from_9_to_15() {
        for bits in 9..=15u8 {
            let agreed = negotiate([format!("permessage-deflate; server_max_window_bits={bits}").as_str()]).unwrap();
            assert_eq!(agreed.server_window_bits, bits);
            assert_eq!(agreed.response, format!("{PLAIN}; server_max_window_bits={bits}"));
        }
    }

    #[test]
    fn an_offer_that_cannot_be_honoured_falls_through_to_the_next() {
        assert_eq!(offer("permessage-deflate; server_max_window_bits=8"), None);
        let agreed = negotiate(["permessage-deflate; server_max_window_bits=8, permessage-deflate"]).unwrap();
        assert_eq!((agreed.response.as_str(), agreed.server_window_bits), (PLAIN, 15));
        // Offers spread over several header lines are considered in order.
        let agreed = negotiate(["foo, permessage-deflate; bogus", "permessage-deflate; server_max_window_bits=10"]);
        assert_eq!(agreed.map(|a| a.server_window_bits), Some(10));
    }

    #[test]
    fn malformed_offers_are_declined() {
        for bad in [
            "permessage-deflate; bogus",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1x",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"\"",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
    }

    #[test]
    fn quoted_commas_do_not_split_offers() {
        assert_eq!(offer("foo; x=\"a, permessage-deflate\""), None);
        assert_eq!(offer("foo; x=\"a, b\", permessage-deflate"), Some(PLAIN.into()));
    }

    #[test]
    fn broadcasts_share_their_compressed_copy_at_the_full_window_only() {
        let agreed = |bits| Deflate { server_window_bits: bits, threshold: 256 };
        assert_eq!(agreed(15).shares_broadcasts(), !PER_SUBSCRIBER);
        assert!(!agreed(10).shares_broadcasts());
    }

    #[test]
    fn compress_then_inflate_round_trips_at_every_window() {
        let json = r#"{"event":"order.shipped","channel":"orders","data":"{\"id\":12345,\"items\":[1,2,3]}"}"#;
        let text = json.repeat(80);
        for bits in 9..=15 {
            let packed = compress(text.as_bytes(), bits).unwrap();
            assert!(packed.len() < text.len() / 4, "{bits}: {}", packed.len());
            assert!(!packed.ends_with(&TAIL));
            assert_eq!(inflate(&packed, text.len()).unwrap(), text.as_bytes(), "{bits}");
        }
        // Incompressible bytes are left as they are.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(compress(&noise, 15), None);
        assert_eq!(compress(b"", 15), None);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let big = vec![b'a'; 10 << 20];
        let packed = compress(&big, 15).unwrap();
        assert!(packed.len() < 20_000);
        assert_eq!(inflate(&packed, 100_000), Err(ReadError::TooBig));
        assert_eq!(inflate(&packed, big.len() - 1), Err(ReadError::TooBig));
        assert_eq!(inflate(&packed, big.len()).map(|v| v.len()), Ok(big.len()));
    }

    #[test]
    fn corrupt_and_final_block_input() {
        assert!(matches!(inflate(&[0xff, 0xff, 0xff], 1000), Err(ReadError::Protocol(_))));
        // A message ended with a final block (BFINAL) instead of a sync flush is also valid.
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(100);
        c.compress_vec(b"hello", &mut out, FlushCompress::Finish).unwrap();
        assert_eq!(inflate(&out, 1000).unwrap(), b"hello");
        // The empty message: just the tail's worth.
        assert_eq!(inflate(&[0x00], 1000).unwrap(), b"");
    }

    /// Inflating a client's small message (a ping or a client event, as browsers compress every
    /// message they send): the instructions one inflation costs, for callgrind.
    /// `valgrind --tool=callgrind target/release/deps/herald-* --ignored --exact transport::deflate::tests::measure_inflate_small`
    #[test]
    #[ignore]
    fn measure_inflate_small() {
        let event = br#"{"event":"client-typing","channel":"private-chat.42","data":{"user":"ada","at":1733000000}}"#;
        let packed = compress(event, 15).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            assert_eq!(inflate(&packed, 1 << 16).unwrap().len(), event.len());
        }
        println!("{:?} per inflation of {} bytes", started.elapsed() / 10_000, packed.len());
    }

    /// The measurement behind the default `compression_threshold` (README, Compression): for
    /// Pusher events of growing size, bytes saved and the time one compression takes.
    /// `cargo test --release --lib measure_compression -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_compression() {
        for size in [64, 128, 192, 256, 384, 512, 1024, 4096, 16384] {
            let mut data = String::new();
            let mut i = 0;
            while data.len() < size {
                data.push_str(&format!(
                    r#"{{"id":{i},"user":"user-{i}","status":"online","score":{}}},"#,
                    i * 37 % 1000
                ));
                i += 1;
            }
            data.truncate(size.saturating_sub(60));
            let frame = crate::protocol::Frame::event("App\\Events\\StatusChanged", "presence-room.42", &data);
            let text = frame.as_bytes();
            let rounds = 20_000;
            let started = std::time::Instant::now();
            let mut out = 0;
            for _ in 0..rounds {
                out = compress(text, 15).map_or(text.len(), |c| c.len());
            }
            let each = started.elapsed() / rounds;
            println!(
                "{:>6} bytes -> {:>6} ({:>3}%), {:?} per compression",
                text.len(),
                out,
                out * 100 / text.len(),
                each
            );
        }
    }
}
