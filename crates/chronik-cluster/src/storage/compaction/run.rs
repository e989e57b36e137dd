//! A compaction pass over a partition's segment files: read the part not yet cleaned into a
//! key map, then rewrite the files the plan reaches, a group at a time, each group into one
//! new file of the next generation that replaces them. A crash at any point leaves each group
//! either as it was or replaced whole (the new file is durable under its final name before the
//! old ones are dropped, and a newer generation wins at start).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::cleaner::{KeyMap, clean_entry};
use crate::raft::CompactionPlan;
use crate::storage::EntryOffsets;
use crate::storage::segments::{CompactedSpan, SegmentError, SegmentFile, SegmentStore, SegmentWriter};

/// Most distinct keys one pass maps (about 40 bytes each in memory): a partition with more
/// keys in its uncleaned part is cleaned over several passes, as Kafka's cleaner does with
/// its dedupe buffer.
pub const MAP_CAPACITY: usize = 1 << 20;

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub files_in: usize,
    pub files_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Offsets below this are now clean.
    pub cleaned_through: u64,
}

/// The bytes per second compaction may read and write, shared by every pass on a node
/// (0: no limit). A pass that gets ahead of it sleeps (it runs on a blocking thread).
pub struct IoBudget {
    bytes_per_second: u64,
    state: Mutex<(Instant, u64)>,
}

impl IoBudget {
    pub fn new(bytes_per_second: u64) -> IoBudget {
        IoBudget { bytes_per_second, state: Mutex::new((Instant::now(), 0)) }
    }

    fn spend(&self, bytes: u64) {
        if self.bytes_per_second == 0 {
            return;
        }
        let wait = {
            let mut s = self.state.lock();
            if s.0.elapsed() > Duration::from_secs(1) && s.1 < self.bytes_per_second {
                *s = (Instant::now(), 0); // an idle budget does not bank a burst
            }
            s.1 += bytes;
            Duration::from_secs_f64(s.1 as f64 / self.bytes_per_second as f64).saturating_sub(s.0.elapsed())
        };
        std::thread::sleep(wait);
    }
}

/// The files of `store` that a pass under `plan` rewrites: those starting below its end.
fn inputs(store: &SegmentStore, plan: &CompactionPlan) -> Vec<Arc<SegmentFile>> {
    store.files().into_iter().filter(|f| f.footer().base_offset < plan.end).collect()
}

/// Runs `plan` over `store`'s files; new files are at most about `segment_bytes` (several
/// small inputs merge into one). `None` if there was nothing to do.
pub fn run(
    store: &SegmentStore,
    plan: &CompactionPlan,
    segment_bytes: u64,
    budget: &IoBudget,
    map_capacity: usize,
) -> Result<Option<CompactionOutcome>, SegmentError> {
    let files = inputs(store, plan);
    if files.is_empty() {
        return Ok(None);
    }
    // The map: every key in [dirty_start, end), until it is full.
    let mut map = KeyMap::new(map_capacity);
    let mut reach = plan.end;
    'build: for f in files.iter().filter(|f| f.footer().last_offset >= plan.dirty_start) {
        let mut full = false;
        f.for_each_entry(|h, records| {
            budget.spend(h.footprint());
            if full || h.base_offset < plan.dirty_start || h.last_offset >= plan.end {
                return Ok::<(), SegmentError>(());
            }
            if !map.add_entry(&records) {
                reach = h.base_offset;
                full = true;
            }
            Ok(())
        })?;
        if full {
            break 'build;
        }
    }
    let mut outcome = CompactionOutcome { cleaned_through: reach, ..CompactionOutcome::default() };
    for group in groups(&files, segment_bytes) {
        let first = group[0].footer();
        let last = group[group.len() - 1].footer();
        let span = CompactedSpan {
            generation: group.iter().map(|f| f.generation()).max().unwrap_or(0) + 1,
            last_offset: last.last_offset,
            cleaned_through: reach,
        };
        let mut w = SegmentWriter::create_compacted(store.dir(), first.base_offset, span)?;
        for f in &group {
            outcome.bytes_in += f.footer().data_len;
            f.for_each_entry(|h, records| {
                budget.spend(h.footprint());
                if let Some(c) = clean_entry(&records, &map, plan, reach) {
                    let offsets = EntryOffsets {
                        raft_index: 0,
                        base_offset: c.base_offset,
                        last_offset: c.last_offset,
                        max_timestamp: c.max_timestamp,
                        bytes: c.records.len() as u64,
                        epoch: h.epoch,
                    };
                    budget.spend(c.records.len() as u64);
                    w.push(&offsets, &c.records)?;
                }
                Ok::<(), SegmentError>(())
            })?;
        }
        let (path, footer, idx) = w.finish((last.last_raft_index, last.last_raft_term))?;
        crate::crash_point::crash_point("compact.file_written");
        outcome.bytes_out += footer.data_len;
        outcome.files_in += group.len();
        outcome.files_out += 1;
        store.replace(&group, vec![(path, footer, idx, span.generation)]);
    }
    Ok(Some(outcome))
}

