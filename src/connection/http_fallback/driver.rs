//! One HTTP session's task: the session, its queue, and whichever receive response is attached.
//!
//! The loop is the WebSocket connection's, with requests in place of frames: an `xhr_send` is
//! handed to the session, a receive request attaches its response, and the queue is drained into
//! that response (as `a[...]` lines) only as fast as it takes them (a held stream is its socket,
//! written here), so a client that stops reading fills its own bounded queue and is dropped as a
//! slow consumer (4100), like a WebSocket one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::{Command, Handle, Receiver};
use crate::hub::{OutboundReceiver, Outgoing, OverflowSignal};
use crate::protocol::http_fallback::{self, join_message_lines, message_line, messages_line, HEARTBEAT, OPEN};
use crate::protocol::{ErrorCode, Frame};
use crate::session::{Exit, Liveness, PusherSession, Session};

/// Most queued frames written as one `a[...]` line.
const MAX_BATCH: usize = 256;
/// How often an open stream (or a waiting poll) hears from the server when nothing else is said:
/// proxies close idle responses, and the client answers a heartbeat with `xhr_send []`.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(25);
/// How long an ended session waits for a receive request to tell its client why (`c[...]`): a
/// polling client is usually between two polls when its session ends.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Answers a refused session's first request: `o`, then the farewell.
pub(super) async fn refuse(mut receiver: Receiver, exit: Exit) {
    super::super::count_exit(&exit);
    let told = tokio::time::timeout(CLOSE_GRACE, async {
        if !receiver.ready().await {
            return false;
        }
        for line in std::iter::once(Bytes::from_static(OPEN)).chain(farewell(&exit)) {
            if !receiver.send(line).await {
                return false;
            }
        }
        true
    })
    .await;
    if matches!(told, Ok(true)) {
        receiver.finish().await;
    }
}

/// How a session's end is told, as on a WebSocket: the `pusher:error` (pusher-js reports its code),
/// then `c[code,"reason"]`. Nothing for a client that is gone.
fn farewell(exit: &Exit) -> Vec<Bytes> {
    let error = match exit {
        Exit::Pusher(code, message) => messages_line([Frame::error(*code, message).as_str()]),
        _ => None,
    };
    error.map(Bytes::from).into_iter().chain(close_line(exit)).collect()
}

/// The attached receive response, and since when it has been quiet (for the heartbeat).
struct Attached {
    receiver: Receiver,
    since: Instant,
}

pub(super) struct Driver {
    session: PusherSession,
    rx: OutboundReceiver,
    overflow: OverflowSignal,
    liveness: Liveness,
    /// Where this session's requests wait.
    handle: Arc<Handle>,
    attached: Option<Attached>,
    /// `o` goes out once, on the session's first receive response.
    opened: bool,
    /// Since when no receive request has been attached.
    detached_since: Instant,
    timeout: Duration,
}

impl Driver {
    pub(super) fn new(session: PusherSession, rx: OutboundReceiver, handle: Arc<Handle>, timeout: Duration) -> Driver {
        let now = Instant::now();
        let overflow = rx.overflow_signal();
        let liveness = session.liveness(now);
        Driver { session, rx, overflow, liveness, handle, attached: None, opened: false, detached_since: now, timeout }
    }

