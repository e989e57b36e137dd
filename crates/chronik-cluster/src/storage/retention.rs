//! Retention planning: where a partition's log should start, given its committed entries and
//! its topic's `retention.ms` / `retention.bytes`. Pure; the node applies the plan through Raft
//! (advance the log start offset) and then compacts the log below it (snapshot + purge).

use super::offsets::EntryOffsets;

/// The new log start offset, if retention moves it past `current_log_start`.
///
/// - time: leading entries whose newest timestamp is older than `now_ms - retention_ms` go;
/// - size: leading entries go while what remains is still at least `retention_bytes` (as Kafka
///   deletes a segment only when the log stays at or above the limit without it).
///
/// `entries` are the committed entries, oldest first (those wholly below `current_log_start`
/// are skipped); `live_bytes` is the size of those at or above it. Only as many entries are
/// looked at as are dropped, plus one, so a partition with a long log costs nothing to check.
/// `-1` disables either limit. Only whole entries (produce requests' batches) are removed.
pub fn plan<'a>(
    entries: impl IntoIterator<Item = &'a EntryOffsets>,
    live_bytes: u64,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
    current_log_start: u64,
) -> Option<u64> {
    let cutoff = (retention_ms >= 0).then(|| now_ms.saturating_sub(retention_ms));
    let limit = u64::try_from(retention_bytes).ok();
    // Each rule removes a prefix; the longer prefix wins.
    let (mut by_time, mut by_size) = (cutoff.is_some(), limit.is_some());
    let mut remaining = live_bytes;
    let mut new_start = None;
    for e in entries.into_iter().skip_while(|e| e.last_offset < current_log_start) {
        by_time = by_time && cutoff.is_some_and(|c| e.max_timestamp < c);
        by_size = by_size && limit.is_some_and(|l| remaining.saturating_sub(e.bytes) >= l);
        if !by_time && !by_size {
            break;
        }
        remaining = remaining.saturating_sub(e.bytes);
        new_start = Some(e.last_offset + 1);
    }
    new_start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(base: u64, ts: i64, bytes: u64) -> EntryOffsets {
        EntryOffsets {
            raft_index: base + 1,
            base_offset: base,
            last_offset: base + 9,
            max_timestamp: ts,
            bytes,
            epoch: 1,
        }
    }

    #[test]
    fn plan_table() {
        let log = vec![e(0, 100, 10), e(10, 200, 10), e(20, 300, 10), e(30, 400, 10)];
        // (now, retention.ms, retention.bytes, current start, expected new start)
        let cases = [
            ("nothing expired", 350, 1000, -1, 0, None),
            ("two expired by time", 1250, 1000, -1, 0, Some(20)),
            ("all expired", 10_000, 1000, -1, 0, Some(40)),
            ("retention disabled", 10_000, -1, -1, 0, None),
            ("size keeps at least the limit", 0, -1, 25, 0, Some(10)),
            ("size exactly", 0, -1, 20, 0, Some(20)),
            ("size below one entry", 0, -1, 5, 0, Some(30)),
            ("size already fine", 0, -1, 100, 0, None),
            ("both: the larger cut wins", 1150, 1000, 35, 0, Some(10)),
            ("start already moved", 1250, 1000, -1, 20, None),
            ("start inside an entry", 1350, 1000, -1, 25, Some(30)),
            ("time stops at the first recent entry", 1150, 1000, -1, 0, Some(10)),
            ("size over a moved start", 0, -1, 10, 20, Some(30)),
        ];
        for (name, now, ms, bytes, start, expected) in cases {
            let live_bytes: u64 = log.iter().filter(|e| e.last_offset >= start).map(|e| e.bytes).sum();
            assert_eq!(plan(&log, live_bytes, now, ms, bytes, start), expected, "{name}");
        }
    }

    /// Each rule removes a prefix, judged on its own: an expired entry behind one that neither
    /// rule removes stays until it reaches the front.
    #[test]
    fn expired_entry_behind_a_kept_one_stays() {
        let log = vec![e(0, 100, 10), e(10, 900, 10), e(20, 100, 10)];
        assert_eq!(plan(&log, 30, 1150, 1000, -1, 0), Some(10));
        assert_eq!(plan(&log, 30, 1150, 1000, 30, 0), Some(10), "size alone would keep all three");
        assert_eq!(plan(&log, 30, 1150, 1000, 10, 0), Some(20), "size takes the recent entry, time does not");
    }
}
