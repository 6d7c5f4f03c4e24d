//! A history channel's event positions, as clients see them: opaque strings `ms-seq`.
//!
//! The form is a Redis Stream entry id's, so a clustered server hands out exactly what Redis
//! assigned and a single node's memory ring makes the same kind (its clock's milliseconds, a
//! sequence within one millisecond). Positions of one channel compare as the pair of numbers, which
//! is what the resume rule needs ("is this older than what is kept?").
//!
//! An SSE stream may listen to several history channels but has one `Last-Event-ID`, so its `id:`
//! is a [`StreamPosition`]: `name:ms-seq` for each history channel, separated by spaces (neither
//! `:` nor a space can be part of a channel name).

use std::fmt;

/// Longest position text accepted from a peer (two u64 and a dash).
pub const MAX_POSITION_LEN: usize = 41;
/// Longest compound `Last-Event-ID` accepted: a stream's channel cap times a long name and position.
pub const MAX_STREAM_POSITION_LEN: usize = 32 * 1024;

/// One event's place in its channel's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub ms: u64,
    pub seq: u64,
}

impl Position {
    pub const ZERO: Position = Position { ms: 0, seq: 0 };

    /// Parses `ms-seq` (a Redis Stream id); `None` for anything else, including a bare `ms`.
    pub fn parse(text: &str) -> Option<Position> {
        if text.len() > MAX_POSITION_LEN {
            return None;
        }
        let (ms, seq) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Position { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }

    /// The position right after this one: where a read "after" it starts.
    pub fn next(self) -> Position {
        match self.seq.checked_add(1) {
            Some(seq) => Position { ms: self.ms, seq },
            None => Position { ms: self.ms.saturating_add(1), seq: 0 },
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where an SSE stream is in each of its history channels, in the order first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPosition {
    entries: Vec<(String, Position)>,
}

impl StreamPosition {
    /// Parses a `Last-Event-ID`; entries that are not `name:ms-seq` are skipped (a stream id from
    /// before history, a counter, is simply no position), and so is anything past the length cap.
    pub fn parse(text: &str) -> StreamPosition {
        let mut entries: Vec<(String, Position)> = Vec::new();
        if text.len() > MAX_STREAM_POSITION_LEN {
            return StreamPosition { entries };
        }
        for part in text.split(' ').filter(|p| !p.is_empty()) {
            let Some((name, position)) = part.rsplit_once(':') else { continue };
            let Some(position) = Position::parse(position) else { continue };
            if name.is_empty() || entries.iter().any(|(n, _)| n == name) {
                continue;
            }
            entries.push((name.to_owned(), position));
        }
        StreamPosition { entries }
    }

    pub fn get(&self, channel: &str) -> Option<Position> {
        self.entries.iter().find(|(n, _)| n == channel).map(|(_, p)| *p)
    }

    /// Records `channel`'s latest position (added at the end when new).
    pub fn set(&mut self, channel: &str, position: Position) {
        match self.entries.iter_mut().find(|(n, _)| n == channel) {
            Some(entry) => entry.1 = position,
            None => self.entries.push((channel.to_owned(), position)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, position)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}:{position}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_print_and_compare_as_numbers() {
        let p = Position::parse("1733112233445-7").unwrap();
        assert_eq!(p, Position { ms: 1733112233445, seq: 7 });
        assert_eq!(p.to_string(), "1733112233445-7");
        assert!(Position::parse("9-10").unwrap() > Position::parse("9-9").unwrap(), "numeric, not text order");
        assert!(Position::parse("10-0").unwrap() > Position::parse("9-99").unwrap());
        for bad in ["", "7", "-", "1-", "-1", "a-1", "1-b", "1-2-3", "+1-2", " 1-2", "99999999999999999999999-1"] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Position { ms: 3, seq: u64::MAX }.next(), Position { ms: 4, seq: 0 });
    }

    #[test]
    fn a_stream_position_names_each_history_channel() {
        let mut s = StreamPosition::default();
        s.set("chat-a", Position { ms: 5, seq: 1 });
        s.set("chat,b;c", Position { ms: 6, seq: 0 });
        s.set("chat-a", Position { ms: 7, seq: 0 });
        assert_eq!(s.to_string(), "chat-a:7-0 chat,b;c:6-0");
        let back = StreamPosition::parse(&s.to_string());
        assert_eq!(back, s);
        assert_eq!(back.get("chat,b;c"), Some(Position { ms: 6, seq: 0 }));
        assert!(StreamPosition::parse("42").is_empty(), "a counter id is no position");
        assert!(StreamPosition::parse("a:1-x b: :1-0").is_empty());
        assert!(StreamPosition::parse(&"a:1-0 ".repeat(10_000)).is_empty(), "over the cap");
        assert_eq!(StreamPosition::parse("a:1-0 a:2-0").get("a"), Some(Position { ms: 1, seq: 0 }), "first wins");
    }
}
