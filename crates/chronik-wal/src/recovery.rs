//! Rebuilds the WAL's state from its segment files: keeps exactly the valid prefix.
//!
//! Rules (docs/WAL_FORMAT.md, "Recovery"):
//! - Segments are replayed in sequence order. A sealed segment (valid footer) must decode cleanly
//!   up to the footer's end position; any bad record in it is corruption, reported with file and
//!   byte offset, never skipped.
//! - The first unsealed segment is the previous run's active segment: its valid prefix ends at
//!   the first record that does not decode (a torn tail, or the zeros never written).
//! - Anything after that point can never have been reported durable (a segment's footer is made
//!   durable before anything in a later segment is), so it is discarded, except that a *sealed*
//!   segment found there means a damaged footer: corruption.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{RecordError, Result, WalError};
use crate::index::{GroupIndex, Loc, LogPos, StateValue};
use crate::record::{RecordHeader, RecordType};
use crate::segment::{Segment, parse_segment_file_name};

/// Files found in a WAL directory.
#[derive(Debug, Default)]
pub struct DirListing {
    /// `(seq, path)` sorted by seq.
    pub segments: Vec<(u64, PathBuf)>,
    /// Half-prepared segments (`*.seg.tmp`).
    pub temporary: Vec<PathBuf>,
    /// Segments retired by garbage collection, waiting to be recycled.
    pub retired: Vec<PathBuf>,
    /// Highest sequence number a retired file was written under (by its name or its header).
    /// Its records validate under that number, so it must never be given again.
    pub retired_max_seq: u64,
}

pub fn list_dir(dir: &Path) -> Result<DirListing> {
    let mut out = DirListing::default();
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seq) = parse_segment_file_name(&name) {
            out.segments.push((seq, entry.path()));
        } else if name.ends_with(".seg.tmp") {
            out.temporary.push(entry.path());
        } else if let Some(retired_name) = name.strip_prefix("retired-").filter(|n| n.ends_with(".seg")) {
            let by_name = parse_segment_file_name(retired_name).unwrap_or(0);
            let by_header = crate::segment::read_header_seq(&entry.path()).unwrap_or(0);
            out.retired_max_seq = out.retired_max_seq.max(by_name).max(by_header);
            out.retired.push(entry.path());
        }
    }
    out.segments.sort();
    Ok(out)
}

/// Where the valid prefix ended in the previous run's active segment.
#[derive(Debug)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: RecordError,
}

#[derive(Debug, Default)]
pub struct Recovered {
    /// Segments holding the valid prefix, in order. All but possibly the last are sealed.
    pub segments: Vec<Arc<Segment>>,
    /// Valid end of the last segment (where its footer will say records end).
    pub last_end: u64,
    /// Records in the last segment.
    pub last_records: u64,
    pub groups: HashMap<u64, GroupIndex>,
    pub dropped_groups: HashSet<u64>,
    pub torn_tail: Option<TornTail>,
    /// Segment files after the valid prefix: never acknowledged, safe to recycle.
    pub discarded: Vec<PathBuf>,
    /// Highest sequence number seen in any file name (new segments must go above it).
    pub max_seq: u64,
    pub records: u64,
    pub warnings: Vec<String>,
}

/// Replays every segment in `listing`. Opens files writable when `writable` (the WAL will append).
pub fn recover(listing: &DirListing, writable: bool) -> Result<Recovered> {
    let mut out = Recovered::default();
    let mut groups: HashMap<u64, RecoveringGroup> = HashMap::new();
    let mut stopped = false;
    for (seq, path) in &listing.segments {
        out.max_seq = out.max_seq.max(*seq);
        if stopped {
            check_discardable(path, *seq, &mut out)?;
            continue;
        }
        let segment = Arc::new(open_checked(path, *seq, writable)?);
        let sealed = segment.seal();
        let limit = sealed.map_or(segment.records_limit(), |s| s.end);
        if limit > segment.records_limit() || limit < segment.records_start() {
            return Err(corrupt(path, segment.records_limit(), format!("footer claims records end at {limit}")));
        }
        let mut offset = segment.records_start();
        let mut records = 0u64;
        while offset < limit {
            match segment.record_at(offset) {
                Ok(header) => {
                    replay(&mut groups, &mut out.dropped_groups, &segment, offset, &header)
                        .map_err(|reason| corrupt(path, offset, reason))?;
                    offset += header.total_len() as u64;
                    records += 1;
                }
                Err(reason) if sealed.is_some() => {
                    return Err(corrupt(path, offset, format!("{reason} inside a sealed segment")));
                }
                Err(reason) => {
                    // Zeros after the last record are the end mark every write leaves (or the
                    // never-written rest of a new segment). Anything else is a write the crash
                    // cut short: not part of the log.
                    if reason != RecordError::Zeroes {
                        out.torn_tail = Some(TornTail { path: path.clone(), offset, reason });
                    }
                    break;
                }
            }
        }
        if let Some(seal) = sealed {
            if offset != seal.end || records != seal.records {
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "footer says {} records ending at {}, found {records} ending at {offset}",
                        seal.records, seal.end
                    ),
                ));
            }
        } else {
            stopped = true;
        }
        out.records += records;
        out.last_end = offset;
        out.last_records = records;
        out.segments.push(segment);
    }
    for (group, g) in groups {
        let index = g.finish().map_err(|reason| WalError::Group { group, reason })?;
        out.groups.insert(group, index);
    }
    Ok(out)
}

