//! Produce: validate each partition's batches, queue them in the partition's Raft log in
//! request order, answer once committed (acks -1 and 1) or not at all (acks 0).
//!
//! acks=1 waits for the commit too: in a cluster of one that is the leader's own durable
//! append; a multi-node cluster answers acks=1 the same way until replication exists.
//! Batches of idempotent producers are checked against their producer's sequence numbers; a
//! retried batch is answered with the original's offsets instead of being appended twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chronik_cluster::{
    BatchError, PartitionReplica, ProducerBatch, TimestampType, TopicInfo, now_ms, set_log_append_time, split_batches,
};
use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::Outcome;
use crate::broker::Broker;
use crate::codec::{self, Request};
use crate::error::{ApiError, cluster_code};

/// Resolves once the partition's entry is committed: (base offset, last offset).
type Committed = BoxFuture<'static, Result<(u64, u64), ApiError>>;

enum Partition {
    Failed(i32, ApiError),
    Queued { index: i32, pending: Committed, append_time: i64, group: Arc<PartitionReplica> },
}

pub async fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: ProduceRequest = codec::decode(&req.body, req.version)?;
    let acks = r.acks;
    let timeout = Duration::from_millis(r.timeout_ms.clamp(1, 300_000) as u64);
    let mut topics = Vec::new();
    for t in r.topic_data {
        let info = if req.version >= 13 { b.topic_by_id(t.topic_id) } else { b.topic(&t.name) };
        let mut parts = Vec::new();
        for p in t.partition_data {
            let result = if !matches!(acks, -1..=1) {
                Err(ApiError::new(ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1 (got {acks})")))
            } else if r.transactional_id.is_some() {
                Err(ApiError::new(ResponseError::InvalidRequest, "transactions are not supported"))
            } else {
                match &info {
                    None if req.version >= 13 => Err(ApiError::new(ResponseError::UnknownTopicId, "unknown topic id")),
                    None => Err(ApiError::new(ResponseError::UnknownTopicOrPartition, "unknown topic")),
                    Some(info) => queue(b, info, p.index, p.records).await,
                }
            };
            parts.push(match result {
                Ok((pending, append_time, group)) => Partition::Queued { index: p.index, pending, append_time, group },
                Err(e) => Partition::Failed(p.index, e),
            });
        }
        topics.push((t.name, t.topic_id, parts));
    }
    if acks == 0 {
        return Ok(Outcome::NoResponse);
    }
    let (corr, version) = (req.correlation_id, req.version);
    Ok(Outcome::Later(Box::pin(async move {
        let mut responses = Vec::new();
        for (name, topic_id, parts) in topics {
            // Awaited together: each partition's commit is timed (and timed out) on its own.
            let out = futures::future::join_all(parts.into_iter().map(|p| async move {
                match p {
                    Partition::Failed(index, e) => error_response(index, &e),
                    Partition::Queued { index, pending, append_time, group } => {
                        match tokio::time::timeout(timeout, pending).await {
                            Ok(Ok((base, _))) => PartitionProduceResponse::default()
                                .with_index(index)
                                .with_base_offset(base as i64)
                                .with_log_append_time_ms(append_time)
                                .with_log_start_offset(group.log().log_start_offset() as i64),
                            Ok(Err(e)) => error_response(index, &e),
                            Err(_) => error_response(
                                index,
                                &ApiError::new(ResponseError::RequestTimedOut, "not committed within timeout_ms"),
                            ),
                        }
                    }
                }
            }))
            .await;
            responses.push(
                TopicProduceResponse::default().with_name(name).with_topic_id(topic_id).with_partition_responses(out),
            );
        }
        let body = ProduceResponse::default().with_responses(responses);
        match codec::encode_response(corr, version, &body) {
            Ok(b) => Some(b.into()),
            Err(e) => {
                tracing::error!("encoding a Produce v{version} response: {e}");
                None
            }
        }
    })))
}

fn error_response(index: i32, e: &ApiError) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(e.code.code())
        .with_base_offset(-1)
        .with_error_message(Some(StrBytes::from_string(e.message.clone())))
}

type Queued = (Committed, i64, Arc<PartitionReplica>);

async fn queue(b: &Broker, info: &TopicInfo, index: i32, records: Option<Bytes>) -> Result<Queued, ApiError> {
    b.refuse_internal(&info.name, "producing to")?;
    let group = b.leader_partition(&info.name, index)?;
    if let Some(silent) = group.quorum_silence() {
        // Kafka's answer when too few replicas are in sync: retriable, and says why.
        return Err(ApiError::new(
            ResponseError::NotEnoughReplicas,
            format!("the partition leader has not heard from a majority of its replicas for {silent:?}"),
        ));
    }
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::new(ResponseError::CorruptMessage, "no record batch"))?;
    let settings = b.settings(info);
    let spans = split_batches(&records, true).map_err(|e| match e {
        BatchError::UnsupportedMagic(_) => ApiError::new(ResponseError::UnsupportedForMessageFormat, e.to_string()),
        _ => ApiError::new(ResponseError::CorruptMessage, e.to_string()),
    })?;
    let now = now_ms();
    for s in &spans {
        crate::validate::check_batch(&s.header, &records[s.range.clone()], &settings, now)?;
    }
    // The partition's batches become one Raft entry, one WAL record (plus a few bytes of
    // framing); one larger than a segment could never be written, and the WAL refusing it
    // would stop the partition's Raft group.
    let max_entry = b.node.max_entry_bytes();
    if records.len() > max_entry {
        return Err(ApiError::new(
            ResponseError::MessageTooLarge,
            format!(
                "{} bytes of record batches for one partition exceed what one WAL segment holds ({max_entry})",
                records.len()
            ),
        ));
    }
    let producer = ProducerBatch::of(&spans[0].header);
    if producer.is_some() && spans.len() != 1 {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "an idempotent producer must send one batch per partition",
        ));
    }
    b.node.check_space(records.len())?;
    let (records, append_time) = match settings.timestamp_type {
        TimestampType::CreateTime => (records, -1),
        TimestampType::LogAppendTime => {
            let mut owned = BytesMut::from(&records[..]);
            for s in &spans {
                set_log_append_time(&mut owned[s.range.clone()], now);
            }
            (owned.freeze(), now)
        }
    };
    if let Some(producer) = producer {
        // Producer ids come from InitProducerId (reserved through the metadata); one never
        // handed out is refused, as Kafka refuses an id it does not know.
        if b.node.with_metadata(|m| producer.producer_id >= m.next_producer_id) {
            return Err(ApiError::new(
                ResponseError::UnknownProducerId,
                format!("producer id {} was never allocated (InitProducerId first)", producer.producer_id),
            ));
        }
        let submitted = Instant::now();
        let shared = group.submit_idempotent(records, producer).await?;
        let metrics = b.metrics.clone();
        let pending: Committed = Box::pin(async move {
            let committed = shared.await.map_err(|e| ApiError::new(cluster_code(&e), e.to_string()));
            if committed.is_ok() {
                metrics.record_append_to_commit(submitted.elapsed());
            }
            committed
        });
        return Ok((pending, append_time, group));
    }
    let submitted = Instant::now();
    let pending = group.submit(records).await?;
    let metrics = b.metrics.clone();
    let pending: Committed = Box::pin(async move {
        let committed = pending.committed().await.map_err(ApiError::from);
        if committed.is_ok() {
            metrics.record_append_to_commit(submitted.elapsed());
        }
        committed
    });
    Ok((pending, append_time, group))
}
