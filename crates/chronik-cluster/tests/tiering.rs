//! The segment tier: once the WAL holds more than its window, the oldest entries move to
//! their partitions' segment files and the WAL lets them go. Reads, time lookups and leader
//! epochs span both tiers without the caller knowing; retention deletes whole files; data that
//! retention drops first is never copied; a restart finds everything where it was.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chronik_cluster::{MetaCommand, Node, TopicDefaults};
use common::*;
use uuid::Uuid;

const WINDOW: u64 = 3 << 20; // three 1 MiB WAL segments

async fn create_topic(node: &Node, name: &str, configs: BTreeMap<String, String>) {
    node.propose_meta(MetaCommand::CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partitions: 1,
        replication_factor: 1,
        configs,
    })
    .await
    .unwrap();
    assert!(node.wait_for_topic(name, Duration::from_secs(10)).await);
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok())
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() { dir_bytes(&e.path()) } else { m.len() }
            })
            .sum()
    })
}

fn defaults() -> TopicDefaults {
    TopicDefaults { retention_ms: -1, retention_bytes: -1, max_message_bytes: 1 << 20, ..TopicDefaults::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_entries_move_to_segment_files_and_read_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    {
        let node = start(dir.path()).await;
        create_topic(&node, "kept", BTreeMap::new()).await;
        let g = node.partition("kept", 0).unwrap();
        let now = chronik_cluster::now_ms();
        for i in 0..400 {
            let b = batch(2, now - 400 + i, format!("{i:04}-{}", "x".repeat(20_000)).as_bytes());
            let (base, _) = g.append(b.clone()).await.unwrap();
            sent.push((base, b));
        }
        let wal_before = node.wal_stats().live_segments;
        node.move_out_of_wal(WINDOW, &defaults()).await;
        assert!(node.wal_stats().live_segments < wal_before, "WAL segments retired");
        assert!(node.wal_stats().live_segments as u64 * (1 << 20) <= WINDOW, "{:?}", node.wal_stats());
        assert!(g.log().segment_bytes() > 4 << 20, "most of the 8 MB moved to segment files");
        check_reads(&g, &sent);
        // Lookups by time and by epoch span the tiers.
        let first_ts = g.log().time_candidates(now - 400, 1).unwrap();
        assert!(same_batch(&first_ts[0], &sent[0].1, 0), "the earliest timestamp is in a segment file");
        assert_eq!(g.log().epoch_end(1).unwrap().map(|(e, _)| e), Some(1));
        node.shutdown().await.unwrap();
    }
    // A restart reads the footers, not the data: everything is where it was.
    let node = start(dir.path()).await;
    assert!(node.wait_for_topic("kept", Duration::from_secs(10)).await);
    let g = node.partition("kept", 0).unwrap();
    wait_for_high_watermark(&g, 800).await;
    check_reads(&g, &sent);
    node.shutdown().await.unwrap();
}

/// A consumer reading while entries move out of the WAL never skips an offset: a read that
/// lost its entries to a purge goes to the segment files instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_moves_never_skip_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    create_topic(&node, "busy", BTreeMap::new()).await;
    let g = node.partition("busy", 0).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (g, stop) = (g.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut next = 0u64;
                while next < g.log().high_watermark() {
                    let read = g.log().read(next, 64 << 10).unwrap();
                    let Some(first) = read.chunks.first() else { break };
                    let base = u64::from_be_bytes(first[0..8].try_into().unwrap());
                    assert_eq!(base, next, "the read at {next} starts there (2-record batches)");
                    next += 2 * read.chunks.len() as u64;
                }
                passes += 1;
            }
            passes
        })
    };
    let now = chronik_cluster::now_ms();
    for round in 0..8 {
        for i in 0..50 {
            g.append(batch(2, now, format!("{round}-{i}-{}", "x".repeat(20_000)).as_bytes())).await.unwrap();
        }
        node.move_out_of_wal(WINDOW, &defaults()).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);
    assert!(g.log().segment_bytes() > 0, "entries moved while the reader read");
    node.shutdown().await.unwrap();
}

/// Every batch sent reads back, byte for byte, at its offset (following each read's end).
fn check_reads(g: &chronik_cluster::PartitionReplica, sent: &[(u64, bytes::Bytes)]) {
    let mut next = 0u64;
    let mut i = 0;
    while i < sent.len() {
        let read = g.log().read(next, 1 << 20).unwrap();
        assert!(!read.chunks.is_empty(), "offset {next} reads");
        for chunk in read.chunks {
            let (base, b) = &sent[i];
            assert!(same_batch(&chunk, b, *base), "offset {base}: stored bytes are the sent bytes");
            next = base + 2;
            i += 1;
        }
    }
}

async fn wait_for_high_watermark(g: &chronik_cluster::PartitionReplica, hw: u64) {
    let mut w = g.log().subscribe_high_watermark();
    tokio::time::timeout(Duration::from_secs(10), w.wait_for(|h| *h >= hw)).await.unwrap().unwrap();
}

/// A short-retention topic written fast beside an infinite one: the WAL stays within its
/// window, the short topic's expired data is deleted and never copied, the long one's moves,
/// and retention by size deletes whole segment files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_retentions_keep_the_disk_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let hour = 3_600_000i64;
    create_topic(&node, "hourly", [("retention.ms".to_string(), hour.to_string())].into()).await;
    create_topic(&node, "forever", [("retention.bytes".to_string(), (2u64 << 20).to_string())].into()).await;
    let (hourly, forever) = (node.partition("hourly", 0).unwrap(), node.partition("forever", 0).unwrap());
    let now = chronik_cluster::now_ms();
    let body = vec![7u8; 20_000];
    for round in 0..20 {
        // The hourly topic's records are already two hours old: retention takes them.
        for _ in 0..20 {
            hourly.append(batch(1, now - 2 * hour, &body)).await.unwrap();
        }
        forever.append(batch(1, now, &body)).await.unwrap();
        node.move_out_of_wal(WINDOW, &defaults()).await;
        let wal_bytes = dir_bytes(&dir.path().join("wal"));
        // Within the window, plus the active segment and a spare.
        assert!(wal_bytes <= WINDOW + (2 << 20) + (64 << 10), "round {round}: WAL {wal_bytes} bytes");
    }
    assert_eq!(hourly.log().segment_bytes(), 0, "expired data is never copied to segment files");
    assert!(forever.log().segment_bytes() > 0, "the long-lived topic's data moved");
    // Retention by size (2 MiB) deletes the oldest files whole.
    for _ in 0..150 {
        forever.append(batch(1, now, &body)).await.unwrap();
    }
    node.move_out_of_wal(WINDOW, &defaults()).await;
    node.enforce_retention(&defaults(), now).await;
    let kept = forever.log().size_bytes();
    assert!((2 << 20..(2 << 20) + (3 << 20)).contains(&kept), "kept {kept} bytes for retention.bytes=2 MiB");
    let start = forever.log().log_start_offset();
    assert!(forever.log().read(start, 100).is_ok() && forever.log().read(start.saturating_sub(1), 100).is_err());
    let segments_dir = dir.path().join("partitions");
    assert!(dir_bytes(&segments_dir) < (3 << 20) + (1 << 20), "segment files beyond retention are gone");
    node.shutdown().await.unwrap();
}
