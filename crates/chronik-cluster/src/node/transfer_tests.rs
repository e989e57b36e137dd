//! A snapshot that carries the log, installed on another replica in process: node A (a real
//! node: its partition has moved data into segment files, a WAL tail, a log start above 0,
//! idempotent producers and an import with offset gaps) sends its snapshot through a channel, chunk by chunk, to a replica
//! on its own WAL and disk that has no data and no voters (what a new learner is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chronik_wal::{SyncMode, Wal, WalOptions};
use futures::Stream;
use uuid::Uuid;

use crate::batch::tests::batch_of;
use crate::metadata::MetaCommand;
use crate::node::{Node, NodeOptions};
use crate::partition::{PartitionReplica, ReplicaSpec};
use crate::tasks::Tasks;
use crate::topic_config::TopicDefaults;

fn wal_options() -> WalOptions {
    WalOptions {
        segment_size: 1 << 20,
        sync_mode: SyncMode::Always,
        gc_interval: Duration::from_millis(100),
        ..WalOptions::default()
    }
}

fn keep_forever() -> TopicDefaults {
    let d = NodeOptions::from_config(&chronik_config::Config::default()).topic_defaults;
    TopicDefaults { retention_ms: -1, retention_bytes: -1, ..d }
}

fn node_options(dir: &Path) -> NodeOptions {
    let mut o = NodeOptions::from_config(&chronik_config::Config::default());
    o.data_dir = dir.to_path_buf();
    o.wal = wal_options();
    o.topic_defaults = keep_forever();
    o.retention_check_interval = Duration::from_secs(3600);
    o.wal_retention_bytes = u64::MAX;
    o
}

