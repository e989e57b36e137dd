//! A partition's log as Kafka sees it: offsets, high watermark, log start, and reads of the
//! stored record batches, from its segment files below the WAL's front and from the WAL above
//! it (callers never know which). Shared by the partition's log store (which appends and
//! truncates), its state machine (which moves the high watermark) and the fetch path (which
//! reads).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chronik_wal::Wal;
use parking_lot::RwLock;
use tokio::sync::watch;

use super::compaction::{self, CompactionOutcome, CompactionRules, FileSummary, IoBudget};
use super::offsets::{self, EntryOffsets, OffsetIndex};
use super::segments::{self, MovedEntry, SegmentError, SegmentStore};
use super::{codec, retention};
use crate::raft::{CompactionPlan, GroupId};

/// Record batches read for a fetch.
#[derive(Debug, Default)]
pub struct ReadBatches {
    /// Whole stored entries (each one or more batches), in offset order.
    pub chunks: Vec<Bytes>,
    pub bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OutOfRange { offset: u64, log_start: u64, log_end: u64 },
    #[error("storage error: {0}")]
    Storage(#[from] chronik_wal::WalError),
    #[error("segment store: {0}")]
    Segment(#[from] SegmentError),
}

pub struct PartitionLog {
    group: GroupId,
    wal: Arc<Wal>,
    /// Appended and truncated by the log store, purged by compaction.
    pub(super) index: RwLock<OffsetIndex>,
    high_watermark: watch::Sender<u64>,
    /// Log start offset set by DeleteRecords or retention (may be inside an entry).
    log_start: AtomicU64,
    /// What moved out of the WAL: the offsets below the index's front.
    pub(super) segments: SegmentStore,
    /// The last compaction pass Raft delivered that this replica has not run yet.
    pending_compaction: parking_lot::Mutex<Option<CompactionPlan>>,
}

impl PartitionLog {
    /// Rebuilds the offset index from the group's entries in the WAL. `snapshot_next_offset` is
    /// the next offset recorded by the latest snapshot: the front when the log holds no data.
    /// `segments_dir` holds the partition's segment files.
    pub(crate) fn recover(
        wal: Arc<Wal>,
        group: GroupId,
        snapshot_next_offset: u64,
        snapshot_log_start: u64,
        segments_dir: &Path,
    ) -> io::Result<Arc<Self>> {
        let mut index: Option<OffsetIndex> = None;
        if let Some(info) = wal.group_info(group)
            && let (Some(first), Some(last)) = (info.first_index, info.last)
        {
            let mut start = first;
            while start <= last.index {
                let views = wal.read_range(group, start, last.index + 1, 64 << 20).map_err(io::Error::other)?;
                let Some(v) = views.last() else { break };
                start = v.index + 1;
                for v in &views {
                    let Some(e) = codec::stored_offsets(v) else { continue };
                    let idx = index.get_or_insert_with(|| OffsetIndex::starting_at(e.base_offset));
                    if e.base_offset != idx.next_offset() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "group {group}: entry {} starts at offset {}, expected {}",
                                v.index,
                                e.base_offset,
                                idx.next_offset()
                            ),
                        ));
                    }
                    idx.push(e);
                }
            }
        }
        let index = index.unwrap_or_else(|| OffsetIndex::starting_at(snapshot_next_offset));
        let segments = SegmentStore::open(segments_dir, index.front_offset()).map_err(io::Error::other)?;
        let (high_watermark, _) =
            watch::channel(snapshot_next_offset.max(index.front_offset()).min(index.next_offset()));
        Ok(Arc::new(PartitionLog {
            group,
            wal,
            index: RwLock::new(index),
            high_watermark,
            log_start: AtomicU64::new(snapshot_log_start),
            segments,
            pending_compaction: parking_lot::Mutex::new(None),
        }))
    }

    /// Offset after the last committed (and applied) record: consumers read below it.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    pub fn subscribe_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    pub(crate) fn set_high_watermark(&self, hw: u64) {
        self.high_watermark.send_if_modified(|cur| {
            let changed = *cur != hw;
            *cur = hw;
            changed
        });
    }

    /// First offset a consumer can read.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire).max(self.first_stored_offset()).min(self.high_watermark())
    }

    /// The first offset either tier holds.
    fn first_stored_offset(&self) -> u64 {
        self.segments.first_offset().unwrap_or_else(|| self.index.read().front_offset())
    }

    pub(crate) fn set_log_start(&self, offset: u64) {
        self.log_start.fetch_max(offset, Ordering::AcqRel);
    }

    /// Offset the next produce will get (the log's tail, committed or not).
    pub fn next_offset(&self) -> u64 {
        self.index.read().next_offset()
    }

    /// Bytes of record batches in the log (both tiers).
    pub fn size_bytes(&self) -> u64 {
        self.segments.data_bytes() + self.index.read().bytes()
    }

    /// Record-batch bytes of the entries after Raft index `index` (what a replica that has
    /// the log through `index` still needs), counted over the entries the WAL holds.
    pub fn bytes_after_raft_index(&self, index: u64) -> u64 {
        self.index.read().iter().rev().take_while(|e| e.raft_index > index).map(|e| e.bytes).sum()
    }

    /// The first offset the WAL holds: below it, the log is in segment files.
    pub fn wal_front_offset(&self) -> u64 {
        self.index.read().front_offset()
    }

    /// Bytes of record batches in the segment files.
    pub fn segment_bytes(&self) -> u64 {
        self.segments.data_bytes()
    }

    /// Committed batches starting with the one holding `offset`, up to about `max_bytes` (at
    /// least one entry when any is available). Empty from the high watermark to the log end:
    /// as in Kafka, only an offset past the log end is out of range, because a high watermark
    /// can lag what a consumer has already seen (a replica still re-applying its log after a
    /// restart, a new leader not yet past its first commit).
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadBatches, ReadError> {
        let hw = self.high_watermark();
        let log_start = self.log_start_offset();
        let log_end = self.next_offset();
        if offset < log_start || offset > log_end {
            return Err(ReadError::OutOfRange { offset, log_start, log_end });
        }
        // A move out of the WAL can purge the entries a read found in the index before it reads
        // them; the index already points below the WAL then, so the next attempt finds them in
        // the segment files. Returning what the WAL still had would skip offsets.
        self.retry_if_moved(|| {
            let front = self.index.read().front_offset();
            if offset < front {
                // Below the WAL: moved entries were all committed.
                let chunks = self.segments.read(offset, max_bytes)?;
                if !chunks.is_empty() {
                    return Ok(Some(ReadBatches { bytes: chunks.iter().map(Bytes::len).sum(), chunks }));
                }
                // Compaction removed everything from `offset` to the end of the files: the
                // next batches are the WAL's first.
                return self.read_wal(front, max_bytes, hw);
            }
            self.read_wal(offset, max_bytes, hw)
        })
    }

    /// [`Self::read`] from the WAL; None if the first entry was purged before it was read.
    fn read_wal(&self, offset: u64, max_bytes: usize, hw: u64) -> Result<Option<ReadBatches>, ReadError> {
        // The Raft indexes of the entries that took offsets: between them the WAL may hold
        // entries the state machine refused (an import out of place), which are never served.
        let chosen: Vec<u64> = {
            let index = self.index.read();
            if offset < index.front_offset() {
                // Purged since the caller looked at the front (a move out of the WAL in
                // between): the entry holding `offset` is in a segment file now, and the first
                // one left here starts past it. Serving that would skip offsets.
                return Ok(None);
            }
            let Some(pos) = index.position_of(offset) else { return Ok(Some(ReadBatches::default())) };
            let mut bytes = 0u64;
            let mut chosen = Vec::new();
            for e in index.iter().skip(pos) {
                if e.last_offset >= hw || (!chosen.is_empty() && bytes + e.bytes > max_bytes as u64) {
                    break;
                }
                bytes += e.bytes;
                chosen.push(e.raft_index);
            }
            chosen
        };
        let (Some(&first_raft), Some(&last_raft)) = (chosen.first(), chosen.last()) else {
            return Ok(Some(ReadBatches::default()));
        };
        let views = self.wal.read_range(self.group, first_raft, last_raft + 1, usize::MAX)?;
        if views.first().is_none_or(|v| v.index != first_raft) {
            return Ok(None);
        }
        let mut out = ReadBatches::default();
        for v in views.into_iter().filter(|v| chosen.binary_search(&v.index).is_ok()) {
            if let Some(records) = codec::stored_records(&v) {
                out.bytes += records.len();
                out.chunks.push(records);
            }
        }
        Ok(Some(out))
    }

    /// The stored batches of up to `limit` readable entries, in log order, whose max timestamp
    /// is at or after `ts` (ListOffsets by time narrows the first down to a record; the next
    /// ones serve when its matching records lie below the log start). Segment files are
    /// searched through their time indexes, the WAL tail through the offset index's.
    pub fn time_candidates(&self, ts: i64, limit: usize) -> Result<Vec<Bytes>, ReadError> {
        self.retry_if_moved(|| {
            let start = self.log_start_offset();
            // Entries that move out of the WAL between the two searches would be in neither.
            let front = self.index.read().front_offset();
            let mut out = self.segments.at_or_after_time(ts, start, limit)?;
            if out.len() < limit {
                let hw = self.high_watermark();
                let wal_entries: Vec<u64> = {
                    let index = self.index.read();
                    if index.front_offset() != front {
                        return Ok(None);
                    }
                    index
                        .at_or_after_time(ts, index.entries_below(start))
                        .map_while(|p| index.get(p).filter(|e| e.last_offset < hw).map(|e| e.raft_index))
                        .take(limit - out.len())
                        .collect()
                };
                for raft_index in wal_entries {
                    let Some(records) = self.entry_records(raft_index)? else { return Ok(None) };
                    out.push(records);
                }
            }
            Ok(Some(out))
        })
    }

    /// The readable entry holding the largest timestamp (the earliest such), with it.
    pub fn max_timestamp_candidate(&self) -> Result<Option<(i64, Bytes)>, ReadError> {
        self.retry_if_moved(|| {
            // Entries that move out of the WAL between the two searches would be in neither.
            let front = self.index.read().front_offset();
            let below = self.segments.max_timestamp_entry(self.log_start_offset())?;
            let above = self.with_readable(|entries| offsets::max_timestamp_entry(entries).copied());
            if self.index.read().front_offset() != front {
                return Ok(None);
            }
            let from_wal = |a: EntryOffsets| -> Result<Option<Option<(i64, Bytes)>>, ReadError> {
                Ok(self.entry_records(a.raft_index)?.map(|r| Some((a.max_timestamp, r))))
            };
            match (below, above) {
                (Some(b), Some(a)) if a.max_timestamp > b.0 => from_wal(a),
                (Some(b), _) => Ok(Some(Some(b))),
                (None, Some(a)) => from_wal(a),
                (None, None) => Ok(Some(None)),
            }
        })
    }

    /// Runs a lookup that reads WAL entries it found in the offset index again if one of them
    /// was purged meanwhile (`attempt` returns None): a move out of the WAL put it in a segment
    /// file, where the next attempt finds it.
    fn retry_if_moved<T>(&self, mut attempt: impl FnMut() -> Result<Option<T>, ReadError>) -> Result<T, ReadError> {
        for _ in 0..8 {
            if let Some(found) = attempt()? {
                return Ok(found);
            }
        }
        Err(ReadError::Storage(chronik_wal::WalError::Group {
            group: self.group,
            reason: "the offset index lists entries the WAL no longer holds".into(),
        }))
    }

    /// Runs `f` over the WAL's entries a consumer can read: committed, and not wholly below
    /// the log start.
    fn with_readable<T>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &EntryOffsets>) -> T) -> T {
        let hw = self.high_watermark();
        let start = self.log_start_offset();
        let index = self.index.read();
        f(&mut index.iter().filter(|e| e.last_offset >= start && e.last_offset < hw))
    }

    /// The Raft index of the last WAL entry wholly below `offset` (what compaction may purge).
    pub(crate) fn last_raft_index_below(&self, offset: u64) -> Option<u64> {
        self.index.read().iter().take_while(|e| e.last_offset < offset).last().map(|e| e.raft_index)
    }

    /// Where the partition's segment files live.
    pub(crate) fn segments_dir(&self) -> &Path {
        self.segments.dir()
    }

    /// At open, before [`Self::recover`]: finishes adopting the files of an installed snapshot
    /// (`snapshot` is the one Raft recorded) if a crash interrupted it, or drops files staged
    /// for a snapshot that never got installed.
    pub(crate) fn finish_interrupted_install(segments_dir: &Path, snapshot: Option<(u64, u64)>) -> io::Result<()> {
        if segments_dir.exists() {
            segments::finish_install(segments_dir, snapshot).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// After Raft recorded an installed snapshot (its last entry `snapshot`, its `next_offset`
    /// and `log_start`): the files it brought replace this log's (`segments::finish_install`),
    /// the WAL entries it covers are forgotten, and the log reads from its log start to its
    /// next offset. A snapshot `from_another_replica` whose log holds records must have brought
    /// them; this replica's own snapshot (installed again at start) finds them in place.
    pub(crate) fn adopt_installed(
        &self,
        snapshot: (u64, u64),
        next_offset: u64,
        log_start: u64,
        from_another_replica: bool,
    ) -> Result<(), SegmentError> {
        let adopted = segments::finish_install(self.segments.dir(), Some(snapshot))?;
        if from_another_replica && !adopted && log_start < next_offset {
            return Err(SegmentError::Corrupt {
                path: self.segments.dir().to_path_buf(),
                offset: 0,
                reason: format!(
                    "snapshot {snapshot:?} was installed without its log (offsets {log_start}..{next_offset})"
                ),
            });
        }
        if from_another_replica {
            // Its log replaces this one below the snapshot point.
            self.index.write().install(snapshot.0, next_offset);
        } else {
            // The log recovered from this replica's own WAL stays (it may hold entries the
            // snapshot covers that are in no file yet).
            self.index.write().start_at_if_empty(next_offset);
        }
        if adopted {
            self.segments.reload(next_offset)?;
        }
        self.set_log_start(log_start);
        self.set_high_watermark(next_offset);
        Ok(())
    }

    /// (largest epoch <= `epoch` in the log, offset where the next epoch starts or the log end).
    pub fn epoch_end(&self, epoch: u64) -> Result<Option<(u64, u64)>, ReadError> {
        let index = self.index.read();
        if index.first().is_some_and(|e| e.epoch <= epoch) {
            return Ok(index.epoch_end(epoch));
        }
        // The epoch asked for began below the WAL (its tail may hold the epoch after it).
        let Some((found, end)) = self.segments.epoch_end(epoch)? else { return Ok(None) };
        Ok(Some((found, end.unwrap_or_else(|| index.first_offset_of_epoch_after(found)))))
    }

    /// The stored batches of the WAL entry at `raft_index`.
    fn entry_records(&self, raft_index: u64) -> Result<Option<Bytes>, ReadError> {
        Ok(self.wal.read(self.group, raft_index)?.and_then(|v| codec::stored_records(&v)))
    }

    /// Where retention would move the log start (see `retention::plan`): segment files are
    /// whole units, then the WAL's committed entries. Decided under the index's read lock
    /// without copying it: only the entries it drops are visited, plus the few below the log
    /// start and above the high watermark.
    pub fn retention_plan(&self, now_ms: i64, retention_ms: i64, retention_bytes: i64) -> Option<u64> {
        let hw = self.high_watermark();
        let start = self.log_start_offset();
        let files = self.segments.units();
        let index = self.index.read();
        let below_start: u64 =
            files.iter().chain(index.iter()).take_while(|e| e.last_offset < start).map(|e| e.bytes).sum();
        let uncommitted: u64 = index.iter().rev().take_while(|e| e.last_offset >= hw).map(|e| e.bytes).sum();
        let total = self.segments.data_bytes() + index.bytes();
        let live_bytes = total.saturating_sub(below_start + uncommitted);
        let committed = files.iter().chain(index.iter().take_while(|e| e.last_offset < hw));
        retention::plan(committed, live_bytes, now_ms, retention_ms, retention_bytes, start)
    }

    /// Deletes the segment files wholly below the log start (retention moved past them).
    pub(crate) fn delete_segments_below_log_start(&self) -> Result<usize, ReadError> {
        Ok(self.segments.delete_below(self.log_start_offset())?)
    }

    /// Writes the committed WAL entries up to Raft index `upto`, not yet in a segment file,
    /// to a new one (durably). Returns the Raft index of the last entry the files now cover:
    /// the WAL may drop everything up to it once the partition's snapshot is past it.
    pub(crate) fn move_to_segments(&self, upto: u64) -> Result<Option<u64>, ReadError> {
        let hw = self.high_watermark();
        // Entries already in a file, or wholly below the log start (retention is dropping
        // them), are not copied; the WAL drops them all the same.
        let (in_files, log_start) = (self.segments.next_offset().unwrap_or(0), self.log_start_offset());
        let chosen: Vec<EntryOffsets> = {
            let index = self.index.read();
            index.iter().take_while(|e| e.raft_index <= upto && e.last_offset < hw).copied().collect()
        };
        let Some(last) = chosen.last().copied() else { return Ok(None) };
        let fresh: Vec<EntryOffsets> =
            chosen.into_iter().filter(|e| e.base_offset >= in_files && e.last_offset >= log_start).collect();
        if !fresh.is_empty() {
            let mut moved = Vec::with_capacity(fresh.len());
            for offsets in fresh {
                let records = self.entry_records(offsets.raft_index)?.ok_or_else(|| {
                    ReadError::Storage(chronik_wal::WalError::Group {
                        group: self.group,
                        reason: format!("entry {} to move is gone", offsets.raft_index),
                    })
                })?;
                moved.push(MovedEntry { offsets, records });
            }
            self.segments.write(&moved, (last.raft_index, last.epoch))?;
        }
        Ok(Some(last.raft_index))
    }

    /// Records a compaction pass Raft delivered, for the compaction loop to run.
    pub(crate) fn request_compaction(&self, plan: CompactionPlan) {
        *self.pending_compaction.lock() = Some(plan);
    }

    /// The pass the leader should propose next, if one is due by `rules` at `now_ms`.
    pub(crate) fn compaction_plan(&self, rules: &CompactionRules, now_ms: i64) -> Option<CompactionPlan> {
        let files: Vec<FileSummary> = self
            .segments
            .files()
            .iter()
            .map(|f| {
                let footer = f.footer();
                FileSummary {
                    base_offset: footer.base_offset,
                    last_offset: footer.last_offset,
                    bytes: footer.data_len,
                    max_timestamp: footer.max_timestamp,
                    cleaned_through: footer.cleaned_through,
                }
            })
            .collect();
        compaction::plan(&files, self.log_start_offset(), rules, now_ms)
    }

    /// Whether a pass Raft delivered waits to run here.
    pub(crate) fn has_pending_compaction(&self) -> bool {
        self.pending_compaction.lock().is_some()
    }

    /// Runs the pending pass, if any, over the segment files (blocking: file I/O). Files
    /// written are at most about `segment_bytes`. A pass this replica already ran (its files
    /// are clean up to the plan's end: a plan re-applied from the log after a restart) is
    /// skipped.
    pub(crate) fn run_pending_compaction(
        &self,
        segment_bytes: u64,
        budget: &IoBudget,
    ) -> Result<Option<CompactionOutcome>, ReadError> {
        let Some(plan) = self.pending_compaction.lock().take() else { return Ok(None) };
        let cleaned = self.segments.files().iter().map(|f| f.footer().cleaned_through).max().unwrap_or(0);
        if cleaned >= plan.end {
            return Ok(None);
        }
        // A replica whose moves lag the leader's could hold some of the plan's offsets in the
        // WAL still: compaction never touches the WAL, so those stay until the next pass.
        let plan = CompactionPlan { end: plan.end.min(self.segments.next_offset().unwrap_or(0)), ..plan };
        Ok(compaction::run(&self.segments, &plan, segment_bytes, budget, compaction::MAP_CAPACITY)?)
    }

    /// Bytes of this partition's entries still in the WAL, and the newest timestamp of its
    /// oldest such entry (`None` when the WAL holds none): a compacted topic's "active
    /// segment", which rolls into a segment file by `segment.bytes` and `segment.ms`.
    pub(crate) fn wal_tail(&self) -> (u64, Option<i64>) {
        let hw = self.high_watermark();
        let index = self.index.read();
        let mut committed = index.iter().take_while(|e| e.last_offset < hw);
        let oldest = committed.next().map(|e| e.max_timestamp);
        let bytes = index.iter().map(|e| e.bytes).sum();
        (bytes, oldest)
    }

    /// The Raft index of the last committed entry in the WAL.
    pub fn last_committed_raft_index(&self) -> Option<u64> {
        self.last_raft_index_below(self.high_watermark())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{self, tests::batch};
    use crate::raft::{Command, Entry, log_id};
    use chronik_wal::{AppendEntry, WalOptions};
    use openraft::EntryPayload;

    /// A log of three 2-record entries (offsets 0..6) whose high watermark, as after a restart
    /// before the state machine has re-applied, is still 0.
    fn log_with_lagging_high_watermark(dir: &std::path::Path) -> Arc<PartitionLog> {
        let wal = Arc::new(Wal::open(dir, WalOptions::default()).unwrap().0);
        for (i, next_offset) in [(1u64, 0u64), (2, 2), (3, 4)] {
            append(&wal, i, Command::Produce { records: batch(2, 10).into() }, next_offset);
        }
        PartitionLog::recover(wal, 7, 0, 0, &dir.join("segments")).unwrap()
    }

    fn append(wal: &Wal, index: u64, command: Command, next_offset: u64) {
        let entry = Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(command) };
        let enc = codec::encode(&entry, Some(next_offset)).unwrap();
        let parts = enc.payload_parts();
        let e = AppendEntry {
            index: enc.index,
            term: enc.term,
            leader_id: enc.leader_id,
            entry_kind: enc.kind,
            payload: &parts,
        };
        wal.append(7, &[e], None).unwrap();
    }

    fn import_at(offset: i64) -> Command {
        let mut b = batch(2, 10);
        b[0..8].copy_from_slice(&offset.to_be_bytes());
        Command::Import { records: b.into() }
    }

    /// Imports at 10..=11 and 20..=21 with one out of place (at 15, after 20..=21 is in)
    /// between them in the log: reads serve the two, in place, never the refused one, also
    /// after recovery rebuilt the index from the WAL.
    #[test]
    fn refused_imports_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), WalOptions::default()).unwrap().0);
        append(&wal, 1, import_at(10), 0);
        append(&wal, 2, import_at(20), 12);
        append(&wal, 3, import_at(15), 22);
        append(&wal, 4, Command::Produce { records: batch(1, 10).into() }, 22);
        let log = PartitionLog::recover(wal, 7, 0, 0, &dir.path().join("segments")).unwrap();
        assert_eq!(log.next_offset(), 23);
        log.set_high_watermark(23);
        let read = log.read(0, 1 << 20).unwrap();
        let bases: Vec<i64> = read
            .chunks
            .iter()
            .flat_map(|c| batch::split_batches(c, true).unwrap())
            .map(|s| s.header.base_offset)
            .collect();
        assert_eq!(bases, vec![10, 20, 22]);
    }

    /// A reader that looked at the WAL's front before a move purged the entries it wanted
    /// must not be served the first entry left (that skips offsets): it tries again, and
    /// finds them in the segment file.
    #[test]
    fn a_read_overtaken_by_a_move_out_of_the_wal_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_lagging_high_watermark(dir.path());
        log.set_high_watermark(6);
        let base = |r: &ReadBatches| i64::from_be_bytes(r.chunks[0][0..8].try_into().unwrap());
        assert_eq!(log.move_to_segments(2).unwrap(), Some(2), "offsets 0..4 in a segment file");
        // What `LogStore::purge` does to the index once the snapshot covers them.
        log.index.write().purge_through(2);
        assert!(log.read_wal(0, 1 << 20, 6).unwrap().is_none(), "the front moved past 0: try again");
        assert!(log.read_wal(2, 1 << 20, 6).unwrap().is_none(), "the front moved past 2: try again");
        assert_eq!(base(&log.read_wal(4, 1 << 20, 6).unwrap().unwrap()), 4);
        for offset in [0, 2, 4] {
            assert_eq!(base(&log.read(offset, 1 << 20).unwrap()), offset as i64, "a read at {offset} starts there");
        }
    }

    #[test]
    fn offsets_between_high_watermark_and_log_end_read_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_lagging_high_watermark(dir.path());
        assert_eq!((log.high_watermark(), log.next_offset()), (0, 6));
        for offset in [0, 3, 6] {
            let read = log.read(offset, 1 << 20).unwrap_or_else(|e| panic!("offset {offset}: {e}"));
            assert!(read.chunks.is_empty(), "offset {offset}: nothing above the high watermark is served");
        }
        assert!(matches!(log.read(7, 1 << 20), Err(ReadError::OutOfRange { log_end: 6, .. })), "past the log end");
        log.set_high_watermark(4);
        assert_eq!(log.read(0, 1 << 20).unwrap().chunks.len(), 2, "the two committed entries");
    }
}
