//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs for topics (and describing the broker).

use std::collections::BTreeMap;
use std::sync::Arc;

use chronik_cluster::{MetaCommand, TOPIC_CONFIGS, validate_topic_config};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{Outcome, respond};
use crate::broker::Broker;
use crate::codec::{self, Request};
use crate::error::ApiError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub fn describe(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: DescribeConfigsRequest = codec::decode(&req.body, req.version)?;
    let mut results = Vec::new();
    for res in r.resources {
        let keys: Option<Vec<String>> = res.configuration_keys.map(|k| k.iter().map(|s| s.to_string()).collect());
        let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone())
            .with_error_message(None);
        match res.resource_type {
            RESOURCE_TOPIC => match b.topic(&res.resource_name) {
                None => {
                    out = out
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(s("unknown topic")));
                }
                Some(t) => {
                    let docs: BTreeMap<&str, &str> = TOPIC_CONFIGS.iter().copied().collect();
                    let configs = b
                        .settings(&t)
                        .describe()
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| {
                            let mut c = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(Some(s(v)))
                                .with_config_source(if t.configs.contains_key(k) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                });
                            if req.version >= 3 {
                                c = c.with_documentation(docs.get(k).map(|d| s(*d)));
                            }
                            c
                        })
                        .collect();
                    out = out.with_configs(configs);
                }
            },
            RESOURCE_BROKER => {
                let c = &b.config;
                let values = [
                    ("auto.create.topics.enable", c.auto_create_topics.to_string()),
                    ("num.partitions", c.num_partitions.to_string()),
                    ("default.replication.factor", c.default_replication_factor.to_string()),
                    ("socket.request.max.bytes", c.max_request_size.to_string()),
                    ("message.max.bytes", c.topic_defaults.max_message_bytes.to_string()),
                    ("log.retention.ms", c.topic_defaults.retention_ms.to_string()),
                    ("log.retention.bytes", c.topic_defaults.retention_bytes.to_string()),
                ];
                let configs = values
                    .into_iter()
                    .filter(|(k, _)| wanted(k))
                    .map(|(k, v)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(k))
                            .with_value(Some(s(v)))
                            .with_read_only(true)
                            .with_config_source(SOURCE_STATIC_BROKER)
                    })
                    .collect();
                out = out.with_configs(configs);
            }
            other => {
                out = out
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s(format!("resource type {other} is not supported"))));
            }
        }
        results.push(out);
    }
    respond(req, &DescribeConfigsResponse::default().with_results(results))
}

/// Validates and applies new overrides for one topic.
async fn alter_topic(
    b: &Broker,
    name: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Result<(), ApiError> {
    if b.topic(name).is_none() {
        return Err(ApiError::new(ResponseError::UnknownTopicOrPartition, "unknown topic"));
    }
    b.refuse_internal(name, "altering the configs of")?;
    for (k, v) in &set {
        validate_topic_config(k, v).map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))?;
    }
    for k in &delete {
        if !TOPIC_CONFIGS.iter().any(|(s, _)| s == k) {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!("unknown or unsupported topic config '{k}'"),
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    b.node.propose_meta(MetaCommand::AlterTopicConfigs { name: name.to_string(), set, delete }).await?;
    Ok(())
}

fn resource_error(resource_type: i8) -> Option<ApiError> {
    (resource_type != RESOURCE_TOPIC).then(|| {
        ApiError::new(
            ResponseError::InvalidRequest,
            format!("only topic configs can be altered (resource type {resource_type})"),
        )
    })
}

pub async fn alter(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: AlterConfigsRequest = codec::decode(&req.body, req.version)?;
    let mut responses = Vec::new();
    for res in r.resources {
        let result = match resource_error(res.resource_type) {
            Some(e) => Err(e),
            None => {
                // Non-incremental: the given set replaces all overrides.
                let set: BTreeMap<String, String> = res
                    .configs
                    .iter()
                    .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                    .collect();
                let delete: Vec<String> = b
                    .topic(&res.resource_name)
                    .map(|t| t.configs.keys().filter(|k| !set.contains_key(*k)).cloned().collect())
                    .unwrap_or_default();
                alter_topic(b, &res.resource_name, set, delete, r.validate_only).await
            }
        };
        let mut out = kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name)
            .with_error_message(None);
        if let Err(e) = result {
            out = out.with_error_code(e.code.code()).with_error_message(Some(s(e.message)));
        }
        responses.push(out);
    }
    respond(req, &AlterConfigsResponse::default().with_responses(responses))
}

pub async fn incremental_alter(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: IncrementalAlterConfigsRequest = codec::decode(&req.body, req.version)?;
    let mut responses = Vec::new();
    for res in r.resources {
        let result = match resource_error(res.resource_type) {
            Some(e) => Err(e),
            None => {
                let mut set = BTreeMap::new();
                let mut delete = Vec::new();
                let mut bad = None;
                for c in &res.configs {
                    match (c.config_operation, &c.value) {
                        (0, Some(v)) => {
                            set.insert(c.name.to_string(), v.to_string());
                        }
                        (1, _) => delete.push(c.name.to_string()),
                        (op, _) => {
                            bad = Some(ApiError::new(
                                ResponseError::InvalidConfig,
                                format!(
                                    "operation {op} on '{}' is not supported (only SET and DELETE)",
                                    c.name.as_str()
                                ),
                            ))
                        }
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => alter_topic(b, &res.resource_name, set, delete, r.validate_only).await,
                }
            }
        };
        let mut out =
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name)
                .with_error_message(None);
        if let Err(e) = result {
            out = out.with_error_code(e.code.code()).with_error_message(Some(s(e.message)));
        }
        responses.push(out);
    }
    respond(req, &IncrementalAlterConfigsResponse::default().with_responses(responses))
}