fn open_checked(path: &Path, seq: u64, writable: bool) -> Result<Segment> {
    let segment = Segment::open(path, writable)?;
    if segment.seq != seq {
        return Err(corrupt(path, 0, format!("file name says segment {seq}, header says {}", segment.seq)));
    }
    Ok(segment)
}

/// A segment after the valid prefix: it may hold only writes that were never acknowledged.
fn check_discardable(path: &Path, seq: u64, out: &mut Recovered) -> Result<()> {
    match Segment::open(path, false) {
        Ok(segment) if segment.seq == seq => {
            if segment.seal().is_some() {
                return Err(corrupt(
                    path,
                    segment.records_limit(),
                    "sealed segment follows an unsealed one (a damaged footer earlier in the WAL?)".into(),
                ));
            }
            if segment.record_at(segment.records_start()).is_ok() {
                out.warnings.push(format!(
                    "discarding unacknowledged records in {} (they follow the torn tail of the previous run)",
                    path.display()
                ));
            }
        }
        // A header cut short by the crash, or a recycle interrupted between header and rename.
        _ => out.warnings.push(format!("discarding half-prepared segment {}", path.display())),
    }
    out.discarded.push(path.to_path_buf());
    Ok(())
}

fn replay(
    groups: &mut HashMap<u64, RecoveringGroup>,
    dropped: &mut HashSet<u64>,
    segment: &Arc<Segment>,
    offset: u64,
    h: &RecordHeader,
) -> std::result::Result<(), String> {
    if dropped.contains(&h.group) {
        return Err(format!("record for group {} after the group was dropped", h.group));
    }
    let loc = Loc { segment: segment.seq, offset };
    match h.record_type {
        RecordType::DropGroup => {
            groups.remove(&h.group);
            dropped.insert(h.group);
        }
        RecordType::State => {
            let value = segment.slice(offset + crate::record::RECORD_HEADER_LEN as u64, h.payload_len as usize);
            groups.entry(h.group).or_default().states.insert(h.entry_kind, StateValue { value, segment: segment.seq });
        }
        _ => groups.entry(h.group).or_default().replay(h, loc).map_err(|e| format!("group {}: {e}", h.group))?,
    }
    Ok(())
}

/// A group's log while records are replayed. Entries are kept in an ordered map because
/// garbage-collection copies can appear after later entries of the same group (their originals
/// were in a retired segment).
#[derive(Debug, Default)]
struct RecoveringGroup {
    entries: BTreeMap<u64, Loc>,
    last_purged: Option<LogPos>,
    purge_segment: Option<u64>,
    states: BTreeMap<u8, StateValue>,
}

impl RecoveringGroup {
    fn replay(&mut self, h: &RecordHeader, loc: Loc) -> std::result::Result<(), String> {
        match h.record_type {
            RecordType::Entry => {
                // An entry normally follows its predecessor, but the predecessor's record may
                // still be ahead in scan order (a GC copy of it): holes are checked in `finish`.
                if let Some(last) = self.entries.keys().next_back() {
                    if h.index <= *last {
                        return Err(format!("entry {} appended again without a truncate (last is {last})", h.index));
                    }
                } else if let Some(p) = self.last_purged.filter(|p| h.index <= p.index) {
                    return Err(format!("entry {} appended at or below the purge point {}", h.index, p.index));
                }
                self.entries.insert(h.index, loc);
            }
            RecordType::EntryRewrite => {
                if self.last_purged.is_none_or(|p| h.index > p.index) {
                    self.entries.insert(h.index, loc);
                }
            }
            RecordType::Truncate => {
                self.entries.split_off(&h.index);
            }
            RecordType::Purge => {
                if self.last_purged.is_some_and(|p| p.index > h.index) {
                    return Ok(()); // an older purge copied forward after a newer one
                }
                self.entries = self.entries.split_off(&(h.index + 1));
                self.last_purged = Some(LogPos { index: h.index, term: h.term, leader_id: h.leader_id });
                self.purge_segment = Some(loc.segment);
            }
            RecordType::State | RecordType::DropGroup => unreachable!("handled by the caller"),
        }
        Ok(())
    }

