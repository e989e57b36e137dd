#![allow(dead_code)]
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use chronik_wal::{AppendEntry, LogPos, SyncMode, Wal, WalOptions};

pub fn small_opts() -> WalOptions {
    WalOptions {
        segment_size: 256 * 1024,
        sync_mode: SyncMode::Always,
        spare_segments: 1,
        gc_interval: Duration::from_secs(3600),
        gc_rewrite_max_live_fraction: 0.25,
        page_cache_window: None,
    }
}

pub fn open(dir: &Path) -> Wal {
    Wal::open(dir, small_opts()).expect("open WAL").0
}

pub fn payload(group: u64, index: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (group as usize * 31 + index as usize * 7 + i) as u8).collect()
}

/// Appends entries `indexes` (term 1) to `group` and waits until they are durable.
pub fn append_durable(wal: &Wal, group: u64, indexes: std::ops::Range<u64>, len: usize) {
    let payloads: Vec<Vec<u8>> = indexes.clone().map(|i| payload(group, i, len)).collect();
    let slices: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    let entries: Vec<AppendEntry<'_>> = indexes
        .zip(&slices)
        .map(|(index, p)| AppendEntry { index, term: 1, leader_id: 1, entry_kind: 1, payload: std::slice::from_ref(p) })
        .collect();
    let (tx, rx) = mpsc::channel();
    wal.append(group, &entries, Some(Box::new(move |r| tx.send(r).unwrap()))).expect("append");
    rx.recv_timeout(Duration::from_secs(30)).expect("durable callback").expect("durable");
}

pub fn pos(index: u64) -> LogPos {
    LogPos { index, term: 1, leader_id: 1 }
}

/// Asserts that `group` holds exactly `first..=last`, each with its expected payload.
pub fn assert_entries(wal: &Wal, group: u64, first: u64, last: u64, len: usize) {
    let info = wal.group_info(group).expect("group exists");
    assert_eq!(info.first_index, Some(first), "first index of group {group}");
    assert_eq!(info.last.map(|p| p.index), Some(last), "last index of group {group}");
    for i in first..=last {
        let e = wal.read(group, i).unwrap().unwrap_or_else(|| panic!("group {group} entry {i} missing"));
        assert_eq!(e.payload.as_ref(), payload(group, i, len).as_slice(), "group {group} entry {i}");
    }
}
