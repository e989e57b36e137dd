//! A standalone node (a cluster of one) end to end, without sockets: topics through the
//! metadata group, produce through partition groups, reads, restart, identity checks, retention.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chronik_cluster::{ClusterError, MetaCommand, Node, ReadError, Tasks};
use common::*;
use uuid::Uuid;

async fn create_topic(node: &Node, name: &str, partitions: u32, configs: BTreeMap<String, String>) {
    node.propose_meta(MetaCommand::CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partitions,
        replication_factor: 1,
        configs,
    })
    .await
    .unwrap();
    assert!(node.wait_for_topic(name, Duration::from_secs(10)).await, "partitions of {name} started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_read_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    {
        let node = start(dir.path()).await;
        create_topic(&node, "orders", 4, BTreeMap::new()).await;
        for i in 0..40u32 {
            let p = (i % 4) as i32;
            let b = batch(3, 1000 + i as i64, format!("batch-{i}").as_bytes());
            let g = node.partition("orders", p).unwrap();
            let (base, last) = g.append(b.clone()).await.unwrap();
            assert_eq!(last, base + 2);
            sent.push((p, base, b));
        }
        // Offsets are contiguous per partition.
        for p in 0..4 {
            let bases: Vec<u64> = sent.iter().filter(|(q, ..)| *q == p).map(|(_, b, _)| *b).collect();
            assert_eq!(bases, (0..10).map(|k| k * 3).collect::<Vec<_>>(), "partition {p}");
        }
        node.shutdown().await.unwrap();
    }
    let node = start(dir.path()).await;
    assert!(node.metadata().topic("orders").is_some(), "metadata survives restart");
    assert!(node.wait_for_topic("orders", Duration::from_secs(10)).await);
    for p in 0..4 {
        let g = node.partition("orders", p).unwrap();
        // Re-applied after restart: the high watermark covers everything acknowledged.
        for _ in 0..200 {
            if g.log().high_watermark() == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(g.log().high_watermark(), 30, "partition {p}");
        let read = g.log().read(0, usize::MAX).unwrap();
        let expected: Vec<&(i32, u64, bytes::Bytes)> = sent.iter().filter(|(q, ..)| *q == p).collect();
        assert_eq!(read.chunks.len(), expected.len());
        for (chunk, (_, base, b)) in read.chunks.iter().zip(expected) {
            assert!(same_batch(chunk, b, *base), "partition {p} offset {base}: stored bytes are the sent bytes");
        }
        assert!(matches!(g.log().read(31, 100), Err(ReadError::OutOfRange { .. })));
        assert!(g.log().read(30, 100).unwrap().chunks.is_empty(), "at the high watermark: nothing yet");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_node_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    // The same directory while in use: locked.
    let err = Node::start(options(dir.path(), 1), &Tasks::new()).await.err().expect("second process refused");
    assert!(matches!(err, ClusterError::Locked(_)), "{err}");
    node.shutdown().await.unwrap();
    drop(node);
    let err = Node::start(options(dir.path(), 2), &Tasks::new()).await.err().expect("other node id refused");
    assert!(err.to_string().contains("belongs to node 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topic_is_gone_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = start(dir.path()).await;
        create_topic(&node, "tmp", 2, BTreeMap::new()).await;
        node.partition("tmp", 0).unwrap().append(batch(1, 1, b"x")).await.unwrap();
        node.propose_meta(MetaCommand::DeleteTopic { name: "tmp".into() }).await.unwrap();
        for _ in 0..200 {
            if node.partition("tmp", 0).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(node.partition("tmp", 0).is_none());
        node.shutdown().await.unwrap();
    }
    let node = start(dir.path()).await;
    assert!(node.metadata().topic("tmp").is_none());
    assert!(node.wal().groups().iter().all(|g| *g == 0), "only the metadata group is left: {:?}", node.wal().groups());
    node.shutdown().await.unwrap();
}

/// A partition deleted while no reconciler saw it go (the node stopped or crashed first)
/// leaves its WAL group behind; the next start drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_wal_group_of_a_deleted_topic_is_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let orphan = {
        let node = start(dir.path()).await;
        create_topic(&node, "kept", 1, BTreeMap::new()).await;
        create_topic(&node, "gone", 1, BTreeMap::new()).await;
        let group = node.partition("gone", 0).unwrap().group();
        node.partition("gone", 0).unwrap().append(batch(1, 1, b"left behind")).await.unwrap();
        node.stop_reconciler().await;
        node.propose_meta(MetaCommand::DeleteTopic { name: "gone".into() }).await.unwrap();
        node.shutdown().await.unwrap();
        group
    };
    let wal_groups = |dir: &std::path::Path| {
        let (wal, _) = chronik_wal::Wal::open(&dir.join("wal"), options(dir, 1).wal).unwrap();
        let groups = wal.groups();
        wal.close().unwrap();
        groups
    };
    assert!(wal_groups(dir.path()).contains(&orphan), "the deleted partition's data is still in the WAL");
    let node = start(dir.path()).await;
    assert!(!node.wal().groups().contains(&orphan), "the orphan is dropped: {:?}", node.wal().groups());
    let kept = node.partition("kept", 0).unwrap().group();
    assert!(node.wal().groups().contains(&kept), "live partitions keep their data");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_and_time_frees_disk_and_moves_log_start() {
    use chronik_cluster::TopicDefaults;
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let defaults =
        TopicDefaults { retention_ms: -1, retention_bytes: -1, max_message_bytes: 1 << 20, ..TopicDefaults::default() };
    create_topic(&node, "by-size", 1, [("retention.bytes".to_string(), "100000".to_string())].into()).await;
    create_topic(&node, "by-time", 1, [("retention.ms".to_string(), "60000".to_string())].into()).await;
    let now = 10_000_000i64;
    let body = vec![7u8; 20_000];
    let size = node.partition("by-size", 0).unwrap();
    let time = node.partition("by-time", 0).unwrap();
    for i in 0..150 {
        size.append(batch(1, now, &body)).await.unwrap();
        // the first 100 batches are old, the rest recent
        let ts = if i < 100 { now - 120_000 } else { now };
        time.append(batch(1, ts, &body)).await.unwrap();
    }
    let segments_before = node.wal().stats().live_segments;
    let moved = node.enforce_retention(&defaults, now).await;
    assert_eq!(moved.len(), 2, "{moved:?}");
    // Size: what remains is at least retention.bytes, and less than one batch more.
    let kept = size.log().high_watermark() - size.log().log_start_offset();
    assert!((5..=6).contains(&kept), "kept {kept} batches of ~20 KB for retention.bytes=100000");
    assert_eq!(time.log().log_start_offset(), 100, "the 100 old batches expired");
    for g in [&size, &time] {
        let start = g.log().log_start_offset();
        assert!(matches!(g.log().read(start - 1, 100), Err(ReadError::OutOfRange { .. })), "below the log start");
        assert!(!g.log().read(start, 100).unwrap().chunks.is_empty());
    }
    // The purged entries' segments are retired (disk freed).
    let mut freed = false;
    for _ in 0..100 {
        node.wal().collect_garbage().unwrap();
        if node.wal().stats().live_segments < segments_before {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "segments before {segments_before}, now {:?}", node.wal().stats());
    node.shutdown().await.unwrap();
    drop((size, time, node));
    // Restart: the log start survives.
    let node = start(dir.path()).await;
    assert!(node.wait_for_topic("by-time", Duration::from_secs(10)).await);
    let time = node.partition("by-time", 0).unwrap();
    for _ in 0..200 {
        if time.log().high_watermark() == 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((time.log().log_start_offset(), time.log().high_watermark()), (100, 150));
    node.shutdown().await.unwrap();
}

/// An idempotent producer idle past `producer.id.expiration.ms` is forgotten by the partition:
/// before, a retry of its batch gets the original's offsets; after, it is a new batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_idempotent_producers_expire() {
    use chronik_cluster::ProducerBatch;
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    create_topic(&node, "idem", 1, BTreeMap::new()).await;
    let g = node.partition("idem", 0).unwrap();
    let sent = idempotent_batch(7, 0, 0, 2, 1_000);
    let seq = ProducerBatch { producer_id: 7, epoch: 0, first_seq: 0, last_seq: 1 };
    let send = || async { g.submit_idempotent(sent.clone(), seq).await.unwrap().await.unwrap() };
    let first = send().await;
    assert_eq!(send().await, first, "a retry is answered with the original's offsets");
    node.expire_idle_producers(1_000).await;
    assert_eq!(send().await, first, "seen at 1000: not idle before 1000");
    node.expire_idle_producers(1_001).await;
    let again = send().await;
    assert_eq!(again.0, first.1 + 1, "forgotten: the same batch is appended anew");
    node.shutdown().await.unwrap();
}
