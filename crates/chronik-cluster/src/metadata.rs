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
    /// Partition groups whose replicas are moving, and the replicas each moves to. The
    /// group's leader carries a move out (new replicas join as learners, catch up, then the
    /// voters change) and ends it with [`MetaCommand::FinishMove`].
    pub moves: BTreeMap<u64, Vec<u64>>,
    /// Groups whose replicas changed after they were created: a replica of one of them that
    /// has no Raft state waits for its leader instead of creating the group.
    pub moved_groups: BTreeSet<u64>,
    /// Nodes being removed: their replicas move elsewhere and nothing new is placed on them;
    /// once they host nothing, the metadata leader removes them ([`MetaCommand::ForgetNode`]).
    pub leaving: BTreeSet<u64>,
}

/// [`MetadataState`] as written before moves and node removal existed (postcard is not
/// self-describing, so older snapshots decode only as this shape).
#[derive(Deserialize)]
struct MetadataStateBeforeMoves {
    cluster_id: Option<Uuid>,
    nodes: BTreeMap<u64, NodeInfo>,
    removed_nodes: BTreeSet<u64>,
    topics: BTreeMap<String, TopicInfo>,
    next_group_id: u64,
    next_producer_id: i64,
    version: u64,
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
    /// Starts moving a partition to another set of replicas (see [`MetadataState::moves`]).
    MovePartition {
        topic: String,
        partition: i32,
        replicas: Vec<u64>,
    },
    /// The move of `group` is done: its Raft voters are `replicas`, committed.
    FinishMove {
        group: u64,
        replicas: Vec<u64>,
    },
    /// Starts removing a node: each of its replicas moves to the active node that hosts the
    /// fewest, chosen when this applies (so every node plans the same moves).
    RemoveNode {
        node: u64,
    },
    /// A leaving node that hosts nothing any more is gone: its id is never accepted again.
    ForgetNode {
        node: u64,
    },
    /// Quorum-loss recovery (`chronik-server recover-quorum-loss`): `survivor` forced itself
    /// the only voter of the metadata group and of the partition groups `groups` it holds.
    /// Every other node is removed (its id tombstoned: its data may have diverged), moves and
    /// removals under way are dropped, and each of `groups` is hosted by `survivor` alone.
    /// Partitions with no replica on `survivor` keep their replicas, all removed: lost.
    RecoverQuorumLoss {
        survivor: u64,
        groups: Vec<u64>,
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
            MetaCommand::MovePartition { topic, partition, replicas } => {
                write!(f, "move-partition({topic}-{partition} to {replicas:?})")
            }
            MetaCommand::FinishMove { group, replicas } => write!(f, "finish-move({group} on {replicas:?})"),
            MetaCommand::RemoveNode { node } => write!(f, "remove-node({node})"),
            MetaCommand::ForgetNode { node } => write!(f, "forget-node({node})"),
            MetaCommand::RecoverQuorumLoss { survivor, groups } => {
                write!(f, "recover-quorum-loss(on {survivor}, {} groups)", groups.len())
            }
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
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(u64),
    #[error("invalid replicas: {0}")]
    InvalidReplicas(String),
    #[error("partition {topic}-{partition} is already moving to {to:?}; wait until that move has finished")]
    MoveInProgress { topic: String, partition: i32, to: Vec<u64> },
    #[error("node {node} cannot be removed: {reason}")]
    CannotRemoveNode { node: u64, reason: String },
    /// An operator's promotion of a learner of the metadata group that cannot be made now.
    #[error("node {node} cannot be promoted to a metadata voter: {reason}")]
    CannotPromote { node: u64, reason: String },
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
            moves: BTreeMap::new(),
            moved_groups: BTreeSet::new(),
            leaving: BTreeSet::new(),
        }
    }

    /// Decodes a snapshot of the state, including one written before moves existed.
    pub fn decode(bytes: &[u8]) -> Result<MetadataState, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            let Ok(old) = postcard::from_bytes::<MetadataStateBeforeMoves>(bytes) else { return Err(e) };
            Ok(MetadataState {
                cluster_id: old.cluster_id,
                nodes: old.nodes,
                removed_nodes: old.removed_nodes,
                topics: old.topics,
                next_group_id: old.next_group_id,
                next_producer_id: old.next_producer_id,
                version: old.version,
                ..MetadataState::new()
            })
        })
    }

    /// Registered nodes that are not leaving: where replicas may be placed.
    pub fn active_nodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.keys().copied().filter(|id| !self.leaving.contains(id))
    }

    /// Whether `node` hosts a replica of `p` or is one of the replicas `p` moves to.
    pub fn hosts(&self, p: &PartitionInfo, node: u64) -> bool {
        p.replicas.contains(&node) || self.moves.get(&p.group).is_some_and(|to| to.contains(&node))
    }

    /// Whether any partition is on `node`, or moving to it.
    pub fn hosts_anything(&self, node: u64) -> bool {
        self.topics.values().flat_map(|t| &t.partitions).any(|p| self.hosts(p, node))
    }

    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Every partition group with a replica on `node` (or moving to it), with its topic.
    pub fn partitions_of(&self, node: u64) -> impl Iterator<Item = (&TopicInfo, &PartitionInfo)> {
        self.topics
            .values()
            .flat_map(move |t| t.partitions.iter().filter(move |p| self.hosts(p, node)).map(move |p| (t, p)))
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
                let available = self.active_nodes().count() as u32;
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
                let topic = self.topics.remove(name).ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                for p in &topic.partitions {
                    self.moves.remove(&p.group);
                    self.moved_groups.remove(&p.group);
                }
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
                let available = self.active_nodes().count() as u32;
                if topic.replication_factor > available {
                    return Err(MetaError::InvalidReplicationFactor { requested: topic.replication_factor, available });
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
            MetaCommand::MovePartition { topic, partition, replicas } => {
                let p = self.partition(topic, *partition)?;
                self.check_move_target(replicas)?;
                if let Some(to) = self.moves.get(&p.group) {
                    return Err(MetaError::MoveInProgress {
                        topic: topic.clone(),
                        partition: *partition,
                        to: to.clone(),
                    });
                }
                if p.replicas != *replicas {
                    self.moves.insert(p.group, replicas.clone());
                }
            }
            MetaCommand::FinishMove { group, replicas } => {
                if self.moves.get(group) != Some(replicas) {
                    return Err(MetaError::InvalidReplicas(format!("group {group} is not moving to {replicas:?}")));
                }
                self.moves.remove(group);
                self.moved_groups.insert(*group);
                let p = self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()).find(|p| p.group == *group);
                if let Some(p) = p {
                    p.replicas = replicas.clone();
                }
            }
            MetaCommand::RemoveNode { node } => {
                let planned = self.plan_removal(*node)?;
                self.leaving.insert(*node);
                self.moves.extend(planned);
            }
            MetaCommand::ForgetNode { node } => {
                if !self.leaving.contains(node) {
                    return Err(MetaError::CannotRemoveNode { node: *node, reason: "it is not being removed".into() });
                }
                if self.hosts_anything(*node) {
                    return Err(MetaError::CannotRemoveNode {
                        node: *node,
                        reason: "it still hosts partition replicas".into(),
                    });
                }
                self.leaving.remove(node);
                self.nodes.remove(node);
                self.removed_nodes.insert(*node);
            }
            MetaCommand::RecoverQuorumLoss { survivor, groups } => {
                let lost: Vec<u64> = self.nodes.keys().copied().filter(|n| n != survivor).collect();
                for node in lost {
                    self.nodes.remove(&node);
                    self.removed_nodes.insert(node);
                }
                self.leaving.clear();
                self.moves.clear();
                for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
                    if groups.contains(&p.group) {
                        p.replicas = vec![*survivor];
                        self.moved_groups.insert(p.group);
                    }
                }
            }
        }
        Ok(())
    }

    /// Partition `partition` of `topic`.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<&PartitionInfo, MetaError> {
        let t = self.topics.get(topic).ok_or_else(|| MetaError::UnknownTopic(topic.to_string()))?;
        let unknown = || MetaError::UnknownPartition { topic: topic.to_string(), partition };
        usize::try_from(partition).ok().and_then(|i| t.partitions.get(i)).ok_or_else(unknown)
    }

    /// A partition may move to one or more distinct active nodes.
    fn check_move_target(&self, replicas: &[u64]) -> Result<(), MetaError> {
        if replicas.is_empty() {
            return Err(MetaError::InvalidReplicas("a partition needs at least one replica".into()));
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(MetaError::InvalidReplicas(format!("{replicas:?} names a node twice")));
        }
        if let Some(n) = replicas.iter().find(|n| !self.nodes.contains_key(n)) {
            return Err(MetaError::UnknownNode(*n));
        }
        if let Some(n) = replicas.iter().find(|n| self.leaving.contains(n)) {
            return Err(MetaError::InvalidReplicas(format!("node {n} is being removed")));
        }
        Ok(())
    }

    /// The moves that take every replica off `node`: each goes to the active node, not
    /// already a replica of that partition, that hosts the fewest replicas (counting moves
    /// planned so far; ties to the lowest id).
    fn plan_removal(&self, node: u64) -> Result<BTreeMap<u64, Vec<u64>>, MetaError> {
        let refuse = |reason: String| Err(MetaError::CannotRemoveNode { node, reason });
        if !self.nodes.contains_key(&node) {
            return Err(MetaError::UnknownNode(node));
        }
        if self.leaving.contains(&node) {
            return refuse("it is already being removed".into());
        }
        if self.active_nodes().all(|n| n == node) {
            return refuse("it is the last node of the cluster".into());
        }
        let mut load: BTreeMap<u64, usize> = self.active_nodes().filter(|n| *n != node).map(|n| (n, 0)).collect();
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            for n in self.moves.get(&p.group).unwrap_or(&p.replicas) {
                load.entry(*n).and_modify(|c| *c += 1);
            }
        }
        let mut planned = BTreeMap::new();
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(to) = self.moves.get(&p.group)
                    && (to.contains(&node) || p.replicas.contains(&node))
                {
                    return refuse(format!(
                        "partition {}-{} is moving to {to:?}; wait until that move has finished",
                        t.name, p.partition
                    ));
                }
                let Some(slot) = p.replicas.iter().position(|n| *n == node) else { continue };
                let Some((&to, _)) =
                    load.iter().filter(|(n, _)| !p.replicas.contains(n)).min_by_key(|(n, c)| (**c, **n))
                else {
                    return refuse(format!(
                        "partition {}-{} has {} replicas and no other node can take this one (add a node first, \
                         then remove this one)",
                        t.name,
                        p.partition,
                        p.replicas.len()
                    ));
                };
                *load.get_mut(&to).expect("a candidate") += 1;
                let mut replicas = p.replicas.clone();
                replicas[slot] = to;
                planned.insert(p.group, replicas);
            }
        }
        Ok(planned)
    }

    /// Appends `count` partitions with fresh group ids, replicas spread round-robin over the
    /// active nodes.
    fn add_partitions(&mut self, topic: &mut TopicInfo, count: u32) {
        let nodes: Vec<u64> = self.active_nodes().collect();
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

    /// Applies `cmds` in order; the answer to the last (Done if there is none).
    fn last_answer(s: &mut MetadataState, cmds: &[MetaCommand]) -> MetaResponse {
        cmds.iter().fold(MetaResponse::Done, |_, c| s.apply(c))
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
            assert_eq!(last_answer(&mut MetadataState::new(), &cmds), expected, "{name}");
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

    fn three_nodes_and(topics: &[(&str, u32, u32)]) -> MetadataState {
        let mut s = MetadataState::new();
        for id in [1, 2, 3] {
            s.apply(&node(id));
        }
        for (name, partitions, rf) in topics {
            assert_eq!(s.apply(&create(name, *partitions, *rf)), MetaResponse::Done);
        }
        s
    }

    fn replicas(s: &MetadataState, topic: &str) -> Vec<Vec<u64>> {
        s.topic(topic).unwrap().partitions.iter().map(|p| p.replicas.clone()).collect()
    }

    #[test]
    fn removal_table() {
        // (name, extra nodes, topics, node removed, expected answer)
        let refused = |node, reason: &str| {
            MetaResponse::Rejected(MetaError::CannotRemoveNode { node, reason: reason.to_string() })
        };
        type Case<'a> = (&'a str, Vec<u64>, Vec<(&'a str, u32, u32)>, u64, MetaResponse);
        let cases: Vec<Case> = vec![
            ("rf 1 moves to another node", vec![], vec![("t", 3, 1)], 2, MetaResponse::Done),
            ("rf 3 on four nodes", vec![4], vec![("t", 4, 3)], 1, MetaResponse::Done),
            (
                "rf 3 on three nodes has nowhere to go",
                vec![],
                vec![("t", 1, 3)],
                3,
                refused(
                    3,
                    "partition t-0 has 3 replicas and no other node can take this one (add a node first, then \
                     remove this one)",
                ),
            ),
            ("a node that hosts nothing", vec![], vec![], 2, MetaResponse::Done),
            ("unknown node", vec![], vec![], 9, MetaResponse::Rejected(MetaError::UnknownNode(9))),
        ];
        for (name, extra, topics, gone, expected) in cases {
            let mut s = three_nodes_and(&[]);
            for id in extra {
                s.apply(&node(id));
            }
            for (t, p, rf) in &topics {
                s.apply(&create(t, *p, *rf));
            }
            let before = s.clone();
            let answer = s.apply(&MetaCommand::RemoveNode { node: gone });
            assert_eq!(answer, expected, "{name}");
            if answer != MetaResponse::Done {
                assert_eq!(s, before, "{name}: a refused removal changes nothing");
                continue;
            }
            assert!(s.leaving.contains(&gone), "{name}");
            for (t, _, _) in &topics {
                for (p, now) in s.topic(t).unwrap().partitions.iter().zip(replicas(&before, t)) {
                    let to = s.moves.get(&p.group).cloned().unwrap_or(now.clone());
                    assert!(!to.contains(&gone), "{name}: {t}-{} still on node {gone}: {to:?}", p.partition);
                    assert_eq!(to.len(), now.len(), "{name}: replication factor kept");
                    assert_eq!(to.iter().collect::<BTreeSet<_>>().len(), to.len(), "{name}: distinct nodes");
                }
            }
        }
    }

    #[test]
    fn a_removed_node_is_forgotten_once_its_moves_finish() {
        let mut s = three_nodes_and(&[("t", 3, 1)]);
        assert_eq!(s.apply(&MetaCommand::RemoveNode { node: 2 }), MetaResponse::Done);
        let moving: Vec<(u64, Vec<u64>)> = s.moves.clone().into_iter().collect();
        assert_eq!(moving.len(), 1, "node 2 hosted one of the three partitions: {moving:?}");
        assert!(s.partitions_of(2).count() == 1 && s.hosts_anything(2));
        assert_eq!(
            s.apply(&MetaCommand::ForgetNode { node: 2 }),
            MetaResponse::Rejected(MetaError::CannotRemoveNode {
                node: 2,
                reason: "it still hosts partition replicas".into()
            })
        );
        assert_eq!(s.apply(&create("u", 6, 1)), MetaResponse::Done);
        assert!(s.topic("u").unwrap().partitions.iter().all(|p| p.replicas != [2]), "nothing new on a leaving node");
        let (group, to) = moving[0].clone();
        assert_eq!(s.apply(&MetaCommand::FinishMove { group, replicas: to.clone() }), MetaResponse::Done);
        assert!(s.moved_groups.contains(&group) && s.moves.is_empty());
        assert_eq!(s.apply(&MetaCommand::ForgetNode { node: 2 }), MetaResponse::Done);
        assert!(s.removed_nodes.contains(&2) && !s.nodes.contains_key(&2) && s.leaving.is_empty());
        assert_eq!(s.apply(&node(2)), MetaResponse::Rejected(MetaError::NodeRemoved(2)));
    }

    #[test]
    fn quorum_loss_recovery_keeps_the_survivors_partitions_and_removes_everyone_else() {
        // Two topics on three nodes, a move under way.
        let mut s = three_nodes_and(&[("t", 3, 2), ("u", 1, 3)]);
        let shrink = MetaCommand::MovePartition { topic: "u".into(), partition: 0, replicas: vec![1, 2] };
        assert_eq!(s.apply(&shrink), MetaResponse::Done);
        let t = |s: &MetadataState| replicas(s, "t");
        let on_1: Vec<u64> = s
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&1))
            .map(|p| p.group)
            .collect();
        let lost: Vec<(usize, Vec<u64>)> =
            t(&s).into_iter().enumerate().filter(|(_, r)| !r.contains(&1)).collect::<Vec<_>>();
        assert!(!lost.is_empty(), "some partition of t has no replica on node 1: {:?}", t(&s));
        let cmd = MetaCommand::RecoverQuorumLoss { survivor: 1, groups: on_1.clone() };
        assert_eq!(s.apply(&cmd), MetaResponse::Done);
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.removed_nodes, BTreeSet::from([2, 3]));
        assert!(s.moves.is_empty() && s.leaving.is_empty(), "nothing under way any more");
        for p in s.topics.values().flat_map(|t| t.partitions.iter()) {
            if on_1.contains(&p.group) {
                assert_eq!(p.replicas, vec![1], "group {}", p.group);
                assert!(s.moved_groups.contains(&p.group), "group {}: never created anew", p.group);
            }
        }
        for (i, before) in lost {
            assert_eq!(t(&s)[i], before, "t-{i} had no replica on the survivor: lost, as it was");
        }
        assert_eq!(s.apply(&node(2)), MetaResponse::Rejected(MetaError::NodeRemoved(2)));
    }

    #[test]
    fn move_partition_table() {
        let mv = |partition, replicas: Vec<u64>| MetaCommand::MovePartition { topic: "t".into(), partition, replicas };
        let cases: Vec<(&str, Vec<MetaCommand>, MetaResponse)> = vec![
            ("to another node", vec![mv(0, vec![3])], MetaResponse::Done),
            (
                "a node twice",
                vec![mv(0, vec![3, 3])],
                MetaResponse::Rejected(MetaError::InvalidReplicas("[3, 3] names a node twice".into())),
            ),
            ("an unknown node", vec![mv(0, vec![7])], MetaResponse::Rejected(MetaError::UnknownNode(7))),
            (
                "no replicas",
                vec![mv(0, vec![])],
                MetaResponse::Rejected(MetaError::InvalidReplicas("a partition needs at least one replica".into())),
            ),
            (
                "an unknown partition",
                vec![mv(5, vec![1])],
                MetaResponse::Rejected(MetaError::UnknownPartition { topic: "t".into(), partition: 5 }),
            ),
            (
                "while moving",
                vec![mv(0, vec![3]), mv(0, vec![1, 2])],
                MetaResponse::Rejected(MetaError::MoveInProgress { topic: "t".into(), partition: 0, to: vec![3] }),
            ),
            (
                "finish a move that is not under way",
                vec![MetaCommand::FinishMove { group: 1, replicas: vec![2] }],
                MetaResponse::Rejected(MetaError::InvalidReplicas("group 1 is not moving to [2]".into())),
            ),
        ];
        for (name, cmds, expected) in cases {
            assert_eq!(last_answer(&mut three_nodes_and(&[("t", 1, 1)]), &cmds), expected, "{name}");
        }
    }

    #[test]
    fn snapshots_written_before_moves_still_decode() {
        let s = three_nodes_and(&[("t", 2, 2)]);
        #[derive(Serialize)]
        struct Old<'a> {
            cluster_id: Option<Uuid>,
            nodes: &'a BTreeMap<u64, NodeInfo>,
            removed_nodes: &'a BTreeSet<u64>,
            topics: &'a BTreeMap<String, TopicInfo>,
            next_group_id: u64,
            next_producer_id: i64,
            version: u64,
        }
        let old = postcard::to_stdvec(&Old {
            cluster_id: s.cluster_id,
            nodes: &s.nodes,
            removed_nodes: &s.removed_nodes,
            topics: &s.topics,
            next_group_id: s.next_group_id,
            next_producer_id: s.next_producer_id,
            version: s.version,
        })
        .unwrap();
        assert_eq!(MetadataState::decode(&old).unwrap(), s);
        assert_eq!(MetadataState::decode(&postcard::to_stdvec(&s).unwrap()).unwrap(), s);
    }

    #[test]
    fn removed_node_id_is_refused() {
        let mut s = MetadataState::new();
        s.removed_nodes.insert(2);
        assert_eq!(s.apply(&node(2)), MetaResponse::Rejected(MetaError::NodeRemoved(2)));
    }
}
