//! A full disk on a real size-limited filesystem (a tmpfs mounted for the test; CI runs as root):
//! appends fail with a clear error, nothing written is damaged, and appends resume once space
//! is freed.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chronik_wal::{AppendEntry, WalError};
use common::*;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Mount {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root (CI runs as root); mount exited with {status}");
    Mount(dir.to_path_buf())
}

fn try_append(wal: &chronik_wal::Wal, index: u64) -> Result<(), WalError> {
    let p = payload(1, index, 4000);
    let (tx, rx) = std::sync::mpsc::channel();
    wal.append(
        1,
        &[AppendEntry { index, term: 1, leader_id: 1, entry_kind: 1, payload: &[&p[..]] }],
        Some(Box::new(move |r| tx.send(r).unwrap())),
    )?;
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn full_disk_fails_appends_cleanly_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let _mount = mount_tmpfs(base.path(), "2m");
    let wal_dir = base.path().join("wal");
    // Leave room for the active segment and one spare (256 KiB each) and a bit more.
    let filler = base.path().join("filler");
    std::fs::write(&filler, vec![1u8; 1300 * 1024]).unwrap();

    let wal = open(&wal_dir);
    let mut acknowledged = 0;
    let err = loop {
        match try_append(&wal, acknowledged + 1) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 10_000, "the disk never filled");
    };
    assert!(matches!(err, WalError::DiskFull { .. }), "expected a disk-full error, got: {err}");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(acknowledged > 50, "only {acknowledged} appends before the disk filled");
    // Everything acknowledged is still readable, and appends keep failing cleanly.
    assert_entries(&wal, 1, 1, acknowledged, 4000);
    assert!(try_append(&wal, acknowledged + 1).is_err());
    // An append of several entries that needs a new segment fails as a whole: its first, small
    // entries would still fit in the active segment, but none of them may be left behind.
    let small = [7u8; 1];
    let parts = [&small[..]];
    let batch: Vec<AppendEntry<'_>> = (1..=200)
        .map(|i| AppendEntry { index: acknowledged + i, term: 1, leader_id: 1, entry_kind: 1, payload: &parts })
        .collect();
    assert!(wal.append(1, &batch, None).is_err(), "an append needing a new segment fails while the disk is full");
    assert_eq!(
        wal.group_info(1).unwrap().last.map(|p| p.index),
        Some(acknowledged),
        "nothing of the failed append is in the log"
    );

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_append(&wal, acknowledged + 1) {
            Ok(()) => break,
            Err(WalError::DiskFull { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("appends did not resume after space was freed: {e}"),
        }
    }
    acknowledged += 1;
    for _ in 0..100 {
        try_append(&wal, acknowledged + 1).unwrap();
        acknowledged += 1;
    }
    drop(wal);
    let wal = open(&wal_dir);
    assert_entries(&wal, 1, 1, acknowledged, 4000);
}
