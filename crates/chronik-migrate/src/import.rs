//! Writing the new data directory: a broker of one node is started on it (no listeners), and
//! the v1 data goes in through its own Raft groups, so the output is exactly what the broker
//! itself writes: topics through the metadata group, record batches as import entries (their
//! v1 offsets kept), committed offsets through the group coordinator.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chronik_cluster::{MetaCommand, PartitionReplica, PendingAppend};
use chronik_kafka::Broker;
use chronik_kafka::broker::NewTopic;
use chronik_kafka::groups::Committed;
use tokio::sync::mpsc;

use crate::error::MigrateError;
use crate::progress::Progress;
use crate::report::{GroupReport, PartitionReport, RetentionImpact, TopicReport};
use crate::v1::metadata::{V1Metadata, V1Topic};
use crate::v1::partition::PartitionReader;
use crate::v1::{Damage, PartitionFiles};

/// Batches are grouped into Raft entries of about this size (a large produce request's).
const ENTRY_BYTES: usize = 1 << 20;
/// Entries of one partition in flight at once: enough to keep the WAL's group commit full.
const IN_FLIGHT: usize = 32;
const TOPIC_TIMEOUT: Duration = Duration::from_secs(60);
/// Retention rules that can delete data, with the config that turns each off.
const RETENTION_KEYS: [&str; 2] = ["retention.ms", "retention.bytes"];

/// One grouped entry a partition's reader hands to the writer.
struct Chunk {
    records: Bytes,
    /// Offset after the chunk's last batch.
    next_offset: u64,
}

/// What importing one partition did.
pub struct PartitionOutcome {
    pub report: PartitionReport,
    pub damage: Vec<Damage>,
    pub max_producer_id: Option<i64>,
    /// (offset after the entry, its bytes) of each entry, for the retention estimate.
    pub entries: Vec<(u64, u64)>,
}

/// Creates `topic` with the configs this broker supports; returns its report (the dropped
/// configs named with why).
pub async fn create_topic(broker: &Broker, topic: &V1Topic) -> Result<TopicReport, MigrateError> {
    let (configs, dropped_configs) = crate::supported_configs(topic.configs.clone());
    let report = TopicReport {
        name: topic.name.clone(),
        partitions: topic.partitions,
        configs,
        dropped_configs,
        ..Default::default()
    };
    let new = NewTopic {
        name: topic.name.clone(),
        partitions: topic.partitions,
        replication_factor: 1,
        configs: report.configs.clone(),
    };
    broker.create_topic(new, TOPIC_TIMEOUT).await.map_err(|e| MigrateError::CreateTopic {
        topic: topic.name.clone(),
        reason: format!("{:?}: {}", e.code, e.message),
    })?;
    Ok(report)
}

fn replica(broker: &Broker, topic: &str, partition: i32) -> Result<Arc<PartitionReplica>, MigrateError> {
    broker.node.partition(topic, partition).ok_or_else(|| MigrateError::Topic {
        topic: topic.to_string(),
        reason: format!("partition {partition} has no replica on the new broker"),
    })
}

