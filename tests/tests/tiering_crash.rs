//! The real broker killed at each step of a move out of the WAL into partition segment files
//! (the kill points of a debug build, `CHRONIK_TEST_CRASH_AT`), and with a torn segment file:
//! after a restart every acknowledged batch is read back at its offset with its bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_tests::Broker;
use chronik_tests::raw::{batch, connect, create_topic, fetch, fetch_batches, try_produce};

const TOPIC: &str = "moving";
const PARTITIONS: i32 = 3;
/// Batches of 16 records of 4 KiB.
const RECORDS_PER_BATCH: usize = 16;
const VALUE_LEN: usize = 4096;
/// The kill point must be reached well before this much is produced (the window is 16 MiB).
const PRODUCE_LIMIT: usize = 200 << 20;

/// A batch whose values say which one it is, so a batch read back at the wrong offset differs.
fn numbered_batch(n: usize) -> Bytes {
    let mut value = vec![b'.'; VALUE_LEN];
    let tag = format!("batch {n:08}");
    value[..tag.len()].copy_from_slice(tag.as_bytes());
    batch(&[chronik_tests::now_ms(); RECORDS_PER_BATCH], &value, -1)
}

/// Starts a broker with a WAL window of two 8 MiB segments, dying at `point`.
fn broker_dying_at(point: &str) -> Broker {
    Broker::start(&[("CHRONIK_WAL_RETENTION_BYTES", "16777216"), ("CHRONIK_TEST_CRASH_AT", point)])
}

