//! The WAL handle: open/recover, append, read, truncate, purge, durable state, close.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Result, WalError};
use crate::index::{GroupIndex, LogPos};
use crate::latency::LatencySnapshot;
use crate::options::WalOptions;
use crate::record::{RECORD_HEADER_LEN, RecordHeader, RecordType};
use crate::recovery::{self, Recovered, TornTail};
use crate::segment::{self, Seal, Segment};
use crate::stats::{Stats, WalStats};
use crate::writer::{PendingRecord, Spares, Writer};

/// Called once an append is durable (or failed). Runs on the WAL's sync thread, in append order;
/// it must be quick and must not call back into the WAL.
pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// One entry to append to a group.
#[derive(Debug, Clone, Copy)]
pub struct AppendEntry<'a> {
    pub index: u64,
    pub term: u64,
    pub leader_id: u64,
    /// Opaque to the WAL (Raft: blank / normal / membership).
    pub entry_kind: u8,
    /// The payload as consecutive parts, written with one `pwritev` (so a caller can patch a
    /// header without copying the body).
    pub payload: &'a [&'a [u8]],
}

/// An entry read back. `payload` borrows the segment's mapping (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub index: u64,
    pub term: u64,
    pub leader_id: u64,
    pub entry_kind: u8,
    pub payload: Bytes,
}

impl EntryView {
    pub fn pos(&self) -> LogPos {
        LogPos { index: self.index, term: self.term, leader_id: self.leader_id }
    }
}

/// What a group's log looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupInfo {
    pub first_index: Option<u64>,
    pub last: Option<LogPos>,
    pub last_purged: Option<LogPos>,
    pub entries: u64,
}

/// What `open` found and did.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub segments: usize,
    pub records: u64,
    pub groups: usize,
    pub torn_tail: Option<TornTail>,
    pub warnings: Vec<String>,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub opts: WalOptions,
    pub writer: Mutex<Writer>,
    /// Wakes the sync thread when there is something to sync.
    pub sync_cv: Condvar,
    pub groups: RwLock<HashMap<u64, Arc<RwLock<GroupIndex>>>>,
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub spares: Mutex<Spares>,
    /// Wakes the preparer (work wanted) and rollers (spare ready or preparation failed).
    pub spares_cv: Condvar,
    pub active_seq: AtomicU64,
    pub durable_lsn: AtomicU64,
    pub shutdown: AtomicBool,
    pub gc_requested: AtomicBool,
    /// One collector at a time (the background thread or an explicit call).
    pub gc_lock: Mutex<()>,
    /// Bumped as each record that can make entries dead (truncate, purge, drop group) is
    /// published, so the collector knows when a segment it found too live is worth scanning again.
    pub liveness_changes: AtomicU64,
    /// The oldest segment the collector last found too live, and `liveness_changes` then.
    pub gc_too_live: Mutex<Option<(u64, u64)>>,
    /// Groups dropped while their drop record is still in the log: recovery refuses a record
    /// of one after its drop, so writing one is refused too.
    pub dropped: Mutex<std::collections::HashSet<u64>>,
    pub stats: Stats,
}

