//! One node's presence changes for a user in a channel happen one at a time.
//!
//! Joining and leaving a presence channel is a check of this node's sockets (the registry) followed by
//! a call to the cluster's presence store (an await, a Redis round trip). Two tabs of one user doing
//! it at once could interleave: a leave that saw "last socket" would remove the member from the store
//! after the other tab's join, or a second tab would read the member list before the first tab's join
//! reached the store. Holding this lock across check, store call and announcement orders them.
//!
//! Striped, not one lock per user: a fixed array, no allocation and nothing to clean up; unrelated
//! users that share a stripe only wait for each other's short critical section.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

pub struct MemberLocks {
    stripes: Box<[Mutex<()>]>,
}

impl Default for MemberLocks {
    fn default() -> Self {
        MemberLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl MemberLocks {
    /// Waits for the lock of `user_id` in `channel` of `app_id`. Not reentrant: take one at a time.
    pub async fn lock(&self, app_id: &str, channel: &str, user_id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (app_id, channel, user_id).hash(&mut hasher);
        self.stripes[(hasher.finish() as usize) % STRIPES].lock().await
    }
}
