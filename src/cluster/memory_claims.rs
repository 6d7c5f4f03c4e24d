//! Single-use claims for one process: a key is claimed once until it expires.
//!
//! Bounded: only keys a caller has already checked are claimed (a ticket's id, after its signature),
//! expired ones are dropped as the map grows, and past [`MAX_CLAIMS`] live keys a claim is refused
//! as "unavailable" rather than growing further or forgetting a live key (which would let it be used
//! twice).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ClusterError, ClusterResult};

/// Most live claims kept (a ticket lives 60 s: 1,000 tickets/s for a minute is 60,000).
pub const MAX_CLAIMS: usize = 1_000_000;

#[derive(Default)]
pub struct MemoryClaims {
    inner: Mutex<Claims>,
}

#[derive(Default)]
struct Claims {
    until: HashMap<String, Instant>,
    /// The size at which expired claims are next swept out.
    sweep_at: usize,
}

impl MemoryClaims {
    pub fn claim(&self, key: &str, ttl: Duration) -> ClusterResult<bool> {
        let now = Instant::now();
        let mut claims = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if claims.until.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        if claims.until.len() >= claims.sweep_at {
            claims.until.retain(|_, until| *until > now);
            // Swept again only once the map has doubled: amortised O(1) per claim.
            claims.sweep_at = (claims.until.len() * 2).max(1024);
        }
        if claims.until.len() >= MAX_CLAIMS {
            return Err(ClusterError::Unavailable(format!("more than {MAX_CLAIMS} live single-use claims")));
        }
        claims.until.insert(key.to_owned(), now + ttl);
        Ok(true)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|c| c.until.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_until_it_expires_and_expired_keys_are_swept() {
        let claims = MemoryClaims::default();
        assert_eq!(claims.claim("a", Duration::from_secs(60)), Ok(true));
        assert_eq!(claims.claim("a", Duration::from_secs(60)), Ok(false));
        assert_eq!(claims.claim("b", Duration::ZERO), Ok(true));
        assert_eq!(claims.claim("b", Duration::from_secs(60)), Ok(true), "an expired claim can be made again");
        for i in 0..5000 {
            assert_eq!(claims.claim(&format!("short-{i}"), Duration::ZERO), Ok(true));
        }
        assert!(claims.len() < 3000, "expired claims are swept as the map grows: {}", claims.len());
        assert_eq!(claims.claim("a", Duration::from_secs(60)), Ok(false), "live claims survive a sweep");
    }
}
