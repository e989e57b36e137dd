//! Retention planning: where a partition's log should start, given its committed entries and
//! its topic's `retention.ms` / `retention.bytes`. Pure; the node applies the plan through Raft
//! (advance the log start offset) and then compacts the log below it (snapshot + purge).

use crate::offsets::EntryOffsets;

/// The new log start offset, if retention moves it past `current_log_start`.
///
/// - time: leading entries whose newest timestamp is older than `now_ms - retention_ms` go;
/// - size: leading entries go while what remains is still at least `retention_bytes` (as Kafka
///   deletes a segment only when the log stays at or above the limit without it).
///
/// `-1` disables either limit. Only whole entries (produce requests' batches) are removed.
pub fn plan(entries: &[EntryOffsets], now_ms: i64, retention_ms: i64, retention_bytes: i64, current_log_start: u64) -> Option<u64> {
    let live: Vec<&EntryOffsets> = entries.iter().filter(|e| e.last_offset >= current_log_start).collect();
    let mut drop = 0;
    if retention_ms >= 0 {
        let cutoff = now_ms.saturating_sub(retention_ms);
        drop = live.iter().take_while(|e| e.max_timestamp < cutoff).count();
    }
    if retention_bytes >= 0 {
        let mut remaining: u64 = live.iter().map(|e| e.bytes).sum();
        let mut by_size = 0;
        for e in &live {
            if remaining - e.bytes < retention_bytes as u64 {
                break;
            }
            remaining -= e.bytes;
            by_size += 1;
        }
        drop = drop.max(by_size);
    }
    if drop == 0 {
        return None;
    }
    Some(live[drop - 1].last_offset + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(base: u64, ts: i64, bytes: u64) -> EntryOffsets {
        EntryOffsets { raft_index: base + 1, base_offset: base, last_offset: base + 9, max_timestamp: ts, bytes, epoch: 1 }
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
        ];
        for (name, now, ms, bytes, start, expected) in cases {
            assert_eq!(plan(&log, now, ms, bytes, start), expected, "{name}");
        }
    }
}
