//! Segment sequence numbers are never given twice. A segment that left the log is renamed
//! `retired-*` and later recycled under a new number; its old records carry its old number in
//! their checksums, so they only stay invalid if no live segment ever gets that number again.
//! This builds the file state a crash during an open leaves behind (a segment retired past the
//! valid prefix, with a higher number than any live one) and checks that nothing written before
//! it is replayed after another crash.

mod common;

use std::path::Path;

use common::*;

const GROUP: u64 = 7;
const LEN: usize = 2000;

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// A copy of the WAL files as they are on disk now: what a crash (kill -9) would leave.
fn crash_image(from: &Path, to: &Path) {
    for name in segment_files(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

#[test]
fn a_retired_segment_number_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    // Entries 1..=200 of 2 KB fill segment 1 and run into segment 2 (256 KiB segments).
    let wal = open(dir.path());
    append_durable(&wal, GROUP, 1..201, LEN);
    wal.close().unwrap();
    // The state a crash in the middle of an open leaves: the last segment holding records
    // retired (past the valid prefix), and only the spare above it.
    let report = chronik_wal::inspect::verify(dir.path()).unwrap();
    let tail = report.segments.iter().rev().find(|s| s.records > 0).unwrap();
    let last = tail.path.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&tail.path, dir.path().join(format!("retired-{last}"))).unwrap();
    for spare in report.segments.iter().filter(|s| s.seq > tail.seq) {
        std::fs::remove_file(&spare.path).unwrap();
    }
    let wal = open(dir.path());
    let kept = wal.group_info(GROUP).unwrap().last.unwrap().index;
    assert!(kept < 200, "the retired segment's entries left the log (kept {kept})");
    let active = segment_files(dir.path()).into_iter().rfind(|n| !n.starts_with("retired-")).unwrap();
    assert!(active > last, "new segment {active} numbered above the retired {last}");
    // One more entry of the same size (so old records would line up behind it), then a crash.
    append_durable(&wal, GROUP, kept + 1..kept + 2, LEN);
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    wal.close().unwrap();
    let recovered = open(image.path());
    assert_entries(&recovered, GROUP, 1, kept + 1, LEN);
    recovered.close().unwrap();
}
