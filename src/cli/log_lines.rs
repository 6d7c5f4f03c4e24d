//! Text logs are one line per event, whatever a peer put in the names they carry.
//!
//! Debug lines name what clients send (channel and event names, even refused ones). A name with a
//! newline in it would otherwise start a forged line (`... ERROR something`) that `grep` and log
//! shippers believe, and a NUL makes tools treat the whole file as binary. The subscriber formats
//! each event into one buffer and writes it with one `write_all`, so escaping every control
//! character of that buffer but its final newline keeps each event on its own line without
//! touching how fields are formatted. JSON logs need none of this: JSON escapes them already.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes stderr writers that escape control characters (see the module doc). `keep_escape`
/// leaves ESC alone, for the colours of a terminal.
pub struct EscapedStderr {
    pub keep_escape: bool,
}

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = Escaped<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaped { inner: io::stderr(), keep_escape: self.keep_escape }
    }
}

pub struct Escaped<W> {
    inner: W,
    keep_escape: bool,
}

impl<W: Write> Write for Escaped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = escape_line(buf, self.keep_escape);
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `buf` with each control character (tab aside, and ESC when kept) written as `\n`, `\r` or
/// `\xNN`, except one final newline.
fn escape_line(buf: &[u8], keep_escape: bool) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match buf.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (buf, &b""[..]),
    };
    let escaped = |b: u8| (b < 0x20 && b != b'\t' && !(keep_escape && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| escaped(b)) {
        return buf.into();
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if escaped(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_inside_a_line_are_escaped_and_its_newline_kept() {
        let forged = b"DEBUG subscribe refused channel=x\n2026-12-02T00:00:00Z ERROR forged\r\0\x1b[31m\tend\n";
        assert_eq!(
            &*escape_line(forged, false),
            &b"DEBUG subscribe refused channel=x\\n2026-12-02T00:00:00Z ERROR forged\\r\\x00\\x1b[31m\tend\n"[..]
        );
        assert_eq!(&*escape_line(b"\x1b[2mDEBUG\x1b[0m ok\n", true), &b"\x1b[2mDEBUG\x1b[0m ok\n"[..]);
        assert!(matches!(escape_line(b"plain line\n", false), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*escape_line(b"no newline\x7f", false), &b"no newline\\x7f"[..]);
    }

    #[test]
    fn one_write_is_one_line_on_the_inner_writer() {
        let mut w = Escaped { inner: Vec::new(), keep_escape: false };
        w.write_all(b"a\nb\n").unwrap();
        w.write_all(b"c\n").unwrap();
        assert_eq!(w.inner, b"a\\nb\nc\n");
    }
}
