//! A session's requests waiting for its driver: a bounded queue that holds no memory while empty.
//!
//! A tokio `mpsc` allocates its first block of 32 slots when it is made, whatever its capacity, and
//! keeps it: ~1 KB for every held session, although a session's requests are rare (its client's
//! messages, a reopened stream) and handled at once. So this is a `VecDeque` behind a short lock,
//! released whenever it drains, with a `Notify` to wake the driver.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused<T> {
    /// The queue holds its capacity already.
    Full(T),
    /// The driver is gone (or never ran).
    Closed(T),
}

impl<T> Refused<T> {
    /// The request, given back.
    pub(super) fn into_inner(self) -> T {
        match self {
            Refused::Full(item) | Refused::Closed(item) => item,
        }
    }
}

pub(super) struct Inbox<T> {
    queue: Mutex<VecDeque<T>>,
    ready: Notify,
    closed: AtomicBool,
    capacity: usize,
}

impl<T> Inbox<T> {
    pub(super) fn new(capacity: usize) -> Inbox<T> {
        Inbox { queue: Mutex::new(VecDeque::new()), ready: Notify::new(), closed: AtomicBool::new(false), capacity }
    }

    pub(super) fn try_send(&self, item: T) -> Result<(), Refused<T>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed(item));
        }
        {
            let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if queue.len() >= self.capacity {
                return Err(Refused::Full(item));
            }
            queue.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// The next request; `None` once closed and drained. Cancel-safe: a request is taken only by
    /// the call that returns it.
    pub(super) async fn recv(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(item) = queue.pop_front() {
                    if queue.is_empty() {
                        // Released, so an idle session holds no buffer.
                        *queue = VecDeque::new();
                    }
                    return Some(item);
                }
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Refuses further requests and wakes the driver; those already queued are still handed out.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn requests_come_out_in_order_up_to_the_capacity_and_none_after_close() {
        let inbox = Inbox::new(2);
        assert_eq!(inbox.try_send(1), Ok(()));
        assert_eq!(inbox.try_send(2), Ok(()));
        assert_eq!(inbox.try_send(3), Err(Refused::Full(3)));
        assert_eq!(inbox.recv().await, Some(1));
        assert_eq!(inbox.try_send(4), Ok(()));
        inbox.close();
        assert_eq!(inbox.try_send(5), Err(Refused::Closed(5)));
        assert_eq!(inbox.recv().await, Some(2));
        assert_eq!(inbox.recv().await, Some(4));
        assert_eq!(inbox.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_driver_wakes_for_a_request_and_for_a_close() {
        let inbox = std::sync::Arc::new(Inbox::new(4));
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { (inbox.recv().await, inbox.recv().await) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(inbox.try_send("x"), Ok(()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        inbox.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap();
        assert_eq!(got, (Some("x"), None));
    }
}
