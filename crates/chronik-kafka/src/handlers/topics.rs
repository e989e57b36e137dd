//! CreateTopics, DeleteTopics, CreatePartitions: metadata changes through the `__meta` group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chronik_cluster::MetaCommand;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Outcome, respond};
use crate::broker::{Broker, NewTopic};
use crate::codec::{self, Request};
use crate::error::ApiError;

fn timeout(ms: i32) -> Duration {
    Duration::from_millis(ms.clamp(0, 300_000) as u64)
}

/// The config source Kafka reports for a topic override vs a default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub async fn create_topics(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: CreateTopicsRequest = codec::decode(&req.body, req.version)?;
    let mut results = Vec::new();
    for t in r.topics {
        let name = t.name.to_string();
        let outcome = async {
            if !t.assignments.is_empty() {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "manual replica assignment is not supported",
                ));
            }
            if t.num_partitions < -1 || t.num_partitions == 0 {
                return Err(ApiError::new(
                    ResponseError::InvalidPartitions,
                    format!("invalid partition count {}", t.num_partitions),
                ));
            }
            if t.replication_factor < -1 || t.replication_factor == 0 {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("invalid replication factor {}", t.replication_factor),
                ));
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
            let new = NewTopic {
                name: name.clone(),
                partitions: if t.num_partitions == -1 { b.config.num_partitions } else { t.num_partitions as u32 },
                replication_factor: if t.replication_factor == -1 {
                    b.config.default_replication_factor
                } else {
                    t.replication_factor as u32
                },
                configs,
            };
            if r.validate_only {
                b.check_new_topic(&new)?;
                return Ok((new.partitions, new.replication_factor, None));
            }
            let info = b.create_topic(new, timeout(r.timeout_ms)).await?;
            Ok((info.partitions.len() as u32, info.replication_factor, Some(info)))
        }
        .await;
        let mut res = CreatableTopicResult::default().with_name(t.name.clone()).with_error_message(None);
        match outcome {
            Ok((partitions, rf, info)) => {
                res = res.with_num_partitions(partitions as i32).with_replication_factor(rf as i16);
                if let Some(info) = info {
                    res = res.with_topic_id(info.id);
                    if req.version >= 5 {
                        let settings = b.settings(&info);
                        res = res.with_configs(Some(
                            settings
                                .describe()
                                .into_iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(k))
                                        .with_value(Some(StrBytes::from_string(v)))
                                        .with_config_source(if info.configs.contains_key(k) {
                                            SOURCE_TOPIC
                                        } else {
                                            SOURCE_DEFAULT
                                        })
                                })
                                .collect(),
                        ));
                    }
                }
            }
            Err(e) => {
                res = res.with_error_code(e.code.code()).with_error_message(Some(StrBytes::from_string(e.message)));
            }
        }
        results.push(res);
    }
    respond(req, &CreateTopicsResponse::default().with_topics(results))
}

pub async fn delete_topics(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: DeleteTopicsRequest = codec::decode(&req.body, req.version)?;
    // (name if known, id as asked)
    let asked: Vec<(Option<String>, uuid::Uuid)> = if req.version >= 6 {
        r.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) if !n.is_empty() => (Some(n.to_string()), t.topic_id),
                _ => (b.topic_by_id(t.topic_id).map(|i| i.name), t.topic_id),
            })
            .collect()
    } else {
        r.topic_names.iter().map(|n| (Some(n.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut responses = Vec::new();
    for (name, id) in asked {
        let result = match &name {
            None => Err(ApiError::new(ResponseError::UnknownTopicId, "unknown topic id")),
            Some(n) => {
                async {
                    b.refuse_internal(n, "deleting")?;
                    b.node.propose_meta(MetaCommand::DeleteTopic { name: n.clone() }).await.map_err(ApiError::from)
                }
                .await
            }
        };
        let mut res = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        if let Err(e) = result {
            res = res.with_error_code(e.code.code());
            if req.version >= 5 {
                res = res.with_error_message(Some(StrBytes::from_string(e.message)));
            }
        }
        responses.push(res);
    }
    respond(req, &DeleteTopicsResponse::default().with_responses(responses))
}

pub async fn create_partitions(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: CreatePartitionsRequest = codec::decode(&req.body, req.version)?;
    let mut results = Vec::new();
    for t in r.topics {
        let name = t.name.to_string();
        let result = async {
            if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "manual replica assignment is not supported",
                ));
            }
            b.refuse_internal(&name, "adding partitions to")?;
            let info =
                b.topic(&name).ok_or_else(|| ApiError::new(ResponseError::UnknownTopicOrPartition, "unknown topic"))?;
            if t.count <= info.partitions.len() as i32 {
                return Err(ApiError::new(
                    ResponseError::InvalidPartitions,
                    format!("topic has {} partitions; the new count {} must be larger", info.partitions.len(), t.count),
                ));
            }
            b.check_partition_budget(t.count as u32 - info.partitions.len() as u32)?;
            if r.validate_only {
                return Ok(());
            }
            b.node.propose_meta(MetaCommand::CreatePartitions { name: name.clone(), total: t.count as u32 }).await?;
            b.node.wait_for_topic(&name, timeout(r.timeout_ms)).await;
            Ok(())
        }
        .await;
        let mut res = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err(e) = result {
            res = res.with_error_code(e.code.code()).with_error_message(Some(StrBytes::from_string(e.message)));
        }
        results.push(res);
    }
    respond(req, &CreatePartitionsResponse::default().with_results(results))
}
