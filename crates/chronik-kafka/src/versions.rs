//! The Kafka APIs this broker implements, with version ranges. ApiVersions advertises exactly
//! this table; the dispatcher serves exactly these; docs/KAFKA_API.md is generated from it.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::ApiVersion;

/// (API, min version, max version, what Chronik does with it).
pub const SUPPORTED: &[(ApiKey, i16, i16, &str)] = &[
    (ApiKey::Produce, 3, 13, "acks 0/1/-1; CRC-32C checked; batches stored as sent (offsets and leader epoch stamped)"),
    (ApiKey::Fetch, 4, 18, "long poll (max_wait_ms/min_bytes), max_bytes limits, never above the high watermark"),
    (ApiKey::ListOffsets, 1, 7, "earliest (-2), latest (-1), max timestamp (-3), by timestamp"),
    (
        ApiKey::Metadata,
        0,
        12,
        "brokers, partition leaders (Raft), leader epochs (Raft terms), topic ids, auto-creation",
    ),
    (ApiKey::OffsetCommit, 2, 9, "consumer group offsets, kept in the group coordinator"),
    (ApiKey::OffsetFetch, 1, 9, "committed offsets of a group"),
    (ApiKey::FindCoordinator, 0, 6, "this node coordinates every group"),
    (ApiKey::JoinGroup, 0, 9, "classic consumer group protocol"),
    (ApiKey::Heartbeat, 0, 4, ""),
    (ApiKey::LeaveGroup, 0, 5, ""),
    (ApiKey::SyncGroup, 0, 5, "assignments chosen by the group leader, passed through as sent"),
    (ApiKey::DescribeGroups, 0, 5, "Kafka's group states; a group with committed offsets and no members is Empty"),
    (ApiKey::ListGroups, 0, 5, "state filter (v4+) and type filter (v5+: every group is `classic`)"),
    (ApiKey::ApiVersions, 0, 4, "KIP-511: an unsupported version gets a v0 answer with UNSUPPORTED_VERSION"),
    (ApiKey::CreateTopics, 2, 7, "validate_only, configs, replication factor checked against live nodes"),
    (ApiKey::DeleteTopics, 1, 6, "by name or topic id"),
    (ApiKey::DeleteRecords, 0, 2, "moves the log start offset through Raft"),
    (
        ApiKey::InitProducerId,
        0,
        5,
        "idempotent producers (ids reserved through the metadata group); transactions are refused",
    ),
    (ApiKey::OffsetForLeaderEpoch, 2, 4, "end offset of a leader epoch (Raft term)"),
    (ApiKey::DescribeConfigs, 1, 4, "topic configs (effective values, overrides marked) and broker configs"),
    (ApiKey::AlterConfigs, 0, 2, "topic configs; replaces the topic's overrides"),
    (ApiKey::CreatePartitions, 0, 3, "adds partitions (each a new Raft group)"),
    (ApiKey::DeleteGroups, 0, 2, "empty groups only"),
    (ApiKey::IncrementalAlterConfigs, 0, 1, "topic configs: SET, DELETE"),
    (ApiKey::DescribeCluster, 0, 1, "cluster id, nodes, controller (the metadata group's leader)"),
];

/// The supported version range of `key`, if it is implemented at all.
pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, ..)| *k == key).map(|(_, min, max, _)| (*min, *max))
}

pub fn is_supported(key: ApiKey, version: i16) -> bool {
    range(key).is_some_and(|(min, max)| (min..=max).contains(&version))
}

pub fn api_versions() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, min, max, _)| {
            ApiVersion::default().with_api_key(*k as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect()
}

/// The API reference table of docs/KAFKA_API.md.
pub fn reference_markdown() -> String {
    let mut out = String::from("| API | key | versions | notes |\n|---|---|---|---|\n");
    for (k, min, max, note) in SUPPORTED {
        out.push_str(&format!("| {k:?} | {} | {min}-{max} | {note} |\n", *k as i16));
    }
    out
}
