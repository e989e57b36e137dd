//! The cluster's metadata: nodes, topics, partition assignments, topic configs, tombstones of
//! removed node ids. Plain data with a deterministic `apply`, replicated by the `__meta` group.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Raft group id of the metadata group; partition groups get ids from `next_group_id`.
pub const META_GROUP: u64 = 0;
/// Upper bound on partitions per topic: each partition is a Raft group with its own tasks.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    /// host:port of the node's Raft listener.
    pub raft_addr: String,
    /// host:port Kafka clients use.
    pub kafka_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: i32,
    /// The partition's Raft group (and WAL group) id; never reused.
    pub group: u64,
    pub replicas: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionInfo>,
    pub replication_factor: u32,
    /// Per-topic overrides of the broker defaults (Kafka config names).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub cluster_id: Option<Uuid>,
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Ids of removed nodes: never accepted again (a reused id could split a group's quorum).
    pub removed_nodes: BTreeSet<u64>,
    pub topics: BTreeMap<String, TopicInfo>,
    pub next_group_id: u64,
    /// Next idempotent producer id to hand out (ids are never reused).
    pub next_producer_id: i64,
    /// Bumped by every applied change; watchers reconcile when it moves.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    InitCluster {
        cluster_id: Uuid,
    },
    RegisterNode(NodeInfo),
    CreateTopic {
        name: String,
        topic_id: Uuid,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: u32,
    },
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Reserves `count` producer ids for one node to hand out.
    AllocateProducerIds {
        count: u32,
    },
}

impl std::fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaCommand::InitCluster { cluster_id } => write!(f, "init-cluster({cluster_id})"),
            MetaCommand::RegisterNode(n) => write!(f, "register-node({})", n.id),
            MetaCommand::CreateTopic { name, partitions, .. } => write!(f, "create-topic({name}, {partitions})"),
            MetaCommand::DeleteTopic { name } => write!(f, "delete-topic({name})"),
            MetaCommand::CreatePartitions { name, total } => write!(f, "create-partitions({name}, {total})"),
            MetaCommand::AlterTopicConfigs { name, .. } => write!(f, "alter-topic-configs({name})"),
            MetaCommand::AllocateProducerIds { count } => write!(f, "allocate-producer-ids({count})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("this metadata belongs to cluster {existing}, not {proposed}")]
    ClusterIdMismatch { existing: Uuid, proposed: Uuid },
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("replication factor {requested} is larger than the {available} available node(s)")]
    InvalidReplicationFactor { requested: u32, available: u32 },
    #[error("node id {0} belonged to a removed node and cannot be used again")]
    NodeRemoved(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    Done,
    /// The first of the producer ids reserved by `AllocateProducerIds`.
    ProducerIds {
        start: i64,
    },
    Rejected(MetaError),
}

/// Kafka's topic name rules: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), MetaError> {
    let bad = |reason: &str| Err(MetaError::InvalidTopicName { name: name.to_string(), reason: reason.to_string() });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

impl Default for MetadataState {
    fn default() -> Self {
        MetadataState::new()
    }
}

impl MetadataState {
    /// An empty cluster: no nodes or topics yet; partition groups are numbered after `__meta`.
    pub fn new() -> MetadataState {
        MetadataState {
            cluster_id: None,
            nodes: BTreeMap::new(),
            removed_nodes: BTreeSet::new(),
            topics: BTreeMap::new(),
            next_group_id: META_GROUP + 1,
            next_producer_id: 0,
            version: 0,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Every partition group assigned to `node`, with its topic name.
    pub fn partitions_of(&self, node: u64) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> {
        self.topics
            .values()
            .flat_map(move |t| t.partitions.iter().filter(move |p| p.replicas.contains(&node)).map(move |p| (t, p)))
    }

    /// Applies `cmd`; a rejected command changes nothing.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        if let MetaCommand::AllocateProducerIds { count } = cmd {
            let start = self.next_producer_id;
            self.next_producer_id += *count as i64;
            self.version += 1;
            return MetaResponse::ProducerIds { start };
        }
        match self.try_apply(cmd) {
            Ok(()) => {
                self.version += 1;
                MetaResponse::Done
            }
            Err(e) => MetaResponse::Rejected(e),
        }
    }

