//! A partition's segment files: what has moved out of the WAL, one sealed file per move, in
//! offset order. Opening reads only the footers; a file's indexes are read the first time it
//! is searched; every entry's CRC is checked when the entry is read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use super::format::{ENTRY_HEADER_LEN, EntryHeader, FOOTER_LEN, Footer, INDEX_INTERVAL, Indexes};
use super::writer::{SegmentWriter, parse_file_name};
use crate::storage::EntryOffsets;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("segment file {path} is damaged at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io { path: path.to_path_buf(), source }
}

/// An entry moved out of the WAL: its stored batches and what the offset index knew of it.
pub struct MovedEntry {
    pub offsets: EntryOffsets,
    pub records: Bytes,
}

/// One sealed segment file.
pub struct SegmentFile {
    path: PathBuf,
    footer: Footer,
    /// 0 for a file moved out of the WAL; compaction writes one more than what it replaced.
    generation: u32,
    indexes: OnceLock<Indexes>,
    /// Why the file cannot be read, if it is damaged beyond its footer: it still holds its span
    /// of offsets (reads there fail naming it; retention deletes it like any other file).
    damage: Option<String>,
    /// Set when compaction replaced the file: it is deleted once the last reader lets it go.
    delete_when_unused: AtomicBool,
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if self.delete_when_unused.load(Ordering::Acquire)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            // The next start deletes it (a higher generation covers its span).
            tracing::warn!(path = %self.path.display(), "removing a compacted-away segment file: {e}");
        }
    }
}

