//! A latency histogram for hot paths: fixed buckets and relaxed atomics (a few ns to record),
//! read at scrape time. The library crates record into it; chronik-server exports it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (100 µs to 10 s; the last bucket is unbounded).
pub const BUCKET_BOUNDS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKET_BOUNDS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A copy of a histogram: (upper bound, count in that bucket, not cumulative), the last
/// bound being infinity; the sum of every recorded latency and how many there were.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKET_BOUNDS_SECONDS.iter().position(|b| seconds <= *b).unwrap_or(BUCKET_BOUNDS_SECONDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let bounds = BUCKET_BOUNDS_SECONDS.iter().copied().chain([f64::INFINITY]);
        LatencySnapshot {
            count: counts.iter().sum(),
            buckets: bounds.zip(counts).collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        let h = LatencyHistogram::default();
        for (took, _) in
            [(Duration::from_micros(50), 0), (Duration::from_micros(100), 0), (Duration::from_millis(3), 5)]
        {
            h.record(took);
        }
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), BUCKET_BOUNDS_SECONDS.len() + 1);
        assert_eq!(s.buckets[0], (0.0001, 2), "100 µs is at most the first bound");
        assert_eq!(s.buckets[5], (0.005, 1));
        assert_eq!(s.buckets[16], (f64::INFINITY, 1), "beyond the last bound");
        assert!((s.sum_seconds - 60.00315).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
