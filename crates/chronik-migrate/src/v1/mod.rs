//! Reading a v1 data directory, read-only, as the format document
//! (`shared/reference/chronik-v1-format.md`) lays it out: the partition WAL files (the
//! authoritative copy of every record), the raw segment objects (older copies that can fill
//! what the WAL lost), and the metadata event log (topics, configs, committed offsets).

mod bincode;
pub mod canonical;
pub mod framing;
pub mod legacy;
pub mod metadata;
pub mod partition;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use crate::error::MigrateError;
use framing::{Frame, Frames, WalRecord};

/// Something wrong in the input that the migration stepped over (and reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub file: PathBuf,
    /// Byte position in the file.
    pub at: usize,
    /// `torn-tail`: the file ends inside a record, cut there as v1 itself did; `skipped`: a
    /// record that failed its checks, skipped under `--skip-corrupt`; `unreadable-rest`: the
    /// rest of the file could not be framed.
    pub kind: &'static str,
    /// Bytes not read.
    pub bytes: usize,
    pub reason: String,
}

/// A segment object: `<min>-<max>.segment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentObject {
    pub min: i64,
    pub max: i64,
    pub path: PathBuf,
    /// Its object key (`segments/<topic>/<partition>/<min>-<max>.segment`).
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionFiles {
    /// In the order v1 wrote them.
    pub wal: Vec<PathBuf>,
    pub segments: Vec<SegmentObject>,
}

/// The files of a v1 data directory.
#[derive(Debug, Clone)]
pub struct V1Dir {
    pub root: PathBuf,
    pub metadata_files: Vec<PathBuf>,
    pub partitions: BTreeMap<(String, i32), PartitionFiles>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io { path: path.to_path_buf(), source }
}

/// `(n, path)` of the entries of `dir` named `<prefix><n><suffix>`, sorted by `n`.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>, MigrateError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)).and_then(|n| n.parse().ok()) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Subdirectories of `dir` with their names.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, MigrateError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_type().map_err(io_err(dir))?.is_dir() {
            out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl V1Dir {
    pub fn open(root: &Path) -> Result<V1Dir, MigrateError> {
        let not_v1 = |why: &str| MigrateError::NotV1 { path: root.to_path_buf(), why: why.to_string() };
        if !root.is_dir() {
            return Err(not_v1("no such directory"));
        }
        let (wal, meta) = (root.join("wal"), root.join("metadata_wal"));
        if !wal.is_dir() && !meta.is_dir() {
            return Err(not_v1("it has neither wal/ nor metadata_wal/"));
        }
        let metadata_files = numbered(&meta.join("__chronik_metadata").join("0"), "wal_0_", ".log")?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let mut partitions: BTreeMap<(String, i32), PartitionFiles> = BTreeMap::new();
        // `wal/__meta` is v1's Raft area; v1 keeps no user data under names starting `__`.
        for (topic, dir) in subdirs(&wal)?.into_iter().filter(|(t, _)| !t.starts_with("__")) {
            for (p, pdir) in subdirs(&dir)? {
                let Ok(partition) = p.parse::<i32>() else { continue };
                let files = numbered(&pdir, &format!("wal_{partition}_"), ".log")?;
                partitions.entry((topic.clone(), partition)).or_default().wal =
                    files.into_iter().map(|(_, f)| f).collect();
            }
        }
        for (topic, dir) in subdirs(&root.join("segments").join("segments"))? {
            for (p, pdir) in subdirs(&dir)? {
                let Ok(partition) = p.parse::<i32>() else { continue };
                let mut objects = Vec::new();
                for entry in std::fs::read_dir(&pdir).map_err(io_err(&pdir))? {
                    let path = entry.map_err(io_err(&pdir))?.path();
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let Some((min, max)) = name.strip_suffix(".segment").and_then(|r| r.split_once('-')) else {
                        continue;
                    };
                    let (Ok(min), Ok(max)) = (min.parse(), max.parse()) else { continue };
                    let key = format!("segments/{topic}/{partition}/{name}");
                    objects.push(SegmentObject { min, max, path, key });
                }
                objects.sort_by_key(|o| (o.min, o.max));
                partitions.entry((topic.clone(), partition)).or_default().segments = objects;
            }
        }
        Ok(V1Dir { root: root.to_path_buf(), metadata_files, partitions })
    }

    /// Bytes of v1 data: every partition WAL file and segment object.
    pub fn data_bytes(&self) -> u64 {
        let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        self.partitions.values().map(|f| f.wal.iter().map(size).sum::<u64>()).sum()
    }
}

/// The whole records of one WAL file. Damage is an error naming file and byte, or with
/// `skip_corrupt` a [`Damage`] entry; a torn tail is always a `Damage` entry (v1 itself
/// stopped there).
pub(crate) struct WalFileReader {
    path: PathBuf,
    frames: Frames,
    file_len: usize,
    skip_corrupt: bool,
}

impl WalFileReader {
    pub fn open(path: &Path, skip_corrupt: bool) -> Result<WalFileReader, MigrateError> {
        let data = read_file(path)?;
        let file_len = data.len();
        Ok(WalFileReader { path: path.to_path_buf(), frames: Frames::new(data), file_len, skip_corrupt })
    }

    pub fn next_record(&mut self, damage: &mut Vec<Damage>) -> Result<Option<WalRecord>, MigrateError> {
        while let Some(frame) = self.frames.next() {
            match frame {
                Frame::Record(r) => return Ok(Some(r)),
                Frame::TornTail { at, bytes } => {
                    let reason = format!("the file ends inside a record ({bytes} bytes); cut at the last whole record");
                    damage.push(Damage { file: self.path.clone(), at, kind: "torn-tail", bytes, reason });
                }
                Frame::Corrupt { at, len, reason } => self.bad_record(at, len, reason, damage)?,
            }
        }
        Ok(None)
    }

    /// A record at `at` that failed a check (`len`: its size, if the file can be read on).
    pub fn bad_record(
        &self,
        at: usize,
        len: Option<usize>,
        reason: String,
        damage: &mut Vec<Damage>,
    ) -> Result<(), MigrateError> {
        if !self.skip_corrupt {
            return Err(MigrateError::Corrupt { path: self.path.clone(), at, reason });
        }
        let (kind, bytes) = match len {
            Some(n) => ("skipped", n),
            None => ("unreadable-rest", self.file_len.saturating_sub(at)),
        };
        damage.push(Damage { file: self.path.clone(), at, kind, bytes, reason });
        Ok(())
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Bytes, MigrateError> {
    std::fs::read(path).map(Bytes::from).map_err(io_err(path))
}
