//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first record at or after
//! a timestamp.

use std::sync::Arc;

use chronik_cluster::{EntryOffsets, PartitionReplica, split_batches};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use super::{Outcome, respond};
use crate::broker::Broker;
use crate::codec::{self, Request};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: ListOffsetsRequest = codec::decode(&req.body, req.version)?;
    let mut topics = Vec::new();
    for t in r.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let mut out = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            match b.leader_partition(&t.name, p.partition_index) {
                Err(e) => out = out.with_error_code(e.code.code()),
                Ok(g) => {
                    let (epoch, _) = g.leadership();
                    if p.current_leader_epoch >= 0 && (p.current_leader_epoch as u64) < epoch {
                        out = out.with_error_code(ResponseError::FencedLeaderEpoch.code());
                    } else {
                        let (offset, timestamp) = lookup(&g, p.timestamp);
                        out = out.with_offset(offset).with_timestamp(timestamp);
                        if req.version >= 4 {
                            out = out.with_leader_epoch(epoch as i32);
                        }
                    }
                }
            }
            parts.push(out);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(parts));
    }
    respond(req, &ListOffsetsResponse::default().with_topics(topics))
}

/// (offset, timestamp) for a ListOffsets target; (-1, -1) when no record matches.
fn lookup(g: &PartitionReplica, target: i64) -> (i64, i64) {
    match target {
        LATEST => (g.log().high_watermark() as i64, -1),
        EARLIEST => (g.log().log_start_offset() as i64, -1),
        MAX_TIMESTAMP => match g.log().max_timestamp_entry() {
            Some(e) => record_in(g, &e, |ts, best| best.is_none_or(|(_, b)| ts > b)).unwrap_or((-1, -1)),
            None => (-1, -1),
        },
        ts if ts >= 0 => match g.log().entry_at_or_after_time(ts) {
            Some(e) => record_in(g, &e, |rec_ts, best| best.is_none() && rec_ts >= ts).unwrap_or((-1, -1)),
            None => (-1, -1),
        },
        _ => (-1, -1),
    }
}

/// Picks one record of a stored entry: `better(timestamp, best so far)` says whether a record
/// replaces the current pick. Decodes (and decompresses) the entry's batches. In a
/// LogAppendTime batch every record's timestamp is the batch's (the broker's clock); the
/// timestamps inside are the producer's and do not count.
fn record_in(
    g: &PartitionReplica,
    e: &EntryOffsets,
    better: impl Fn(i64, Option<(i64, i64)>) -> bool,
) -> Option<(i64, i64)> {
    let bytes = g.log().entry_records(e.raft_index).ok().flatten()?;
    let start = g.log().log_start_offset() as i64;
    let mut best = None;
    for span in split_batches(&bytes, false).ok()? {
        let h = span.header;
        if h.is_log_append_time() {
            let first = h.base_offset.max(start);
            if first <= h.last_offset() && better(h.max_timestamp, best) {
                best = Some((first, h.max_timestamp));
            }
            continue;
        }
        let mut one = bytes.slice(span.range);
        let set = RecordBatchDecoder::decode(&mut one).ok()?;
        for r in set.records {
            if r.offset >= start && better(r.timestamp, best) {
                best = Some((r.offset, r.timestamp));
            }
        }
    }
    best
}
