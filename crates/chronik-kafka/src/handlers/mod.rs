//! Request dispatch: one module per API (or family of APIs).

mod api_versions;
mod cluster;
mod configs;
mod delete_records;
mod fetch;
mod groups;
mod init_producer_id;
mod leader_epoch;
mod list_offsets;
mod metadata;
mod produce;
mod topics;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::broker::Broker;
use crate::codec::{self, Request};
use crate::frame::Frame;
use crate::versions;

/// What to do with a request.
pub enum Outcome {
    /// Send this response frame.
    Response(Bytes),
    /// The response comes later (after a commit, or data to fetch).
    Later(BoxFuture<'static, Option<Frame>>),
    /// No response (Produce with acks=0).
    NoResponse,
    /// Close the connection, for this reason (malformed or unsupported request).
    Close(String),
}

pub(crate) fn respond<R: Encodable + HeaderVersion>(req: &Request, body: &R) -> anyhow::Result<Outcome> {
    Ok(Outcome::Response(codec::encode_response(req.correlation_id, req.version, body)?))
}

/// Serves one request frame.
pub async fn dispatch(broker: &Arc<Broker>, frame: Bytes) -> Outcome {
    let req = match codec::parse_request(frame) {
        Ok(r) => r,
        Err(e) => return Outcome::Close(e.to_string()),
    };
    if req.api_key == ApiKey::ApiVersions && !versions::is_supported(ApiKey::ApiVersions, req.version) {
        return api_versions::unsupported_version(&req).unwrap_or_else(|e| Outcome::Close(e.to_string()));
    }
    if !versions::is_supported(req.api_key, req.version) {
        return Outcome::Close(format!("{:?} v{} is not supported", req.api_key, req.version));
    }
    let result = match req.api_key {
        ApiKey::ApiVersions => api_versions::handle(&req),
        ApiKey::Metadata => metadata::handle(broker, &req).await,
        ApiKey::Produce => produce::handle(broker, &req).await,
        ApiKey::Fetch => fetch::handle(broker, &req).await,
        ApiKey::ListOffsets => list_offsets::handle(broker, &req).await,
        ApiKey::OffsetForLeaderEpoch => leader_epoch::handle(broker, &req),
        ApiKey::CreateTopics => topics::create_topics(broker, &req).await,
        ApiKey::DeleteTopics => topics::delete_topics(broker, &req).await,
        ApiKey::CreatePartitions => topics::create_partitions(broker, &req).await,
        ApiKey::DescribeConfigs => configs::describe(broker, &req),
        ApiKey::AlterConfigs => configs::alter(broker, &req).await,
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter(broker, &req).await,
        ApiKey::DeleteRecords => delete_records::handle(broker, &req).await,
        ApiKey::DescribeCluster => cluster::describe(broker, &req),
        ApiKey::FindCoordinator => groups::find_coordinator(broker, &req).await,
        ApiKey::JoinGroup => groups::join(broker, &req).await,
        ApiKey::SyncGroup => groups::sync(broker, &req).await,
        ApiKey::Heartbeat => groups::heartbeat(broker, &req),
        ApiKey::LeaveGroup => groups::leave(broker, &req),
        ApiKey::OffsetCommit => groups::offset_commit(broker, &req).await,
        ApiKey::OffsetFetch => groups::offset_fetch(broker, &req),
        ApiKey::DescribeGroups => groups::describe(broker, &req),
        ApiKey::ListGroups => groups::list(broker, &req),
        ApiKey::DeleteGroups => groups::delete(broker, &req).await,
        ApiKey::InitProducerId => init_producer_id::handle(broker, &req).await,
        other => return Outcome::Close(format!("{other:?} is not implemented")),
    };
    result.unwrap_or_else(|e| Outcome::Close(format!("{:?} v{}: {e:#}", req.api_key, req.version)))
}