/// A batch of 2 records with `tag` as body, from `producer` (sequence `seq`) or none (-1).
fn batch(tag: &str, producer: i64, seq: i32) -> Bytes {
    let now = crate::now_ms();
    let mut b = batch_of(&[tag.as_bytes().to_vec()], 2, 1, now, now);
    b[43..51].copy_from_slice(&producer.to_be_bytes());
    b[51..53].copy_from_slice(&(if producer < 0 { -1i16 } else { 0 }).to_be_bytes());
    b[53..57].copy_from_slice(&(if producer < 0 { -1 } else { seq }).to_be_bytes());
    let crc = crc32c::crc32c(&b[crate::batch::CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

/// Topic `t` (one partition, `configs`) on `node`; its replica once it leads.
async fn create_topic_t(node: &Node, configs: BTreeMap<String, String>) -> Arc<PartitionReplica> {
    node.propose_meta(MetaCommand::CreateTopic {
        name: "t".into(),
        topic_id: Uuid::new_v4(),
        partitions: 1,
        replication_factor: 1,
        configs,
    })
    .await
    .unwrap();
    assert!(node.wait_for_topic("t", Duration::from_secs(10)).await);
    node.partition("t", 0).unwrap()
}

/// Node A with topic `t`: 300 entries, the older ones moved into segment files, the log start
/// moved to 10, then 20 more entries in the WAL (some idempotent).
async fn sender(dir: &Path) -> (Arc<Node>, Arc<PartitionReplica>) {
    let node = Node::start(node_options(dir), &Tasks::new()).await.unwrap();
    let a = create_topic_t(&node, BTreeMap::new()).await;
    for i in 0..300 {
        let producer = if i % 3 == 0 { 7 } else { -1 };
        a.append(batch(&format!("{i:04}{}", "x".repeat(20_000)), producer, 2 * (i / 3))).await.unwrap();
    }
    node.move_out_of_wal(3 << 20, &keep_forever()).await;
    assert!(a.log().segment_bytes() > 2 << 20, "data moved into segment files");
    a.advance_log_start(10).await.unwrap();
    for i in 0..20 {
        a.append(batch(&format!("tail {i}"), 8, 2 * i)).await.unwrap();
    }
    // Then an import (a migration's) whose batches leave gaps: before its first batch too.
    let next = a.log().next_offset();
    let at = |b: Bytes, offset: u64| {
        let mut b = b.to_vec();
        b[0..8].copy_from_slice(&(offset as i64).to_be_bytes());
        b
    };
    let gapped = [at(batch("imported", -1, 0), next + 5), at(batch("imported later", -1, 0), next + 20)].concat();
    let span = a.submit_import(gapped.into()).await.unwrap().committed().await.unwrap();
    assert_eq!(span, (next, next + 21));
    (node, a)
}

struct Receiver {
    wal: Arc<Wal>,
    replica: Arc<PartitionReplica>,
    segments_dir: PathBuf,
}

/// A replica of A's partition on its own WAL and disk, with no voters: it waits for a leader.
async fn receiver(dir: &Path, a: &PartitionReplica, options: &NodeOptions) -> Receiver {
    let (wal, _) = Wal::open(&dir.join("wal"), wal_options()).unwrap();
    let wal = Arc::new(wal);
    let segments_dir = dir.join("partitions").join(a.group().to_string());
    let spec = ReplicaSpec {
        topic: "t".into(),
        topic_id: a.topic_id(),
        partition: 0,
        group: a.group(),
        voters: BTreeMap::new(),
        segments_dir: segments_dir.clone(),
        liveness: None,
    };
    let network =
        crate::raft::NetworkFactory::new(Arc::new(crate::raft::NoTransport), a.group(), options.peer_settings());
    let replica =
        PartitionReplica::open(&wal, 2, options.partition_raft().unwrap(), network, spec, Tasks::new()).await.unwrap();
    Receiver { wal, replica, segments_dir }
}

/// Changes (or drops: None) the chunk at a position, on the way.
type Tamper = Box<dyn Fn(usize, Bytes) -> Option<Bytes> + Send + Sync>;

/// A's snapshot as chunks through a bounded channel (the transport), `tamper` applied to
/// each chunk by its position.
async fn send(
    a: &PartitionReplica,
    tamper: impl Fn(usize, Bytes) -> Option<Bytes> + Send + 'static,
) -> (Bytes, impl Stream<Item = Bytes> + Unpin) {
    let out = a.outgoing_snapshot(64 << 10).await.unwrap();
    let header = out.header();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        for (i, chunk) in out.into_chunks().enumerate() {
            let Some(chunk) = tamper(i, chunk.unwrap()) else { continue };
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    (header, Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))))
}

/// Every offset from the log start reads the same bytes on both replicas, up to `end`.
fn same_log(a: &PartitionReplica, b: &PartitionReplica, end: u64) {
    assert_eq!(b.log().log_start_offset(), a.log().log_start_offset());
    let mut next = a.log().log_start_offset();
    while next < end {
        let (ra, rb) = (a.log().read(next, 100_000).unwrap(), b.log().read(next, 100_000).unwrap());
        assert!(!rb.chunks.is_empty(), "offset {next} reads on the receiver");
        assert_eq!(ra.chunks[0], rb.chunks[0], "offset {next}: identical bytes");
        let last = crate::batch::split_batches(&rb.chunks[0], false).unwrap().last().unwrap().header.last_offset();
        next = last as u64 + 1;
    }
}

fn seg_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_brings_every_offset_from_the_log_start() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (node, a) = sender(dir_a.path()).await;
    let options = node_options(dir_b.path());
    let b = receiver(dir_b.path(), &a, &options).await;
    let (header, chunks) = send(&a, |_, c| Some(c)).await;
    b.replica.install_snapshot(&header, chunks).await.unwrap();

    let end = b.replica.log().high_watermark();
    assert!(end >= 600, "the snapshot covers what was moved and what followed: {end}");
    same_log(&a, &b.replica, end);
    assert_eq!(b.replica.applied_producer_state(), a.applied_producer_state(), "producer state came along");
    // The files A had are there byte for byte (the one holding the log start included).
    let (files_a, files_b) =
        (seg_files(&dir_a.path().join("partitions").join(a.group().to_string())), seg_files(&b.segments_dir));
    assert!(files_a.iter().all(|(name, bytes)| files_b.get(name) == Some(bytes)), "A's files arrive as they are");
    assert!(files_b.len() > files_a.len(), "the WAL tail arrives as a file of its own");
    assert!(!b.segments_dir.join("incoming").exists());

    // A restart of the receiver finds the same log.
    b.replica.stop().await;
    drop(b);
    let b = receiver(dir_b.path(), &a, &options).await;
    let mut hw = b.replica.log().subscribe_high_watermark();
    tokio::time::timeout(Duration::from_secs(10), hw.wait_for(|h| *h >= end)).await.unwrap().unwrap();
    same_log(&a, &b.replica, end);
    b.replica.stop().await;
    drop(b.wal);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_cut_transfer_leaves_the_receiver_as_it_was() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (node, a) = sender(dir_a.path()).await;
    let options = node_options(dir_b.path());
    let b = receiver(dir_b.path(), &a, &options).await;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "a flipped byte in a file",
            Box::new(|i, c: Bytes| {
                let mut c = c.to_vec();
                if i == 3 {
                    c[500] ^= 1;
                }
                Some(c.into())
            }),
        ),
        ("a lost chunk", Box::new(|i, c| (i != 5).then_some(c))),
        ("cut short", Box::new(|i, c| (i < 40).then_some(c))),
    ];
    for (what, tamper) in cases {
        let (header, chunks) = send(&a, tamper).await;
        let err = b.replica.install_snapshot(&header, chunks).await.expect_err(what);
        assert!(matches!(err, crate::ClusterError::Transfer(_)), "{what}: {err}");
        assert_eq!(b.replica.log().high_watermark(), 0, "{what}: nothing installed");
        assert!(seg_files(&b.segments_dir).is_empty(), "{what}: no file adopted");
    }
    // The next transfer goes through.
    let (header, chunks) = send(&a, |_, c| Some(c)).await;
    b.replica.install_snapshot(&header, chunks).await.unwrap();
    same_log(&a, &b.replica, b.replica.log().high_watermark());
    b.replica.stop().await;
    node.shutdown().await.unwrap();
}

