mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronik_wal::{AppendEntry, SyncMode, Wal, WalError, WalOptions};
use common::*;

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        append_durable(&wal, 1, 1..101, 100);
        append_durable(&wal, 2, 0..150, 3000); // several segment rolls
        assert_entries(&wal, 1, 1, 100, 100);
        assert_entries(&wal, 2, 0, 149, 3000);
        assert!(wal.stats().segment_rolls > 0);
    }
    let (wal, report) = Wal::open(dir.path(), small_opts()).unwrap();
    assert!(report.torn_tail.is_none(), "clean close leaves no torn tail: {:?}", report.torn_tail);
    assert_entries(&wal, 1, 1, 100, 100);
    assert_entries(&wal, 2, 0, 149, 3000);
    assert_eq!(wal.groups(), vec![1, 2]);
}

#[test]
fn rejects_non_contiguous_appends() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    append_durable(&wal, 1, 5..7, 10);
    let p = payload(1, 9, 10);
    let err = wal
        .append(1, &[AppendEntry { index: 9, term: 1, leader_id: 1, entry_kind: 1, payload: &[&p[..]] }], None)
        .unwrap_err();
    assert!(matches!(err, WalError::Group { group: 1, .. }), "{err}");
    // Nothing was written: the next index is still 7.
    append_durable(&wal, 1, 7..8, 10);
    assert_entries(&wal, 1, 5, 7, 10);
}

#[test]
fn truncate_purge_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        append_durable(&wal, 3, 1..21, 64);
        wal.truncate_from(3, 16).unwrap();
        wal.purge(3, pos(4)).unwrap();
        wal.set_state(3, 1, b"vote:term=2", None).unwrap();
        wal.set_state(3, 1, b"vote:term=3", None).unwrap();
        append_durable(&wal, 3, 16..18, 64);
        wal.sync().unwrap();
    }
    let wal = open(dir.path());
    assert_entries(&wal, 3, 5, 17, 64);
    let info = wal.group_info(3).unwrap();
    assert_eq!(info.last_purged, Some(pos(4)));
    assert_eq!(wal.state(3, 1).unwrap().as_ref(), b"vote:term=3");
    assert_eq!(wal.state(3, 2), None);
}

#[test]
fn durability_callbacks_fire_in_append_order() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(open(dir.path()));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for group in 0..4u64 {
        let wal = wal.clone();
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..200u64 {
                let p = payload(group, i, 500);
                let order = order.clone();
                wal.append(
                    group,
                    &[AppendEntry { index: i, term: 1, leader_id: 1, entry_kind: 1, payload: &[&p[..]] }],
                    Some(Box::new(move |r| {
                        r.unwrap();
                        order.lock().unwrap().push((group, i));
                    })),
                )
                .unwrap();
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    wal.sync().unwrap();
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 800);
    for group in 0..4u64 {
        let seen: Vec<u64> = order.iter().filter(|(g, _)| *g == group).map(|(_, i)| *i).collect();
        assert_eq!(seen, (0..200).collect::<Vec<_>>(), "group {group} durable order");
    }
    let stats = wal.stats();
    assert!(stats.sync_rounds < 800, "appends shared fdatasync rounds ({} rounds)", stats.sync_rounds);
}

#[test]
fn garbage_collection_retires_purged_segments_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        wal.set_state(9, 1, b"vote-9", None).unwrap();
        append_durable(&wal, 9, 1..3, 10); // a small, long-lived group pinning the first segment
        append_durable(&wal, 1, 1..401, 2000); // ~3 segments
        wal.purge(1, pos(390)).unwrap();
        wal.sync().unwrap();
        // purge() also wakes the background collector; either may do the work.
        wal.collect_garbage().unwrap();
        let stats = wal.stats();
        assert!(stats.segments_retired >= 2, "retired only {} segments", stats.segments_retired);
        assert_eq!(stats.live_segments, 1, "only the active segment is left");
        assert!(wal.stats().gc_rewritten_bytes > 0, "group 9's entries were copied forward");
        assert_entries(&wal, 1, 391, 400, 2000);
        assert_entries(&wal, 9, 1, 2, 10);
    }
    let wal = open(dir.path());
    assert_entries(&wal, 1, 391, 400, 2000);
    assert_entries(&wal, 9, 1, 2, 10);
    assert_eq!(wal.group_info(1).unwrap().last_purged, Some(pos(390)));
    assert_eq!(wal.state(9, 1).unwrap().as_ref(), b"vote-9");
    // Retired segments were recycled rather than deleted and re-created.
    append_durable(&wal, 1, 401..700, 2000);
    assert_entries(&wal, 1, 391, 699, 2000);
}