/// A write-ahead log shared by many groups (one per Raft group). Cheap to share behind an `Arc`;
/// dropping the last handle closes it.
pub struct Wal {
    pub(crate) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, recovering its valid prefix.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, OpenReport)> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let listing = recovery::list_dir(dir)?;
        for tmp in &listing.temporary {
            std::fs::remove_file(tmp).map_err(|e| WalError::io(tmp, e))?;
        }
        let recovered = recovery::recover(&listing, true)?;
        for w in &recovered.warnings {
            tracing::warn!("{w}");
        }
        if let Some(t) = &recovered.torn_tail {
            tracing::warn!(path = %t.path.display(), offset = t.offset, reason = %t.reason, "WAL valid prefix ends \
                before the segment's end; the rest is discarded");
        }
        let Recovered {
            segments,
            last_end,
            last_records,
            groups,
            torn_tail,
            discarded,
            max_seq,
            records,
            warnings,
            dropped_groups,
            ..
        } = recovered;

        // The previous active segment is sealed where its valid prefix ends, so no byte after
        // that point can ever be mistaken for a record.
        if let Some(last) = segments.last()
            && last.seal().is_none()
        {
            last.sync_data()?;
            last.write_footer(Seal { end: last_end, records: last_records })?;
            last.sync_data()?;
        }
        // Files past the valid prefix leave the log before anything new is written.
        let mut retired = Vec::new();
        for path in discarded.iter().chain(&listing.retired) {
            retired.push(retire_file(dir, path)?);
        }
        segment::sync_dir(dir)?;

        // Above every number a file here was ever written under: a retired file recycled under
        // its old number would make its old records valid again.
        let mut next_seq = max_seq.max(listing.retired_max_seq) + 1;
        let active = Arc::new(prepare_segment(dir, &mut retired, next_seq, opts.segment_size)?);
        next_seq += 1;

        let report = OpenReport { segments: segments.len(), records, groups: groups.len(), torn_tail, warnings };
        let mut seg_map: BTreeMap<u64, Arc<Segment>> = segments.into_iter().map(|s| (s.seq, s)).collect();
        seg_map.insert(active.seq, active.clone());
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer::new(active.clone())),
            sync_cv: Condvar::new(),
            groups: RwLock::new(groups.into_iter().map(|(g, i)| (g, Arc::new(RwLock::new(i)))).collect()),
            segments: RwLock::new(seg_map),
            spares: Mutex::new(Spares { ready: VecDeque::new(), next_seq, retired, last_error: None, waiting: 0 }),
            spares_cv: Condvar::new(),
            active_seq: AtomicU64::new(active.seq),
            durable_lsn: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            gc_requested: AtomicBool::new(false),
            gc_lock: Mutex::new(()),
            liveness_changes: AtomicU64::new(0),
            gc_too_live: Mutex::new(None),
            dropped: Mutex::new(dropped_groups),
            stats: Stats::default(),
            opts,
        });
        let threads = crate::background::spawn(&inner)?;
        Ok((Wal { inner, threads: Mutex::new(threads) }, report))
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &WalOptions {
        &self.inner.opts
    }

    /// Appends `entries` (contiguous indexes, the first being the group's next index) to `group`.
    /// When this returns they are readable; `on_durable` runs once they are durable per the sync
    /// mode. Appends to one group must come from one caller at a time.
    pub fn append(&self, group: u64, entries: &[AppendEntry<'_>], on_durable: Option<DurableCallback>) -> Result<()> {
        let records: Vec<PendingRecord<'_>> = entries
            .iter()
            .map(|e| {
                PendingRecord::new(
                    RecordHeader {
                        record_type: RecordType::Entry,
                        entry_kind: e.entry_kind,
                        payload_len: e.payload.iter().map(|p| p.len()).sum::<usize>() as u32,
                        group,
                        term: e.term,
                        index: e.index,
                        leader_id: e.leader_id,
                    },
                    e.payload,
                )
            })
            .collect::<Result<_>>()?;
        self.inner.write(&records, on_durable)
    }

    /// Drops every entry of `group` at or above `index` (Raft conflict resolution). Durable with
    /// the next sync round.
    pub fn truncate_from(&self, group: u64, index: u64) -> Result<()> {
        self.inner.write(
            &[PendingRecord::control(RecordType::Truncate, group, 0, LogPos { index, term: 0, leader_id: 0 })],
            None,
        )
    }

    /// Drops every entry of `group` at or below `upto.index`, remembering `upto` as the last
    /// purged position. Segments whose entries are all gone are retired in the background.
    pub fn purge(&self, group: u64, upto: LogPos) -> Result<()> {
        self.inner.write(&[PendingRecord::control(RecordType::Purge, group, 0, upto)], None)?;
        self.inner.request_gc();
        Ok(())
    }

    /// Stores a small value for `group` under `key` (e.g. the Raft vote). `on_durable` runs once
    /// it is on disk, in every sync mode (a vote must be durable before it counts); without a
    /// callback it rides with the next sync round. Never blocks on the disk.
    pub fn set_state(&self, group: u64, key: u8, value: &[u8], on_durable: Option<DurableCallback>) -> Result<()> {
        let header = RecordHeader {
            record_type: RecordType::State,
            entry_kind: key,
            payload_len: value.len() as u32,
            group,
            term: 0,
            index: 0,
            leader_id: 0,
        };
        self.inner.write_state(&[PendingRecord::new(header, std::slice::from_ref(&value))?], on_durable)
    }

    /// Forgets `group` entirely (a deleted partition). Group ids must never be reused.
    pub fn drop_group(&self, group: u64) -> Result<()> {
        self.inner.write(
            &[PendingRecord::control(RecordType::DropGroup, group, 0, LogPos { index: 0, term: 0, leader_id: 0 })],
            None,
        )?;
        self.inner.request_gc();
        Ok(())
    }

    /// The largest payload one record can carry: a record never spans segments.
    pub fn max_payload_len(&self) -> usize {
        (self.inner.max_record_len() - RECORD_HEADER_LEN as u64) as usize
    }

    /// Whether an append of about `bytes` can be taken now. Fails with the preparer's error
    /// (a full disk) when the active segment lacks room and no spare segment is ready. A small
    /// reserve stays free for control records (votes, truncations) that must never fail.
    pub fn check_space(&self, bytes: usize) -> Result<()> {
        const RESERVE: u64 = 64 * 1024;
        let room = {
            let w = self.inner.writer.lock();
            if let Some(reason) = &w.failed {
                return Err(WalError::SyncFailed(reason.clone()));
            }
            w.active.records_limit() - w.pos
        };
        if (bytes + RECORD_HEADER_LEN) as u64 + RESERVE <= room {
            return Ok(());
        }
        let s = self.inner.spares.lock();
        match (&s.last_error, s.ready.is_empty()) {
            (Some(e), true) => Err(e.duplicate()),
            _ => Ok(()),
        }
    }

    /// Blocks until everything written so far is durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync_blocking()
    }

    pub fn read(&self, group: u64, index: u64) -> Result<Option<EntryView>> {
        let Some(g) = self.inner.group(group) else { return Ok(None) };
        let (loc, seg) = {
            let g = g.read();
            let Some(loc) = g.get(index) else { return Ok(None) };
            (loc, self.inner.segment(group, loc.segment)?)
        };
        self.inner.read_at(group, index, loc, &seg).map(Some)
    }

    /// Entries `start..end` that exist, stopping early once `max_bytes` of payload is collected
    /// (at least one entry is returned if any exists).
    pub fn read_range(&self, group: u64, start: u64, end: u64, max_bytes: usize) -> Result<Vec<EntryView>> {
        let Some(g) = self.inner.group(group) else { return Ok(Vec::new()) };
        // Segments are looked up under the group's lock: the collector moves an entry (under
        // that lock) before it retires the entry's old segment, so a segment found here is the
        // entry's, and holding it keeps its mapping readable even if it is retired meanwhile.
        let locs: Vec<(u64, crate::index::Loc, Arc<Segment>)> = {
            let g = g.read();
            let Some(first) = g.first_index() else { return Ok(Vec::new()) };
            let last = g.last_index().unwrap_or(first);
            let mut locs = Vec::new();
            let mut seg: Option<Arc<Segment>> = None;
            for i in start.max(first)..end.min(last + 1) {
                let Some(loc) = g.get(i) else { continue };
                let s = match &seg {
                    Some(s) if s.seq == loc.segment => s.clone(),
                    _ => self.inner.segment(group, loc.segment)?,
                };
                seg = Some(s.clone());
                locs.push((i, loc, s));
            }
            locs
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut bytes = 0usize;
        for (index, loc, seg) in locs {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            let e = self.inner.read_at(group, index, loc, &seg)?;
            bytes += e.payload.len();
            out.push(e);
        }
        Ok(out)
    }

    pub fn group_info(&self, group: u64) -> Option<GroupInfo> {
        let g = self.inner.group(group)?;
        let g = g.read();
        let last = match g.last_index() {
            Some(i) => {
                let loc = g.get(i).expect("last index is present");
                let h = self.inner.header_at(group, loc).ok()?;
                Some(LogPos { index: h.index, term: h.term, leader_id: h.leader_id })
            }
            None => g.last_purged(),
        };
        Some(GroupInfo { first_index: g.first_index(), last, last_purged: g.last_purged(), entries: g.len() as u64 })
    }

    pub fn state(&self, group: u64, key: u8) -> Option<Bytes> {
        let g = self.inner.group(group)?;
        let g = g.read();
        g.state(key).map(|v| v.value.clone())
    }

    /// Every group that has written anything and not been dropped.
    pub fn groups(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.inner.groups.read().keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn stats(&self) -> WalStats {
        self.inner.snapshot_stats()
    }

    /// How long the fdatasync rounds took.
    pub fn sync_latency(&self) -> LatencySnapshot {
        self.inner.stats.sync_latency.snapshot()
    }

    /// The oldest segment still holding log records, unless it is the one being written.
    pub fn oldest_segment(&self) -> Option<u64> {
        let oldest = *self.inner.segments.read().keys().next()?;
        (oldest < self.inner.active_seq.load(Ordering::Acquire)).then_some(oldest)
    }

    /// The sealed segments holding log records, oldest first (the one being written excluded).
    pub fn sealed_segments(&self) -> Vec<u64> {
        let active = self.inner.active_seq.load(Ordering::Acquire);
        self.inner.segments.read().keys().copied().filter(|s| *s < active).collect()
    }

    /// For each group with entries in segments up to `seq`: the index of the last of them.
    /// Moving those entries elsewhere (and purging them) lets the segments go.
    pub fn entries_through_segment(&self, seq: u64) -> Vec<(u64, u64)> {
        let groups = self.inner.groups.read();
        groups.iter().filter_map(|(g, h)| h.read().last_index_through_segment(seq).map(|i| (*g, i))).collect()
    }

    /// Runs one garbage-collection pass now (normally it runs in the background).
    pub fn collect_garbage(&self) -> Result<usize> {
        crate::gc::collect(&self.inner)
    }

    /// Drops from the page cache everything beyond the window now (a full pass of the trimmer
    /// that normally runs in the background); does nothing without a window.
    pub fn trim_page_cache(&self) {
        if let Some(window) = self.inner.opts.page_cache_window {
            crate::cache::trim(&self.inner, window, true);
        }
    }

    /// Makes everything durable, seals the active segment and stops the background threads.
    /// Appends after this fail with [`WalError::Closed`].
    pub fn close(&self) -> Result<()> {
        {
            let _w = self.inner.writer.lock();
            if self.inner.shutdown.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
        }
        self.inner.sync_cv.notify_all();
        {
            // Under the lock the preparer and collector check `shutdown` with, so none misses it.
            let _s = self.inner.spares.lock();
            self.inner.spares_cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // The threads are gone; the last round and the seal happen here.
        self.inner.sync_round()?;
        self.inner.seal_active_on_close()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!("closing WAL {}: {e}", self.inner.dir.display());
        }
    }
}

impl Inner {
    pub(crate) fn group(&self, group: u64) -> Option<Arc<RwLock<GroupIndex>>> {
        self.groups.read().get(&group).cloned()
    }

    fn segment(&self, group: u64, seq: u64) -> Result<Arc<Segment>> {
        self.segments
            .read()
            .get(&seq)
            .cloned()
            .ok_or_else(|| WalError::Group { group, reason: format!("segment {seq} was retired while being read") })
    }

    fn header_at(&self, group: u64, loc: crate::index::Loc) -> Result<RecordHeader> {
        let seg = self.segment(group, loc.segment)?;
        seg.record_at(loc.offset).map_err(|e| WalError::Corrupt {
            path: seg.path.clone(),
            offset: loc.offset,
            reason: e.to_string(),
        })
    }

    fn read_at(&self, group: u64, index: u64, loc: crate::index::Loc, seg: &Arc<Segment>) -> Result<EntryView> {
        let unreadable = || WalError::Corrupt {
            path: seg.path.clone(),
            offset: loc.offset,
            reason: "unreadable record header".into(),
        };
        let uncached = loc.offset < seg.cache_dropped_to();
        let h = if uncached {
            let header = seg.read_uncached(loc.offset, RECORD_HEADER_LEN)?;
            crate::record::RecordHeader::decode_unchecked(&header).ok_or_else(unreadable)?
        } else {
            crate::record::RecordHeader::decode_unchecked(&seg.bytes()[loc.offset as usize..]).ok_or_else(unreadable)?
        };
        if h.group != group || h.index != index {
            return Err(WalError::Corrupt {
                path: seg.path.clone(),
                offset: loc.offset,
                reason: format!(
                    "index points at group {} entry {}, wanted group {group} entry {index}",
                    h.group, h.index
                ),
            });
        }
        let payload_at = loc.offset + RECORD_HEADER_LEN as u64;
        if payload_at + h.payload_len as u64 > seg.records_limit() {
            return Err(WalError::Corrupt {
                path: seg.path.clone(),
                offset: loc.offset,
                reason: format!("record of {} bytes runs past the segment's end", h.payload_len),
            });
        }
        let payload = if uncached {
            seg.read_uncached(payload_at, h.payload_len as usize)?
        } else {
            seg.slice(payload_at, h.payload_len as usize)
        };
        Ok(EntryView { index, term: h.term, leader_id: h.leader_id, entry_kind: h.entry_kind, payload })
    }

    /// Blocks until everything written so far is durable (or the WAL shuts down).
    pub(crate) fn sync_blocking(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.register_sync_waiter(Box::new(move |r| {
            let _ = tx.send(r);
        }))?;
        self.wait_for(&rx)
    }

    /// Waits for a durability callback's result; gives up with `Closed` once the WAL shuts down
    /// (the sync thread that would answer is gone).
    pub(crate) fn wait_for(&self, rx: &std::sync::mpsc::Receiver<Result<()>>) -> Result<()> {
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(result) => return result,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(WalError::Closed),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if self.shutdown.load(Ordering::Acquire) => {
                    return Err(WalError::Closed);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    pub(crate) fn request_gc(&self) {
        let _s = self.spares.lock();
        self.gc_requested.store(true, Ordering::Release);
        self.spares_cv.notify_all();
    }
}

/// Renames a file that left the log to `retired-<name>`, a recycling candidate that recovery
/// never replays.
pub(crate) fn retire_file(dir: &Path, path: &Path) -> Result<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.starts_with("retired-") {
        return Ok(path.to_path_buf());
    }
    let to = dir.join(format!("retired-{name}"));
    std::fs::rename(path, &to).map_err(|e| WalError::io(path, e))?;
    Ok(to)
}

/// A new segment `seq`, recycled from a retired file when there is one.
pub(crate) fn prepare_segment(dir: &Path, retired: &mut Vec<PathBuf>, seq: u64, size: u64) -> Result<Segment> {
    while let Some(old) = retired.pop() {
        let same_size = std::fs::metadata(&old).map(|m| m.len() == size).unwrap_or(false);
        if !same_size {
            std::fs::remove_file(&old).map_err(|e| WalError::io(&old, e))?;
            continue;
        }
        let path = segment::recycle(&old, dir, seq)?;
        return Segment::open(&path, true);
    }
    let path = segment::create_preallocated(dir, seq, size)?;
    Segment::open(&path, true)
}
