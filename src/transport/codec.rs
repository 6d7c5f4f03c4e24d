//! RFC 6455 framing for the server side, pure: bytes in, messages out, no I/O.
//!
//! The decoder checks everything a frame header can tell before a payload byte is buffered
//! (masking, reserved bits and opcodes, control-frame rules, the message size limit), so a peer
//! that announces a huge or malformed frame is refused without the server allocating for it.

use std::fmt;

/// The longest header a client frame can have: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// The longest header a server frame can have (servers never mask).
pub const MAX_SERVER_HEADER: usize = 10;
/// The first header byte's RSV1 bit: the message is compressed (permessage-deflate).
pub const RSV1: u8 = 0x40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A complete message from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer's close frame: its status code and reason, if it gave one.
    Close(Option<(u16, String)>),
}

impl Message {
    /// Payload bytes, for metrics.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(c) => c.as_ref().map_or(0, |(_, r)| 2 + r.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the peer's input was refused; each maps to the close code RFC 6455 gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// A framing rule was broken (close 1002).
    Protocol(&'static str),
    /// A message or frame over the size limit (close 1009).
    TooBig,
    /// A text message or close reason that is not UTF-8 (close 1007).
    InvalidUtf8,
}

impl ReadError {
    pub fn close_code(self) -> u16 {
        match self {
            ReadError::Protocol(_) => 1002,
            ReadError::TooBig => 1009,
            ReadError::InvalidUtf8 => 1007,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ReadError::Protocol(why) => why,
            ReadError::TooBig => "Message too big",
            ReadError::InvalidUtf8 => "Invalid UTF-8",
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// What one call to [`Decoder::decode`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole frame yet; at least this many bytes are needed in all.
    NeedMore(usize),
    /// A frame of `consumed` bytes that did not finish a message (a fragment).
    Fragment { consumed: usize },
    /// A frame of `consumed` bytes that finished a message.
    Message { consumed: usize, message: Message },
}

/// Reassembles client frames into messages, with the size limit and UTF-8 checked as they arrive.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress.
    partial: Option<Partial>,
    /// permessage-deflate was negotiated: RSV1 on a message's first frame means it is compressed.
    deflate: bool,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    /// The message is compressed: `data` is deflate bytes, inflated (and UTF-8 checked) at its end.
    compressed: bool,
    data: Vec<u8>,
    /// How much of `data` is known to be valid UTF-8 (text only), so a bad fragment fails at once.
    utf8_valid_up_to: usize,
}

struct Header {
    fin: bool,
    /// RSV1 on a data message's first frame (only accepted when deflate was negotiated).
    compressed: bool,
    opcode: OpCode,
    /// Header length, mask included.
    header_len: usize,
    payload_len: usize,
    mask: [u8; 4],
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max_message, partial: None, deflate: false }
    }

    /// Accepts compressed messages (RSV1 on their first frame): permessage-deflate was negotiated.
    pub fn enable_deflate(&mut self) {
        self.deflate = true;
    }

