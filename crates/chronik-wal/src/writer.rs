//! The write path: lay records into the active segment with one `pwritev` per segment touched,
//! publish them to the group indexes, roll to a prepared segment when full, and queue the
//! durability callback behind the group-commit sync.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::RwLock;

use crate::error::{Result, WalError};
use crate::index::{GroupIndex, Loc, LogPos};
use crate::options::SyncMode;
use crate::record::{RECORD_HEADER_LEN, RecordHeader, RecordType};
use crate::segment::{SEGMENT_FOOTER_LEN, SEGMENT_HEADER_LEN, Seal, Segment};
use crate::wal::{DurableCallback, Inner};

/// State guarded by the writer lock.
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    /// Next write offset in `active`.
    pub pos: u64,
    /// Records in `active`.
    pub records: u64,
    /// Bytes ever written by this process (the position durability is tracked against).
    pub written_lsn: u64,
    /// Durability callbacks, in LSN order.
    pub waiters: VecDeque<(u64, DurableCallback)>,
    /// Rolled segments whose footer is written but not yet known durable. A footer is only
    /// written once every earlier one is durable, so a sealed segment never follows an unsealed one.
    pub unsynced_footers: Vec<Arc<Segment>>,
    /// Set after a failed fdatasync: the page cache can no longer be trusted, so all writes fail.
    pub failed: Option<String>,
}

impl Writer {
    pub fn new(active: Arc<Segment>) -> Writer {
        Writer {
            pos: active.records_start(),
            active,
            records: 0,
            written_lsn: 0,
            waiters: VecDeque::new(),
            unsynced_footers: Vec::new(),
            failed: None,
        }
    }
}

/// Segments prepared ahead of need, and what the preparer should know.
pub(crate) struct Spares {
    pub ready: VecDeque<Arc<Segment>>,
    pub next_seq: u64,
    /// Files retired by GC or recovery, reused before creating new ones.
    pub retired: Vec<PathBuf>,
    /// Why the last preparation failed (a full disk, typically); cleared by the next success.
    pub last_error: Option<WalError>,
    /// Rollers waiting for a spare.
    pub waiting: usize,
}

/// A record ready to be laid out: header fields, payload and the payload's CRC (computed before
/// taking the writer lock).
pub(crate) struct PendingRecord<'a> {
    pub header: RecordHeader,
    pub payload: &'a [&'a [u8]],
    pub payload_len: usize,
    pub payload_crc: u32,
}

impl<'a> PendingRecord<'a> {
    pub fn new(header: RecordHeader, payload: &'a [&'a [u8]]) -> Result<Self> {
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        if payload_len > u32::MAX as usize {
            return Err(WalError::RecordTooLarge { len: payload_len, max: u32::MAX as usize });
        }
        let payload_crc = payload.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p));
        Ok(PendingRecord {
            header: RecordHeader { payload_len: payload_len as u32, ..header },
            payload,
            payload_len,
            payload_crc,
        })
    }

    pub fn control(record_type: RecordType, group: u64, key: u8, pos: LogPos) -> PendingRecord<'static> {
        PendingRecord {
            header: RecordHeader {
                record_type,
                entry_kind: key,
                payload_len: 0,
                group,
                term: pos.term,
                index: pos.index,
                leader_id: pos.leader_id,
            },
            payload: &[],
            payload_len: 0,
            payload_crc: 0,
        }
    }

    fn len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.payload_len) as u64
    }
}

/// What follows the last record of a segment: a zero record header, which recovery reads as
/// the end of the log.
pub(crate) const END_MARK: [u8; RECORD_HEADER_LEN] = [0; RECORD_HEADER_LEN];

impl Inner {
    pub(crate) fn max_record_len(&self) -> u64 {
        self.opts.segment_size - SEGMENT_HEADER_LEN - SEGMENT_FOOTER_LEN
    }

