//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{Outcome, respond};
use crate::broker::{Broker, host_port};
use crate::codec::{self, Request};
use crate::error::ApiError;
use crate::groups::{Committed, GroupError, JoinRequest};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn code(e: Option<GroupError>) -> i16 {
    e.map_or(0, |e| e.code().code())
}

pub async fn find_coordinator(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: FindCoordinatorRequest = codec::decode(&req.body, req.version)?;
    // Every group has one coordinator: the leader of __consumer_offsets (one partition).
    let leader = if r.key_type == 0 { b.groups.coordinator().await } else { None };
    let found = leader.and_then(|id| {
        b.node.with_metadata(|m| m.nodes.get(&id).map(|n| (BrokerId(id as i32), host_port(&n.kafka_addr))))
    });
    let Some((node, (host, port))) = found.or(if r.key_type == 0 { None } else { Some(Default::default()) }) else {
        return respond_not_available(req, &r);
    };
    // Only consumer groups (key type 0) are coordinated. Transactions (key type 1) are not
    // built: TRANSACTIONAL_ID_AUTHORIZATION_FAILED is the one error that both librdkafka and the
    // Java producer treat as fatal at once (COORDINATOR_NOT_AVAILABLE made them retry for a
    // minute), as InitProducerId answers for a transactional id.
    let unsupported = r.key_type != 0;
    let refusal = if r.key_type == 1 {
        (ResponseError::TransactionalIdAuthorizationFailed, "transactions are not supported by this broker")
    } else {
        (ResponseError::InvalidRequest, "only consumer group coordination is supported")
    };
    if req.version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                if unsupported {
                    c.with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(refusal.0.code())
                        .with_error_message(Some(s(refusal.1)))
                } else {
                    c.with_node_id(node).with_host(s(host.clone())).with_port(port).with_error_message(None)
                }
            })
            .collect();
        return respond(req, &FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    let body = if unsupported {
        FindCoordinatorResponse::default()
            .with_error_code(refusal.0.code())
            .with_error_message(Some(s(refusal.1)))
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    } else {
        FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(s(host))
            .with_port(port)
            .with_error_message(None)
    };
    respond(req, &body)
}

/// FindCoordinator while the offsets topic has no leader (or is being created): the
/// retriable COORDINATOR_NOT_AVAILABLE, as Kafka answers.
fn respond_not_available(req: &Request, r: &FindCoordinatorRequest) -> anyhow::Result<Outcome> {
    let code = ResponseError::CoordinatorNotAvailable;
    let why = Some(s("the group coordinator (the leader of __consumer_offsets) is not known yet"));
    if req.version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code.code())
                    .with_error_message(why.clone())
            })
            .collect();
        return respond(req, &FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    let body = FindCoordinatorResponse::default()
        .with_error_code(code.code())
        .with_error_message(why)
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    respond(req, &body)
}

pub async fn join(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: JoinGroupRequest = codec::decode(&req.body, req.version)?;
    let session = r.session_timeout_ms;
    if !(1_000..=1_800_000).contains(&session) {
        let body = JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidSessionTimeout.code())
            .with_member_id(r.member_id);
        return respond(req, &body);
    }
    let rebalance = if req.version >= 1 && r.rebalance_timeout_ms > 0 { r.rebalance_timeout_ms } else { session };
    let join = JoinRequest {
        member_id: r.member_id.to_string(),
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: String::new(),
        group_instance_id: r.group_instance_id.as_ref().map(|s| s.to_string()),
        session_timeout: Duration::from_millis(session as u64),
        rebalance_timeout: Duration::from_millis(rebalance as u64),
        protocol_type: r.protocol_type.to_string(),
        protocols: r.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: req.version >= 4,
    };
    let rx = b.groups.join(join, &r.group_id);
    let (corr, version) = (req.correlation_id, req.version);
    let wait = Duration::from_millis(rebalance as u64) + Duration::from_secs(5);
    Ok(Outcome::Later(Box::pin(async move {
        let body = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(j)) => {
                let mut body = JoinGroupResponse::default()
                    .with_error_code(code(j.error))
                    .with_generation_id(j.generation)
                    .with_protocol_name(j.protocol.map(s))
                    .with_leader(s(j.leader))
                    .with_member_id(s(j.member_id))
                    .with_members(
                        j.members
                            .into_iter()
                            .map(|(id, instance, meta)| {
                                JoinGroupResponseMember::default()
                                    .with_member_id(s(id))
                                    .with_group_instance_id(if version >= 5 { instance.map(s) } else { None })
                                    .with_metadata(meta)
                            })
                            .collect(),
                    );
                if version >= 7 {
                    body = body.with_protocol_type(j.protocol_type.map(s));
                }
                body
            }
            _ => JoinGroupResponse::default().with_error_code(ResponseError::RebalanceInProgress.code()),
        };
        codec::encode_response(corr, version, &body).ok().map(Into::into)
    })))
}