    /// Decodes at most one frame from the front of `buf`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, ReadError> {
        let header = match self.header(buf)? {
            Ok(header) => header,
            Err(need) => return Ok(Decoded::NeedMore(need)),
        };
        let frame_len = header.header_len.checked_add(header.payload_len).ok_or(ReadError::TooBig)?;
        if buf.len() < frame_len {
            return Ok(Decoded::NeedMore(frame_len));
        }
        let payload = &buf[header.header_len..frame_len];
        let consumed = frame_len;
        let message = match header.opcode {
            OpCode::Ping => Message::Ping(unmasked(payload, header.mask)),
            OpCode::Pong => Message::Pong(unmasked(payload, header.mask)),
            OpCode::Close => Message::Close(close_payload(&unmasked(payload, header.mask))?),
            OpCode::Text | OpCode::Binary if header.fin => {
                let mut data = unmasked(payload, header.mask);
                if header.compressed {
                    data = super::deflate::inflate(&data, self.max_message)?;
                }
                if header.opcode == OpCode::Binary {
                    Message::Binary(data)
                } else {
                    Message::Text(String::from_utf8(data).map_err(|_| ReadError::InvalidUtf8)?)
                }
            }
            OpCode::Text | OpCode::Binary => {
                let text = header.opcode == OpCode::Text;
                let data = unmasked(payload, header.mask);
                let mut partial = Partial { text, compressed: header.compressed, data, utf8_valid_up_to: 0 };
                partial.check_utf8()?;
                self.partial = Some(partial);
                return Ok(Decoded::Fragment { consumed });
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ReadError::Protocol("Continuation frame without a message to continue"));
                };
                let start = partial.data.len();
                partial.data.extend_from_slice(payload);
                apply_mask(&mut partial.data[start..], header.mask);
                partial.check_utf8()?;
                if !header.fin {
                    return Ok(Decoded::Fragment { consumed });
                }
                let Some(Partial { text, compressed, mut data, .. }) = self.partial.take() else {
                    return Err(ReadError::Protocol("Continuation frame without a message to continue"));
                };
                if compressed {
                    data = super::deflate::inflate(&data, self.max_message)?;
                }
                if text {
                    Message::Text(String::from_utf8(data).map_err(|_| ReadError::InvalidUtf8)?)
                } else {
                    Message::Binary(data)
                }
            }
        };
        Ok(Decoded::Message { consumed, message })
    }

    /// Parses and checks the header; `Ok(Err(n))` when fewer than `n` bytes are there to read it.
    fn header(&self, buf: &[u8]) -> Result<Result<Header, usize>, ReadError> {
        let [b0, b1, ..] = *buf else { return Ok(Err(2)) };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x30 != 0 {
            return Err(ReadError::Protocol("Reserved bits set without an extension"));
        }
        let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ReadError::Protocol("Reserved opcode"))?;
        let compressed = b0 & RSV1 != 0;
        if compressed && !self.deflate {
            return Err(ReadError::Protocol("Reserved bits set without an extension"));
        }
        if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(ReadError::Protocol("RSV1 set on a control or continuation frame"));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("Client frames must be masked"));
        }
        let (payload_len, len_end) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(Err(4)),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(b);
                    let len = u64::from_be_bytes(len);
                    if len >> 63 != 0 {
                        return Err(ReadError::Protocol("Frame length with the most significant bit set"));
                    }
                    (len, 10)
                }
                None => return Ok(Err(10)),
            },
            short => (u64::from(short), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ReadError::Protocol("Fragmented control frame"));
            }
            if payload_len > 125 {
                return Err(ReadError::Protocol("Control frame longer than 125 bytes"));
            }
        } else {
            match (opcode, &self.partial) {
                (OpCode::Continuation, None) => {
                    return Err(ReadError::Protocol("Continuation frame without a message to continue"))
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ReadError::Protocol("New message before the previous one ended"))
                }
                _ => {}
            }
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
            let room = self.max_message.saturating_sub(so_far) as u64;
            if payload_len > room {
                return Err(ReadError::TooBig);
            }
        }
        let header_len = len_end + 4;
        let Some(mask) = buf.get(len_end..header_len) else { return Ok(Err(header_len)) };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        // Fits: a control frame is at most 125 bytes and a data frame at most `max_message`.
        let payload_len = usize::try_from(payload_len).map_err(|_| ReadError::TooBig)?;
        Ok(Ok(Header { fin, compressed, opcode, header_len, payload_len, mask }))
    }
}

impl Partial {
    fn check_utf8(&mut self) -> Result<(), ReadError> {
        if !self.text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.utf8_valid_up_to..]) {
            Ok(_) => self.utf8_valid_up_to = self.data.len(),
            // A character cut at the fragment's end is fine; a wrong byte is not.
            Err(e) if e.error_len().is_none() => self.utf8_valid_up_to += e.valid_up_to(),
            Err(_) => return Err(ReadError::InvalidUtf8),
        }
        Ok(())
    }
}

