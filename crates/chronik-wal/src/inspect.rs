//! Read-only inspection of a WAL directory for `chronik-server debug wal-dump | wal-verify |
//! wal-stats`. Never writes: safe to run against a stopped node's data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, WalError};
use crate::record::RecordHeader;
use crate::recovery;
use crate::segment::Segment;

/// One record as the dump shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DumpedRecord {
    pub segment: u64,
    pub offset: u64,
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub group: u64,
    pub index: u64,
    pub term: u64,
    pub leader_id: u64,
    pub entry_kind: u8,
    pub payload_len: u32,
}

/// A segment as the dump and verifier see it.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub seq: u64,
    pub path: PathBuf,
    pub size: u64,
    pub sealed: bool,
    pub records: u64,
    /// Where decoding stopped: the footer's end for a sealed segment, else the first byte that
    /// is not a record.
    pub end: u64,
    /// For an unsealed segment, why decoding stopped there (absent for zeros: a clean end).
    pub tail: Option<String>,
    /// For a sealed segment, the first record that does not decode: corruption.
    pub corruption: Option<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Walks one segment, calling `visit` for each valid record.
pub fn scan_segment(path: &Path, mut visit: impl FnMut(u64, &RecordHeader)) -> Result<SegmentReport> {
    let seg = Segment::open(path, false)?;
    let seal = seg.seal();
    let limit = seal.map_or(seg.records_limit(), |s| s.end.min(seg.records_limit()));
    let mut offset = seg.records_start();
    let mut records = 0;
    let mut tail = None;
    let mut corruption = None;
    while offset < limit {
        match seg.record_at(offset) {
            Ok(h) => {
                visit(offset, &h);
                records += 1;
                offset += h.total_len() as u64;
            }
            Err(e) => {
                if seal.is_some() {
                    corruption = Some(Problem { path: path.into(), offset, reason: e.to_string() });
                } else if e != crate::error::RecordError::Zeroes {
                    tail = Some(e.to_string());
                }
                break;
            }
        }
    }
    if let (Some(s), None) = (seal, &corruption)
        && (s.end != offset || s.records != records)
    {
        corruption = Some(Problem {
            path: path.into(),
            offset,
            reason: format!(
                "footer says {} records ending at {}, found {records} ending at {offset}",
                s.records, s.end
            ),
        });
    }
    Ok(SegmentReport {
        seq: seg.seq,
        path: path.into(),
        size: seg.size,
        sealed: seal.is_some(),
        records,
        end: offset,
        tail,
        corruption,
    })
}

/// Every record of every segment, in log order.
pub fn dump(dir: &Path, mut out: impl FnMut(&SegmentReport, &[DumpedRecord])) -> Result<()> {
    for (_, path) in recovery::list_dir(dir)?.segments {
        let mut records = Vec::new();
        let report = scan_segment(&path, |offset, h| {
            records.push(DumpedRecord {
                segment: 0,
                offset,
                record_type: h.record_type.name(),
                group: h.group,
                index: h.index,
                term: h.term,
                leader_id: h.leader_id,
                entry_kind: h.entry_kind,
                payload_len: h.payload_len,
            })
        })?;
        for r in &mut records {
            r.segment = report.seq;
        }
        out(&report, &records);
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub segments: Vec<SegmentReport>,
    /// Corruption: damage that recovery refuses to start with.
    pub problems: Vec<Problem>,
    /// Where the valid prefix ends in the unsealed tail, if it ends on something other than zeros
    /// (a write cut short by a crash): recovery truncates it.
    pub torn_tail: Option<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.torn_tail.is_none()
    }
}

/// Checks every segment on its own (reporting each corrupt one), then replays the whole log
/// as recovery would (catching gaps and ordering errors).
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let listing = recovery::list_dir(dir)?;
    let mut segments = Vec::new();
    let mut problems = Vec::new();
    for (_, path) in &listing.segments {
        match scan_segment(path, |_, _| {}) {
            Ok(report) => {
                if let Some(p) = &report.corruption {
                    problems.push(p.clone());
                }
                segments.push(report);
            }
            Err(e) => problems.push(problem_of(path, e)),
        }
    }
    let mut torn_tail = None;
    if problems.is_empty() {
        match recovery::recover(&listing, false) {
            Ok(r) => {
                torn_tail =
                    r.torn_tail.map(|t| Problem { path: t.path, offset: t.offset, reason: t.reason.to_string() });
            }
            Err(e) => problems.push(problem_of(dir, e)),
        }
    }
    Ok(VerifyReport { segments, problems, torn_tail })
}

fn problem_of(path: &Path, e: WalError) -> Problem {
    match e {
        WalError::Corrupt { path, offset, reason } => Problem { path, offset, reason },
        other => Problem { path: path.into(), offset: 0, reason: other.to_string() },
    }
}

#[derive(Debug, Default, Serialize)]
pub struct GroupStats {
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub entries: u64,
    pub last_purged_index: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct DirStats {
    pub segments: u64,
    pub sealed_segments: u64,
    pub retired_files: u64,
    pub disk_bytes: u64,
    pub record_bytes: u64,
    pub records_by_type: BTreeMap<&'static str, u64>,
    pub groups: BTreeMap<u64, GroupStats>,
}

/// Sizes and counts of a WAL directory, and each group's live range after replay.
pub fn stats(dir: &Path) -> Result<DirStats> {
    let listing = recovery::list_dir(dir)?;
    let mut out = DirStats { retired_files: listing.retired.len() as u64, ..Default::default() };
    for (_, path) in &listing.segments {
        let report = scan_segment(path, |_, h| {
            *out.records_by_type.entry(h.record_type.name()).or_default() += 1;
            out.record_bytes += h.total_len() as u64;
        })?;
        out.segments += 1;
        out.sealed_segments += report.sealed as u64;
        out.disk_bytes += report.size;
    }
    let recovered = recovery::recover(&listing, false)?;
    for (group, index) in recovered.groups {
        out.groups.insert(
            group,
            GroupStats {
                first_index: index.first_index(),
                last_index: index.last_index(),
                entries: index.len() as u64,
                last_purged_index: index.last_purged().map(|p| p.index),
            },
        );
    }
    Ok(out)
}
