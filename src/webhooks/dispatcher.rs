//! Per app: batch events over a short window, hold back vacated/removed events for a moment, and
//! give each webhook the events it wants.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event::{wants, WebhookEvent};
use super::sender::{self, Target};
use super::WebhookStats;
use crate::config::AppConfig;

/// Most events in one webhook body.
const MAX_BATCH: usize = 100;
/// Batches waiting for one webhook's sender.
const SENDER_QUEUE: usize = 1_000;

/// A vacated/removed event waiting out its delay, cancelled if the channel fills (or the member
/// rejoins) before then.
struct Held {
    event: WebhookEvent,
    due: Instant,
}

pub fn spawn(app: Arc<AppConfig>, mut events: mpsc::Receiver<WebhookEvent>, stats: Arc<WebhookStats>) {
    let senders: Vec<mpsc::Sender<String>> = app
        .webhooks
        .iter()
        .map(|hook| {
            let (tx, rx) = mpsc::channel(SENDER_QUEUE);
            let target = Target { url: hook.url.clone(), app_key: app.key.clone(), secret: app.secret.clone() };
            tokio::spawn(sender::run(target, rx, stats.clone()));
            tx
        })
        .collect();
    let window = Duration::from_millis(app.webhook_batch_ms);
    let hold = Duration::from_millis(app.webhook_delay_ms);
    tokio::spawn(async move {
        let mut held: HashMap<(String, Option<String>), Held> = HashMap::new();
        let mut ready: Vec<WebhookEvent> = Vec::new();
        loop {
            let next_due = held.values().map(|h| h.due).min();
            tokio::select! {
                received = events.recv() => {
                    let Some(first) = received else { return };
                    accept(first, &mut held, &mut ready, hold);
                    // Batch what arrives within the window.
                    let until = Instant::now() + window;
                    while ready.len() < MAX_BATCH {
                        match tokio::time::timeout_at(until, events.recv()).await {
                            Ok(Some(event)) => accept(event, &mut held, &mut ready, hold),
                            _ => break,
                        }
                    }
                }
                _ = sleep_until_or_forever(next_due) => {}
            }
            let now = Instant::now();
            let mut due: Vec<_> = held.iter().filter(|(_, h)| h.due <= now).map(|(k, _)| k.clone()).collect();
            due.sort_by_key(|k| held[k].due);
            for key in due {
                if let Some(h) = held.remove(&key) {
                    ready.push(h.event);
                }
            }
            if !ready.is_empty() {
                send(&app, &senders, std::mem::take(&mut ready), &stats);
            }
        }
    });
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Pairs an occupied/added event with a held vacated/removed one for the same channel (and user):
/// the two cancel out, so a quick reload is invisible to the app.
fn accept(
    event: WebhookEvent,
    held: &mut HashMap<(String, Option<String>), Held>,
    ready: &mut Vec<WebhookEvent>,
    hold: Duration,
) {
    let key = |channel: &str, user: Option<&str>| (channel.to_owned(), user.map(str::to_owned));
    match &event {
        WebhookEvent::ChannelVacated { channel } if !hold.is_zero() => {
            held.insert(key(channel, None), Held { event, due: Instant::now() + hold });
        }
        WebhookEvent::MemberRemoved { channel, user_id } if !hold.is_zero() => {
            held.insert(key(channel, Some(user_id)), Held { event, due: Instant::now() + hold });
        }
        WebhookEvent::ChannelOccupied { channel } if held.remove(&key(channel, None)).is_some() => {}
        WebhookEvent::MemberAdded { channel, user_id } if held.remove(&key(channel, Some(user_id))).is_some() => {}
        _ => ready.push(event),
    }
}

/// Splits the events by webhook and queues one body for each webhook that wants any.
fn send(app: &AppConfig, senders: &[mpsc::Sender<String>], events: Vec<WebhookEvent>, stats: &WebhookStats) {
    let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    for (hook, tx) in app.webhooks.iter().zip(senders) {
        for chunk in events.iter().filter(|e| wants(hook, e)).collect::<Vec<_>>().chunks(MAX_BATCH) {
            let list: Vec<Value> = chunk.iter().map(|e| e.to_json()).collect();
            let body = json!({ "time_ms": time_ms, "events": list }).to_string();
            if tx.try_send(body).is_err() {
                stats.dropped.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let url = sender::redact_url(&hook.url);
                tracing::warn!(app_id = %app.id, %url, "webhook sender queue full: batch dropped");
            }
        }
    }
}
