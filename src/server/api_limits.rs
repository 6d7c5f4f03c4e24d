//! Each app's HTTP API request budget (`api_rate_limit` requests per second).
//!
//! A limiter is made on an app's first signed request and remade when its configured rate
//! changes; a removed app's is let go. Only correctly signed requests are counted (the caller
//! checks the signature first), so forged floods cannot use up an app's budget.

use std::num::NonZeroU32;
use std::sync::Arc;

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::AppConfig;

#[derive(Default)]
pub struct ApiLimits {
    limiters: DashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>,
}

impl ApiLimits {
    /// Takes one request from the app's budget; false when it is spent for now.
    pub fn allow(&self, app: &AppConfig) -> bool {
        let Some(rate) = NonZeroU32::new(app.api_rate_limit) else { return true };
        let limiter = {
            let mut entry = self
                .limiters
                .entry(app.id.clone())
                .or_insert_with(|| (rate.get(), Arc::new(RateLimiter::direct(Quota::per_second(rate)))));
            if entry.0 != rate.get() {
                *entry = (rate.get(), Arc::new(RateLimiter::direct(Quota::per_second(rate))));
            }
            entry.1.clone()
        };
        limiter.check().is_ok()
    }

    pub fn forget(&self, app_id: &str) {
        self.limiters.remove(app_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_the_configured_rate() {
        let limits = ApiLimits::default();
        let mut app = AppConfig::new("1", "k", "s");
        app.api_rate_limit = 2;
        assert!(limits.allow(&app) && limits.allow(&app));
        assert!(!limits.allow(&app), "the third request in the same second is refused");
        app.api_rate_limit = 5;
        assert!(limits.allow(&app), "a changed rate starts a new budget");
        app.api_rate_limit = 0;
        assert!((0..100).all(|_| limits.allow(&app)), "0 is unlimited");
        limits.forget("1");
        assert!(limits.limiters.is_empty());
    }
}
