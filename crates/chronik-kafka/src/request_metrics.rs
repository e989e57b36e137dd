//! Latencies the Kafka front end records as it serves: each request's time from being read to
//! its answer being ready, per API, and each produce entry's time from its Raft append to its
//! commit. chronik-server exports them as histograms.

use std::time::Duration;

use chronik_wal::{LatencyHistogram, LatencySnapshot};
use kafka_protocol::messages::ApiKey;

/// API keys below this are tracked one by one (Kafka's keys are below 100).
const API_KEYS: usize = 128;

pub struct RequestMetrics {
    by_api: Box<[LatencyHistogram]>,
    append_to_commit: LatencyHistogram,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            by_api: (0..API_KEYS).map(|_| LatencyHistogram::default()).collect(),
            append_to_commit: LatencyHistogram::default(),
        }
    }
}

impl RequestMetrics {
    /// Records a request of API key `api_key` (Produce is 0, Fetch 1, ...).
    pub fn record_request(&self, api_key: i16, took: Duration) {
        if let Some(h) = usize::try_from(api_key).ok().and_then(|i| self.by_api.get(i)) {
            h.record(took);
        }
    }

    pub fn record_append_to_commit(&self, took: Duration) {
        self.append_to_commit.record(took);
    }

    /// Each API that has served a request: (its name, its latencies).
    pub fn requests(&self) -> Vec<(String, LatencySnapshot)> {
        self.by_api
            .iter()
            .enumerate()
            .filter_map(|(key, h)| {
                let snapshot = h.snapshot();
                let api = ApiKey::try_from(key as i16).ok()?;
                (snapshot.count > 0).then(|| (format!("{api:?}"), snapshot))
            })
            .collect()
    }

    pub fn append_to_commit(&self) -> LatencySnapshot {
        self.append_to_commit.snapshot()
    }
}
