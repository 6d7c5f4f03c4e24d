//! Latency recording into HDR histograms, sharded so that receivers rarely contend.
//!
//! Every delivery records one value, possibly hundreds of thousands per second from many tasks. One
//! histogram per connection would cost ~20 KiB each (400 MB at 19k connections); one shared histogram would
//! be a hot lock. A few shards, picked by connection index, keep both costs small. Each shard holds the
//! run's total and the current second's values, so progress lines show the latency of the last second
//! rather than a slowly moving average.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly: 60 s in microseconds; anything slower is clamped to it.
const MAX_MICROS: u64 = 60_000_000;
const SHARDS: usize = 16;

struct Shard {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

/// Latencies in microseconds.
pub struct Latencies {
    shards: Vec<Mutex<Shard>>,
}

/// Percentiles of a histogram, in milliseconds, as reported.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% resolution, the usual choice for latency.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        let shards =
            (0..SHARDS).map(|_| Mutex::new(Shard { total: new_histogram(), interval: new_histogram() })).collect();
        Latencies { shards }
    }

    /// Records one latency (microseconds) from the receiver numbered `who`.
    pub fn record(&self, who: usize, micros: u64) {
        let value = micros.clamp(1, MAX_MICROS);
        if let Ok(mut shard) = self.shards[who % SHARDS].lock() {
            let _ = shard.total.record(value);
            let _ = shard.interval.record(value);
        }
    }

    /// Percentiles of everything recorded so far.
    pub fn total(&self) -> Percentiles {
        let mut merged = new_histogram();
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                let _ = merged.add(&shard.total);
            }
        }
        percentiles(&merged)
    }

    /// Percentiles since the previous call, and starts a new interval.
    pub fn take_interval(&self) -> Percentiles {
        let mut merged = new_histogram();
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                let _ = merged.add(&shard.interval);
                shard.interval.reset();
            }
        }
        percentiles(&merged)
    }
}

/// Percentiles of one histogram in microseconds, as milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |micros: u64| micros as f64 / 1_000.0;
    Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1_000.0,
    }
}

/// A histogram for per-connection set-up times (connect + subscribe), recorded by one task at a time.
pub struct SetupTimes(Mutex<Histogram<u64>>);

impl Default for SetupTimes {
    fn default() -> Self {
        SetupTimes(Mutex::new(new_histogram()))
    }
}

impl SetupTimes {
    pub fn record(&self, micros: u64) {
        if let Ok(mut h) = self.0.lock() {
            let _ = h.record(micros.clamp(1, MAX_MICROS));
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        self.0.lock().map(|h| percentiles(&h)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_milliseconds() {
        let l = Latencies::new();
        for i in 1..=1000u64 {
            l.record(i as usize, i * 10); // 10 us .. 10 ms
        }
        let p = l.total();
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 5.0).abs() < 0.05, "{p:?}");
        assert!(p.p50_ms <= p.p99_ms && p.p99_ms <= p.p999_ms && p.p999_ms <= p.max_ms);
        assert!((p.max_ms - 10.0).abs() < 0.05, "{p:?}");
    }

    #[test]
    fn intervals_reset_but_the_total_does_not() {
        let l = Latencies::new();
        l.record(0, 100);
        assert_eq!(l.take_interval().count, 1);
        assert_eq!(l.take_interval().count, 0);
        assert_eq!(l.total().count, 1);
    }
}
