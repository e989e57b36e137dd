//! The compaction decision, as pure functions: which records a pass keeps, given the log and
//! a [`CompactionPlan`]. Nothing here reads a clock or a config, so every replica that runs
//! the same plan over the same log keeps exactly the same records, in the same bytes.
//!
//! Kafka's rules: a record goes when a later record in the cleaned range has the same key;
//! a tombstone (null value) that nothing supersedes goes once it is older than
//! `delete.retention.ms` at the plan's time; a record without a key goes too (it can only be
//! there if the topic was switched to `compact`; Kafka's cleaner drops those as well);
//! everything at or after the plan's end stays.

use std::collections::HashMap;
use std::hash::Hasher;

use bytes::Bytes;

use super::batch_filter::{self, Filtered};
use crate::batch::split_batches;
use crate::raft::CompactionPlan;
use crate::records::RecordMeta;

/// Latest offset of each key seen in the dirty part of the log. Keys are held as 128-bit
/// hashes (as Kafka holds MD5s): the map's size is bounded by its key count, not key sizes.
pub struct KeyMap {
    latest: HashMap<u128, u64>,
    capacity: usize,
}

fn key_hash(key: &[u8]) -> u128 {
    // Two SipHash runs with different prefixes: a process-local map, so only collisions
    // matter, and 128 bits make them practically impossible.
    let half = |prefix: u8| {
        let mut h = std::hash::DefaultHasher::new();
        h.write_u8(prefix);
        h.write(key);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

impl KeyMap {
    pub fn new(capacity: usize) -> KeyMap {
        KeyMap { latest: HashMap::new(), capacity }
    }

    /// Adds the keyed records of one entry (its stored batches). Returns false, adding
    /// nothing, if the entry's records might not fit (the map then ends the pass's reach
    /// there); an entry is always taken into an empty map, so a pass always progresses.
    /// A batch whose records cannot be read (too large decompressed, malformed) adds no key:
    /// it then supersedes nothing and is kept whole.
    pub fn add_entry(&mut self, records: &[u8]) -> bool {
        let Ok(spans) = split_batches(records, false) else { return true };
        let count: usize = spans.iter().map(|s| s.header.record_count.max(0) as usize).sum();
        if !self.latest.is_empty() && self.latest.len() + count > self.capacity {
            return false;
        }
        for s in spans {
            let mut keys = Vec::new();
            let batch = &records[s.range.clone()];
            if batch_filter::visit(batch, &s.header, |offset, r| keys.extend(r.key.map(|k| (key_hash(k), offset))))
                .is_ok()
            {
                self.latest.extend(keys);
            }
        }
        true
    }

    /// Whether a pass under `plan` keeps the record at `offset` (its batch's newest timestamp
    /// is `batch_max_ts`). `reach` is where the pass's map ends (at most the plan's end).
    pub fn keeps(&self, offset: u64, r: &RecordMeta<'_>, batch_max_ts: i64, plan: &CompactionPlan, reach: u64) -> bool {
        if offset >= reach {
            return true;
        }
        let Some(key) = r.key else { return false };
        if self.latest.get(&key_hash(key)).is_some_and(|latest| *latest > offset) {
            return false;
        }
        // Measured from the batch's newest timestamp, as retention measures age.
        !(r.is_tombstone && plan.now_ms.saturating_sub(batch_max_ts) > plan.delete_retention_ms)
    }
}

/// One entry after a pass: its batches, first and last offset, newest timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanedEntry {
    pub records: Bytes,
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

/// The entry `records` (its stored batches) with only what the pass keeps; `None` if nothing
/// is left. A batch that cannot be read is kept whole. The batch holding the plan's last
/// offset stays, empty if need be: it may be the end of the log, and a consumer must be able
/// to step to the log end over what compaction removed (an empty batch tells it where).
pub fn clean_entry(records: &Bytes, map: &KeyMap, plan: &CompactionPlan, reach: u64) -> Option<CleanedEntry> {
    let spans = split_batches(records, false).ok()?;
    let mut out: Vec<u8> = Vec::new();
    let (mut changed, mut first, mut last, mut max_ts) = (false, None, 0u64, i64::MIN);
    for s in &spans {
        let h = &s.header;
        let batch = &records[s.range.clone()];
        let holds_end = (h.base_offset as u64) < plan.end && h.last_offset() as u64 + 1 >= plan.end;
        let kept = match batch_filter::filter(batch, h, holds_end, |o, r| map.keeps(o, r, h.max_timestamp, plan, reach))
        {
            Ok(Filtered::Unchanged) | Err(_) => Some(Bytes::copy_from_slice(batch)),
            Ok(Filtered::Dropped) => None,
            Ok(Filtered::Rewritten(b)) => Some(Bytes::from(b)),
        };
        changed |= kept.as_deref() != Some(batch);
        if let Some(b) = kept {
            first.get_or_insert(h.base_offset as u64);
            last = h.last_offset() as u64;
            max_ts = max_ts.max(h.max_timestamp);
            out.extend_from_slice(&b);
        }
    }
    let base_offset = first?;
    let records = if changed { Bytes::from(out) } else { records.clone() };
    Some(CleanedEntry { records, base_offset, last_offset: last, max_timestamp: max_ts })
}

/// What a segment file tells the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    pub base_offset: u64,
    pub last_offset: u64,
    pub bytes: u64,
    pub max_timestamp: i64,
    /// How far the compaction that wrote it cleaned (0 for a file moved out of the WAL).
    pub cleaned_through: u64,
}

/// A compacted topic's settings, as the planner needs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionRules {
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
}