pub async fn sync(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: SyncGroupRequest = codec::decode(&req.body, req.version)?;
    let assignments = r.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
    let rx = b.groups.sync(&r.group_id, &r.member_id, r.generation_id, assignments);
    let (corr, version) = (req.correlation_id, req.version);
    let (protocol_type, protocol_name) = (r.protocol_type.clone(), r.protocol_name.clone());
    Ok(Outcome::Later(Box::pin(async move {
        let mut body = match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(Ok(assignment))) => SyncGroupResponse::default().with_assignment(assignment),
            Ok(Ok(Err(e))) => SyncGroupResponse::default().with_error_code(e.code().code()),
            _ => SyncGroupResponse::default().with_error_code(ResponseError::RebalanceInProgress.code()),
        };
        if version >= 5 {
            body = body.with_protocol_type(protocol_type).with_protocol_name(protocol_name);
        }
        codec::encode_response(corr, version, &body).ok().map(Into::into)
    })))
}

pub fn heartbeat(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: HeartbeatRequest = codec::decode(&req.body, req.version)?;
    let e = b.groups.heartbeat(&r.group_id, &r.member_id, r.generation_id).err();
    respond(req, &HeartbeatResponse::default().with_error_code(code(e)))
}

pub fn leave(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: LeaveGroupRequest = codec::decode(&req.body, req.version)?;
    if req.version < 3 {
        let e = b.groups.leave(&r.group_id, &r.member_id).err();
        return respond(req, &LeaveGroupResponse::default().with_error_code(code(e)));
    }
    let members = r
        .members
        .iter()
        .map(|m| {
            let e = b.groups.leave(&r.group_id, &m.member_id).err();
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code(e))
        })
        .collect();
    respond(req, &LeaveGroupResponse::default().with_members(members))
}

pub async fn offset_commit(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: OffsetCommitRequest = codec::decode(&req.body, req.version)?;
    let group_error = b.groups.check_commit(&r.group_id, &r.member_id, r.generation_id_or_member_epoch).err();
    let mut accepted = Vec::new();
    let mut topics = Vec::new();
    for t in &r.topics {
        let known = b.topic(&t.name);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let err = if let Some(e) = group_error {
                e.code().code()
            } else if !known.as_ref().is_some_and(|k| k.partitions.iter().any(|x| x.partition == p.partition_index)) {
                ResponseError::UnknownTopicOrPartition.code()
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > b.groups.settings.offset_metadata_max_bytes)
            {
                // Kafka's offset.metadata.max.bytes: each commit is stored and replayed.
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                accepted.push((
                    (t.name.to_string(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    },
                ));
                0
            };
            parts.push((p.partition_index, err));
        }
        topics.push((t.name.clone(), parts));
    }
    let stored = if accepted.is_empty() { Ok(()) } else { b.groups.commit(&r.group_id, accepted).await };
    let stored = stored.map_err(ApiError::from);
    let body = OffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default().with_name(name).with_partitions(
                    parts
                        .into_iter()
                        .map(|(i, err)| {
                            let err = match (&stored, err) {
                                (Err(e), 0) => e.code.code(),
                                _ => err,
                            };
                            OffsetCommitResponsePartition::default().with_partition_index(i).with_error_code(err)
                        })
                        .collect(),
                )
            })
            .collect(),
    );
    respond(req, &body)
}

/// A topic's committed offsets by partition (`None`: nothing committed).
type TopicOffsets = (TopicName, Vec<(i32, Option<Committed>)>);

/// (topic, partition, committed) for the requested partitions, or all the group has.
fn fetch_offsets(
    b: &Broker,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<TopicOffsets>, GroupError> {
    Ok(match topics {
        Some(ts) => {
            let mut out = Vec::new();
            for (t, ps) in ts {
                let mut parts = Vec::new();
                for p in ps {
                    parts.push((p, b.groups.committed(&(group.to_string(), t.to_string(), p))?));
                }
                out.push((t, parts));
            }
            out
        }
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> = Default::default();
            for (t, p, c) in b.groups.committed_of_group(group)? {
                by_topic.entry(t).or_default().push((p, Some(c)));
            }
            by_topic.into_iter().map(|(t, ps)| (TopicName(s(t)), ps)).collect()
        }
    })
}