/// The collector remembers that the oldest segment was too live to retire; that verdict must
/// not outlive a purge (or a truncation) that kills its entries.
#[test]
fn segment_found_too_live_is_retired_once_purged() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    append_durable(&wal, 1, 1..401, 2000); // ~3 segments, all live
    assert_eq!(wal.collect_garbage().unwrap(), 0, "nothing may be retired while everything is live");
    assert_eq!(wal.collect_garbage().unwrap(), 0, "the remembered verdict still holds");
    let live_before = wal.stats().live_segments;
    wal.truncate_from(1, 300).unwrap(); // kills entries in later segments only
    assert_eq!(wal.collect_garbage().unwrap(), 0, "the oldest segment is still fully live");
    wal.purge(1, pos(250)).unwrap();
    wal.sync().unwrap();
    wal.collect_garbage().unwrap();
    let stats = wal.stats();
    assert!(stats.live_segments < live_before, "purged segments stay: {} of {live_before}", stats.live_segments);
    assert!(stats.segments_retired >= 1);
    assert_entries(&wal, 1, 251, 299, 2000);
}

#[test]
fn dropped_group_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        append_durable(&wal, 4, 1..10, 10);
        append_durable(&wal, 5, 1..10, 10);
        wal.drop_group(4).unwrap();
        assert_eq!(wal.groups(), vec![5]);
        wal.sync().unwrap();
    }
    let wal = open(dir.path());
    assert_eq!(wal.groups(), vec![5]);
    assert!(wal.read(4, 1).unwrap().is_none());
    // Its id is never used again: recovery would take a later record of it for corruption.
    let p = payload(4, 1, 10);
    let refused =
        wal.append(4, &[AppendEntry { index: 1, term: 1, leader_id: 1, entry_kind: 1, payload: &[&p[..]] }], None);
    assert!(refused.is_err_and(|e| e.to_string().contains("dropped")));
    drop(wal);
    assert_eq!(open(dir.path()).groups(), vec![5], "the log still opens");
}

#[test]
fn oversized_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let big = vec![0u8; 300 * 1024];
    let err = wal
        .append(1, &[AppendEntry { index: 1, term: 1, leader_id: 1, entry_kind: 1, payload: &[&big[..]] }], None)
        .unwrap_err();
    assert!(matches!(err, WalError::RecordTooLarge { .. }), "{err}");
    append_durable(&wal, 1, 1..2, 10);
}

#[test]
fn read_range_respects_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    append_durable(&wal, 1, 1..11, 100);
    assert_eq!(wal.read_range(1, 1, 11, usize::MAX).unwrap().len(), 10);
    assert_eq!(wal.read_range(1, 3, 6, usize::MAX).unwrap().iter().map(|e| e.index).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(wal.read_range(1, 1, 11, 250).unwrap().len(), 3);
    assert_eq!(wal.read_range(1, 1, 11, 0).unwrap().len(), 1, "at least one entry");
    assert!(wal.read_range(1, 20, 30, usize::MAX).unwrap().is_empty());
}

/// In `periodic` mode a state write never waits for the disk in the caller: a hint without a
/// callback rides the next periodic round, and one with a callback gets a round of its own
/// from the syncer (a vote must be durable before it counts).
#[test]
fn periodic_state_writes_do_not_block_on_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { sync_mode: SyncMode::Periodic(Duration::from_secs(3600)), ..small_opts() };
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let rounds = wal.stats().sync_rounds;
    for i in 0..100u8 {
        wal.set_state(1, 2, &[i], None).unwrap();
    }
    assert_eq!(wal.stats().sync_rounds, rounds, "hints wait for the periodic round (an hour away)");
    let (tx, rx) = std::sync::mpsc::channel();
    wal.set_state(1, 1, b"vote", Some(Box::new(move |r| drop(tx.send(r))))).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).expect("called back").expect("durable");
    assert!(wal.stats().sync_rounds > rounds, "the vote was made durable before its callback");
    assert_eq!(wal.state(1, 1).as_deref(), Some(&b"vote"[..]));
    wal.close().unwrap();
}