impl SegmentFile {
    fn new(path: PathBuf, footer: Footer, generation: u32, indexes: OnceLock<Indexes>, damage: Option<String>) -> Self {
        SegmentFile { path, footer, generation, indexes, damage, delete_when_unused: AtomicBool::new(false) }
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Every entry of the file in order, read sequentially (`f` sees each after its CRC is
    /// checked). Stops at the first error `f` returns.
    pub fn for_each_entry<E: From<SegmentError>>(
        &self,
        mut f: impl FnMut(&EntryHeader, Bytes) -> Result<(), E>,
    ) -> Result<(), E> {
        self.check_damage()?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, self.open_file()?);
        let mut pos = 0;
        while pos < self.footer.data_len {
            let mut head = [0u8; ENTRY_HEADER_LEN];
            reader.read_exact(&mut head).map_err(io(&self.path))?;
            let h = EntryHeader::decode(&head).ok_or_else(|| self.corrupt(pos, "no entry header"))?;
            if pos + h.footprint() > self.footer.data_len {
                return Err(self.corrupt(pos, "entry runs past the data").into());
            }
            let mut records = BytesMut::zeroed(h.len as usize);
            reader.read_exact(&mut records).map_err(io(&self.path))?;
            if crc32c::crc32c(&records) != h.crc {
                return Err(self.corrupt(pos, "entry checksum mismatch").into());
            }
            f(&h, records.freeze())?;
            pos += h.footprint();
        }
        Ok(())
    }

    fn open_file(&self) -> Result<File, SegmentError> {
        File::open(&self.path).map_err(io(&self.path))
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> SegmentError {
        SegmentError::Corrupt { path: self.path.clone(), offset, reason: reason.into() }
    }

    fn check_damage(&self) -> Result<(), SegmentError> {
        match &self.damage {
            Some(reason) => Err(self.corrupt(0, reason.clone())),
            None => Ok(()),
        }
    }

    fn indexes(&self) -> Result<&Indexes, SegmentError> {
        self.check_damage()?;
        if let Some(i) = self.indexes.get() {
            return Ok(i);
        }
        let mut sections = vec![0u8; self.footer.sections_len() as usize];
        self.open_file()?.read_exact_at(&mut sections, self.footer.data_len).map_err(io(&self.path))?;
        let decoded = Indexes::decode(&sections, &self.footer).map_err(|r| self.corrupt(self.footer.data_len, r))?;
        Ok(self.indexes.get_or_init(|| decoded))
    }

    /// The entries from file position `from` on, read `window` bytes at a time, until `take`
    /// says stop (it sees each header and may keep the entry). Each kept entry's CRC is checked.
    fn scan(
        &self,
        from: u64,
        window: u64,
        mut take: impl FnMut(&EntryHeader) -> Scan,
    ) -> Result<Vec<(EntryHeader, Bytes)>, SegmentError> {
        self.check_damage()?;
        let file = self.open_file()?;
        let data_len = self.footer.data_len;
        // `buf` holds the file's bytes from `buf_at` on.
        let (mut buf, mut buf_at) = (Bytes::new(), from);
        let fill = |at: u64, want: u64, buf: &mut Bytes, buf_at: &mut u64| -> Result<(), SegmentError> {
            let mut b = BytesMut::zeroed(want.max(window).min(data_len - at) as usize);
            file.read_exact_at(&mut b, at).map_err(io(&self.path))?;
            (*buf, *buf_at) = (b.freeze(), at);
            Ok(())
        };
        let mut out = Vec::new();
        let mut pos = from;
        while pos < data_len {
            if pos + ENTRY_HEADER_LEN as u64 > buf_at + buf.len() as u64 {
                fill(pos, ENTRY_HEADER_LEN as u64, &mut buf, &mut buf_at)?;
            }
            let at = (pos - buf_at) as usize;
            let h = EntryHeader::decode(&buf[at..]).ok_or_else(|| self.corrupt(pos, "no entry header"))?;
            let end = pos + h.footprint();
            if end > data_len {
                return Err(self.corrupt(pos, "entry runs past the data"));
            }
            match take(&h) {
                Scan::Stop => break,
                Scan::Skip => {}
                Scan::Keep => {
                    if end > buf_at + buf.len() as u64 {
                        fill(pos, h.footprint(), &mut buf, &mut buf_at)?;
                    }
                    let at = (pos - buf_at) as usize;
                    let records = buf.slice(at + ENTRY_HEADER_LEN..at + h.footprint() as usize);
                    if crc32c::crc32c(&records) != h.crc {
                        return Err(self.corrupt(pos, "entry checksum mismatch"));
                    }
                    out.push((h, records));
                }
            }
            pos = end;
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Skip,
    Keep,
    Stop,
}

/// A partition's segment files.
pub struct SegmentStore {
    dir: PathBuf,
    files: RwLock<Vec<Arc<SegmentFile>>>,
}

impl SegmentStore {
    /// Opens the files in `dir` (created if missing). `wal_front` is the first offset the WAL
    /// still holds: a file that did not finish (no valid footer) is dropped when the WAL still
    /// has its offsets. Otherwise it is damage: it keeps the offsets from its name up to the next
    /// file (or the WAL), and reading them fails naming it, while every other offset reads.
    pub fn open(dir: &Path, wal_front: u64) -> Result<SegmentStore, SegmentError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(io(&path))?; // a move or compaction that never finished
                continue;
            }
            let Some((base, generation)) = parse_file_name(&name) else { continue };
            match read_footer(&path) {
                Ok(footer) if footer.base_offset == base => found.push((path, footer, generation)),
                Ok(_) | Err(_) if base >= wal_front || generation > 0 => {
                    // Not done moving (the WAL has it) or not done compacting (its inputs are
                    // still here: they are deleted only after it is whole).
                    tracing::warn!(path = %path.display(), "dropping a damaged segment file whose data is held elsewhere");
                    std::fs::remove_file(&path).map_err(io(&path))?;
                }
                Ok(f) => damaged.push((base, path, format!("named for offset {base} but starts at {}", f.base_offset))),
                Err(reason) => damaged.push((base, path, reason)),
            }
        }
        // A compaction that stopped before deleting what it replaced: the newer generation wins.
        found.sort_by_key(|(_, _, generation)| std::cmp::Reverse(*generation));
        let mut files: Vec<Arc<SegmentFile>> = Vec::new();
        let covered_by_newer = |files: &[Arc<SegmentFile>], base: u64, last: u64, generation: u32| {
            files
                .iter()
                .any(|k| k.generation > generation && k.footer.base_offset <= base && last <= k.footer.last_offset)
        };
        for (path, footer, generation) in found {
            if covered_by_newer(&files, footer.base_offset, footer.last_offset, generation) {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            files.push(Arc::new(SegmentFile::new(path, footer, generation, OnceLock::new(), None)));
        }
        let mut kept_damage = Vec::new();
        for (base, path, reason) in damaged {
            if covered_by_newer(&files, base, base, 0) {
                std::fs::remove_file(&path).map_err(io(&path))?;
            } else {
                kept_damage.push((base, path, reason));
            }
        }
        let damaged = kept_damage;
        let mut bases: Vec<u64> =
            files.iter().map(|f| f.footer.base_offset).chain(damaged.iter().map(|d| d.0)).collect();
        bases.sort_unstable();
        for (base, path, reason) in damaged {
            let next = bases.iter().copied().find(|b| *b > base).unwrap_or(wal_front).min(wal_front);
            tracing::error!(path = %path.display(), first = base, last = next - 1, "segment file damaged: {reason}; its offsets cannot be read");
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let footer = Footer {
                base_offset: base,
                last_offset: next - 1,
                // Its timestamps are unknown: time lookups that might need it fail rather than skip it.
                max_timestamp: i64::MAX,
                data_len: len,
                ..Footer::default()
            };
            files.push(Arc::new(SegmentFile::new(path, footer, 0, OnceLock::new(), Some(reason))));
        }
        files.sort_by_key(|f| f.footer.base_offset);
        for pair in files.windows(2) {
            if pair[1].footer.base_offset <= pair[0].footer.last_offset {
                return Err(SegmentError::Corrupt {
                    path: pair[1].path.clone(),
                    offset: 0,
                    reason: format!("overlaps {}", pair[0].path.display()),
                });
            }
        }
        Ok(SegmentStore { dir: dir.to_path_buf(), files: RwLock::new(files) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn files(&self) -> Vec<Arc<SegmentFile>> {
        self.files.read().clone()
    }

    pub fn first_offset(&self) -> Option<u64> {
        self.files.read().first().map(|f| f.footer.base_offset)
    }

    /// The offset after the last one held.
    pub fn next_offset(&self) -> Option<u64> {
        self.files.read().last().map(|f| f.footer.last_offset + 1)
    }

    pub fn data_bytes(&self) -> u64 {
        self.files.read().iter().map(|f| f.footer.data_len).sum()
    }

    /// Writes `entries` (contiguous, after everything held) as a new sealed file, durably,
    /// and adds it. `last_raft` is the (index, term) of the last Raft entry they cover.
    pub fn write(&self, entries: &[MovedEntry], last_raft: (u64, u64)) -> Result<Arc<SegmentFile>, SegmentError> {
        let first = entries.first().expect("a segment holds at least one entry").offsets;
        let mut w = SegmentWriter::create(&self.dir, first.base_offset)?;
        for e in entries {
            w.push(&e.offsets, &e.records)?;
        }
        let (path, footer, idx) = w.finish(last_raft)?;
        let seg = Arc::new(SegmentFile::new(path, footer, 0, OnceLock::from(idx), None));
        self.files.write().push(seg.clone());
        Ok(seg)
    }

    /// Puts the files compaction wrote (durable, under their final names) in place of
    /// `replaced`, which are deleted once no reader holds them.
    pub fn replace(&self, replaced: &[Arc<SegmentFile>], written: Vec<(PathBuf, Footer, Indexes, u32)>) {
        let mut files = self.files.write();
        files.retain(|f| !replaced.iter().any(|r| Arc::ptr_eq(f, r)));
        for (path, footer, idx, generation) in written {
            files.push(Arc::new(SegmentFile::new(path, footer, generation, OnceLock::from(idx), None)));
        }
        files.sort_by_key(|f| f.footer.base_offset);
        for r in replaced {
            r.delete_when_unused.store(true, Ordering::Release);
        }
    }

    /// Opens, for sending, the files that hold offsets from `from` on and end below `end`: a
    /// run of (first offset, last offset, open file). An open file stays readable if retention
    /// deletes it meanwhile.
    pub fn open_for_transfer(&self, from: u64, end: u64) -> Result<Vec<(u64, u64, File)>, SegmentError> {
        let mut out = Vec::new();
        for f in self.files().iter().filter(|f| f.footer.last_offset >= from && f.footer.last_offset < end) {
            f.check_damage()?;
            out.push((f.footer.base_offset, f.footer.last_offset, f.open_file()?));
        }
        Ok(out)
    }

    /// Reads the files again from the directory (after an installed snapshot replaced them).
    pub fn reload(&self, wal_front: u64) -> Result<(), SegmentError> {
        let fresh = SegmentStore::open(&self.dir, wal_front)?;
        *self.files.write() = fresh.files.into_inner();
        Ok(())
    }

    /// Deletes the files wholly below `offset` (the log start moved past them).
    pub fn delete_below(&self, offset: u64) -> Result<usize, SegmentError> {
        let gone: Vec<Arc<SegmentFile>> = {
            let mut files = self.files.write();
            let keep = files.partition_point(|f| f.footer.last_offset < offset);
            files.drain(..keep).collect()
        };
        for f in &gone {
            std::fs::remove_file(&f.path).map_err(io(&f.path))?;
        }
        Ok(gone.len())
    }

    /// Stored batches from the entry holding `offset` (or the first after it), up to about
    /// `max_bytes` (at least one entry), all from one file.
    /// A compacted file may hold no entry at or after `offset` (compaction removed them): the
    /// read goes on in the next file, and is empty only past the last file.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, SegmentError> {
        let mut offset = offset;
        while let Some(file) = self.file_for(offset) {
            let rel = offset.saturating_sub(file.footer.base_offset) as u32;
            let from = u64::from(file.indexes()?.position_for(rel));
            let mut taken = 0usize;
            let window = (max_bytes as u64).clamp(64 * 1024, 16 << 20) + INDEX_INTERVAL;
            let entries = file.scan(from, window, |h| {
                if h.last_offset < offset {
                    Scan::Skip
                } else if taken > 0 && taken + h.len as usize > max_bytes {
                    Scan::Stop
                } else {
                    taken += h.len as usize;
                    Scan::Keep
                }
            })?;
            if !entries.is_empty() {
                return Ok(entries.into_iter().map(|(_, records)| records).collect());
            }
            offset = file.footer.last_offset + 1;
        }
        Ok(Vec::new())
    }

    /// Up to `limit` entries (their stored batches), from the first whose max timestamp is at
    /// or after `ts`, that are not wholly below `from_offset`.
    pub fn at_or_after_time(&self, ts: i64, from_offset: u64, limit: usize) -> Result<Vec<Bytes>, SegmentError> {
        let mut out = Vec::new();
        for file in self.files().iter().filter(|f| f.footer.max_timestamp >= ts && f.footer.last_offset >= from_offset)
        {
            let idx = file.indexes()?;
            let from = u64::from(idx.position_for(idx.scan_from_for_time(ts)));
            let found = file.scan(from, 1 << 20, |h| {
                if out.len() >= limit {
                    Scan::Stop
                } else if h.max_timestamp >= ts && h.last_offset >= from_offset {
                    Scan::Keep
                } else {
                    Scan::Skip
                }
            })?;
            out.extend(found.into_iter().map(|(_, r)| r));
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The entry holding the largest timestamp (the earliest such) not wholly below
    /// `from_offset`, with that timestamp.
    pub fn max_timestamp_entry(&self, from_offset: u64) -> Result<Option<(i64, Bytes)>, SegmentError> {
        let files = self.files();
        let Some(file) =
            files.iter().filter(|f| f.footer.last_offset >= from_offset).fold(None::<&Arc<SegmentFile>>, |best, f| {
                match best {
                    Some(b) if b.footer.max_timestamp >= f.footer.max_timestamp => Some(b),
                    _ => Some(f),
                }
            })
        else {
            return Ok(None);
        };
        let max = file.footer.max_timestamp;
        let found = file.scan(0, 1 << 20, |h| {
            if h.max_timestamp == max && h.last_offset >= from_offset { Scan::Keep } else { Scan::Skip }
        })?;
        Ok(found.into_iter().next().map(|(_, r)| (max, r)))
    }

    /// For OffsetForLeaderEpoch: the largest epoch at most `epoch` that these files start, and
    /// where the next larger one starts (`None` for the end: it lies beyond the files).
    pub fn epoch_end(&self, epoch: u64) -> Result<Option<(u64, Option<u64>)>, SegmentError> {
        let mut starts: Vec<(u64, u64)> = Vec::new();
        for f in self.files() {
            starts.extend(f.indexes()?.epochs.iter().copied());
        }
        let i = starts.partition_point(|(e, _)| *e <= epoch);
        let Some(found) = i.checked_sub(1).map(|i| starts[i].0) else { return Ok(None) };
        Ok(Some((found, starts.get(i).map(|(_, start)| *start))))
    }

    /// Each file as a retention unit: (last offset, max timestamp, bytes), oldest first.
    pub fn units(&self) -> Vec<EntryOffsets> {
        self.files
            .read()
            .iter()
            .map(|f| EntryOffsets {
                raft_index: 0,
                base_offset: f.footer.base_offset,
                last_offset: f.footer.last_offset,
                max_timestamp: f.footer.max_timestamp,
                bytes: f.footer.data_len,
                epoch: 0,
            })
            .collect()
    }

    fn file_for(&self, offset: u64) -> Option<Arc<SegmentFile>> {
        let files = self.files.read();
        let i = files.partition_point(|f| f.footer.last_offset < offset);
        files.get(i).cloned()
    }
}

pub(super) fn read_footer(path: &Path) -> Result<Footer, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < FOOTER_LEN as u64 {
        return Err(format!("{len} bytes: shorter than a footer"));
    }
    let mut b = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut b, len - FOOTER_LEN as u64).map_err(|e| e.to_string())?;
    let f = Footer::decode(&b).map_err(String::from)?;
    if f.file_len() != len {
        return Err(format!("the footer describes {} bytes, the file has {len}", f.file_len()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::batch;

    /// `count` entries of one 2-record batch each, from `base` on, with timestamps `ts(i)` and
    /// epoch `epoch` for the first half and the next for the rest.
    fn entries(base: u64, count: u64, epoch: u64, ts: impl Fn(u64) -> i64) -> Vec<MovedEntry> {
        (0..count)
            .map(|i| {
                let records: Bytes = batch(2, ts(i)).into();
                MovedEntry {
                    offsets: EntryOffsets {
                        raft_index: 10 + i,
                        base_offset: base + 2 * i,
                        last_offset: base + 2 * i + 1,
                        max_timestamp: ts(i),
                        bytes: records.len() as u64,
                        epoch: if i < count / 2 { epoch } else { epoch + 1 },
                    },
                    records,
                }
            })
            .collect()
    }

    #[test]
    fn write_read_search_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::open(dir.path(), 0).unwrap();
        // Two files: offsets 0..=1999 and 2000..=3999, timestamps 0, 10, 20, ...
        let first = entries(0, 1000, 1, |i| (i * 10) as i64);
        let second = entries(2000, 1000, 3, |i| 10_000 + (i * 10) as i64);
        store.write(&first, (1009, 1)).unwrap();
        store.write(&second, (2009, 2)).unwrap();
        for s in [store, SegmentStore::open(dir.path(), 4000).unwrap()] {
            assert_eq!((s.first_offset(), s.next_offset()), (Some(0), Some(4000)));
            assert_eq!(s.files().len(), 2);
            // (offset, max bytes) -> (entries, first entry's base offset)
            for (offset, max, count, base) in [(0, 1, 1, 0), (7, 1, 1, 6), (1999, 1, 1, 1998), (2000, 200, 3, 2000)] {
                let got = s.read(offset, max).unwrap();
                assert_eq!(got.len(), count, "read {offset}");
                let h = crate::batch::BatchHeader::parse(&got[0]).unwrap();
                assert_eq!(h.record_count, 2);
                assert_eq!(
                    got[0],
                    first.iter().chain(&second).find(|e| e.offsets.base_offset == base).unwrap().records
                );
            }
            let long = s.read(0, usize::MAX).unwrap();
            assert_eq!(long.len(), 1000, "one read stays within one file");
            // Time: the first entry with a max timestamp at or after ts.
            let by_time = |ts: i64| {
                s.at_or_after_time(ts, 0, 1)
                    .unwrap()
                    .first()
                    .map(|r| crate::batch::BatchHeader::parse(r).unwrap().max_timestamp)
            };
            assert_eq!(by_time(0), Some(0));
            assert_eq!(by_time(15), Some(20));
            assert_eq!(by_time(9_995), Some(10_000));
            assert_eq!(by_time(20_000), None);
            assert_eq!(s.max_timestamp_entry(0).unwrap().map(|(ts, _)| ts), Some(19_990));
            // Epochs start at offsets 0 (1), 1000 (2), 2000 (3), 3000 (4).
            assert_eq!(s.epoch_end(1).unwrap(), Some((1, Some(1000))));
            assert_eq!(s.epoch_end(2).unwrap(), Some((2, Some(2000))));
            assert_eq!(s.epoch_end(5).unwrap(), Some((4, None)));
            assert_eq!(s.epoch_end(0).unwrap(), None);
        }
        let s = SegmentStore::open(dir.path(), 4000).unwrap();
        assert_eq!(s.delete_below(2000).unwrap(), 1);
        assert_eq!(s.first_offset(), Some(2000));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the file is gone from disk");
    }

    #[test]
    fn damage_is_dropped_when_the_wal_has_it_and_fenced_off_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::open(dir.path(), 0).unwrap();
        let f = store.write(&entries(0, 10, 1, |i| i as i64), (19, 1)).unwrap();
        let path = f.path.clone();
        let full = std::fs::read(&path).unwrap();
        // A torn file (cut short): the WAL still holding offset 0 means it is dropped.
        std::fs::write(&path, &full[..full.len() - 10]).unwrap();
        std::fs::write(dir.path().join("00000000000000000099.seg.tmp"), b"half").unwrap();
        let s = SegmentStore::open(dir.path(), 0).unwrap();
        assert_eq!(s.files().len(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the torn file and the temporary one are gone");
        // The same damage when the WAL no longer holds the data, with a good file after it: the
        // damaged span (up to the good file) fails naming the file, the rest reads.
        std::fs::write(&path, &full[..full.len() - 10]).unwrap();
        let good =
            SegmentStore::open(dir.path(), 20).unwrap().write(&entries(40, 10, 1, |i| i as i64), (29, 1)).unwrap();
        let s = SegmentStore::open(dir.path(), 60).unwrap();
        let err = s.read(5, 1).expect_err("a damaged span");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(s.read(39, 1).expect_err("damaged up to the good file").to_string().contains("damaged"));
        assert_eq!(s.read(40, 1 << 20).unwrap().len(), 10, "the good file reads");
        assert!(s.epoch_end(1).is_err(), "epochs are unknown in the damaged span");
        assert_eq!(s.next_offset(), Some(60));
        assert_eq!(s.delete_below(40).unwrap(), 1, "retention deletes the damaged file");
        assert_eq!(s.first_offset(), Some(40));
        drop(good);
        // A flipped byte inside an entry: found when that entry is read.
        let mut flipped = full.clone();
        flipped[ENTRY_HEADER_LEN + 30] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let s = SegmentStore::open(dir.path(), 20).unwrap();
        let err = s.read(0, 1).expect_err("checksum failure");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
}
