//! Socket ids: `^\d+\.\d+$`, unique across a cluster.
//!
//! The first half is a random per-process number, the second a process-wide counter, so two nodes
//! never hand out the same id without coordinating. It is a pair of integers so that exclusion
//! (`socket_id` on a publish) compares two words instead of two strings.

use std::fmt;
use std::str::FromStr;

/// A connection's public id, as sent in `pusher:connection_established`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    pub node: u32,
    pub seq: u64,
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.seq)
    }
}

/// Why a string is not a socket id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid socket_id: expected two integers joined by a dot")]
pub struct InvalidSocketId;

impl FromStr for SocketId {
    type Err = InvalidSocketId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (node, seq) = s.split_once('.').ok_or(InvalidSocketId)?;
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(node) || !all_digits(seq) {
            return Err(InvalidSocketId);
        }
        Ok(SocketId {
            node: node.parse().map_err(|_| InvalidSocketId)?,
            seq: seq.parse().map_err(|_| InvalidSocketId)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_sdk_pattern() {
        let id = SocketId { node: 123, seq: 456 };
        assert_eq!(id.to_string(), "123.456");
        assert_eq!("123.456".parse::<SocketId>(), Ok(id));
    }

    #[test]
    fn refuses_what_the_sdks_refuse() {
        for bad in ["", "1", "1.", ".1", "a.1", "1.1.1", "1.-1", " 1.1", "1.1 ", "+1.1", "99999999999.1"] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad:?} should be refused");
        }
    }
}
