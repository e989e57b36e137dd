//! Writing one segment file, entry by entry: to `<name>.tmp`, then footer, fsync, rename and
//! directory fsync, so a file under its final name is always whole. Used by moves out of the
//! WAL and by a replica receiving a snapshot's log.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::direct::DirectWriter;
use super::format::{EntryHeader, Footer, INDEX_INTERVAL, Indexes};
use super::store::{SegmentError, io};
use crate::storage::EntryOffsets;

pub fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.seg")
}

/// The name of a file compaction wrote: generation 0 is a file moved out of the WAL.
pub fn compacted_file_name(base_offset: u64, generation: u32) -> String {
    if generation == 0 { file_name(base_offset) } else { format!("{base_offset:020}.{generation}.seg") }
}

/// (base offset, generation) from a segment file's name.
pub fn parse_file_name(name: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(".seg")?;
    match stem.split_once('.') {
        None => Some((stem.parse().ok()?, 0)),
        Some((base, generation)) => Some((base.parse().ok()?, generation.parse().ok()?)),
    }
}

/// How compaction seals a file: the span of the files it replaces and how far it cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactedSpan {
    pub generation: u32,
    pub last_offset: u64,
    pub cleaned_through: u64,
}

/// A segment file being written.
pub struct SegmentWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: DirectWriter,
    base_offset: u64,
    last_offset: u64,
    entries: u32,
    idx: Indexes,
    pos: u64,
    since_point: u64,
    max_ts: i64,
    compacted: Option<CompactedSpan>,
}

impl SegmentWriter {
    /// Starts `<dir>/<base_offset>.seg.tmp` (replacing a leftover one).
    pub fn create(dir: &Path, base_offset: u64) -> Result<SegmentWriter, SegmentError> {
        SegmentWriter::create_as(dir, base_offset, None)
    }

    /// Starts a file compaction writes: it spans `base_offset..=span.last_offset` whatever
    /// entries it ends up holding (none, possibly), with gaps where records were removed.
    pub fn create_compacted(dir: &Path, base_offset: u64, span: CompactedSpan) -> Result<SegmentWriter, SegmentError> {
        SegmentWriter::create_as(dir, base_offset, Some(span))
    }

    fn create_as(
        dir: &Path,
        base_offset: u64,
        compacted: Option<CompactedSpan>,
    ) -> Result<SegmentWriter, SegmentError> {
        let name = compacted_file_name(base_offset, compacted.map_or(0, |c| c.generation));
        let tmp = dir.join(format!("{name}.tmp"));
        let out = DirectWriter::create(&tmp).map_err(io(&tmp))?;
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            tmp,
            out,
            base_offset,
            last_offset: base_offset,
            entries: 0,
            idx: Indexes::default(),
            pos: 0,
            since_point: u64::MAX,
            max_ts: i64::MIN,
            compacted,
        })
    }

    /// Bytes of entries written so far.
    pub fn data_len(&self) -> u64 {
        self.pos
    }

    /// Appends one entry: its offsets and its stored record batches. Entries come in offset
    /// order (the caller checks that they are contiguous).
    pub fn push(&mut self, o: &EntryOffsets, records: &[u8]) -> Result<(), SegmentError> {
        let h = EntryHeader {
            len: records.len() as u32,
            crc: crc32c::crc32c(records),
            base_offset: o.base_offset,
            last_offset: o.last_offset,
            max_timestamp: o.max_timestamp,
            epoch: o.epoch,
        };
        if self.pos + h.footprint() > u64::from(u32::MAX) {
            return Err(SegmentError::Corrupt {
                path: self.tmp.clone(),
                offset: self.pos,
                reason: "a segment file cannot grow past 4 GiB".into(),
            });
        }
        let rel = (o.base_offset - self.base_offset) as u32;
        self.max_ts = self.max_ts.max(o.max_timestamp);
        if self.since_point >= INDEX_INTERVAL {
            self.idx.offsets.push((rel, self.pos as u32));
            self.idx.times.push((self.max_ts, rel));
            self.since_point = 0;
        }
        if self.idx.epochs.last().is_none_or(|(epoch, _)| *epoch != o.epoch) {
            self.idx.epochs.push((o.epoch, o.base_offset));
        }
        self.out.write_all(&h.encode()).map_err(io(&self.tmp))?;
        self.out.write_all(records).map_err(io(&self.tmp))?;
        self.pos += h.footprint();
        self.since_point = self.since_point.saturating_add(h.footprint());
        self.entries += 1;
        self.last_offset = o.last_offset;
        Ok(())
    }

    /// Seals the file (indexes, footer), makes it durable and gives it its final name.
    /// `last_raft` is the (index, term) of the last Raft entry it covers. Returns the final
    /// path, the footer and the indexes.
    pub fn finish(mut self, last_raft: (u64, u64)) -> Result<(PathBuf, Footer, Indexes), SegmentError> {
        assert!(self.entries > 0 || self.compacted.is_some(), "a moved segment file holds at least one entry");
        let sections = self.idx.encode();
        let footer = Footer {
            entries: self.entries,
            base_offset: self.base_offset,
            last_offset: self.compacted.map_or(self.last_offset, |c| c.last_offset),
            max_timestamp: self.max_ts,
            data_len: self.pos,
            index_entries: self.idx.offsets.len() as u32,
            time_entries: self.idx.times.len() as u32,
            epoch_entries: self.idx.epochs.len() as u32,
            last_raft_index: last_raft.0,
            last_raft_term: last_raft.1,
            flags: if self.compacted.is_some() { super::format::COMPACTED } else { 0 },
            cleaned_through: self.compacted.map_or(0, |c| c.cleaned_through),
            sections_crc: crc32c::crc32c(&sections),
        };
        self.out.write_all(&sections).map_err(io(&self.tmp))?;
        self.out.write_all(&footer.encode()).map_err(io(&self.tmp))?;
        self.out.finish().map_err(io(&self.tmp))?;
        crate::crash_point::crash_point("move.file_written");
        let path = self.dir.join(compacted_file_name(self.base_offset, self.compacted.map_or(0, |c| c.generation)));
        std::fs::rename(&self.tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        crate::crash_point::crash_point("move.file_renamed");
        Ok((path, footer, self.idx))
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
