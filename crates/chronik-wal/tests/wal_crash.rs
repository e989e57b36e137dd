//! Crash recovery: a torn last record at every byte boundary, bit flips in the last record and
//! inside sealed segments, and kill -9 of a process appending with `always`.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chronik_wal::{AppendEntry, Wal, WalError};
use common::*;

/// Copies a WAL directory as a crash would leave it: the files, without the clean-close seal.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A live WAL with 5 entries in group 1, synced but not closed, imaged to `image`.
/// Returns the active segment's path in the image and the last record's byte range.
fn image_with_five_entries(image: &Path) -> (PathBuf, std::ops::Range<usize>) {
    let live = tempfile::tempdir().unwrap();
    let wal = open(live.path());
    append_durable(&wal, 1, 1..6, 100);
    crash_image(live.path(), image);
    std::mem::forget(wal); // no clean close: the image is what a crash leaves
    // A fresh WAL appends into segment 1 (segment 2, if present, is the prepared spare).
    let active = image.join(chronik_wal::segment::segment_file_name(1));
    let rec = 48 + 100;
    let start = 64 + 4 * rec;
    (active, start..start + rec)
}

#[test]
fn torn_last_record_at_every_byte_keeps_exactly_the_valid_prefix() {
    let base = tempfile::tempdir().unwrap();
    let (active, last) = image_with_five_entries(&base.path().join("image"));
    let pristine = std::fs::read(&active).unwrap();
    for cut in 0..=last.len() {
        let dir = tempfile::tempdir().unwrap();
        crash_image(&base.path().join("image"), dir.path());
        let seg = dir.path().join(active.file_name().unwrap());
        let mut bytes = pristine.clone();
        // Bytes of the last record after `cut` never reached the disk (they read as zeros).
        bytes[last.start + cut..last.end].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let (wal, report) = Wal::open(dir.path(), small_opts()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let expect_last = if cut == last.len() { 5 } else { 4 };
        assert_entries(&wal, 1, 1, expect_last, 100);
        if cut > 0 && cut < last.len() {
            let torn = report.torn_tail.unwrap_or_else(|| panic!("cut at {cut}: torn tail not reported"));
            assert_eq!(torn.offset, last.start as u64, "cut at {cut}");
        }
        // The WAL keeps working and the cut record's bytes are never resurrected.
        append_durable(&wal, 1, expect_last + 1..expect_last + 3, 100);
        drop(wal);
        let wal = open(dir.path());
        assert_entries(&wal, 1, 1, expect_last + 2, 100);
    }
}

#[test]
fn bit_flip_in_last_record_drops_only_that_record() {
    let base = tempfile::tempdir().unwrap();
    let (active, last) = image_with_five_entries(&base.path().join("image"));
    let pristine = std::fs::read(&active).unwrap();
    for byte in last.clone().step_by(3) {
        for bit in [0u8, 5] {
            let dir = tempfile::tempdir().unwrap();
            crash_image(&base.path().join("image"), dir.path());
            let mut bytes = pristine.clone();
            bytes[byte] ^= 1 << bit;
            std::fs::write(dir.path().join(active.file_name().unwrap()), &bytes).unwrap();
            let (wal, report) = Wal::open(dir.path(), small_opts()).unwrap();
            assert_entries(&wal, 1, 1, 4, 100);
            assert!(report.torn_tail.is_some(), "flip at byte {byte} bit {bit} reported");
        }
    }
}

#[test]
fn bit_flip_inside_sealed_segment_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        append_durable(&wal, 1, 1..200, 3000); // several sealed segments
    }
    let first = dir.path().join(chronik_wal::segment::segment_file_name(1));
    let mut bytes = std::fs::read(&first).unwrap();
    let target = 64 + 3048 * 10 + 100; // inside the 11th record's payload
    bytes[target] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    match Wal::open(dir.path(), small_opts()) {
        Err(WalError::Corrupt { path, offset, reason }) => {
            assert_eq!(path, first);
            assert_eq!(offset, 64 + 3048 * 10, "offset of the damaged record");
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a damaged sealed segment must not open"),
    }
    let report = chronik_wal::inspect::verify(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].offset, 64 + 3048 * 10);
}

/// Child side of the kill -9 test: appends forever, printing each index once it is durable.
#[test]
#[ignore = "helper process for kill_9_loses_nothing_reported_durable"]
fn crash_child_appender() {
    let Ok(dir) = std::env::var("CHRONIK_WAL_CRASH_DIR") else { return };
    let wal = std::sync::Arc::new(open(Path::new(&dir)));
    let start = wal.group_info(1).and_then(|i| i.last).map_or(1, |p| p.index + 1);
    for index in start.. {
        let p = payload(1, index, 700);
        wal.append(
            1,
            &[AppendEntry { index, term: 1, leader_id: 1, entry_kind: 1, payload: &[&p[..]] }],
            Some(Box::new(move |r| {
                r.unwrap();
                println!("durable {index}");
            })),
        )
        .unwrap();
        if index % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn kill_9_loses_nothing_reported_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut reported = 0u64;
    for round in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child_appender", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CHRONIK_WAL_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_after = 300 + round * 500;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(i) = line.strip_prefix("durable ") {
                reported = reported.max(i.parse().unwrap());
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "child too slow");
        }
        // SIGKILL: no destructor, no seal, no final sync.
        child.kill().unwrap();
        child.wait().unwrap();
        let wal = open(dir.path());
        let last = wal.group_info(1).unwrap().last.unwrap().index;
        assert!(last >= reported, "round {round}: entry {reported} was reported durable but the log ends at {last}");
        assert_entries(&wal, 1, 1, last, 700);
    }
}