/// A keyed batch of one record (`key` = `value`, or a tombstone).
fn keyed(key: &str, value: Option<&str>) -> Bytes {
    let now = crate::now_ms();
    let record = crate::records::tests::keyed(0, 0, key.as_bytes(), value.map(str::as_bytes));
    batch_of(&[record], 1, 0, now, now).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_files_travel_as_they_are_and_read_the_same() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = Node::start(node_options(dir_a.path()), &Tasks::new()).await.unwrap();
    let configs: BTreeMap<String, String> =
        [("cleanup.policy", "compact"), ("segment.ms", "1"), ("min.cleanable.dirty.ratio", "0.01")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let a = create_topic_t(&node, configs).await;
    for i in 0..400 {
        let key = format!("k{}", i % 25);
        a.append(keyed(&key, (i % 9 != 0).then_some(&*format!("v{i}")))).await.unwrap();
    }
    let budget = Arc::new(crate::storage::compaction::IoBudget::new(0));
    let passes = node.compact_topics(&keep_forever(), crate::now_ms() + 1000, &budget).await;
    assert_eq!(passes.len(), 1, "the WAL tail rolled and a pass ran");
    assert!(passes[0].bytes_out < passes[0].bytes_in / 4, "{:?}", passes[0]);
    for i in 0..10 {
        a.append(keyed("tail", Some(&format!("t{i}")))).await.unwrap();
    }

    let options = node_options(dir_b.path());
    let b = receiver(dir_b.path(), &a, &options).await;
    let (header, chunks) = send(&a, |_, c| Some(c)).await;
    b.replica.install_snapshot(&header, chunks).await.unwrap();
    let end = b.replica.log().high_watermark();
    assert_eq!(end, 410);
    same_log(&a, &b.replica, end);
    let files_a: Vec<Vec<u8>> =
        seg_files(&dir_a.path().join("partitions").join(a.group().to_string())).into_values().collect();
    let files_b: Vec<Vec<u8>> = seg_files(&b.segments_dir).into_values().collect();
    assert!(files_a.iter().all(|f| files_b.contains(f)), "the compacted file arrives byte for byte");
    b.replica.stop().await;
    node.shutdown().await.unwrap();
}