    fn try_apply(&mut self, cmd: &MetaCommand) -> Result<(), MetaError> {
        match cmd {
            MetaCommand::InitCluster { cluster_id } => match self.cluster_id {
                Some(existing) if existing != *cluster_id => {
                    return Err(MetaError::ClusterIdMismatch { existing, proposed: *cluster_id });
                }
                _ => self.cluster_id = Some(*cluster_id),
            },
            MetaCommand::RegisterNode(node) => {
                if self.removed_nodes.contains(&node.id) {
                    return Err(MetaError::NodeRemoved(node.id));
                }
                self.nodes.insert(node.id, node.clone());
            }
            MetaCommand::CreateTopic { name, topic_id, partitions, replication_factor, configs } => {
                check_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetaError::TopicExists(name.clone()));
                }
                check_partition_count(*partitions)?;
                let available = self.nodes.len() as u32;
                if *replication_factor == 0 || *replication_factor > available {
                    return Err(MetaError::InvalidReplicationFactor { requested: *replication_factor, available });
                }
                let mut topic = TopicInfo {
                    name: name.clone(),
                    id: *topic_id,
                    partitions: Vec::new(),
                    replication_factor: *replication_factor,
                    configs: configs.clone(),
                };
                self.add_partitions(&mut topic, *partitions);
                self.topics.insert(name.clone(), topic);
            }
            MetaCommand::DeleteTopic { name } => {
                self.topics.remove(name).ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
            }
            MetaCommand::CreatePartitions { name, total } => {
                let mut topic = self.topics.get(name).cloned().ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                let current = topic.partitions.len() as u32;
                if *total <= current {
                    return Err(MetaError::InvalidPartitions(format!(
                        "topic '{name}' has {current} partitions; the new count must be larger (got {total})"
                    )));
                }
                check_partition_count(*total)?;
                if topic.replication_factor > self.nodes.len() as u32 {
                    return Err(MetaError::InvalidReplicationFactor {
                        requested: topic.replication_factor,
                        available: self.nodes.len() as u32,
                    });
                }
                self.add_partitions(&mut topic, total - current);
                self.topics.insert(name.clone(), topic);
            }
            MetaCommand::AllocateProducerIds { .. } => unreachable!("handled in apply"),
            MetaCommand::AlterTopicConfigs { name, set, delete } => {
                let topic = self.topics.get_mut(name).ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                for k in delete {
                    topic.configs.remove(k);
                }
                for (k, v) in set {
                    topic.configs.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(())
    }

    /// Appends `count` partitions with fresh group ids, replicas spread round-robin over nodes.
    fn add_partitions(&mut self, topic: &mut TopicInfo, count: u32) {
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        for _ in 0..count {
            let partition = topic.partitions.len() as i32;
            let group = self.next_group_id;
            self.next_group_id += 1;
            let start = (group as usize) % nodes.len();
            let replicas = (0..topic.replication_factor as usize).map(|k| nodes[(start + k) % nodes.len()]).collect();
            topic.partitions.push(PartitionInfo { partition, group, replicas });
        }
    }
}

fn check_partition_count(n: u32) -> Result<(), MetaError> {
    if n == 0 || n > MAX_PARTITIONS_PER_TOPIC {
        return Err(MetaError::InvalidPartitions(format!("{n} is outside 1..={MAX_PARTITIONS_PER_TOPIC}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> MetaCommand {
        MetaCommand::RegisterNode(NodeInfo { id, raft_addr: format!("n{id}:9093"), kafka_addr: format!("n{id}:9092") })
    }

    fn create(name: &str, partitions: u32, rf: u32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(name.len() as u128),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn command_table() {
        // (commands applied in order, expected response of the last one)
        let ok = MetaResponse::Done;
        let cases: Vec<(&str, Vec<MetaCommand>, MetaResponse)> = vec![
            ("create", vec![node(1), create("t", 3, 1)], ok.clone()),
            (
                "duplicate",
                vec![node(1), create("t", 1, 1), create("t", 1, 1)],
                MetaResponse::Rejected(MetaError::TopicExists("t".into())),
            ),
            (
                "rf above nodes",
                vec![node(1), create("t", 1, 3)],
                MetaResponse::Rejected(MetaError::InvalidReplicationFactor { requested: 3, available: 1 }),
            ),
            (
                "zero partitions",
                vec![node(1), create("t", 0, 1)],
                MetaResponse::Rejected(MetaError::InvalidPartitions("0 is outside 1..=10000".into())),
            ),
            (
                "bad name",
                vec![node(1), create("a/b", 1, 1)],
                MetaResponse::Rejected(MetaError::InvalidTopicName {
                    name: "a/b".into(),
                    reason: "only ASCII letters, digits, '.', '_' and '-' are allowed".into(),
                }),
            ),
            (
                "delete unknown",
                vec![MetaCommand::DeleteTopic { name: "x".into() }],
                MetaResponse::Rejected(MetaError::UnknownTopic("x".into())),
            ),
            (
                "grow",
                vec![node(1), create("t", 1, 1), MetaCommand::CreatePartitions { name: "t".into(), total: 4 }],
                ok.clone(),
            ),
            (
                "shrink refused",
                vec![node(1), create("t", 2, 1), MetaCommand::CreatePartitions { name: "t".into(), total: 2 }],
                MetaResponse::Rejected(MetaError::InvalidPartitions(
                    "topic 't' has 2 partitions; the new count must be larger (got 2)".into(),
                )),
            ),
            (
                "other cluster",
                vec![
                    MetaCommand::InitCluster { cluster_id: Uuid::from_u128(1) },
                    MetaCommand::InitCluster { cluster_id: Uuid::from_u128(2) },
                ],
                MetaResponse::Rejected(MetaError::ClusterIdMismatch {
                    existing: Uuid::from_u128(1),
                    proposed: Uuid::from_u128(2),
                }),
            ),
        ];
        for (name, cmds, expected) in cases {
            let mut s = MetadataState::new();
            let mut last = MetaResponse::Done;
            for c in &cmds {
                last = s.apply(c);
            }
            assert_eq!(last, expected, "{name}");
        }
    }

    #[test]
    fn group_ids_are_never_reused() {
        let mut s = MetadataState::new();
        s.apply(&node(1));
        s.apply(&create("a", 2, 1));
        let first: Vec<u64> = s.topic("a").unwrap().partitions.iter().map(|p| p.group).collect();
        s.apply(&MetaCommand::DeleteTopic { name: "a".into() });
        s.apply(&create("a", 2, 1));
        let second: Vec<u64> = s.topic("a").unwrap().partitions.iter().map(|p| p.group).collect();
        assert_eq!(first, vec![1, 2]);
        assert_eq!(second, vec![3, 4]);
        assert!(!first.contains(&META_GROUP));
        assert_eq!(MetadataState::default(), MetadataState::new(), "one notion of an empty cluster");
    }

    #[test]
    fn replicas_spread_over_nodes() {
        let mut s = MetadataState::new();
        for id in [1, 2, 3] {
            s.apply(&node(id));
        }
        s.apply(&create("t", 3, 2));
        let t = s.topic("t").unwrap();
        let leaders: BTreeSet<u64> = t.partitions.iter().map(|p| p.replicas[0]).collect();
        assert_eq!(leaders.len(), 3, "{:?}", t.partitions);
        assert!(t.partitions.iter().all(|p| p.replicas.len() == 2 && p.replicas[0] != p.replicas[1]));
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut s = MetadataState::new();
        assert_eq!(s.apply(&MetaCommand::AllocateProducerIds { count: 100 }), MetaResponse::ProducerIds { start: 0 });
        assert_eq!(s.apply(&MetaCommand::AllocateProducerIds { count: 100 }), MetaResponse::ProducerIds { start: 100 });
    }

    #[test]
    fn removed_node_id_is_refused() {
        let mut s = MetadataState::new();
        s.removed_nodes.insert(2);
        assert_eq!(s.apply(&node(2)), MetaResponse::Rejected(MetaError::NodeRemoved(2)));
    }
}