    /// The live entries must be contiguous and follow the last purged entry.
    fn finish(self) -> std::result::Result<GroupIndex, String> {
        let first = self.entries.keys().next().copied().unwrap_or(0);
        if let (Some(p), false) = (self.last_purged, self.entries.is_empty())
            && first != p.index + 1
        {
            return Err(format!("entries {}..{} are missing after the purge point", p.index + 1, first));
        }
        let mut locs = VecDeque::with_capacity(self.entries.len());
        for (expected, (index, loc)) in (first..).zip(self.entries) {
            if index != expected {
                return Err(format!("entries {expected}..{index} are missing"));
            }
            locs.push_back(loc);
        }
        Ok(GroupIndex::from_recovered(first, locs, self.last_purged, self.purge_segment, self.states))
    }
}

fn corrupt(path: &Path, offset: u64, reason: String) -> WalError {
    WalError::Corrupt { path: path.to_path_buf(), offset, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(record_type: RecordType, index: u64) -> RecordHeader {
        RecordHeader { record_type, entry_kind: 0, payload_len: 0, group: 1, term: 1, index, leader_id: 1 }
    }

    #[test]
    fn replay_table() {
        use RecordType::*;
        // (records in scan order, expected live range or error)
        type Case = (&'static str, Vec<(RecordType, u64)>, Result<Option<(u64, u64)>, ()>);
        let cases: Vec<Case> = vec![
            ("appends", vec![(Entry, 1), (Entry, 2)], Ok(Some((1, 2)))),
            ("gap in appends", vec![(Entry, 1), (Entry, 3)], Err(())),
            ("append below last", vec![(Entry, 1), (Entry, 2), (Entry, 2)], Err(())),
            ("predecessor copied after", vec![(Entry, 1), (Entry, 3), (EntryRewrite, 2)], Ok(Some((1, 3)))),
            ("truncate then re-append", vec![(Entry, 1), (Entry, 2), (Truncate, 2), (Entry, 2)], Ok(Some((1, 2)))),
            ("truncate everything", vec![(Entry, 0), (Entry, 1), (Truncate, 0)], Ok(None)),
            ("purge beyond end then append", vec![(Entry, 1), (Purge, 9), (Entry, 10)], Ok(Some((10, 10)))),
            ("append not after purge", vec![(Purge, 9), (Entry, 12)], Err(())),
            (
                "copies after later entries",
                vec![(Entry, 4), (Entry, 5), (EntryRewrite, 2), (EntryRewrite, 3)],
                Ok(Some((2, 5))),
            ),
            ("copies then append", vec![(Truncate, 3), (EntryRewrite, 2), (Purge, 1), (Entry, 3)], Ok(Some((2, 3)))),
            ("copy of a later-truncated entry", vec![(Entry, 1), (EntryRewrite, 1), (Truncate, 1)], Ok(None)),
            ("copy below purge ignored", vec![(Purge, 5), (EntryRewrite, 3)], Ok(None)),
            ("copies leave a hole", vec![(Entry, 5), (EntryRewrite, 2)], Err(())),
            (
                "older purge copied after newer",
                vec![(Entry, 1), (Entry, 2), (Entry, 3), (Purge, 2), (Purge, 1)],
                Ok(Some((3, 3))),
            ),
        ];
        for (name, records, expected) in cases {
            let mut g = RecoveringGroup::default();
            let mut result = Ok(());
            for (i, (t, index)) in records.into_iter().enumerate() {
                result = result.and_then(|()| g.replay(&rec(t, index), Loc { segment: 1, offset: i as u64 }));
            }
            let got = result.and_then(|()| g.finish()).map(|idx| idx.first_index().zip(idx.last_index()));
            match expected {
                Ok(range) => assert_eq!(got, Ok(range), "{name}"),
                Err(()) => assert!(got.is_err(), "{name}: expected an error, got {got:?}"),
            }
        }
    }
}