/// The next pass over a partition's segment files (oldest first), if one is due: the files
/// old enough to clean (newest timestamp at least `min.compaction.lag.ms` ago) end it; it runs
/// when the part of them not yet cleaned is at least `min.cleanable.dirty.ratio` of them, or
/// when the oldest file not yet cleaned is older than `max.compaction.lag.ms`.
pub fn plan(files: &[FileSummary], log_start: u64, rules: &CompactionRules, now_ms: i64) -> Option<CompactionPlan> {
    let cleaned = files.iter().map(|f| f.cleaned_through).max().unwrap_or(0).max(log_start);
    let old_enough = now_ms.saturating_sub(rules.min_compaction_lag_ms.max(0));
    let cleanable: Vec<&FileSummary> =
        files.iter().filter(|f| f.last_offset >= log_start).take_while(|f| f.max_timestamp <= old_enough).collect();
    let end = cleanable.last()?.last_offset + 1;
    let dirty: Vec<&&FileSummary> = cleanable.iter().filter(|f| f.base_offset >= cleaned).collect();
    let first_dirty = dirty.first()?;
    let dirty_bytes: u64 = dirty.iter().map(|f| f.bytes).sum();
    let total_bytes: u64 = cleanable.iter().map(|f| f.bytes).sum();
    let ratio = dirty_bytes as f64 / total_bytes.max(1) as f64;
    let overdue = first_dirty.max_timestamp < now_ms.saturating_sub(rules.max_compaction_lag_ms.max(0));
    (ratio >= rules.min_cleanable_dirty_ratio || overdue).then_some(CompactionPlan {
        dirty_start: cleaned,
        end,
        now_ms,
        delete_retention_ms: rules.delete_retention_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::compaction::batch_filter::tests::keyed_batch;

    fn plan_at(now_ms: i64, end: u64) -> CompactionPlan {
        CompactionPlan { dirty_start: 0, end, now_ms, delete_retention_ms: 1000 }
    }

    /// (offset, key, value) of every record in `entries`.
    fn contents(entries: &[Bytes]) -> Vec<(u64, String, Option<()>)> {
        let mut out = Vec::new();
        for e in entries {
            for s in split_batches(e, true).unwrap() {
                batch_filter::visit(&e[s.range.clone()], &s.header, |o, r| {
                    out.push((o, String::from_utf8_lossy(r.key.unwrap()).into_owned(), (!r.is_tombstone).then_some(())))
                })
                .unwrap();
            }
        }
        out
    }

    fn compact(entries: &[Bytes], plan: &CompactionPlan, capacity: usize) -> Vec<Bytes> {
        let mut map = KeyMap::new(capacity);
        let mut reach = plan.end;
        for e in entries {
            let base = split_batches(e, false).unwrap()[0].header.base_offset as u64;
            if base < plan.dirty_start || base >= plan.end {
                continue;
            }
            if !map.add_entry(e) {
                reach = base;
                break;
            }
        }
        entries.iter().filter_map(|e| clean_entry(e, &map, plan, reach.min(plan.end)).map(|c| c.records)).collect()
    }

    #[test]
    fn latest_value_per_key_and_recent_tombstones_stay() {
        // offsets 0..3, 3..6, 6..8; timestamps 0.., 100.., 5000..
        let entries: Vec<Bytes> = vec![
            keyed_batch(0, 0, &[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))], 0).into(),
            keyed_batch(3, 2, &[("a", Some("2")), ("b", None), ("d", Some("1"))], 100).into(),
            keyed_batch(6, 4, &[("d", None), ("e", Some("1"))], 5000).into(),
        ];
        type Case<'a> = (&'a str, CompactionPlan, usize, Vec<(u64, &'a str, bool)>);
        let cases: Vec<Case> = vec![
            (
                "tombstones inside delete.retention.ms stay",
                plan_at(1000, 8),
                100,
                vec![(2, "c", true), (3, "a", true), (4, "b", false), (6, "d", false), (7, "e", true)],
            ),
            (
                "an old tombstone goes, a recent one stays",
                plan_at(3000, 8),
                100,
                vec![(2, "c", true), (3, "a", true), (6, "d", false), (7, "e", true)],
            ),
            (
                "nothing at or after the end is touched",
                plan_at(1000, 3),
                100,
                vec![
                    (0, "a", true),
                    (1, "b", true),
                    (2, "c", true),
                    (3, "a", true),
                    (4, "b", false),
                    (5, "d", true),
                    (6, "d", false),
                    (7, "e", true),
                ],
            ),
            (
                "a full map ends the pass's reach at an entry",
                plan_at(1000, 8),
                4,
                vec![
                    (0, "a", true),
                    (1, "b", true),
                    (2, "c", true),
                    (3, "a", true),
                    (4, "b", false),
                    (5, "d", true),
                    (6, "d", false),
                    (7, "e", true),
                ],
            ),
        ];
        for (name, plan, capacity, expected) in cases {
            let out = compact(&entries, &plan, capacity);
            let got = contents(&out);
            let expected: Vec<(u64, String, Option<()>)> =
                expected.into_iter().map(|(o, k, v)| (o, k.to_string(), v.then_some(()))).collect();
            assert_eq!(got, expected, "{name}");
            assert_eq!(out, compact(&entries, &plan, capacity), "{name}: the same input gives the same bytes");
        }
    }

    #[test]
    fn records_without_a_key_go_as_kafka_drops_them() {
        let keyless: Bytes =
            crate::batch::tests::batch_of(&[crate::records::tests::record(0, 0, None, b"v", &[])], 1, 0, 5, 5).into();
        let entries = vec![keyless, keyed_batch(1, 0, &[("a", Some("1"))], 5).into()];
        let out = compact(&entries, &plan_at(10, 2), 100);
        assert_eq!(contents(&out), vec![(1, "a".to_string(), Some(()))]);
        let untouched = compact(&entries, &plan_at(10, 0), 100);
        assert_eq!(untouched, entries, "at or after the end nothing goes");
    }

    #[test]
    fn a_second_pass_over_the_first_pass_output_equals_one_pass_over_everything() {
        let mut entries: Vec<Bytes> = Vec::new();
        for i in 0..40u64 {
            let key = format!("k{}", i % 7);
            let value = (i % 5 != 0).then(|| format!("v{i}"));
            entries
                .push(keyed_batch(i as i64, (i % 5) as u8, &[(key.as_str(), value.as_deref())], i as i64 * 10).into());
        }
        let late = CompactionPlan { dirty_start: 0, end: 40, now_ms: 250, delete_retention_ms: 100 };
        let once = compact(&entries, &late, 1000);
        let early = CompactionPlan { dirty_start: 0, end: 20, now_ms: 200, delete_retention_ms: 100 };
        let mut twice = compact(&entries[..20], &early, 1000);
        twice.extend_from_slice(&entries[20..]);
        let twice = compact(&twice, &CompactionPlan { dirty_start: 20, ..late }, 1000);
        assert_eq!(contents(&twice), contents(&once));
    }

    #[test]
    fn planning_follows_ratio_and_lags() {
        let rules = CompactionRules {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 100,
            max_compaction_lag_ms: 10_000,
            delete_retention_ms: 50,
        };
        let f = |base, last, bytes, ts, cleaned| FileSummary {
            base_offset: base,
            last_offset: last,
            bytes,
            max_timestamp: ts,
            cleaned_through: cleaned,
        };
        let cleaned_and_dirty = [f(0, 9, 100, 10, 10), f(10, 19, 60, 20, 0), f(20, 29, 60, 950, 0)];
        type Case<'a> = (&'a str, Vec<FileSummary>, i64, Option<(u64, u64)>);
        let cases: Vec<Case> = vec![
            ("nothing yet", vec![], 1000, None),
            ("dirty 60/160 < 0.5: waits", cleaned_and_dirty[..2].to_vec(), 1000, None),
            ("the newest file is inside min.compaction.lag.ms", cleaned_and_dirty.to_vec(), 1000, None),
            ("dirty 120/220 >= 0.5 once the lag passed", cleaned_and_dirty.to_vec(), 1050, Some((10, 30))),
            ("overdue by max.compaction.lag.ms", cleaned_and_dirty[..2].to_vec(), 10_021, Some((10, 20))),
            ("all clean", vec![f(0, 9, 100, 10, 10)], 100_000, None),
        ];
        for (name, files, now, expected) in cases {
            let got = plan(&files, 0, &rules, now).map(|p| (p.dirty_start, p.end));
            assert_eq!(got, expected, "{name}");
        }
    }
}
