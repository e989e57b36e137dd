//! Committed offsets, kept in memory and persisted in the internal topic `__consumer_offsets`
//! (one partition, so one Raft group): each commit is a record batch appended through Raft.
//! On start the partition is replayed. Every `CHECKPOINT_EVERY` records the whole map is
//! written as one batch and the log start moves to it, so replay stays short.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chronik_cluster::{BatchError, Cause, ClusterError, MetaCommand, Node, PartitionReplica, ReadError, split_batches};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::Mutex;
use serde_like::{decode_key, decode_value, encode_key, encode_value};

pub const TOPIC: &str = "__consumer_offsets";
const CHECKPOINT_EVERY: u64 = 2000;
/// How long a start waits for the offsets partition to lead and to apply its log.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

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
    partition: Arc<PartitionReplica>,
    offsets: Mutex<BTreeMap<Key, Committed>>,
    /// Serializes writes, so a checkpoint never misses a concurrent commit.
    write: tokio::sync::Mutex<u64>,
}

impl OffsetStore {
    /// Opens (creating if needed) the offsets topic and replays it.
    pub async fn open(node: &Arc<Node>) -> Result<OffsetStore, OffsetStoreError> {
        if node.with_metadata(|m| m.topic(TOPIC).is_none()) {
            let rf = node.with_metadata(|m| m.nodes.len() as u32).clamp(1, 3);
            let cmd = MetaCommand::CreateTopic {
                name: TOPIC.into(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: 1,
                replication_factor: rf,
                // Kept whole: replay at start needs every commit since the oldest checkpoint.
                configs: [
                    ("retention.ms".to_string(), "-1".to_string()),
                    ("retention.bytes".to_string(), "-1".to_string()),
                ]
                .into(),
            };
            if let Err(e) = node.propose_meta(cmd).await
                && node.with_metadata(|m| m.topic(TOPIC).is_none())
            {
                return Err(OffsetStoreError::Create(e));
            }
        }
        if !node.wait_for_topic(TOPIC, OPEN_TIMEOUT).await {
            return Err(OffsetStoreError::NoLeader);
        }
        let partition = node.partition(TOPIC, 0).ok_or(OffsetStoreError::NotHosted)?;
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
        Ok(OffsetStore { partition, offsets: Mutex::new(offsets), write: tokio::sync::Mutex::new(0) })
    }

    pub fn get(&self, key: &Key) -> Option<Committed> {
        self.offsets.lock().get(key).cloned()
    }

    /// Every committed offset of `group`.
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.offsets
            .lock()
            .iter()
            .filter(|((g, ..), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let mut v: Vec<String> = self.offsets.lock().keys().map(|(g, ..)| g.clone()).collect();
        v.dedup();
        v
    }

    /// Durably records commits (`None` deletes), then makes them visible.
    pub async fn write(&self, changes: Vec<(Key, Option<Committed>)>) -> Result<(), OffsetStoreError> {
        let mut since_checkpoint = self.write.lock().await;
        let batch = encode(changes.iter().map(|(k, v)| (k, v.as_ref())))?;
        self.partition.append(batch).await?;
        {
            let mut offsets = self.offsets.lock();
            for (k, v) in changes {
                match v {
                    Some(c) => offsets.insert(k, c),
                    None => offsets.remove(&k),
                };
            }
        }
        *since_checkpoint += 1;
        if *since_checkpoint >= CHECKPOINT_EVERY {
            let snapshot: Vec<(Key, Committed)> =
                self.offsets.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let batch = encode(snapshot.iter().map(|(k, v)| (k, Some(v))))?;
            let (base, _) = self.partition.append(batch).await?;
            self.partition.advance_log_start(base).await?;
            let _ = self.partition.compact().await;
            *since_checkpoint = 0;
        }
        Ok(())
    }
}

fn apply(offsets: &mut BTreeMap<Key, Committed>, r: &Record) {
    let Some(key) = r.key.as_ref().and_then(|k| decode_key(k)) else { return };
    match r.value.as_ref().and_then(|v| decode_value(v)) {
        Some(c) => offsets.insert(key, c),
        None => offsets.remove(&key),
    };
}

fn encode<'a>(changes: impl Iterator<Item = (&'a Key, Option<&'a Committed>)>) -> Result<Bytes, OffsetStoreError> {
    let now = chronik_cluster::now_ms();
    let records: Vec<Record> = changes
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: Some(encode_key(k)),
            value: v.map(encode_value),
            headers: IndexMap::new(),
        })
        .collect();
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