/// Produces numbered batches round robin until the broker dies; returns what it acknowledged
/// (partition and base offset to the batch as sent).
fn produce_until_death(b: &mut Broker) -> BTreeMap<(i32, i64), Bytes> {
    let mut s = connect(b);
    assert_eq!(create_topic(&mut s, TOPIC, PARTITIONS), 0);
    let mut acked = BTreeMap::new();
    let mut sent = 0;
    for n in 0.. {
        assert!(sent < PRODUCE_LIMIT, "the kill point was never reached:\n{}", b.log_text());
        let records = numbered_batch(n);
        sent += records.len();
        let partition = (n % PARTITIONS as usize) as i32;
        match try_produce(&mut s, TOPIC, partition, records.clone()) {
            Some((0, base)) => {
                acked.insert((partition, base), records);
            }
            _ => break, // the broker died (or was dying) here
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.is_running() {
        assert!(Instant::now() < deadline, "the broker did not die:\n{}", b.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    acked
}

/// Restarts without the kill point and checks every acknowledged batch: present at its
/// offset, byte for byte except the fields the broker stamps (base offset, leader epoch).
fn restart_and_check(b: &mut Broker, acked: &BTreeMap<(i32, i64), Bytes>) {
    b.env.retain(|(k, _)| k != "CHRONIK_TEST_CRASH_AT");
    b.start_again();
    let mut s = connect(b);
    let mut stored = BTreeMap::new();
    for partition in 0..PARTITIONS {
        for got in fetch_batches(&mut s, TOPIC, partition, 0, log_end(acked, partition)) {
            stored.insert((partition, i64::from_be_bytes(got[0..8].try_into().unwrap())), got);
        }
    }
    for ((partition, base), sent) in acked {
        let got = stored.get(&(*partition, *base)).unwrap_or_else(|| {
            panic!("acknowledged batch at {TOPIC}-{partition} offset {base} is missing:\n{}", b.log_text())
        });
        assert_eq!(got.len(), sent.len(), "{TOPIC}-{partition} offset {base}: length");
        assert!(
            got[8..12] == sent[8..12] && got[16..] == sent[16..],
            "{TOPIC}-{partition} offset {base}: the bytes differ from what was acknowledged"
        );
    }
}

/// The offset after the last acknowledged batch of `partition`.
fn log_end(acked: &BTreeMap<(i32, i64), Bytes>, partition: i32) -> i64 {
    acked.keys().filter(|(p, _)| *p == partition).map(|(_, base)| base + RECORDS_PER_BATCH as i64).max().unwrap_or(0)
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(groups) = std::fs::read_dir(dir) else { return found };
    for group in groups.flatten() {
        for f in std::fs::read_dir(group.path()).into_iter().flatten().flatten() {
            if f.path().to_string_lossy().ends_with(suffix) {
                found.push(f.path());
            }
        }
    }
    found
}

fn partitions_dir(b: &Broker) -> PathBuf {
    b.data.path().join("data").join("partitions")
}

fn killed_at(point: &str) {
    let mut b = broker_dying_at(point);
    let acked = produce_until_death(&mut b);
    assert!(b.log_text().contains(&format!("CHRONIK_TEST_CRASH_AT={point}: dying here")));
    assert!(!acked.is_empty());
    restart_and_check(&mut b, &acked);
    // The restarted broker goes on moving (the WAL is over its window), so a .tmp may be a new
    // move's for a moment; none stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = files_with_suffix(&partitions_dir(&b), ".tmp");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "unfinished moves' files stay: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_after_writing_a_segment_file_before_naming_it() {
    killed_at("move.file_written");
}

#[test]
fn killed_after_naming_a_segment_file_before_the_snapshot() {
    killed_at("move.file_renamed");
}

#[test]
fn killed_after_the_snapshot_before_the_wal_purge() {
    killed_at("purge.snapshotted");
}

#[test]
fn killed_after_the_wal_purge_before_its_segment_is_retired() {
    killed_at("move.purged");
}

#[test]
fn killed_after_a_wal_segment_is_retired() {
    killed_at("move.wal_collected");
}

/// A segment file cut short after the crash (as a disk that lost its tail would leave it),
/// while the WAL still holds its entries: it is dropped and its data read from the WAL.
#[test]
fn a_torn_segment_file_whose_entries_the_wal_holds_is_dropped() {
    let mut b = broker_dying_at("move.file_renamed");
    let acked = produce_until_death(&mut b);
    let mut segs = files_with_suffix(&partitions_dir(&b), ".seg");
    segs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap());
    let newest = segs.last().expect("the move named its file before dying");
    let len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(len / 2).unwrap();
    restart_and_check(&mut b, &acked);
    assert!(b.log_text().contains("dropping a damaged segment file"), "{}", b.log_text());
}

/// Produces 48 MiB round robin with the 16 MiB window, in two halves, waiting after each for
/// every partition to move data into one more segment file (a move takes everything beyond the
/// window at once, so one fast burst could make a single file each); returns what was
/// acknowledged.
fn produce_and_move(b: &Broker) -> BTreeMap<(i32, i64), Bytes> {
    let mut s = connect(b);
    assert_eq!(create_topic(&mut s, TOPIC, PARTITIONS), 0);
    let mut acked = BTreeMap::new();
    let batches = (48 << 20) / (RECORDS_PER_BATCH * VALUE_LEN);
    for (half, range) in [(1, 0..batches / 2), (2, batches / 2..batches)] {
        for n in range {
            let partition = (n % PARTITIONS as usize) as i32;
            let records = numbered_batch(n);
            let (error, base) = try_produce(&mut s, TOPIC, partition, records.clone()).unwrap();
            assert_eq!(error, 0);
            acked.insert((partition, base), records);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while files_with_suffix(&partitions_dir(b), ".seg").len() < half * PARTITIONS as usize {
            assert!(Instant::now() < deadline, "no move out of the WAL:\n{}", b.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    acked
}

/// With no kill point, the moves happen and the data lives in segment files and the WAL.
#[test]
fn moved_data_is_read_back_after_a_clean_restart() {
    let mut b = broker_dying_at("none");
    let acked = produce_and_move(&b);
    b.restart();
    restart_and_check(&mut b, &acked);
}

/// A segment file damaged after the WAL let go of its entries: the broker starts, names the
/// file, and fails reads of that file's offsets only; everything else reads.
#[test]
fn a_damaged_segment_file_the_wal_no_longer_holds_fails_only_its_offsets() {
    let mut b = broker_dying_at("none");
    let acked = produce_and_move(&b);
    assert_eq!(b.stop(), Some(0));
    let group_dir = std::fs::read_dir(partitions_dir(&b))
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .find(|d| std::fs::read_dir(d).unwrap().count() >= 2)
        .expect("a partition with two segment files");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&group_dir).unwrap().flatten().map(|f| f.path()).collect();
    files.sort();
    let (damaged, next) = (&files[0], &files[1]);
    let len = std::fs::metadata(damaged).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(damaged).unwrap().set_len(len - 1).unwrap();
    let next_base: i64 = next.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    b.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains(&damaged.display().to_string()) {
        assert!(Instant::now() < deadline, "the log names the damaged file:\n{}", b.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = connect(&b);
    let mut damaged_partitions = 0;
    for partition in 0..PARTITIONS {
        let (error, _) = fetch(&mut s, TOPIC, partition, 0);
        if error == 0 {
            let got = fetch_batches(&mut s, TOPIC, partition, 0, log_end(&acked, partition)).len();
            let sent = acked.keys().filter(|(p, _)| *p == partition).count();
            assert_eq!(got, sent, "an undamaged partition reads whole");
            continue;
        }
        assert_eq!(error, 56, "KAFKA_STORAGE_ERROR for the damaged offsets");
        damaged_partitions += 1;
        let after = fetch_batches(&mut s, TOPIC, partition, next_base, next_base + 1);
        assert!(!after.is_empty(), "offsets after the damaged file read");
    }
    assert_eq!(damaged_partitions, 1);
}