/// Copies one partition: a reader thread walks the v1 files and groups batches into entries,
/// this task proposes them, `IN_FLIGHT` at a time.
pub async fn import_partition(
    broker: &Broker,
    topic: &str,
    partition: i32,
    files: PartitionFiles,
    v1_log_start: Option<i64>,
    skip_corrupt: bool,
    progress: Arc<Progress>,
) -> Result<PartitionOutcome, MigrateError> {
    let replica = replica(broker, topic, partition)?;
    let max_entry = broker.node.max_entry_bytes();
    let (tx, mut rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let reader_progress = progress.clone();
    let name = format!("{topic}-{partition}");
    let reader = tokio::task::spawn_blocking(move || {
        let mut r = PartitionReader::new(&files, skip_corrupt).with_progress(reader_progress.clone());
        let mut max_pid: Option<i64> = None;
        let mut buf = BytesMut::new();
        let mut buf_next = 0u64;
        let send = |buf: &mut BytesMut, next_offset: u64| -> Result<(), MigrateError> {
            let records = buf.split().freeze();
            tx.blocking_send(Chunk { records, next_offset }).map_err(|_| MigrateError::ReaderLost("the writer".into()))
        };
        let result = r.read(|batch, bytes| {
            if bytes.len() > max_entry {
                let reason = format!("{} bytes, more than the largest WAL entry ({max_entry})", bytes.len());
                return Err(MigrateError::Batch { partition: name.clone(), offset: batch.base_offset, reason });
            }
            if batch.producer_id >= 0 {
                max_pid = max_pid.max(Some(batch.producer_id));
            }
            if !buf.is_empty() && buf.len() + bytes.len() > ENTRY_BYTES.min(max_entry) {
                send(&mut buf, buf_next)?;
            }
            reader_progress.add_records(batch.records.len() as u64);
            buf.extend_from_slice(&bytes);
            buf_next = (batch.last_offset() + 1) as u64;
            Ok(())
        });
        let result = result.and_then(|()| if buf.is_empty() { Ok(()) } else { send(&mut buf, buf_next) });
        (result, r.scan, r.damage, max_pid)
    });

    let mut in_flight: VecDeque<PendingAppend> = VecDeque::new();
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    let import_err = |source| MigrateError::Import { topic: topic.to_string(), partition, source };
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.records.len() as u64;
        entries.push((chunk.next_offset, chunk.records.len() as u64));
        if in_flight.len() >= IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.committed().await.map_err(import_err)?;
        }
        in_flight.push_back(replica.submit_import(chunk.records).await.map_err(import_err)?);
    }
    for pending in in_flight {
        pending.committed().await.map_err(import_err)?;
    }
    let (result, scan, damage, max_producer_id) =
        reader.await.map_err(|e| MigrateError::ReaderLost(format!("{topic}-{partition} ({e})")))?;
    result?;
    // Consumers start at the first offset v1 still held (or DeleteRecords' log start).
    let log_start = scan.first_offset.max(v1_log_start).unwrap_or(0).max(0) as u64;
    if log_start > replica.log().log_start_offset() {
        replica.advance_log_start(log_start).await.map_err(import_err)?;
    }
    let report = PartitionReport {
        topic: topic.to_string(),
        partition,
        records: scan.records,
        batches: scan.batches,
        bytes,
        log_start_offset: replica.log().log_start_offset(),
        next_offset: replica.log().next_offset(),
        from_segment_objects: scan.from_segments,
        duplicates_dropped: scan.duplicates,
        gaps: scan.gaps,
    };
    Ok(PartitionOutcome { report, damage, max_producer_id, entries })
}

/// What the first retention check would delete from a partition, by each rule alone.
pub fn retention_impact(
    broker: &Broker,
    topic: &str,
    partition: i32,
    entries: &[(u64, u64)],
) -> Result<BTreeMap<&'static str, RetentionImpact>, MigrateError> {
    let replica = replica(broker, topic, partition)?;
    let info =
        broker.topic(topic).ok_or_else(|| MigrateError::Topic { topic: topic.into(), reason: "vanished".into() })?;
    let settings = broker.settings(&info);
    let log = replica.log();
    let start = log.log_start_offset();
    let now = chronik_cluster::now_ms();
    let mut out = BTreeMap::new();
    for (key, ms, bytes) in
        [(RETENTION_KEYS[0], settings.retention_ms, -1), (RETENTION_KEYS[1], -1, settings.retention_bytes)]
    {
        if let Some(new_start) = log.retention_plan(now, ms, bytes) {
            let deleted_bytes = entries.iter().filter(|(next, _)| *next <= new_start).map(|(_, b)| b).sum();
            out.insert(key, RetentionImpact { records: new_start.saturating_sub(start), bytes: deleted_bytes });
        }
    }
    Ok(out)
}

/// Turns off the retention rules named (`--keep-expired`).
pub async fn turn_off_retention(broker: &Broker, topic: &str, keys: &[String]) -> Result<(), MigrateError> {
    let set = keys.iter().map(|k| (k.clone(), "-1".to_string())).collect();
    broker
        .node
        .propose_meta(MetaCommand::AlterTopicConfigs { name: topic.to_string(), set, delete: Vec::new() })
        .await
        .map_err(MigrateError::Metadata)
}

/// Stores v1's committed offsets, group by group.
pub async fn commit_offsets(broker: &Broker, meta: &V1Metadata) -> Result<Vec<GroupReport>, MigrateError> {
    type PartitionCommit = ((String, i32), Committed);
    let mut by_group: BTreeMap<&str, Vec<PartitionCommit>> = BTreeMap::new();
    for ((group, topic, partition), c) in &meta.offsets {
        let committed =
            Committed { offset: c.offset, leader_epoch: -1, metadata: c.metadata.clone().unwrap_or_default() };
        by_group.entry(group).or_default().push(((topic.clone(), *partition), committed));
    }
    let mut out = Vec::new();
    for (group, offsets) in by_group {
        let n = offsets.len();
        broker
            .groups
            .commit(group, offsets)
            .await
            .map_err(|source| MigrateError::Offsets { group: group.to_string(), source })?;
        out.push(GroupReport { group: group.to_string(), offsets: n });
    }
    Ok(out)
}

/// New idempotent producers get ids above every id v1 handed out, so none resumes an old
/// producer's sequence by accident.
pub async fn reserve_producer_ids(broker: &Broker, max_v1_id: i64) -> Result<(), MigrateError> {
    broker.node.reserve_producer_ids_through(max_v1_id).await.map_err(MigrateError::Metadata)
}