/// Consecutive files whose data together stays within `segment_bytes` (each group at least
/// one file): each group becomes one file.
fn groups(files: &[Arc<SegmentFile>], segment_bytes: u64) -> Vec<Vec<Arc<SegmentFile>>> {
    let mut out: Vec<Vec<Arc<SegmentFile>>> = Vec::new();
    let mut size = 0u64;
    for f in files {
        let bytes = f.footer().data_len;
        match out.last_mut() {
            Some(g) if size + bytes <= segment_bytes => {
                g.push(f.clone());
                size += bytes;
            }
            _ => {
                out.push(vec![f.clone()]);
                size = bytes;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::batch::split_batches;
    use crate::storage::compaction::batch_filter::{tests::keyed_batch, visit};
    use crate::storage::segments::{MovedEntry, verify_file};

    /// Entries of one record each at offsets `from..to`: key `k{i % keys}`, a tombstone every
    /// `tombstone_every`-th, timestamps `i`.
    fn log(from: u64, to: u64, keys: u64, tombstone_every: u64) -> Vec<MovedEntry> {
        (from..to)
            .map(|i| {
                let key = format!("k{}", i % keys);
                let value = (i % tombstone_every != 0).then(|| format!("v{i}"));
                let records: Bytes =
                    keyed_batch(i as i64, (i % 5) as u8, &[(key.as_str(), value.as_deref())], i as i64).into();
                let offsets = EntryOffsets {
                    raft_index: i + 1,
                    base_offset: i,
                    last_offset: i,
                    max_timestamp: i as i64,
                    bytes: records.len() as u64,
                    epoch: 1,
                };
                MovedEntry { offsets, records }
            })
            .collect()
    }

    /// Every record a reader gets from offset 0, as a consumer would fetch: (offset, key, value
    /// present).
    fn read_all(store: &SegmentStore) -> Vec<(u64, String, bool)> {
        let mut out = Vec::new();
        let mut next = 0;
        loop {
            let chunks = store.read(next, 1 << 16).unwrap();
            if chunks.is_empty() {
                return out;
            }
            for c in chunks {
                for s in split_batches(&c, true).unwrap() {
                    visit(&c[s.range.clone()], &s.header, |o, r| {
                        out.push((o, String::from_utf8(r.key.unwrap().to_vec()).unwrap(), !r.is_tombstone))
                    })
                    .unwrap();
                    next = s.header.last_offset() as u64 + 1;
                }
            }
        }
    }

    /// What a reader of the whole uncompacted history would hold: key -> (offset, value present).
    fn latest(records: &[(u64, String, bool)]) -> BTreeMap<String, (u64, bool)> {
        records.iter().map(|(o, k, v)| (k.clone(), (*o, *v))).collect()
    }

    #[test]
    fn a_pass_over_files_keeps_the_latest_per_key_merges_files_and_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::open(dir.path(), 0).unwrap();
        for (from, to) in [(0, 300), (300, 600), (600, 900)] {
            store.write(&log(from, to, 50, 7), (to, 1)).unwrap();
        }
        let history = read_all(&store);
        let originals: Vec<(std::path::PathBuf, Vec<u8>)> =
            store.files().iter().map(|f| (f.path().to_path_buf(), std::fs::read(f.path()).unwrap())).collect();
        // Every tombstone is old at time 10_000 with a retention of 100.
        let plan = CompactionPlan { dirty_start: 0, end: 900, now_ms: 10_000, delete_retention_ms: 100 };
        let outcome = run(&store, &plan, 1 << 30, &IoBudget::new(0), MAP_CAPACITY).unwrap().unwrap();
        assert_eq!((outcome.files_in, outcome.files_out, outcome.cleaned_through), (3, 1, 900));
        assert!(outcome.bytes_out < outcome.bytes_in / 5, "{outcome:?}");
        let expected: Vec<(u64, String, bool)> = {
            let mut v: Vec<_> = latest(&history)
                .into_iter()
                .filter(|(_, (_, present))| *present)
                .map(|(k, (o, p))| (o, k, p))
                .collect();
            v.sort();
            v
        };
        assert_eq!(read_all(&store), expected, "the latest value of each key, tombstoned keys gone");
        let file = store.files()[0].clone();
        assert_eq!(file.generation(), 1);
        assert_eq!((file.footer().base_offset, file.footer().last_offset), (0, 899), "the span of what it replaced");
        verify_file(file.path(), 0).expect("a compacted file passes a receiver's checks");
        for (path, _) in &originals {
            assert!(!path.exists(), "{} is deleted once unused", path.display());
        }
        // A crash after the new file was whole but before the old ones went: the newer
        // generation wins at start and the old files are deleted.
        for (path, bytes) in &originals {
            std::fs::write(path, bytes).unwrap();
        }
        drop((file, store));
        let reopened = SegmentStore::open(dir.path(), 900).unwrap();
        assert_eq!(reopened.files().len(), 1);
        assert_eq!(read_all(&reopened), expected);
        assert!(originals.iter().all(|(p, _)| !p.exists()));
        // A second pass over the clean files changes nothing.
        let again = run(&reopened, &CompactionPlan { dirty_start: 900, ..plan }, 1 << 30, &IoBudget::new(0), 10)
            .unwrap()
            .unwrap();
        assert_eq!(again.bytes_out, outcome.bytes_out);
        assert_eq!(read_all(&reopened), expected);
    }

    #[test]
    fn two_replicas_running_the_same_plan_write_the_same_bytes() {
        // The same log, cut into files differently (moves happen on each replica's own
        // schedule): the pass serves the same batches at the same offsets.
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (SegmentStore::open(dir_a.path(), 0).unwrap(), SegmentStore::open(dir_b.path(), 0).unwrap());
        for (from, to) in [(0, 250), (250, 500)] {
            a.write(&log(from, to, 40, 6), (to, 1)).unwrap();
        }
        for (from, to) in [(0, 100), (100, 400), (400, 500)] {
            b.write(&log(from, to, 40, 6), (to, 1)).unwrap();
        }
        let plan = CompactionPlan { dirty_start: 0, end: 500, now_ms: 300, delete_retention_ms: 100 };
        run(&a, &plan, 1 << 30, &IoBudget::new(0), MAP_CAPACITY).unwrap();
        run(&b, &plan, 1 << 30, &IoBudget::new(0), MAP_CAPACITY).unwrap();
        let all = |s: &SegmentStore| s.read(0, usize::MAX).unwrap();
        assert_eq!(all(&a), all(&b));
        let (fa, fb) = (std::fs::read(a.files()[0].path()).unwrap(), std::fs::read(b.files()[0].path()).unwrap());
        assert_eq!(fa, fb, "merged into one file each: the same file, byte for byte");
    }

    #[test]
    fn recent_tombstones_stay_and_files_group_by_segment_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::open(dir.path(), 0).unwrap();
        for (from, to) in [(0, 100), (100, 200), (200, 300), (300, 400)] {
            store.write(&log(from, to, 10, 3), (to, 1)).unwrap();
        }
        let history = read_all(&store);
        let sizes: Vec<u64> = store.files().iter().map(|f| f.footer().data_len).collect();
        let two_files = (sizes[0] + sizes[1]).max(sizes[2] + sizes[3]);
        // Tombstones younger than 1000 ms at time 1000 (all of them) stay.
        let plan = CompactionPlan { dirty_start: 0, end: 400, now_ms: 1000, delete_retention_ms: 1000 };
        let outcome = run(&store, &plan, two_files, &IoBudget::new(0), MAP_CAPACITY).unwrap().unwrap();
        assert_eq!((outcome.files_in, outcome.files_out), (4, 2), "two inputs per output");
        let mut expected: Vec<(u64, String, bool)> =
            latest(&history).into_iter().map(|(k, (o, p))| (o, k, p)).collect();
        expected.sort();
        assert_eq!(read_all(&store), expected, "tombstones inside delete.retention.ms are read");
        let spans: Vec<(u64, u64)> =
            store.files().iter().map(|f| (f.footer().base_offset, f.footer().last_offset)).collect();
        assert_eq!(spans, vec![(0, 199), (200, 399)]);
    }
}