fn unmasked(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut data = payload.to_vec();
    apply_mask(&mut data, mask);
    data
}

/// XORs `data` with the frame's mask, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A close frame's status code and reason (RFC 6455 section 5.5.1 and 7.4).
fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("Close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(ReadError::Protocol("Invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Codes a peer may send: the ones RFC 6455 and the IANA registry define for use on the wire, and
/// the ranges for libraries (3000-3999) and applications (4000-4999).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Writes a server frame's header (FIN set, unmasked) into `out`; returns its length.
pub fn encode_header(out: &mut [u8; MAX_SERVER_HEADER], opcode: OpCode, payload_len: usize) -> usize {
    out[0] = 0x80 | opcode.bits();
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// A close frame's payload: the code, then the reason cut to fit a control frame.
pub fn close_frame_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        let mut body = payload.to_vec();
        apply_mask(&mut body, MASK);
        frame.extend_from_slice(&body);
        frame
    }

    fn message(decoder: &mut Decoder, bytes: &[u8]) -> Result<Message, ReadError> {
        match decoder.decode(bytes)? {
            Decoded::Message { consumed, message } => {
                assert_eq!(consumed, bytes.len());
                Ok(message)
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 section 5.7: a masked "Hello".
        let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(message(&mut Decoder::new(1024), &frame), Ok(Message::Text("Hello".into())));
    }

    #[test]
    fn every_length_encoding_round_trips() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(true, 0x2, &payload);
            assert_eq!(message(&mut Decoder::new(1 << 20), &frame), Ok(Message::Binary(payload)), "{len}");
        }
    }

    #[test]
    fn partial_input_asks_for_more_and_consumes_nothing() {
        let frame = client_frame(true, 0x1, &[b'x'; 300]);
        let mut decoder = Decoder::new(1024);
        assert_eq!(decoder.decode(&frame[..1]), Ok(Decoded::NeedMore(2)));
        assert_eq!(decoder.decode(&frame[..3]), Ok(Decoded::NeedMore(4)));
        assert_eq!(decoder.decode(&frame[..6]), Ok(Decoded::NeedMore(8)));
        assert_eq!(decoder.decode(&frame[..100]), Ok(Decoded::NeedMore(frame.len())));
        assert!(matches!(decoder.decode(&frame), Ok(Decoded::Message { .. })));
    }

    #[test]
    fn two_frames_in_one_buffer_decode_one_at_a_time() {
        let mut bytes = client_frame(true, 0x1, b"one");
        let first = bytes.len();
        bytes.extend(client_frame(true, 0x1, b"two"));
        let mut decoder = Decoder::new(1024);
        assert_eq!(
            decoder.decode(&bytes),
            Ok(Decoded::Message { consumed: first, message: Message::Text("one".into()) })
        );
        assert_eq!(message(&mut decoder, &bytes[first..]), Ok(Message::Text("two".into())));
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut decoder = Decoder::new(1024);
        let first = client_frame(false, 0x1, b"Hel");
        assert_eq!(decoder.decode(&first), Ok(Decoded::Fragment { consumed: first.len() }));
        assert_eq!(message(&mut decoder, &client_frame(true, 0x9, b"p")), Ok(Message::Ping(b"p".to_vec())));
        let middle = client_frame(false, 0x0, b"lo, ");
        assert_eq!(decoder.decode(&middle), Ok(Decoded::Fragment { consumed: middle.len() }));
        assert_eq!(message(&mut decoder, &client_frame(true, 0x0, b"world")), Ok(Message::Text("Hello, world".into())));
    }

    #[test]
    fn framing_violations_are_protocol_errors() {
        let protocol = |bytes: &[u8]| matches!(Decoder::new(1024).decode(bytes), Err(ReadError::Protocol(_)));
        let mut unmasked = client_frame(true, 0x1, b"hi");
        unmasked[1] &= 0x7F;
        assert!(protocol(&unmasked), "unmasked client frame");
        let mut rsv = client_frame(true, 0x1, b"hi");
        rsv[0] |= 0x40;
        assert!(protocol(&rsv), "RSV1 without an extension");
        assert!(protocol(&client_frame(true, 0x3, b"")), "reserved data opcode");
        assert!(protocol(&client_frame(true, 0xB, b"")), "reserved control opcode");
        assert!(protocol(&client_frame(false, 0x9, b"")), "fragmented ping");
        assert!(protocol(&client_frame(true, 0x9, &[0; 126])), "126-byte ping");
        assert!(protocol(&client_frame(true, 0x0, b"x")), "continuation with nothing to continue");
        assert!(protocol(&client_frame(true, 0x8, &[3])), "one-byte close payload");
        assert!(protocol(&client_frame(true, 0x8, &1005u16.to_be_bytes())), "close code 1005 on the wire");
        let mut decoder = Decoder::new(1024);
        decoder.decode(&client_frame(false, 0x1, b"a")).unwrap();
        assert!(matches!(decoder.decode(&client_frame(true, 0x1, b"b")), Err(ReadError::Protocol(_))));
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        // Only the header of a 1 MiB frame: refused before any payload arrives.
        let frame = client_frame(true, 0x2, &vec![0; 1 << 20]);
        assert_eq!(Decoder::new(1024).decode(&frame[..MAX_CLIENT_HEADER]), Err(ReadError::TooBig));
        // Fragments add up against the same limit.
        let mut decoder = Decoder::new(10);
        decoder.decode(&client_frame(false, 0x2, &[0; 6])).unwrap();
        assert_eq!(decoder.decode(&client_frame(true, 0x0, &[0; 5])), Err(ReadError::TooBig));
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(Decoder::new(1024).decode(&huge), Err(ReadError::Protocol(_))));
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_breaks_it() {
        let mut decoder = Decoder::new(1024);
        // "€" is E2 82 AC: cut across two fragments is fine.
        decoder.decode(&client_frame(false, 0x1, &[b'a', 0xE2])).unwrap();
        decoder.decode(&client_frame(false, 0x0, &[0x82])).unwrap();
        assert_eq!(message(&mut decoder, &client_frame(true, 0x0, &[0xAC])), Ok(Message::Text("a€".into())));
        // A byte that can never be valid fails before the message ends.
        let mut decoder = Decoder::new(1024);
        assert_eq!(decoder.decode(&client_frame(false, 0x1, &[b'a', 0xFF])), Err(ReadError::InvalidUtf8));
        // A message that ends mid-character fails at its end.
        let mut decoder = Decoder::new(1024);
        decoder.decode(&client_frame(false, 0x1, &[0xE2])).unwrap();
        assert_eq!(decoder.decode(&client_frame(true, 0x0, &[0x82])), Err(ReadError::InvalidUtf8));
        assert_eq!(Decoder::new(1024).decode(&client_frame(true, 0x1, &[0xC0, 0xAF])), Err(ReadError::InvalidUtf8));
        // Binary messages are not checked.
        assert_eq!(
            message(&mut Decoder::new(1024), &client_frame(true, 0x2, &[0xFF])),
            Ok(Message::Binary(vec![0xFF]))
        );
    }

    #[test]
    fn close_frames() {
        let close = |payload: &[u8]| Decoder::new(1024).decode(&client_frame(true, 0x8, payload));
        assert_eq!(close(&[]), Ok(Decoded::Message { consumed: 6, message: Message::Close(None) }));
        let mut normal = 1000u16.to_be_bytes().to_vec();
        normal.extend_from_slice(b"bye");
        assert!(
            matches!(close(&normal), Ok(Decoded::Message { message: Message::Close(Some((1000, ref r))), .. }) if r == "bye")
        );
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xFF);
        assert_eq!(close(&bad_reason), Err(ReadError::InvalidUtf8));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
            assert!(!close_code_allowed(code), "{code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(close_code_allowed(code), "{code}");
        }
    }

    /// A compressed client message: raw deflate, the sync-flush tail stripped, RSV1 set.
    fn compressed_frame(fin: bool, opcode: u8, text: &[u8]) -> Vec<u8> {
        let packed = super::super::deflate::compress(text, 15).unwrap();
        let mut frame = client_frame(fin, opcode, &packed);
        frame[0] |= RSV1;
        frame
    }

    #[test]
    fn compressed_messages_inflate_only_when_negotiated() {
        let text = "{\"event\":\"pusher:subscribe\"}".repeat(20);
        let frame = compressed_frame(true, 0x1, text.as_bytes());
        assert!(matches!(Decoder::new(1024).decode(&frame), Err(ReadError::Protocol(_))), "not negotiated");
        let mut decoder = Decoder::new(1024);
        decoder.enable_deflate();
        assert_eq!(message(&mut decoder, &frame), Ok(Message::Text(text.clone())));
        // Uncompressed messages still pass on a deflate connection.
        assert_eq!(message(&mut decoder, &client_frame(true, 0x1, b"hi")), Ok(Message::Text("hi".into())));
        // Compressed and fragmented: RSV1 on the first frame only.
        let packed = super::super::deflate::compress(text.as_bytes(), 15).unwrap();
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut first = client_frame(false, 0x2, a);
        first[0] |= RSV1;
        assert_eq!(decoder.decode(&first), Ok(Decoded::Fragment { consumed: first.len() }));
        assert_eq!(message(&mut decoder, &client_frame(true, 0x0, b)), Ok(Message::Binary(text.clone().into_bytes())));
        // RSV1 on a continuation or a control frame stays a protocol error.
        decoder.decode(&client_frame(false, 0x1, b"x")).unwrap();
        let mut cont = client_frame(true, 0x0, b"y");
        cont[0] |= RSV1;
        assert!(matches!(decoder.decode(&cont), Err(ReadError::Protocol(_))));
        let mut decoder = Decoder::new(1024);
        decoder.enable_deflate();
        let mut ping = client_frame(true, 0x9, b"");
        ping[0] |= RSV1;
        assert!(matches!(decoder.decode(&ping), Err(ReadError::Protocol(_))));
        // RSV2 and RSV3 are never accepted.
        let mut rsv2 = client_frame(true, 0x1, b"hi");
        rsv2[0] |= 0x20;
        assert!(matches!(decoder.decode(&rsv2), Err(ReadError::Protocol(_))));
    }

    #[test]
    fn a_compressed_message_inflating_past_the_limit_is_too_big() {
        let mut decoder = Decoder::new(1000);
        decoder.enable_deflate();
        assert_eq!(decoder.decode(&compressed_frame(true, 0x1, &[b'a'; 100_000])), Err(ReadError::TooBig));
        // Inflated text is checked for UTF-8 like any text.
        let mut decoder = Decoder::new(1000);
        decoder.enable_deflate();
        assert_eq!(decoder.decode(&compressed_frame(true, 0x1, &[0xFF; 200])), Err(ReadError::InvalidUtf8));
    }

    #[test]
    fn server_headers() {
        let mut out = [0u8; MAX_SERVER_HEADER];
        assert_eq!(encode_header(&mut out, OpCode::Text, 5), 2);
        assert_eq!(out[..2], [0x81, 5]);
        assert_eq!(encode_header(&mut out, OpCode::Binary, 300), 4);
        assert_eq!(out[..4], [0x82, 126, 1, 44]);
        assert_eq!(encode_header(&mut out, OpCode::Close, 70000), 10);
        assert_eq!(out[..10], [0x88, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn close_reasons_are_cut_on_a_character_boundary() {
        let payload = close_frame_payload(4100, &"é".repeat(100));
        assert!(payload.len() <= 125);
        assert_eq!(&payload[..2], &4100u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn masking_matches_a_byte_loop_at_every_length_and_offset() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, MASK);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
            assert_eq!(fast, slow, "{len}");
        }
    }
}
