//! Publishing at a fixed offered rate through `POST /apps/{id}/batch_events`.
//!
//! The rate is an open-loop schedule: batch `k` is due at `start + k * interval`, whatever happened to the
//! batches before it. A closed loop ("send when the previous answer came") would slow down exactly when the
//! server struggles and hide its latency (coordinated omission). Each publisher connection waits for its
//! answer before the next request, so several connections share the schedule; when they fall behind, the
//! report says so (achieved rate and maximum lag) instead of silently offering less.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::args::PayloadKind;
use super::counters::Counters;
use super::http::ApiClient;
use super::{payload, stamp};

/// Events per `batch_events` request (the API's maximum).
pub const BATCH: usize = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnections one publisher attempts before giving up on its share of the schedule.
const MAX_RECONNECTS: u32 = 5;

pub struct PublishPlan {
    pub target: SocketAddr,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    pub channel: String,
    pub rate: f64,
    pub payload: usize,
    pub payload_kind: PayloadKind,
    pub publishers: usize,
    pub start: Instant,
    pub until: Instant,
    /// Subscribers that should receive each event.
    pub subscribers: u64,
}

/// What the publishers saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishOutcome {
    pub max_lag: Duration,
    pub finished_at: Option<Instant>,
}

/// Runs every publisher until the schedule ends; counts into `counters`.
pub async fn publish(plan: Arc<PublishPlan>, counters: Arc<Counters>) -> PublishOutcome {
    let batch = if plan.rate >= BATCH as f64 { BATCH } else { 1 };
    let interval = Duration::from_secs_f64(batch as f64 / plan.rate);
    let max_lag_micros = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..plan.publishers {
        let (plan, counters, max_lag_micros, seq) =
            (plan.clone(), counters.clone(), max_lag_micros.clone(), seq.clone());
        tasks.spawn(async move {
            let path = format!("/apps/{}/batch_events", plan.app_id);
            let mut client = None;
            let mut reconnects = 0;
            let mut k = p as u64;
            loop {
                let due = plan.start + interval.mul_f64(k as f64);
                if due >= plan.until {
                    return;
                }
                tokio::time::sleep_until(due).await;
                let lag = Instant::now().saturating_duration_since(due);
                max_lag_micros.fetch_max(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX), Relaxed);
                let api = match client.as_mut() {
                    Some(api) => api,
                    None => match ApiClient::connect(plan.target, &plan.key, &plan.secret).await {
                        Ok(api) => client.insert(api),
                        Err(e) => {
                            counters.note(&format!("publisher: {e:#}"));
                            Counters::add(&counters.publish_errors, 1);
                            reconnects += 1;
                            if reconnects > MAX_RECONNECTS {
                                return;
                            }
                            k += plan.publishers as u64;
                            continue;
                        }
                    },
                };
                let body = batch_body(&plan.channel, batch, (plan.payload_kind, plan.payload), &seq);
                match api.post_signed(&path, body, REQUEST_TIMEOUT).await {
                    Ok((200, _)) => {
                        Counters::add(&counters.events_sent, batch as u64);
                        Counters::add(&counters.expected, batch as u64 * plan.subscribers);
                    }
                    Ok((status, answer)) => {
                        Counters::add(&counters.publish_errors, 1);
                        counters.note(&format!("publish: HTTP {status} {}", String::from_utf8_lossy(&answer)));
                    }
                    Err(e) => {
                        Counters::add(&counters.publish_errors, 1);
                        counters.note(&format!("publish: {e:#}"));
                        client = None;
                        reconnects += 1;
                        if reconnects > MAX_RECONNECTS {
                            return;
                        }
                    }
                }
                k += plan.publishers as u64;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    PublishOutcome { max_lag: Duration::from_micros(max_lag_micros.load(Relaxed)), finished_at: Some(Instant::now()) }
}

/// One `batch_events` body: `batch` events on `channel`, all stamped now.
fn batch_body(channel: &str, batch: usize, (kind, payload): (PayloadKind, usize), seq: &AtomicU64) -> Bytes {
    let now = stamp::now_nanos();
    let mut body = String::with_capacity(16 + batch * (payload * 9 / 8 + 64));
    body.push_str(r#"{"batch":["#);
    for i in 0..batch {
        if i > 0 {
            body.push(',');
        }
        let data = payload::data(kind, now, seq.fetch_add(1, Relaxed), payload);
        let data = serde_json::to_string(&data).unwrap_or_default();
        body.push_str(&format!(r#"{{"channel":"{channel}","name":"bench","data":{data}}}"#));
    }
    body.push_str("]}");
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_body_is_valid_json_with_stamped_events() {
        let seq = AtomicU64::new(0);
        let body = batch_body("bench-fanout", 10, (PayloadKind::Padding, 100), &seq);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let batch = v["batch"].as_array().expect("array");
        assert_eq!(batch.len(), 10);
        for event in batch {
            assert_eq!(event["channel"], "bench-fanout");
            let data = event["data"].as_str().expect("string");
            assert_eq!(data.len(), 100);
            assert!(stamp::find_stamp(data).is_some());
        }
        assert_eq!(seq.load(Relaxed), 10);
        let body = batch_body("bench-fanout", 10, (PayloadKind::Json, 1024), &seq);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        for event in v["batch"].as_array().expect("array") {
            let data = event["data"].as_str().expect("a string, as the API takes it");
            assert_eq!(data.len(), 1024);
            assert!(serde_json::from_str::<serde_json::Value>(data).is_ok());
        }
    }
}
