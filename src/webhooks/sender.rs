//! Delivering batches to one webhook URL: signed, in order, retried with backoff until accepted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::WebhookStats;
use crate::protocol::signature::sign;

/// First retry delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a batch is retried before it is given up (Pusher retries for about 5 minutes).
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);
/// One attempt's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one webhook's sender needs.
pub struct Target {
    pub url: String,
    pub app_key: String,
    pub secret: String,
}

/// Sends each body in turn; a body is retried until a 2xx or until it is given up, so later
/// batches never overtake an earlier one.
pub async fn run(target: Target, mut bodies: mpsc::Receiver<String>, stats: Arc<WebhookStats>) {
    // Redirects are not followed: a 3xx would re-send the signed body to wherever it points, so it
    // is a failed attempt like any other non-2xx.
    let client =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build();
    let log_url = redact_url(&target.url);
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    while let Some(body) = bodies.recv().await {
        let signature = sign(&target.secret, &body);
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = client
                .post(&target.url)
                .header("content-type", "application/json")
                .header("X-Pusher-Key", &target.app_key)
                .header("X-Pusher-Signature", &signature)
                .body(body.clone())
                .send()
                .await;
            match attempt {
                Ok(response) if response.status().is_success() => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(response) => debug!(url = %log_url, status = %response.status(), "webhook refused; will retry"),
                // `without_url`: the error's text would carry the URL, credentials and all.
                Err(e) => debug!(url = %log_url, error = %e.without_url(), "webhook failed; will retry"),
            }
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > GIVE_UP_AFTER {
                stats.given_up.fetch_add(1, Ordering::Relaxed);
                warn!(url = %log_url, "webhook batch given up after {} s of retries", GIVE_UP_AFTER.as_secs());
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The URL as logs may show it: user name, password and query (which may carry a token) replaced.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "(unparsable webhook URL)".into();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("***");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("***"));
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_and_queries_are_redacted() {
        assert_eq!(redact_url("https://user:pass@hooks.example/p?token=t"), "https://***@hooks.example/p?***");
        assert_eq!(redact_url("https://:pass@hooks.example/"), "https://***@hooks.example/");
        assert_eq!(redact_url("http://127.0.0.1:9/hooks"), "http://127.0.0.1:9/hooks");
        assert!(!redact_url("not a url with secret").contains("secret"));
    }
}
