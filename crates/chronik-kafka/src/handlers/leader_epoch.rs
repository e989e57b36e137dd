//! OffsetForLeaderEpoch: where a leader epoch (a Raft term) ends in the partition's log.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{Outcome, respond};
use crate::broker::Broker;
use crate::codec::{self, Request};

pub fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: OffsetForLeaderEpochRequest = codec::decode(&req.body, req.version)?;
    let mut topics = Vec::new();
    for t in r.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let mut out = EpochEndOffset::default().with_partition(p.partition);
            match b.leader_partition(&t.topic, p.partition) {
                Err(e) => out = out.with_error_code(e.code.code()),
                Ok(g) => {
                    let (current, _) = g.leadership();
                    if p.current_leader_epoch >= 0 && (p.current_leader_epoch as u64) < current {
                        out = out.with_error_code(ResponseError::FencedLeaderEpoch.code());
                    } else if p.leader_epoch >= 0 && p.leader_epoch as u64 >= current {
                        // The current epoch ends at the log end.
                        out = out.with_leader_epoch(current as i32).with_end_offset(g.log().next_offset() as i64);
                    } else {
                        out = match g.log().epoch_end(p.leader_epoch.max(0) as u64) {
                            Ok(Some((epoch, end))) => out.with_leader_epoch(epoch as i32).with_end_offset(end as i64),
                            // Older than anything left in the log.
                            Ok(None) => out.with_leader_epoch(-1).with_end_offset(-1),
                            Err(e) => out.with_error_code(crate::error::read_code(&e).code()),
                        };
                    }
                }
            }
            parts.push(out);
        }
        topics.push(OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(parts));
    }
    respond(req, &OffsetForLeaderEpochResponse::default().with_topics(topics))
}
