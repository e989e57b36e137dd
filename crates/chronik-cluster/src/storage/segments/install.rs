//! Replacing a partition's segment files with the ones a snapshot brought, crash-safely.
//!
//! A receiving replica writes the snapshot's files into `<dir>/incoming/`, each verified, then
//! a marker naming the snapshot (its last Raft index and term) and the files. Only then is the
//! snapshot installed in Raft (recorded durably in the WAL), and then the files are adopted:
//! old files the snapshot does not name are deleted, the new ones renamed into place, the
//! marker and the staging directory removed. Every step can be redone, so a node that died
//! anywhere in between finishes the adoption at its next start if the snapshot was recorded,
//! and drops the staging directory if it was not.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{ENTRY_HEADER_LEN, EntryHeader, Footer, Indexes};
use super::store::{SegmentError, io, read_footer};
use super::writer::sync_dir;

const MARKER: &str = "INSTALL";

/// Where a snapshot's files wait until it is installed.
pub fn incoming_dir(dir: &Path) -> PathBuf {
    dir.join("incoming")
}

/// What the marker records: the snapshot (last Raft index and term) and the files it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallMarker {
    pub snapshot: (u64, u64),
    pub files: Vec<String>,
}

impl InstallMarker {
    fn encode(&self) -> String {
        let mut out = format!("snapshot {} {}\n", self.snapshot.0, self.snapshot.1);
        for f in &self.files {
            out.push_str(f);
            out.push('\n');
        }
        out
    }

    fn decode(text: &str) -> Option<InstallMarker> {
        let mut lines = text.lines();
        let mut head = lines.next()?.strip_prefix("snapshot ")?.split(' ');
        let snapshot = (head.next()?.parse().ok()?, head.next()?.parse().ok()?);
        let files = lines.map(str::to_string).collect::<Vec<_>>();
        files.iter().all(|f| is_segment_name(f)).then_some(InstallMarker { snapshot, files })
    }

    /// Writes the marker into `incoming` durably (the files it names must already be).
    pub fn write(&self, incoming: &Path) -> Result<(), SegmentError> {
        let tmp = incoming.join(format!("{MARKER}.tmp"));
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(self.encode().as_bytes()).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
        let path = incoming.join(MARKER);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(incoming)
    }
}

fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(".seg").is_some_and(|b| b.len() == 20 && b.bytes().all(|c| c.is_ascii_digit()))
}