    pub(crate) fn write(&self, records: &[PendingRecord<'_>], on_durable: Option<DurableCallback>) -> Result<()> {
        let mut w = self.writer.lock();
        self.write_locked(&mut w, records, on_durable)
    }

    /// Writes state records whose callback must wait for an fdatasync even in `periodic` mode
    /// (where entries count as durable once written): the syncer runs a round for them at once
    /// and calls back, so the caller never blocks on the disk.
    pub(crate) fn write_state(&self, records: &[PendingRecord<'_>], on_durable: Option<DurableCallback>) -> Result<()> {
        let mut w = self.writer.lock();
        match (self.opts.sync_mode, on_durable) {
            (SyncMode::Periodic(_), Some(cb)) => {
                self.write_locked(&mut w, records, None)?;
                let lsn = w.written_lsn;
                w.waiters.push_back((lsn, cb));
                self.sync_cv.notify_one();
                Ok(())
            }
            (_, on_durable) => self.write_locked(&mut w, records, on_durable),
        }
    }

    /// The write path, with the writer lock held (GC uses it to re-write state atomically).
    pub(crate) fn write_locked(
        &self,
        w: &mut Writer,
        records: &[PendingRecord<'_>],
        on_durable: Option<DurableCallback>,
    ) -> Result<()> {
        let fail = |e: WalError, cb: Option<DurableCallback>| {
            let copy = e.duplicate();
            if let Some(cb) = cb {
                cb(Err(copy));
            }
            Err(e)
        };
        if let Some(reason) = &w.failed {
            return fail(WalError::SyncFailed(reason.clone()), on_durable);
        }
        if self.shutdown.load(Ordering::Acquire) {
            return fail(WalError::Closed, on_durable);
        }
        if let Some(r) = records.iter().find(|r| r.len() > self.max_record_len()) {
            return fail(
                WalError::RecordTooLarge { len: r.len() as usize, max: self.max_record_len() as usize },
                on_durable,
            );
        }
        let groups = match self.check_and_resolve(records) {
            Ok(g) => g,
            Err(e) => return fail(e, on_durable),
        };

        // An append that fits in a fresh segment but not in what is left of this one rolls
        // before anything is written: a roll can fail (no spare segment: a full disk), and a
        // failed append must leave none of its records behind. Only an append larger than a
        // whole segment is split across segments as it goes.
        let total: u64 = records.iter().map(|r| r.len()).sum();
        if total > w.active.records_limit() - w.pos
            && total <= self.max_record_len()
            && let Err(e) = self.roll(w)
        {
            return fail(e, on_durable);
        }
        let mut i = 0;
        while i < records.len() {
            let room = w.active.records_limit() - w.pos;
            let mut n = 0;
            let mut bytes = 0;
            while i + n < records.len() && bytes + records[i + n].len() <= room {
                bytes += records[i + n].len();
                n += 1;
            }
            if n == 0 {
                if let Err(e) = self.roll(w) {
                    return fail(e, on_durable);
                }
                continue;
            }
            let chunk = &records[i..i + n];
            let seq = w.active.seq;
            let headers: Vec<[u8; RECORD_HEADER_LEN]> =
                chunk.iter().map(|r| r.header.encode(seq, r.payload_crc)).collect();
            let mut iov = Vec::with_capacity(n * 2);
            for (h, r) in headers.iter().zip(chunk) {
                iov.push(IoSlice::new(h));
                iov.extend(r.payload.iter().map(|p| IoSlice::new(p)));
            }
            // Zeros after the last record mark where the log ends, so recovery of a recycled
            // segment stops there cleanly instead of at a checksum failure in its old bytes. The
            // next append writes over them.
            let end_mark = (w.active.records_limit() - w.pos - bytes).min(END_MARK.len() as u64) as usize;
            iov.push(IoSlice::new(&END_MARK[..end_mark]));
            if let Err(e) = w.active.write_vectored_at(&iov, w.pos) {
                return fail(e, on_durable);
            }
            let mut offset = w.pos;
            for r in chunk {
                self.publish(&groups, &w.active, r, Loc { segment: seq, offset });
                offset += r.len();
            }
            w.pos = offset;
            w.records += n as u64;
            w.written_lsn += bytes;
            self.stats.record_write(n as u64, bytes);
            i += n;
        }

        match (self.opts.sync_mode, on_durable) {
            (SyncMode::Always, Some(cb)) => {
                w.waiters.push_back((w.written_lsn, cb));
                self.sync_cv.notify_one();
            }
            (SyncMode::Always, None) => {
                self.sync_cv.notify_one();
            }
            (SyncMode::Periodic(_), Some(cb)) => cb(Ok(())),
            (SyncMode::Periodic(_), None) => {}
        }
        Ok(())
    }

    /// Validates entry indexes for every group touched (before anything is written) and returns
    /// the group handles, creating groups on their first entry.
    fn check_and_resolve(&self, records: &[PendingRecord<'_>]) -> Result<HashMap<u64, Arc<RwLock<GroupIndex>>>> {
        let mut handles: HashMap<u64, Arc<RwLock<GroupIndex>>> = HashMap::new();
        let mut next: HashMap<u64, Option<u64>> = HashMap::new();
        for r in records {
            let g = r.header.group;
            if let std::collections::hash_map::Entry::Vacant(e) = handles.entry(g) {
                if self.dropped.lock().contains(&g) {
                    return Err(WalError::Group {
                        group: g,
                        reason: "the group was dropped (group ids are never reused)".into(),
                    });
                }
                let existing = self.groups.read().get(&g).cloned();
                let handle = match existing {
                    Some(h) => h,
                    None => self.groups.write().entry(g).or_default().clone(),
                };
                next.insert(g, handle.read().next_index());
                e.insert(handle);
            }
            let expected = next.get_mut(&g).expect("resolved above");
            match r.header.record_type {
                RecordType::Entry => {
                    if let Some(e) = *expected
                        && e != r.header.index
                    {
                        return Err(WalError::Group {
                            group: g,
                            reason: format!("append of entry {} but the next index is {e}", r.header.index),
                        });
                    }
                    *expected = Some(r.header.index + 1);
                }
                RecordType::Truncate => {
                    *expected = expected.map(|e| e.min(r.header.index));
                }
                RecordType::Purge => {
                    *expected = Some(expected.map_or(r.header.index + 1, |e| e.max(r.header.index + 1)));
                }
                RecordType::EntryRewrite | RecordType::State | RecordType::DropGroup => {}
            }
        }
        Ok(handles)
    }

    fn publish(
        &self,
        groups: &HashMap<u64, Arc<RwLock<GroupIndex>>>,
        segment: &Arc<Segment>,
        r: &PendingRecord<'_>,
        loc: Loc,
    ) {
        let h = &r.header;
        let handle = &groups[&h.group];
        match h.record_type {
            RecordType::Entry => handle.write().push(h.index, loc),
            RecordType::EntryRewrite => handle.write().relocate(h.index, loc),
            RecordType::Truncate => {
                handle.write().truncate_from(h.index);
                self.liveness_changes.fetch_add(1, Ordering::AcqRel);
            }
            RecordType::Purge => {
                handle.write().purge(LogPos { index: h.index, term: h.term, leader_id: h.leader_id }, loc.segment);
                self.liveness_changes.fetch_add(1, Ordering::AcqRel);
            }
            RecordType::State => {
                let value = segment.slice(loc.offset + RECORD_HEADER_LEN as u64, r.payload_len);
                handle.write().set_state(h.entry_kind, value, loc.segment);
            }
            RecordType::DropGroup => {
                self.groups.write().remove(&h.group);
                self.dropped.lock().insert(h.group);
                self.liveness_changes.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Seals the active segment and switches to a prepared one.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let next = self.take_spare()?;
        let sealed = (|| {
            for s in &w.unsynced_footers {
                s.sync_data()?;
            }
            // The data before the footer is durable before the footer is written, so a durable
            // footer always vouches for durable records.
            w.active.sync_data()?;
            w.active.write_footer(Seal { end: w.pos, records: w.records })
        })();
        if let Err(e) = sealed {
            self.fail_writer(w, &e);
            self.spares.lock().ready.push_front(next);
            return Err(e);
        }
        w.unsynced_footers.clear();
        let old = std::mem::replace(&mut w.active, next.clone());
        w.unsynced_footers.push(old);
        w.pos = next.records_start();
        w.records = 0;
        self.segments.write().insert(next.seq, next.clone());
        self.active_seq.store(next.seq, Ordering::Release);
        self.stats.rolls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn take_spare(&self) -> Result<Arc<Segment>> {
        let mut s = self.spares.lock();
        loop {
            if let Some(seg) = s.ready.pop_front() {
                self.spares_cv.notify_all();
                return Ok(seg);
            }
            if let Some(e) = &s.last_error {
                let e = e.duplicate();
                self.spares_cv.notify_all();
                return Err(e);
            }
            if self.shutdown.load(Ordering::Acquire) {
                return Err(WalError::Closed);
            }
            s.waiting += 1;
            self.spares_cv.notify_all();
            self.spares_cv.wait_for(&mut s, Duration::from_millis(100));
            s.waiting -= 1;
        }
    }

    /// Marks the WAL failed after an fdatasync error and fails every waiter.
    pub(crate) fn fail_writer(&self, w: &mut Writer, e: &WalError) {
        if w.failed.is_none() {
            tracing::error!("WAL {}: {e}; refusing further writes", self.dir.display());
            w.failed = Some(e.to_string());
        }
        for (_, cb) in w.waiters.drain(..) {
            cb(Err(WalError::SyncFailed(e.to_string())));
        }
    }

    /// Queues `cb` behind everything written so far.
    pub(crate) fn register_sync_waiter(&self, cb: DurableCallback) -> Result<()> {
        let mut w = self.writer.lock();
        if let Some(reason) = &w.failed {
            let reason = reason.clone();
            cb(Err(WalError::SyncFailed(reason.clone())));
            return Err(WalError::SyncFailed(reason));
        }
        if w.written_lsn <= self.durable_lsn.load(Ordering::Acquire) && w.unsynced_footers.is_empty() {
            drop(w);
            cb(Ok(()));
            return Ok(());
        }
        let lsn = w.written_lsn;
        w.waiters.push_back((lsn, cb));
        self.sync_cv.notify_one();
        Ok(())
    }

    /// On a clean shutdown, seal the active segment so the next open finds no unsealed tail.
    pub(crate) fn seal_active_on_close(&self) -> Result<()> {
        let w = self.writer.lock();
        if w.failed.is_some() {
            return Ok(());
        }
        w.active.write_footer(Seal { end: w.pos, records: w.records })?;
        w.active.sync_data()
    }
}
