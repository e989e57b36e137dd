//! What every handler works against: the node, the broker settings and topic helpers.

use std::sync::Arc;
use std::time::Duration;

use chronik_cluster::{
    ClusterError, MAX_PARTITIONS_PER_TOPIC, MetaCommand, MetaError, Node, NodeOptions, PartitionReplica, Tasks,
    TopicDefaults, TopicInfo, TopicSettings, check_topic_name, validate_topic_config,
};
use chronik_config::Config;
use kafka_protocol::ResponseError;

use crate::error::ApiError;
use crate::groups::{GroupCoordinator, GroupSettings, OffsetStoreError};
use crate::request_metrics::RequestMetrics;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub auto_create_topics: bool,
    pub num_partitions: u32,
    pub default_replication_factor: u32,
    /// Most partitions the cluster may hold.
    pub max_partitions: u32,
    pub max_request_size: usize,
    /// Most record bytes in one Fetch response (the first batch excepted).
    pub fetch_max_bytes: usize,
    /// Connections at once, per client IP, and bytes of requests read but not yet answered.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub queued_max_request_bytes: usize,
    pub topic_defaults: TopicDefaults,
    /// In a cluster, how long a Metadata answer waits for partitions without a leader to get
    /// one, where a majority of their replicas live (an election after a node died takes
    /// about an election timeout). A client told LEADER_NOT_AVAILABLE asks again only after
    /// its backoff, so waiting here, bounded, gets its writes going sooner.
    pub metadata_leader_wait: std::time::Duration,
}

impl BrokerConfig {
    pub fn from_config(c: &Config) -> BrokerConfig {
        BrokerConfig {
            auto_create_topics: c.kafka.auto_create_topics,
            num_partitions: c.kafka.num_partitions,
            default_replication_factor: c.kafka.default_replication_factor,
            max_partitions: c.kafka.max_partitions,
            max_request_size: c.kafka.max_request_size as usize,
            fetch_max_bytes: c.kafka.fetch_max_bytes as usize,
            max_connections: c.kafka.max_connections as usize,
            max_connections_per_ip: c.kafka.max_connections_per_ip as usize,
            queued_max_request_bytes: c.kafka.queued_max_request_bytes as usize,
            topic_defaults: TopicDefaults::from_config(c),
            metadata_leader_wait: if c.cluster.enabled {
                std::time::Duration::from_millis(2 * c.cluster.raft.election_timeout_ms)
            } else {
                std::time::Duration::ZERO
            },
        }
    }
}

pub struct Broker {
    pub node: Arc<Node>,
    pub config: BrokerConfig,
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Arc<RequestMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the node: {0}")]
    Node(#[from] ClusterError),
    #[error("starting the group coordinator: {0}")]
    Groups(#[from] OffsetStoreError),
}

/// Options of a topic creation (CreateTopics, or auto-creation with the defaults).
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub configs: std::collections::BTreeMap<String, String>,
}

impl Broker {
    /// Starts the node and the group coordinator a config describes, their tasks in `tasks`.
    /// On failure, whatever had started is stopped again.
    pub async fn start(config: &Config, tasks: &Tasks) -> Result<Arc<Broker>, StartError> {
        let node = Node::start(NodeOptions::from_config(config), tasks).await?;
        let groups =
            match GroupCoordinator::start(&node, GroupSettings::from_config(config), config.cluster.enabled, tasks)
                .await
            {
                Ok(groups) => groups,
                Err(e) => {
                    tasks.shutdown().await;
                    if let Err(stop) = node.shutdown().await {
                        tracing::warn!("stopping the node after a failed start: {stop}");
                    }
                    return Err(e.into());
                }
            };
        Ok(Arc::new(Broker { node, groups, config: BrokerConfig::from_config(config), metrics: Arc::default() }))
    }

    /// Refuses a client's change to a topic the broker keeps for itself (`__consumer_offsets`):
    /// its records must stay decodable and its history complete, or committed offsets are lost.
    pub fn refuse_internal(&self, topic: &str, what: &str) -> Result<(), ApiError> {
        if topic == crate::groups::OFFSETS_TOPIC {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!("{what} {topic} is not allowed: the broker keeps it"),
            ));
        }
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.node.with_metadata(|m| m.topic(name).cloned())
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<TopicInfo> {
        self.node.with_metadata(|m| m.topic_by_id(id).cloned())
    }

