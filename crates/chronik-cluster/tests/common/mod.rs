#![allow(dead_code)]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chronik_cluster::{Node, NodeOptions, Tasks, TopicDefaults};
use chronik_config::RaftConfig;
use chronik_wal::{SyncMode, WalOptions};

pub fn options(dir: &Path, node_id: u64) -> NodeOptions {
    NodeOptions {
        data_dir: dir.to_path_buf(),
        node_id,
        raft_addr: "127.0.0.1:9093".into(),
        kafka_addr: "127.0.0.1:9092".into(),
        wal: WalOptions {
            segment_size: 1 << 20,
            sync_mode: SyncMode::Always,
            gc_interval: Duration::from_millis(100),
            ..WalOptions::default()
        },
        raft: RaftConfig {
            heartbeat_interval_ms: 50,
            election_timeout_ms: 200,
            max_payload_entries: 300,
            snapshot_threshold: 1000,
            compaction_retain_entries: 100,
        },
        topic_defaults: TopicDefaults {
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: 1 << 20,
            ..TopicDefaults::default()
        },
        // The tests apply retention themselves.
        retention_check_interval: Duration::from_secs(3600),
        producer_id_expiration: Duration::from_secs(86_400),
        // Tiering only where a test asks for it.
        wal_retention_bytes: u64::MAX,
        compaction_io_bytes_per_second: 0,
        request_timeout: Duration::from_secs(5),
        append_pipeline_depth: 1,
        cluster: None,
    }
}

pub async fn start(dir: &Path) -> Arc<Node> {
    Node::start(options(dir, 1), &Tasks::new()).await.expect("node starts")
}

/// A v2 record batch header claiming `records` records, with `tag` bytes of body so that
/// batches are distinguishable. Valid CRC; the broker never looks inside the records.
pub fn batch(records: i32, timestamp: i64, tag: &[u8]) -> Bytes {
    let mut b = vec![0u8; 61];
    b.extend_from_slice(tag);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[16] = 2;
    b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    b[27..35].copy_from_slice(&timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[57..61].copy_from_slice(&records.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

/// [`batch`] from an idempotent producer: producer id, epoch and first sequence set.
pub fn idempotent_batch(producer_id: i64, epoch: i16, first_seq: i32, records: i32, timestamp: i64) -> Bytes {
    let mut b = batch(records, timestamp, b"idempotent").to_vec();
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&first_seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

/// The batch as stored: base offset and leader epoch stamped in.
pub fn stamped(batch: &[u8], base: u64) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[0..8].copy_from_slice(&(base as i64).to_be_bytes());
    b[12..16].copy_from_slice(&b"\0\0\0\0"[..]);
    b
}

/// Compares a stored batch with the one sent, ignoring the stamped leader epoch.
pub fn same_batch(stored: &[u8], sent: &[u8], base: u64) -> bool {
    let mut s = stored.to_vec();
    s[12..16].copy_from_slice(&[0; 4]);
    s == stamped(sent, base)
}
