//! Metadata: brokers, and for each topic its partitions' Raft leaders, epochs and replicas.

use std::sync::Arc;

use chronik_cluster::{TopicInfo, check_topic_name};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Outcome, respond};
use crate::broker::{Broker, host_port};
use crate::codec::{self, Request};

pub async fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: MetadataRequest = codec::decode(&req.body, req.version)?;
    let all = match &r.topics {
        None => true,
        Some(t) => t.is_empty() && req.version == 0,
    };
    let allow_create = b.config.auto_create_topics && (req.version < 4 || r.allow_auto_topic_creation);
    let deadline = std::time::Instant::now() + b.config.metadata_leader_wait;
    let asked = std::time::Instant::now();
    if !b.config.metadata_leader_wait.is_zero() {
        // A client whose leader was just killed asks here within microseconds of its
        // connection breaking, and this node's Raft connection to the same process broke in
        // the same instant, but its reader may not have run yet (seen in the failover bench:
        // answers 20-80 us before the reader saw the end of file). A millisecond lets it, so
        // the answer does not name a leader that is gone; librdkafka would believe it until
        // its next one-second scan. Metadata is rare enough for this to cost nothing.
        tokio::time::sleep(RAFT_EVIDENCE_SETTLE).await;
    }
    let mut topics = describe(b, &r, all, allow_create).await;
    while awaits_election(b, &topics) && std::time::Instant::now() < deadline {
        tokio::time::sleep(LEADER_POLL).await;
        topics = describe(b, &r, all, allow_create).await;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let leaders: Vec<(String, i32, i32)> = topics
            .iter()
            .flat_map(|t| {
                let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                t.partitions.iter().map(move |p| (name.clone(), p.partition_index, p.leader_id.0))
            })
            .collect();
        tracing::debug!(waited = ?asked.elapsed(), ?leaders, "metadata answer");
    }
    let (cluster_id, controller, brokers) = b.node.with_metadata(|m| {
        let brokers: Vec<MetadataResponseBroker> = m
            .nodes
            .values()
            .map(|n| {
                let (host, port) = host_port(&n.kafka_addr);
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(n.id as i32))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
            })
            .collect();
        (m.cluster_id, b.node.metadata_leader(), brokers)
    });
    let body = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(cluster_id.map(|c| StrBytes::from_string(c.to_string())))
        .with_controller_id(BrokerId(controller.map_or(-1, |c| c as i32)))
        .with_topics(topics);
    respond(req, &body)
}

/// Whether a partition of the answer has no leader but, as this node sees it, a majority of
/// live replicas to elect one (a node cut off from the others answers at once).
fn awaits_election(b: &Broker, topics: &[MetadataResponseTopic]) -> bool {
    topics.iter().any(|t| {
        let name = t.name.as_ref().map(|n| n.as_str()).unwrap_or_default();
        t.partitions.iter().any(|p| p.leader_id.0 < 0 && b.node.can_elect(name, p.partition_index))
    })
}

/// How long a clustered node's Metadata answer first waits for the Raft connections'
/// readers to catch up with a peer's death.
const RAFT_EVIDENCE_SETTLE: std::time::Duration = std::time::Duration::from_millis(1);

/// How often a Metadata answer waiting for leaders looks again.
const LEADER_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The requested topics (`all`: every topic) as the node sees them now.
async fn describe(b: &Arc<Broker>, r: &MetadataRequest, all: bool, allow_create: bool) -> Vec<MetadataResponseTopic> {
    let mut topics = Vec::new();
    if all {
        let names: Vec<String> = b.node.with_metadata(|m| m.topics.keys().cloned().collect());
        for name in names {
            if let Some(t) = b.topic(&name) {
                topics.push(describe_topic(b, &t));
            }
        }
    } else {
        for t in r.topics.iter().flatten() {
            let found = match &t.name {
                Some(name) if !name.is_empty() => lookup_or_create(b, name, allow_create).await,
                _ => b.topic_by_id(t.topic_id).ok_or(ResponseError::UnknownTopicId),
            };
            topics.push(match found {
                Ok(info) => describe_topic(b, &info),
                Err(code) => MetadataResponseTopic::default()
                    .with_error_code(code.code())
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id),
            });
        }
    }
    topics
}

async fn lookup_or_create(b: &Arc<Broker>, name: &TopicName, allow_create: bool) -> Result<TopicInfo, ResponseError> {
    if let Some(t) = b.topic(name) {
        return Ok(t);
    }
    if check_topic_name(name).is_err() {
        return Err(ResponseError::InvalidTopicException);
    }
    if !allow_create {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    b.auto_create(name).await.map_err(|e| {
        tracing::debug!(topic = %name.as_str(), "auto-creation failed: {}", e.message);
        e.code
    })
}

pub(crate) fn describe_topic(b: &Broker, t: &TopicInfo) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let replicas: Vec<BrokerId> = p.replicas.iter().map(|r| BrokerId(*r as i32)).collect();
            // From the local replica, or the leader's report where this node hosts none.
            let led = b.node.partition_leader(&t.name, p.partition);
            let mut out = MetadataResponsePartition::default()
                .with_partition_index(p.partition)
                .with_replica_nodes(replicas)
                .with_isr_nodes(led.isr.iter().map(|r| BrokerId(*r as i32)).collect());
            match led.leader {
                Some(leader) => {
                    out = out.with_leader_id(BrokerId(leader as i32)).with_leader_epoch(led.epoch as i32);
                }
                None => {
                    out = out.with_leader_id(BrokerId(-1)).with_error_code(ResponseError::LeaderNotAvailable.code());
                }
            }
            out
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(t.name == crate::groups::OFFSETS_TOPIC)
        .with_partitions(partitions)
}
