use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Counters updated on the write and sync paths (relaxed atomics: a few ns each).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub sync_rounds: AtomicU64,
    pub sync_nanos: AtomicU64,
    pub rolls: AtomicU64,
    pub segments_prepared: AtomicU64,
    pub segments_retired: AtomicU64,
    pub gc_rewritten_bytes: AtomicU64,
    pub cache_bytes_dropped: AtomicU64,
    /// Each fdatasync round's duration.
    pub sync_latency: crate::latency::LatencyHistogram,
}

impl Stats {
    pub fn record_write(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn record_sync(&self, took: Duration) {
        self.sync_rounds.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.sync_latency.record(took);
    }
}

/// A point-in-time copy of the WAL's counters and shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalStats {
    /// Records written since open (entries, truncates, purges, state, rewrites).
    pub records_written: u64,
    /// Bytes written since open, headers included.
    pub bytes_written: u64,
    /// fdatasync rounds completed since open.
    pub sync_rounds: u64,
    /// Total time spent in those rounds.
    pub sync_seconds: f64,
    pub segment_rolls: u64,
    pub segments_prepared: u64,
    pub segments_retired: u64,
    pub gc_rewritten_bytes: u64,
    /// Bytes of sealed segments the kernel was asked to drop from the page cache
    /// (`WalOptions::page_cache_window`); a range dropped again counts again.
    pub cache_bytes_dropped: u64,
    /// Segments holding the log now, the active one included.
    pub live_segments: u64,
    pub spare_segments: u64,
    pub groups: u64,
    pub written_lsn: u64,
    pub durable_lsn: u64,
}

impl crate::wal::Inner {
    pub(crate) fn snapshot_stats(&self) -> WalStats {
        let s = &self.stats;
        let written_lsn = self.writer.lock().written_lsn;
        WalStats {
            records_written: s.records.load(Ordering::Relaxed),
            bytes_written: s.bytes.load(Ordering::Relaxed),
            sync_rounds: s.sync_rounds.load(Ordering::Relaxed),
            sync_seconds: s.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            segment_rolls: s.rolls.load(Ordering::Relaxed),
            segments_prepared: s.segments_prepared.load(Ordering::Relaxed),
            segments_retired: s.segments_retired.load(Ordering::Relaxed),
            gc_rewritten_bytes: s.gc_rewritten_bytes.load(Ordering::Relaxed),
            cache_bytes_dropped: s.cache_bytes_dropped.load(Ordering::Relaxed),
            live_segments: self.segments.read().len() as u64,
            spare_segments: self.spares.lock().ready.len() as u64,
            groups: self.groups.read().len() as u64,
            written_lsn,
            durable_lsn: self.durable_lsn.load(Ordering::Relaxed),
        }
    }
}