    /// Serves the session until it ends, closes it, then tells a receive request why. The driver
    /// is boxed: the nested futures of a task each keep a place for what they were given, so a
    /// driver moved in by value was held several times over (a 3.2 KB task for a 488 B driver). The
    /// loop and the ending are boxed too: a task is as large as its largest state, and leaving
    /// channels is a big future that runs once.
    pub(super) async fn serve(mut self: Box<Self>, shutdown: CancellationToken) {
        let span = self.session.span();
        async move {
            debug!("http session opened");
            let exit = Box::pin(self.run(&shutdown)).await;
            debug!(?exit, "http session closing");
            Box::pin(self.finish(exit)).await;
        }
        .instrument(span)
        .await
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Exit {
        loop {
            let mut batch = Vec::new();
            let wake_at = self.liveness.next_check();
            let expires_at = self.detached_since + self.timeout;
            let heartbeat_at = self.attached.as_ref().map(|a| a.since + HEARTBEAT_INTERVAL);
            let attached = self.attached.is_some();
            // One timer for the three deadlines: each costs a place in the task's future and a
            // registration in the runtime's timer wheel, and a held session is mostly waiting.
            let next = match heartbeat_at {
                Some(beat) => wake_at.min(beat),
                None => wake_at.min(expires_at),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Exit::Pusher(ErrorCode::Generic, "Server is shutting down".into());
                }
                _ = self.overflow.wait() => {
                    return Exit::Pusher(ErrorCode::OverCapacity, "Client is too slow to read its messages".into());
                }
                command = self.handle.commands.recv() => {
                    self.liveness.saw_activity(Instant::now());
                    match command {
                        None => return Exit::Gone,
                        Some(Command::Send(messages)) => {
                            for message in messages {
                                crate::metrics::received(message.len());
                                if let Some(exit) = Box::pin(self.session.on_text(message)).await {
                                    return exit;
                                }
                            }
                        }
                        Some(Command::Attach(receiver)) => self.attach(receiver).await,
                    }
                }
                _ = gone(self.attached.as_mut()), if attached => self.detach(),
                n = self.rx.recv_many(&mut batch, MAX_BATCH), if attached => {
                    if n == 0 {
                        return Exit::Gone;
                    }
                    if let Err(exit) = self.write_batch(&mut batch).await {
                        return exit;
                    }
                }
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    if heartbeat_at.is_some_and(|beat| now >= beat) {
                        self.write(Bytes::from_static(HEARTBEAT)).await;
                        if self.attached.as_ref().is_some_and(|a| a.receiver.polling) {
                            self.detach();
                        } else if let Some(attached) = &mut self.attached {
                            attached.since = Instant::now();
                        }
                    }
                    if !attached && now >= expires_at {
                        debug!("http session expired: nobody received for its timeout");
                        return Exit::Gone;
                    }
                    if now >= wake_at {
                        if let Err(code) = self.liveness.on_timer(Instant::now(), self.session.out()) {
                            return Exit::Pusher(code, code.message().into());
                        }
                    }
                }
            }
        }
    }

    /// A new receive response replaces the one attached (a stream the client reopened ends). A
    /// stream on its own socket waits for hyper to let go of it and writes its head first.
    async fn attach(&mut self, mut receiver: Receiver) {
        if let Some(replaced) = self.attached.take() {
            replaced.receiver.finish_aside();
        }
        if !receiver.ready().await {
            self.detach();
            return;
        }
        self.attached = Some(Attached { receiver, since: Instant::now() });
        if !self.opened {
            self.opened = true;
            self.write(Bytes::from_static(OPEN)).await;
        }
    }

    fn detach(&mut self) {
        if let Some(attached) = self.attached.take() {
            attached.receiver.finish_aside();
        }
        self.detached_since = Instant::now();
    }

    /// Writes a line to the attached response; a response whose client stopped reading is cut
    /// off (its queue then fills, and the session ends as a slow consumer).
    async fn write(&mut self, line: Bytes) {
        let Some(attached) = &mut self.attached else { return };
        let sent = tokio::select! {
            sent = attached.receiver.send(line) => sent,
            _ = self.overflow.wait() => false,
            _ = tokio::time::sleep(self.liveness.pong_timeout().max(Duration::from_secs(30))) => false,
        };
        if !sent {
            if let Some(attached) = self.attached.take() {
                attached.receiver.cut();
            }
            self.detach();
        }
    }

    /// One `a[...]` line for everything queued; a poll then ends its response. Each frame's line is
    /// rendered once per broadcast (see `Frame::http_line`); one frame is sent as that shared line,
    /// several are joined without escaping again.
    async fn write_batch(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), Exit> {
        let mut then_close = None;
        let mut lines = Vec::with_capacity(batch.len());
        let mut bytes = 0;
        for item in batch.iter() {
            match item {
                Outgoing::Frame(frame) => {
                    bytes += frame.as_str().len();
                    lines.push(frame.http_line(|text| Bytes::from(message_line(text))).clone());
                }
                Outgoing::Close { code, message } => {
                    then_close = Some(Exit::Pusher(*code, message.clone()));
                    break;
                }
                // WebSocket control frames: this transport's liveness is its requests.
                Outgoing::Ping | Outgoing::Pong(_) | Outgoing::Binary(_) => {}
            }
        }
        let count = lines.len();
        let line = match lines.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => {
                let parts: Vec<&[u8]> = many.iter().map(|l| l.as_ref()).collect();
                join_message_lines(&parts).map(Bytes::from)
            }
        };
        self.rx.sent(batch);
        batch.clear();
        if let Some(line) = line {
            crate::metrics::sent(count, bytes);
            self.write(line).await;
            if self.attached.as_ref().is_some_and(|a| a.receiver.polling) {
                self.detach();
            }
        }
        then_close.map_or(Ok(()), Err)
    }

    async fn finish(&mut self, exit: Exit) {
        self.session.close(&exit).await;
        super::super::count_exit(&exit);
        self.goodbye(exit).await;
    }

    /// Tells the client why its session ended (`c[...]`), on the attached response or the next
    /// one to arrive within [`CLOSE_GRACE`]; a request arriving later finds no session.
    async fn goodbye(&mut self, exit: Exit) {
        let lines = farewell(&exit);
        if lines.is_empty() {
            return;
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while self.attached.is_none() {
            match tokio::time::timeout_at(deadline, self.handle.commands.recv()).await {
                Ok(Some(Command::Attach(receiver))) => {
                    self.attached = Some(Attached { receiver, since: Instant::now() })
                }
                Ok(Some(Command::Send(_))) => continue,
                Ok(None) | Err(_) => return,
            }
        }
        let Some(mut attached) = self.attached.take() else { return };
        let told = tokio::time::timeout_at(deadline + CLOSE_GRACE, async {
            if !attached.receiver.ready().await {
                return false;
            }
            for line in lines {
                if !attached.receiver.send(line).await {
                    return false;
                }
            }
            true
        })
        .await;
        if matches!(told, Ok(true)) {
            attached.receiver.finish().await;
        }
    }
}

/// The `c[...]` answer for a session's end.
fn close_line(exit: &Exit) -> Option<Bytes> {
    let line = match exit {
        Exit::Gone => return None,
        Exit::Pusher(code, message) => http_fallback::close_line(code.code(), message),
        Exit::Protocol(code, reason) => http_fallback::close_line(*code, reason),
        Exit::Policy(reason) => http_fallback::close_line(1008, reason),
    };
    Some(Bytes::from(line))
}

/// Resolves when the attached response's client went away.
async fn gone(attached: Option<&mut Attached>) {
    match attached {
        Some(attached) => attached.receiver.gone().await,
        None => std::future::pending().await,
    }
}