    pub fn settings(&self, topic: &TopicInfo) -> TopicSettings {
        TopicSettings::resolve(&self.config.topic_defaults, &topic.configs)
    }

    pub fn live_nodes(&self) -> u32 {
        self.node.with_metadata(|m| m.nodes.len() as u32)
    }

    /// The local replica of a partition, if this node leads it.
    pub fn leader_partition(&self, topic: &str, partition: i32) -> Result<Arc<PartitionReplica>, ApiError> {
        let Some(group) = self.node.partition(topic, partition) else {
            let exists = self.topic(topic).is_some_and(|t| t.partitions.iter().any(|p| p.partition == partition));
            return Err(if exists {
                ApiError::new(ResponseError::NotLeaderOrFollower, "this node holds no replica of the partition")
            } else {
                ApiError::new(ResponseError::UnknownTopicOrPartition, format!("unknown partition {topic}-{partition}"))
            });
        };
        if !group.is_leader(self.node.node_id()) {
            return Err(ApiError::new(ResponseError::NotLeaderOrFollower, "not the partition leader"));
        }
        Ok(group)
    }

    /// Checks a topic creation without doing it.
    pub fn check_new_topic(&self, t: &NewTopic) -> Result<(), ApiError> {
        check_topic_name(&t.name).map_err(ApiError::from)?;
        if self.topic(&t.name).is_some() {
            return Err(MetaError::TopicExists(t.name.clone()).into());
        }
        if t.partitions == 0 || t.partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("partition count must be within 1..={}", MAX_PARTITIONS_PER_TOPIC),
            ));
        }
        self.check_partition_budget(t.partitions)?;
        let live = self.live_nodes();
        if t.replication_factor == 0 || t.replication_factor > live {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {} is larger than the {live} live node(s)", t.replication_factor),
            ));
        }
        for (k, v) in &t.configs {
            validate_topic_config(k, v).map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))?;
        }
        Ok(())
    }

    /// Refuses `more` new partitions if the cluster would exceed `max_partitions`.
    pub fn check_partition_budget(&self, more: u32) -> Result<(), ApiError> {
        let existing: u32 = self.node.with_metadata(|m| m.topics.values().map(|t| t.partitions.len() as u32).sum());
        if existing.saturating_add(more) > self.config.max_partitions {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "{more} more partitions would exceed max_partitions ({}; {existing} exist)",
                    self.config.max_partitions
                ),
            ));
        }
        Ok(())
    }

    /// Creates a topic through the metadata group and waits (up to `timeout`) for its
    /// partitions to have leaders.
    pub async fn create_topic(&self, t: NewTopic, timeout: Duration) -> Result<TopicInfo, ApiError> {
        self.check_new_topic(&t)?;
        self.node
            .propose_meta(MetaCommand::CreateTopic {
                name: t.name.clone(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs,
            })
            .await?;
        self.node.wait_for_topic(&t.name, timeout).await;
        self.topic(&t.name)
            .ok_or_else(|| ApiError::new(ResponseError::UnknownTopicOrPartition, "topic vanished after creation"))
    }

    /// Creates `name` with the broker defaults (Metadata auto-creation).
    pub async fn auto_create(&self, name: &str) -> Result<TopicInfo, ApiError> {
        let t = NewTopic {
            name: name.to_string(),
            partitions: self.config.num_partitions,
            replication_factor: self.config.default_replication_factor.min(self.live_nodes()).max(1),
            configs: Default::default(),
        };
        match self.create_topic(t, Duration::from_secs(5)).await {
            // Another request created it first.
            Err(e) if e.code == ResponseError::TopicAlreadyExists => {
                self.topic(name).ok_or_else(|| ApiError::new(ResponseError::UnknownTopicOrPartition, "topic vanished"))
            }
            other => other,
        }
    }
}

/// The host and port of a `host:port` address (what clients are told to connect to).
pub fn host_port(addr: &str) -> (String, i32) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().unwrap_or(9092)),
        None => (addr.to_string(), 9092),
    }
}
