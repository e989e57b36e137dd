//! Committed offsets, kept in memory and persisted in the internal topic `__consumer_offsets`
//! (one partition, so one Raft group), a compacted topic as in Kafka: each record's key is a
//! (group, topic, partition) and its value the commit (none: deleted), so compaction keeps the
//! latest commit of each and replay at start reads about one record per committed offset plus
//! the newest, not yet compacted, commits. Commits are written by one writer task
//! (`writer.rs`), which batches them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chronik_cluster::{
    BatchError, Cause, ClusterError, MetaCommand, Node, PartitionReplica, ReadError, Tasks, split_batches,
};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use parking_lot::Mutex;
use serde_like::{decode_key, decode_value, encode_key, encode_value};
use tokio::sync::{mpsc, oneshot};

pub const TOPIC: &str = "__consumer_offsets";
/// Commits queued for the writer before committers wait to queue theirs.
const QUEUED_WRITES: usize = 4096;
/// How long a start waits for the offsets partition to lead and to apply its log.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// After this long a start logs what it is waiting for.
const SLOW_START: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    #[error("creating {TOPIC}: {0}")]
    Create(#[source] ClusterError),
    #[error("{TOPIC} has no leader")]
    NoLeader,
    #[error("{TOPIC}-0 is not on this node")]
    NotHosted,
    #[error("{TOPIC} did not catch up within {OPEN_TIMEOUT:?} (applied up to offset {applied} of {target})")]
    CatchUp { applied: u64, target: u64 },
    #[error("replaying {TOPIC} at offset {offset}: {source}")]
    ReadFailed {
        offset: u64,
        #[source]
        source: ReadError,
    },
    #[error("replaying {TOPIC} at offset {offset}: {source}")]
    BadEntry {
        offset: u64,
        #[source]
        source: BatchError,
    },
    #[error("storing offsets: {0}")]
    Append(#[from] ClusterError),
    /// The failure of a batch of commits, as each of its requesters sees it.
    #[error(transparent)]
    Batch(std::sync::Arc<OffsetStoreError>),
    #[error("the offsets writer has stopped")]
    Stopped,
    #[error("this node is not the group coordinator (it does not lead {TOPIC}-0)")]
    NotCoordinator,
    /// kafka-protocol's record encoder failed (its errors are untyped).
    #[error("encoding offsets: {0}")]
    Encode(#[source] Cause),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// (group, topic, partition)
pub type Key = (String, String, i32);

pub struct OffsetStore {
    shared: Arc<Shared>,
    /// Commits waiting for the writer (see `writer.rs`).
    queue: mpsc::Sender<WriteRequest>,
}

/// What the store and its writer task share.
pub(super) struct Shared {
    pub partition: Arc<PartitionReplica>,
    pub offsets: Mutex<BTreeMap<Key, Committed>>,
    /// Largest entry the writer appends (half of what one WAL record holds).
    pub max_entry_bytes: usize,
}

impl OffsetStore {
    /// Creates the offsets topic if it does not exist (on up to three nodes), or brings its
    /// configs to what this start wants. `segment_bytes` is the topic's `segment.bytes`.
    pub async fn ensure_topic(node: &Arc<Node>, segment_bytes: u64) -> Result<(), OffsetStoreError> {
        let configs = topic_configs(segment_bytes);
        match node.with_metadata(|m| m.topic(TOPIC).map(|t| t.configs.clone())) {
            None => {
                let rf = node.with_metadata(|m| m.nodes.len() as u32).clamp(1, 3);
                let cmd = MetaCommand::CreateTopic {
                    name: TOPIC.into(),
                    topic_id: uuid::Uuid::new_v4(),
                    partitions: 1,
                    replication_factor: rf,
                    configs,
                };
                if let Err(e) = node.propose_meta(cmd).await
                    && node.with_metadata(|m| m.topic(TOPIC).is_none())
                {
                    return Err(OffsetStoreError::Create(e));
                }
            }
            // Created by an earlier build (checkpointed, not compacted) or with another
            // segment size: brought to what this start wants. The records are the same.
            Some(existing) if existing != configs => {
                let cmd = MetaCommand::AlterTopicConfigs { name: TOPIC.into(), set: configs, delete: Vec::new() };
                node.propose_meta(cmd).await.map_err(OffsetStoreError::Create)?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Waits for this node's replica of the offsets topic to lead, replays it, and starts
    /// its writer in `tasks`.
    pub async fn open(node: &Arc<Node>, tasks: &Tasks) -> Result<OffsetStore, OffsetStoreError> {
        // A slow start says where it waits, so a stall can be told apart from a slow disk.
        if !node.wait_for_topic(TOPIC, SLOW_START).await {
            let hosted = node.partition(TOPIC, 0).map(|p| p.leadership());
            tracing::warn!(?hosted, "{TOPIC} has no leader after {SLOW_START:?}; still waiting");
            if !node.wait_for_topic(TOPIC, OPEN_TIMEOUT - SLOW_START).await {
                return Err(OffsetStoreError::NoLeader);
            }
        }
        let partition = node.partition(TOPIC, 0).ok_or(OffsetStoreError::NotHosted)?;
        if !partition.is_leader(node.node_id()) {
            return Err(OffsetStoreError::NotCoordinator);
        }
        // Replay needs everything committed before this start to be applied; replaying less
        // would make the next checkpoint forget the commits left out.
        let target = partition.log().next_offset();
        let mut hw = partition.log().subscribe_high_watermark();
        let caught_up = tokio::time::timeout(OPEN_TIMEOUT, hw.wait_for(|hw| *hw >= target)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            return Err(OffsetStoreError::CatchUp { applied: partition.log().high_watermark(), target });
        }
        let hw = partition.log().high_watermark();
        let mut offsets = BTreeMap::new();
        let mut at = partition.log().log_start_offset();
        while at < hw {
            let read = partition
                .log()
                .read(at, 8 << 20)
                .map_err(|source| OffsetStoreError::ReadFailed { offset: at, source })?;
            if read.chunks.is_empty() {
                break;
            }
            for chunk in read.chunks {
                // Stored entries were framed and checksummed at produce, so they split; one
                // whose records do not decode is skipped (and named) rather than keeping the
                // broker from starting.
                let spans =
                    split_batches(&chunk, false).map_err(|source| OffsetStoreError::BadEntry { offset: at, source })?;
                let Some(last) = spans.last().map(|s| s.header.last_offset()) else { continue };
                let mut b = chunk;
                match RecordBatchDecoder::decode_all(&mut b) {
                    Ok(sets) => {
                        for r in sets.into_iter().flat_map(|set| set.records) {
                            apply(&mut offsets, &r);
                        }
                    }
                    Err(e) => tracing::warn!(
                        "replaying {TOPIC}: skipping offsets {at}..={last}, their records do not decode: {e}"
                    ),
                }
                at = at.max(last as u64 + 1);
            }
        }
        let shared =
            Arc::new(Shared { partition, offsets: Mutex::new(offsets), max_entry_bytes: node.max_entry_bytes() / 2 });
        let (queue, requests) = mpsc::channel(QUEUED_WRITES);
        let writer = shared.clone();
        tasks.spawn("offsets-writer", move |cancel| super::writer::run(writer, requests, cancel));
        Ok(OffsetStore { shared, queue })
    }

    pub fn get(&self, key: &Key) -> Option<Committed> {
        self.shared.offsets.lock().get(key).cloned()
    }

    /// Every committed offset of `group`.
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.shared
            .offsets
            .lock()
            .iter()
            .filter(|((g, ..), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    /// Whether `group` has any committed offset.
    pub fn has_group(&self, group: &str) -> bool {
        let from = (group.to_string(), String::new(), i32::MIN);
        self.shared.offsets.lock().range(from..).next().is_some_and(|((g, ..), _)| g == group)
    }

    pub fn groups(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.offsets.lock().keys().map(|(g, ..)| g.clone()).collect();
        v.dedup();
        v
    }

    /// Durably records commits (`None` deletes), then makes them visible. Commits that arrive
    /// while others are being written go out together in the next entry (group commit).
    pub async fn write(&self, changes: Vec<(Key, Option<Committed>)>) -> Result<(), OffsetStoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(WriteRequest { changes, reply }).await.map_err(|_| OffsetStoreError::Stopped)?;
        match answer.await {
            Ok(result) => result.map_err(OffsetStoreError::Batch),
            Err(_) => Err(OffsetStoreError::Stopped),
        }
    }
}

/// The configs of `__consumer_offsets`: compacted, never deleted by age or size (Kafka's
/// `offsets.retention.minutes` expiry of empty groups' offsets is not implemented).
fn topic_configs(segment_bytes: u64) -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact".to_string()),
        ("retention.ms", "-1".to_string()),
        ("retention.bytes", "-1".to_string()),
        ("segment.bytes", segment_bytes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A commit (or delete) waiting for the writer, with where to send its outcome.
pub(super) struct WriteRequest {
    pub changes: Vec<(Key, Option<Committed>)>,
    pub reply: oneshot::Sender<Result<(), Arc<OffsetStoreError>>>,
}

pub(super) fn apply_change(offsets: &mut BTreeMap<Key, Committed>, key: Key, value: Option<Committed>) {
    match value {
        Some(c) => offsets.insert(key, c),
        None => offsets.remove(&key),
    };
}

fn apply(offsets: &mut BTreeMap<Key, Committed>, r: &Record) {
    let Some(key) = r.key.as_ref().and_then(|k| decode_key(k)) else { return };
    apply_change(offsets, key, r.value.as_ref().and_then(|v| decode_value(v)));
}

/// Record batches holding `changes`, each at most about `max_bytes` (a batch holds at least one
/// change), so no entry outgrows a WAL record however many offsets there are.
pub(super) fn encode_chunks<'a>(
    changes: impl Iterator<Item = (&'a Key, Option<&'a Committed>)>,
    max_bytes: usize,
) -> Result<Vec<Bytes>, OffsetStoreError> {
    let now = chronik_cluster::now_ms();
    let mut chunks = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let mut bytes = 0;
    for (k, v) in changes {
        let (key, value) = (encode_key(k), v.map(encode_value));
        // A record's framing (length, attributes, deltas, header count) is at most 30 bytes.
        let size = key.len() + value.as_ref().map_or(0, Bytes::len) + 30;
        if !records.is_empty() && bytes + size > max_bytes {
            chunks.push(encode_batch(std::mem::take(&mut records))?);
            bytes = 0;
        }
        bytes += size;
        records.push(crate::codec::plain_record(records.len() as i64, now, Some(key), value));
    }
    if !records.is_empty() {
        chunks.push(encode_batch(records)?);
    }
    Ok(chunks)
}

fn encode_batch(records: Vec<Record>) -> Result<Bytes, OffsetStoreError> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .map_err(|e| OffsetStoreError::Encode(e.into()))?;
    Ok(buf.freeze())
}

/// The record layout of `__consumer_offsets` (Chronik's own, not Kafka's).
mod serde_like {
    use bytes::{BufMut, Bytes, BytesMut};

    use super::{Committed, Key};

    fn put_str(b: &mut BytesMut, s: &str) {
        b.put_u32(s.len() as u32);
        b.put_slice(s.as_bytes());
    }

    fn get_str(b: &mut &[u8]) -> Option<String> {
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(4..4 + len)?).ok()?.to_string();
        *b = &b[4 + len..];
        Some(s)
    }

    pub fn encode_key((g, t, p): &Key) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(1); // key format version
        put_str(&mut b, g);
        put_str(&mut b, t);
        b.put_i32(*p);
        b.freeze()
    }

    pub fn decode_key(k: &[u8]) -> Option<Key> {
        let (&1, mut rest) = k.split_first()? else { return None };
        let g = get_str(&mut rest)?;
        let t = get_str(&mut rest)?;
        let p = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        Some((g, t, p))
    }

    pub fn encode_value(c: &Committed) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_i64(c.offset);
        b.put_i32(c.leader_epoch);
        put_str(&mut b, &c.metadata);
        b.freeze()
    }

    pub fn decode_value(v: &[u8]) -> Option<Committed> {
        let (&1, rest) = v.split_first()? else { return None };
        let offset = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let leader_epoch = i32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
        let mut tail = rest.get(12..)?;
        let metadata = get_str(&mut tail)?;
        Some(Committed { offset, leader_epoch, metadata })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip() {
            let k = ("g".to_string(), "orders".to_string(), 7);
            assert_eq!(decode_key(&encode_key(&k)), Some(k));
            let c = Committed { offset: 42, leader_epoch: 3, metadata: "m".into() };
            assert_eq!(decode_value(&encode_value(&c)), Some(c));
            assert_eq!(decode_key(b"\x02junk"), None);
        }
    }
}