/// Finishes (or abandons) a snapshot's adoption in `dir`. `installed` is the snapshot Raft has
/// recorded (last index and term). Returns true if files were adopted.
pub fn finish_install(dir: &Path, installed: Option<(u64, u64)>) -> Result<bool, SegmentError> {
    let incoming = incoming_dir(dir);
    if !incoming.exists() {
        return Ok(false);
    }
    let marker = std::fs::read_to_string(incoming.join(MARKER)).ok().and_then(|t| InstallMarker::decode(&t));
    let Some(marker) = marker.filter(|m| Some(m.snapshot) == installed) else {
        // The snapshot never got installed: what it brought is not this replica's log.
        std::fs::remove_dir_all(&incoming).map_err(io(&incoming))?;
        return Ok(false);
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let ours = is_segment_name(&name) || name.ends_with(".seg.tmp");
        if ours && !marker.files.contains(&name) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    for name in &marker.files {
        let from = incoming.join(name);
        if from.exists() {
            let to = dir.join(name);
            std::fs::rename(&from, &to).map_err(io(&to))?;
        }
    }
    sync_dir(dir)?;
    std::fs::remove_dir_all(&incoming).map_err(io(&incoming))?;
    sync_dir(dir)?;
    Ok(true)
}

/// Checks a whole received file: footer, indexes, every entry's header and checksum, entries
/// contiguous from `base_offset` (in order within its span, for a compacted file, whose
/// entries leave gaps). Returns its footer.
pub fn verify_file(path: &Path, base_offset: u64) -> Result<Footer, SegmentError> {
    let corrupt = |offset: u64, reason: String| SegmentError::Corrupt { path: path.to_path_buf(), offset, reason };
    let footer = read_footer(path).map_err(|r| corrupt(0, r))?;
    if footer.base_offset != base_offset {
        return Err(corrupt(0, format!("starts at offset {}, expected {base_offset}", footer.base_offset)));
    }
    let file = File::open(path).map_err(io(path))?;
    let mut sections = vec![0u8; footer.sections_len() as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut sections, footer.data_len).map_err(io(path))?;
    Indexes::decode(&sections, &footer).map_err(|r| corrupt(footer.data_len, r.into()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut pos, mut next, mut entries) = (0u64, base_offset, 0u32);
    let mut records = Vec::new();
    while pos < footer.data_len {
        let mut head = [0u8; ENTRY_HEADER_LEN];
        reader.read_exact(&mut head).map_err(io(path))?;
        let h = EntryHeader::decode(&head).ok_or_else(|| corrupt(pos, "no entry header".into()))?;
        let in_place = if footer.is_compacted() { h.base_offset >= next } else { h.base_offset == next };
        if !in_place || h.last_offset < h.base_offset || pos + h.footprint() > footer.data_len {
            return Err(corrupt(pos, format!("entry at offset {} out of place (expected {next})", h.base_offset)));
        }
        records.resize(h.len as usize, 0);
        reader.read_exact(&mut records).map_err(io(path))?;
        if crc32c::crc32c(&records) != h.crc {
            return Err(corrupt(pos, "entry checksum mismatch".into()));
        }
        pos += h.footprint();
        next = h.last_offset + 1;
        entries += 1;
    }
    let ends_right =
        if footer.is_compacted() { next <= footer.last_offset + 1 } else { next == footer.last_offset + 1 };
    if entries != footer.entries || !ends_right {
        return Err(corrupt(pos, "the entries do not match the footer".into()));
    }
    Ok(footer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, content: &[u8]) {
        std::fs::write(path, content).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    }

    const A: &str = "00000000000000000000.seg";
    const B: &str = "00000000000000000100.seg";
    const C: &str = "00000000000000000200.seg";

    /// A replica with files A and B receives a snapshot carrying A' (same name) and C.
    fn staged(dir: &Path) -> InstallMarker {
        touch(&dir.join(A), b"old a");
        touch(&dir.join(B), b"old b");
        let incoming = incoming_dir(dir);
        std::fs::create_dir_all(&incoming).unwrap();
        touch(&incoming.join(A), b"new a");
        touch(&incoming.join(C), b"new c");
        let marker = InstallMarker { snapshot: (40, 3), files: vec![A.into(), C.into()] };
        marker.write(&incoming).unwrap();
        marker
    }

    #[test]
    fn adoption_replaces_the_files_and_can_be_redone() {
        let dir = tempfile::tempdir().unwrap();
        staged(dir.path());
        assert!(finish_install(dir.path(), Some((40, 3))).unwrap());
        assert_eq!(names(dir.path()), [A, C]);
        assert_eq!(std::fs::read(dir.path().join(A)).unwrap(), b"new a");

        // Died after renaming A' into place, before C: the next start finishes the job.
        let dir = tempfile::tempdir().unwrap();
        staged(dir.path());
        std::fs::remove_file(dir.path().join(B)).unwrap();
        std::fs::rename(incoming_dir(dir.path()).join(A), dir.path().join(A)).unwrap();
        assert!(finish_install(dir.path(), Some((40, 3))).unwrap());
        assert_eq!(names(dir.path()), [A, C]);
        assert_eq!(std::fs::read(dir.path().join(A)).unwrap(), b"new a");
        assert_eq!(std::fs::read(dir.path().join(C)).unwrap(), b"new c");
    }

    #[test]
    fn a_snapshot_raft_did_not_record_leaves_the_files_alone() {
        for recorded in [None, Some((39, 3)), Some((40, 2))] {
            let dir = tempfile::tempdir().unwrap();
            staged(dir.path());
            assert!(!finish_install(dir.path(), recorded).unwrap());
            assert_eq!(names(dir.path()), [A, B], "{recorded:?}");
            assert_eq!(std::fs::read(dir.path().join(A)).unwrap(), b"old a");
        }
        // Staged files without a marker (died while receiving) are dropped too.
        let dir = tempfile::tempdir().unwrap();
        staged(dir.path());
        std::fs::remove_file(incoming_dir(dir.path()).join(MARKER)).unwrap();
        assert!(!finish_install(dir.path(), Some((40, 3))).unwrap());
        assert_eq!(names(dir.path()), [A, B]);
    }

    #[test]
    fn markers_round_trip_and_reject_strange_names() {
        let m = InstallMarker { snapshot: (7, 2), files: vec![A.into(), B.into()] };
        assert_eq!(InstallMarker::decode(&m.encode()), Some(m));
        assert_eq!(InstallMarker::decode("snapshot 7 2\n../../etc/passwd\n"), None);
        assert_eq!(InstallMarker::decode("snapshot x 2\n"), None);
    }
}
