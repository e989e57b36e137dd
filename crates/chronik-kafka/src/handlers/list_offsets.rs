//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first record at or after
//! a timestamp (found through the partition's time index and the batch headers).

use std::sync::Arc;

use chronik_cluster::{PartitionReplica, ReadError, Records, split_batches};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{Outcome, respond};
use crate::broker::Broker;
use crate::codec::{self, Request};
use crate::error::read_code;

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
                        match lookup(&g, p.timestamp) {
                            Ok((offset, timestamp)) => {
                                out = out.with_offset(offset).with_timestamp(timestamp);
                                if req.version >= 4 {
                                    out = out.with_leader_epoch(epoch as i32);
                                }
                            }
                            Err(e) => out = out.with_error_code(read_code(&e).code()),
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

/// Entries a lookup by time looks at past the first match (whose matching records can all lie
/// below the log start).
const TIME_LOOKUP_ENTRIES: usize = 8;

/// (offset, timestamp) for a ListOffsets target; (-1, -1) when no record matches.
fn lookup(g: &PartitionReplica, target: i64) -> Result<(i64, i64), ReadError> {
    let start = g.log().log_start_offset() as i64;
    let found = match target {
        LATEST => Some((g.log().high_watermark() as i64, -1)),
        EARLIEST => Some((start, -1)),
        MAX_TIMESTAMP => g.log().max_timestamp_candidate()?.and_then(|(max, b)| in_entry(&b, start, Want::Max(max))),
        ts if ts >= 0 => g
            .log()
            .time_candidates(ts, TIME_LOOKUP_ENTRIES)?
            .iter()
            .find_map(|b| in_entry(b, start, Want::AtOrAfter(ts))),
        _ => None,
    };
    Ok(found.unwrap_or((-1, -1)))
}

#[derive(Clone, Copy)]
enum Want {
    /// The first record with a timestamp at or after this.
    AtOrAfter(i64),
    /// The first record with this (the partition's largest) timestamp.
    Max(i64),
}

impl Want {
    fn matches(self, ts: i64) -> bool {
        match self {
            Want::AtOrAfter(t) => ts >= t,
            Want::Max(m) => ts == m,
        }
    }
}

/// The record of a stored entry that answers `want`, from the batch headers and, in an
/// uncompressed batch, its records read in place. A compressed batch is never opened (a query
/// must not cost a decompression of whatever a client sent): where the answer lies inside one,
/// it is the batch's first readable offset with its largest timestamp (for the largest
/// timestamp, its last offset), so a consumer seeking there reads at most one batch of earlier
/// records. In a LogAppendTime batch every record has the batch's timestamp (the broker's).
fn in_entry(bytes: &[u8], start: i64, want: Want) -> Option<(i64, i64)> {
    for span in split_batches(bytes, false).ok()? {
        let h = span.header;
        // A batch holds a match only if its largest timestamp does.
        if h.last_offset() < start || !want.matches(h.max_timestamp) {
            continue;
        }
        let first = h.base_offset.max(start);
        if h.is_log_append_time() {
            return Some((first, h.max_timestamp));
        }
        if h.is_uncompressed() {
            for r in Records::new(&bytes[span.range.clone()], &h) {
                let r = r.ok()?;
                let offset = h.base_offset + i64::from(r.offset_delta);
                if offset >= start && want.matches(r.timestamp) {
                    return Some((offset, r.timestamp));
                }
            }
            continue;
        }
        return Some(match want {
            // The header's base timestamp is at most every record's: the first record matches.
            Want::AtOrAfter(_) if want.matches(h.base_timestamp) => (first, h.base_timestamp),
            Want::AtOrAfter(_) => (first, h.max_timestamp),
            Want::Max(m) => (h.last_offset(), m),
        });
    }
    None
}