pub fn offset_fetch(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: OffsetFetchRequest = codec::decode(&req.body, req.version)?;
    if req.version >= 8 {
        let groups = r
            .groups
            .iter()
            .map(|g| {
                let asked = g
                    .topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|t| (t.name.clone(), t.partition_indexes.clone())).collect());
                let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let fetched = match fetch_offsets(b, &g.group_id, asked) {
                    Ok(f) => f,
                    Err(e) => return out.with_error_code(e.code().code()),
                };
                let topics = fetched
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopics::default().with_name(name).with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, c)| {
                                    let c = c.unwrap_or(Committed {
                                        offset: -1,
                                        leader_epoch: -1,
                                        metadata: String::new(),
                                    });
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(c.offset)
                                        .with_committed_leader_epoch(c.leader_epoch)
                                        .with_metadata(Some(s(c.metadata)))
                                })
                                .collect(),
                        )
                    })
                    .collect();
                out.with_topics(topics)
            })
            .collect();
        return respond(req, &OffsetFetchResponse::default().with_groups(groups));
    }
    let asked = r.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.clone(), t.partition_indexes.clone())).collect());
    let fetched = match fetch_offsets(b, &r.group_id, asked) {
        Ok(f) => f,
        // v0-v1 have no group error; their clients read a partition error (none here) as
        // "nothing committed", so they get the coordinator error where it fits (v2+).
        Err(e) => return respond(req, &OffsetFetchResponse::default().with_error_code(e.code().code())),
    };
    let topics = fetched
        .into_iter()
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default().with_name(name).with_partitions(
                parts
                    .into_iter()
                    .map(|(p, c)| {
                        let c = c.unwrap_or(Committed { offset: -1, leader_epoch: -1, metadata: String::new() });
                        let mut out = OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(c.offset)
                            .with_metadata(Some(s(c.metadata)));
                        if req.version >= 5 {
                            out = out.with_committed_leader_epoch(c.leader_epoch);
                        }
                        out
                    })
                    .collect(),
            )
        })
        .collect();
    respond(req, &OffsetFetchResponse::default().with_topics(topics))
}

pub fn describe(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: DescribeGroupsRequest = codec::decode(&req.body, req.version)?;
    let groups = r
        .groups
        .iter()
        .map(|g| {
            let out = DescribedGroup::default().with_group_id(g.clone());
            match b.groups.describe(g) {
                Err(e) => out.with_error_code(e.code().code()),
                Ok(None) => out.with_group_state(s("Dead")),
                Ok(Some(v)) => out
                    .with_group_state(s(v.state))
                    .with_protocol_type(s(v.protocol_type))
                    .with_protocol_data(s(v.protocol))
                    .with_members(
                        v.members
                            .into_iter()
                            .map(|(id, instance, client, host, meta, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(id))
                                    .with_group_instance_id(if req.version >= 4 { instance.map(s) } else { None })
                                    .with_client_id(s(client))
                                    .with_client_host(s(host))
                                    .with_member_metadata(meta)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    respond(req, &DescribeGroupsResponse::default().with_groups(groups))
}

/// The group type of the classic protocol (ListGroups v5, KIP-848).
const CLASSIC: &str = "classic";

pub fn list(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: ListGroupsRequest = codec::decode(&req.body, req.version)?;
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    // Every group here speaks the classic protocol (KIP-848 "consumer" groups are not built).
    let types: Vec<String> = r.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let wanted_type = types.is_empty() || types.iter().any(|t| t == CLASSIC);
    let groups = b
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| wanted_type && (states.is_empty() || states.contains(&state.to_lowercase())))
        .map(|(id, protocol_type, state)| {
            let mut g = ListedGroup::default().with_group_id(GroupId(s(id))).with_protocol_type(s(protocol_type));
            if req.version >= 4 {
                g = g.with_group_state(s(state));
            }
            if req.version >= 5 {
                g = g.with_group_type(s(CLASSIC));
            }
            g
        })
        .collect();
    respond(req, &ListGroupsResponse::default().with_groups(groups))
}

pub async fn delete(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: DeleteGroupsRequest = codec::decode(&req.body, req.version)?;
    let mut results = Vec::new();
    for g in r.groups_names {
        let err = b.groups.delete(&g).await.err().map_or(0, |e| ApiError::from(e).code.code());
        results.push(delete_groups_response::DeletableGroupResult::default().with_group_id(g).with_error_code(err));
    }
    respond(req, &DeleteGroupsResponse::default().with_results(results))
}
