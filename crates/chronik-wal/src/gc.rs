//! Segment garbage collection. Only the oldest segment is ever retired (so replaying what
//! remains always gives the same state). It can go once no group's live entries are in it,
//! or once the few that are (at most `gc_rewrite_max_live_fraction` of it) have been copied
//! forward; the newest purge and state records of each group are copied forward too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::error::{Result, WalError};
use crate::index::{GroupIndex, Loc, LogPos};
use crate::record::{RECORD_HEADER_LEN, RecordHeader, RecordType};
use crate::segment::Segment;
use crate::wal::{Inner, retire_file};
use crate::writer::PendingRecord;

/// What must be copied forward before a segment can be retired.
enum Carry {
    Entry { header: RecordHeader, loc: Loc },
    Purge { group: u64, pos: LogPos },
    State { group: u64, key: u8, value: Bytes },
}

/// Retires as many leading segments as possible; returns how many.
pub(crate) fn collect(inner: &Inner) -> Result<usize> {
    let _one_collector = inner.gc_lock.lock();
    let mut retired = 0;
    while let Some(oldest) = retirement_candidate(inner) {
        if !copy_forward(inner, &oldest)? {
            break;
        }
        retire(inner, oldest)?;
        retired += 1;
    }
    Ok(retired)
}

fn retirement_candidate(inner: &Inner) -> Option<Arc<Segment>> {
    let oldest = inner.segments.read().values().next().cloned()?;
    (oldest.seq < inner.active_seq.load(Ordering::Acquire)).then_some(oldest)
}

/// Copies what is still needed out of `oldest` (under the writer lock, so nothing changes between
/// the decision and the copy) and waits until the copies are durable. Returns false when too much
/// of the segment is still live to be worth copying.
fn copy_forward(inner: &Inner, oldest: &Arc<Segment>) -> Result<bool> {
    // A retired-to-be segment is sealed, and its entries only ever die (purged, truncated,
    // dropped), never come back to life. So a scan without the writer lock that finds too much
    // live can only overestimate, and deciding on it keeps appends from waiting behind a scan of
    // a whole segment; the verdict stands until something dies.
    let changes = inner.liveness_changes.load(Ordering::Acquire);
    if *inner.gc_too_live.lock() == Some((oldest.seq, changes)) {
        return Ok(false);
    }
    let max_live = inner.opts.gc_rewrite_max_live_fraction * oldest.size as f64;
    if live_entries(&inner.groups.read().clone(), oldest).1 as f64 > max_live {
        *inner.gc_too_live.lock() = Some((oldest.seq, changes));
        return Ok(false);
    }
    let mut w = inner.writer.lock();
    let groups = inner.groups.read().clone();
    let (mut carry, live_bytes) = live_entries(&groups, oldest);
    for (group, handle) in &groups {
        let group = *group;
        let g = handle.read();
        if let (Some(seg), Some(pos)) = (g.purge_segment(), g.last_purged())
            && seg <= oldest.seq
        {
            carry.push(Carry::Purge { group, pos });
        }
        for (key, v) in g.states() {
            if v.segment <= oldest.seq {
                carry.push(Carry::State { group, key, value: v.value.clone() });
            }
        }
    }
    if live_bytes as f64 > max_live {
        return Ok(false);
    }
    if carry.is_empty() {
        // The entries here may be dead only through a purge, truncation or drop that is not
        // durable yet; retiring the segment first would let a crash lose both.
        drop(w);
        inner.sync_blocking()?;
        return Ok(true);
    }
    // Each record's payload as a one-part list (borrowed from the old segment or the state value).
    let parts: Vec<[&[u8]; 1]> = carry
        .iter()
        .map(|c| match c {
            Carry::Entry { header, loc } => {
                let start = loc.offset as usize + RECORD_HEADER_LEN;
                [&oldest.bytes()[start..start + header.payload_len as usize]]
            }
            Carry::Purge { .. } => [&[][..]],
            Carry::State { value, .. } => [&value[..]],
        })
        .collect();
    let records: Vec<PendingRecord<'_>> = carry
        .iter()
        .zip(&parts)
        .map(|(c, payload)| match c {
            Carry::Entry { header, .. } => {
                PendingRecord::new(RecordHeader { record_type: RecordType::EntryRewrite, ..*header }, payload)
            }
            Carry::Purge { group, pos } => Ok(PendingRecord::control(RecordType::Purge, *group, 0, *pos)),
            Carry::State { group, key, .. } => PendingRecord::new(
                RecordHeader {
                    record_type: RecordType::State,
                    entry_kind: *key,
                    payload_len: 0,
                    group: *group,
                    term: 0,
                    index: 0,
                    leader_id: 0,
                },
                payload,
            ),
        })
        .collect::<Result<_>>()?;
    let (tx, rx) = std::sync::mpsc::channel();
    inner.write_locked(
        &mut w,
        &records,
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    )?;
    inner.stats.gc_rewritten_bytes.fetch_add(live_bytes, Ordering::Relaxed);
    drop(w);
    if matches!(inner.opts.sync_mode, crate::options::SyncMode::Periodic(_)) {
        // The copies must be durable before the originals go, whatever the sync mode.
        inner.sync_blocking()?;
    }
    inner.wait_for(&rx)?;
    Ok(true)
}

/// The entries of `oldest` that are still live, and their total size. An entry is live if its
/// group's index still points at it (a purged, truncated or already-copied entry points
/// elsewhere or nowhere).
fn live_entries(groups: &HashMap<u64, Arc<RwLock<GroupIndex>>>, oldest: &Segment) -> (Vec<Carry>, u64) {
    let mut carry = Vec::new();
    let mut live_bytes = 0u64;
    let mut offset = oldest.records_start();
    let end = oldest.seal().map_or(oldest.records_limit(), |s| s.end);
    while offset < end {
        let Some(header) = RecordHeader::decode_unchecked(&oldest.bytes()[offset as usize..]) else { break };
        if matches!(header.record_type, RecordType::Entry | RecordType::EntryRewrite) {
            let loc = Loc { segment: oldest.seq, offset };
            if groups.get(&header.group).is_some_and(|h| h.read().get(header.index) == Some(loc)) {
                live_bytes += header.total_len() as u64;
                carry.push(Carry::Entry { header, loc });
            }
        }
        offset += header.total_len() as u64;
    }
    (carry, live_bytes)
}

fn retire(inner: &Inner, oldest: Arc<Segment>) -> Result<()> {
    inner.segments.write().remove(&oldest.seq);
    let path = oldest.path.clone();
    if Arc::strong_count(&oldest) == 1 {
        drop(oldest);
        let retired = retire_file(&inner.dir, &path)?;
        inner.spares.lock().retired.push(retired);
    } else {
        // A reader still maps it: unlink (the mapping stays valid) rather than recycle.
        std::fs::remove_file(&path).map_err(|e| WalError::io(&path, e))?;
    }
    crate::segment::sync_dir(&inner.dir)?;
    inner.stats.segments_retired.fetch_add(1, Ordering::Relaxed);
    inner.spares_cv.notify_all();
    Ok(())
}
