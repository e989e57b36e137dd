//! Fetch: committed batches (never above the high watermark), within max_bytes limits, with a
//! long poll that returns as soon as min_bytes are there or max_wait_ms has passed.
//! There are no transactions, so read_committed and read_uncommitted see the same data and the
//! last stable offset is the high watermark. Fetch sessions are not kept (session id 0: every
//! request is a full fetch).

use std::sync::Arc;
use std::time::Duration;

use chronik_cluster::{PartitionReplica, ReadError};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};

use super::Outcome;
use crate::broker::Broker;
use crate::codec::{self, Request};
use crate::error::read_code;
use crate::frame::{Frame, Splices};

struct Wanted {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    group: Result<Arc<PartitionReplica>, ResponseError>,
}

pub async fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: FetchRequest = codec::decode(&req.body, req.version)?;
    let mut topics: Vec<(TopicName, uuid::Uuid)> = Vec::new();
    let mut wanted = Vec::new();
    for t in &r.topics {
        let info = if req.version >= 13 { b.topic_by_id(t.topic_id) } else { b.topic(&t.topic) };
        let unknown =
            if req.version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
        topics.push((t.topic.clone(), t.topic_id));
        for p in &t.partitions {
            let group = match &info {
                None => Err(unknown),
                Some(info) => b.leader_partition(&info.name, p.partition).map_err(|e| e.code),
            };
            wanted.push(Wanted {
                topic: topics.len() - 1,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                group,
            });
        }
    }
    let max_wait = Duration::from_millis(r.max_wait_ms.clamp(0, 60_000) as u64);
    let min_bytes = r.min_bytes.max(0) as usize;
    // Kafka's limit: the request's max_bytes within the broker's fetch.max.bytes (0 or below is
    // not "unlimited"); the first batch goes out whatever its size, so a consumer progresses.
    let max_bytes = (r.max_bytes.max(0) as usize).min(b.config.fetch_max_bytes);
    let (corr, version) = (req.correlation_id, req.version);
    Ok(Outcome::Later(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + max_wait;
        // Subscribe before the first read so no append between read and wait is missed.
        let mut watches: Vec<_> =
            wanted.iter().filter_map(|w| w.group.as_ref().ok().map(|g| g.log().subscribe_high_watermark())).collect();
        loop {
            let read = read_all(&wanted, max_bytes);
            if read.bytes >= min_bytes
                || read.any_error
                || watches.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                return encode(corr, version, &topics, read);
            }
            let changed = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            match tokio::time::timeout_at(deadline, changed).await {
                Ok((Ok(()), ..)) => {
                    // One fdatasync round commits many partitions at once, and their state
                    // machines advance one after another. Letting them run before reading
                    // answers with all of them rather than the first, which saves the consumer
                    // a fetch round trip per partition.
                    for _ in 0..YIELDS_AFTER_WAKE {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                // Timed out, or a partition stopped: answer with what there is.
                _ => return encode(corr, version, &topics, read_all(&wanted, max_bytes)),
            }
        }
    })))
}

/// Scheduler turns a woken fetch gives other tasks before reading (see above). Measured with
/// 8 partitions at 250,000 msg/s after a 1 GB fill (docs/BENCHMARKS.md): end-to-end p50
/// 2.39-2.84 ms without, 1.90-2.11 ms with 4, 1.80-1.91 ms with 8. Each turn lets every other
/// runnable task go first, so under overload more turns cost more; 4 is the middle.
const YIELDS_AFTER_WAKE: usize = 4;

/// What one pass over the wanted partitions read.
struct Read {
    parts: Vec<(usize, PartitionData)>,
    /// The stored batches the parts' record fields stand for.
    splices: Splices,
    bytes: usize,
    any_error: bool,
}

fn read_all(wanted: &[Wanted], max_bytes: usize) -> Read {
    let mut splices = Splices::default();
    let mut out = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut any_error = false;
    for w in wanted {
        let mut pd = PartitionData::default()
            .with_partition_index(w.partition)
            .with_records(None)
            .with_aborted_transactions(None);
        match &w.group {
            Err(code) => {
                any_error = true;
                pd = pd.with_error_code(code.code()).with_high_watermark(-1).with_log_start_offset(-1);
            }
            Ok(g) => {
                let hw = g.log().high_watermark() as i64;
                let start = g.log().log_start_offset() as i64;
                pd = pd.with_high_watermark(hw).with_last_stable_offset(hw).with_log_start_offset(start);
                let (epoch, _) = g.leadership();
                if w.current_leader_epoch >= 0 && (w.current_leader_epoch as u64) < epoch {
                    any_error = true;
                    pd = pd.with_error_code(ResponseError::FencedLeaderEpoch.code());
                } else if w.current_leader_epoch >= 0 && (w.current_leader_epoch as u64) > epoch {
                    any_error = true;
                    pd = pd.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                } else if w.offset < 0 {
                    any_error = true;
                    pd = pd.with_error_code(ResponseError::OffsetOutOfRange.code());
                } else {
                    // The first partition with data gets at least one entry; the rest share what is
                    // left of the request-wide limit.
                    let limit = w.max_bytes.min(max_bytes);
                    let budget = if total == 0 { limit.max(1) } else { limit.min(max_bytes.saturating_sub(total)) };
                    if budget > 0 {
                        match g.log().read(w.offset as u64, budget) {
                            Ok(read) => {
                                total += read.bytes;
                                pd = pd.with_records(Some(splices.stand_in(read.chunks)));
                            }
                            Err(e) => {
                                any_error = true;
                                if let ReadError::Storage(cause) = &e {
                                    tracing::error!(group = g.group(), "fetch read failed: {cause}");
                                }
                                pd = pd.with_error_code(read_code(&e).code());
                            }
                        }
                    }
                }
            }
        }
        out.push((w.topic, pd));
    }
    Read { parts: out, splices, bytes: total, any_error }
}

fn encode(corr: i32, version: i16, topics: &[(TopicName, uuid::Uuid)], read: Read) -> Option<Frame> {
    let Read { parts, splices, .. } = read;
    let mut responses: Vec<FetchableTopicResponse> = topics
        .iter()
        .map(|(name, id)| FetchableTopicResponse::default().with_topic(name.clone()).with_topic_id(*id))
        .collect();
    for (t, pd) in parts {
        responses[t].partitions.push(pd);
    }
    let body = FetchResponse::default().with_responses(responses);
    match codec::encode_response_gather(corr, version, &body, splices) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!("encoding a Fetch v{version} response: {e}");
            None
        }
    }
}
