//! DeleteRecords: move a partition's log start offset (through Raft); retention frees the space.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{Outcome, respond};
use crate::broker::Broker;
use crate::codec::{self, Request};
use crate::error::ApiError;

pub async fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: DeleteRecordsRequest = codec::decode(&req.body, req.version)?;
    let mut topics = Vec::new();
    for t in r.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let result = async {
                b.refuse_internal(&t.name, "deleting records of")?;
                let g = b.leader_partition(&t.name, p.partition_index)?;
                let hw = g.log().high_watermark();
                // -1 means "up to the high watermark".
                let target = if p.offset == -1 { hw } else { p.offset.max(0) as u64 };
                if p.offset < -1 || target > hw {
                    return Err(ApiError::new(
                        ResponseError::OffsetOutOfRange,
                        format!("offset {} is beyond the high watermark {hw}", p.offset),
                    ));
                }
                let start = g.advance_log_start(target).await?;
                let _ = g.drop_below_log_start().await;
                Ok(start)
            }
            .await;
            parts.push(match result {
                Ok(start) => DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(start as i64),
                Err(e) => DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1)
                    .with_error_code(e.code.code()),
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(parts));
    }
    respond(req, &DeleteRecordsResponse::default().with_topics(topics))
}
