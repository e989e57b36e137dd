//! What a node is started with, and the openraft settings derived from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chronik_config::{Config, RaftConfig, WalSyncMode};
use chronik_wal::{SyncMode, WalOptions};
use openraft::{Config as OpenraftConfig, SnapshotPolicy};

use crate::error::ClusterError;
use crate::raft::NodeId;
use crate::topic_config::TopicDefaults;

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// host:port other nodes reach this node's Raft listener on.
    pub raft_addr: String,
    /// host:port Kafka clients are told to use.
    pub kafka_addr: String,
    pub wal: WalOptions,
    /// Raft timing and log compaction (`[cluster.raft]`).
    pub raft: RaftConfig,
    /// Broker-wide topic defaults that retention applies under each topic's overrides.
    pub topic_defaults: TopicDefaults,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// An idempotent producer idle this long is forgotten (`producer.id.expiration.ms`).
    pub producer_id_expiration: Duration,
    /// The WAL's window: beyond this many bytes of segments, the oldest entries move to their
    /// partitions' segment files.
    pub wal_retention_bytes: u64,
    /// Bytes per second compaction may read and write (0: no limit).
    pub compaction_io_bytes_per_second: u64,
    /// The longest a Raft message to another node waits for its answer.
    pub request_timeout: Duration,
    /// Appends to one follower on their way at once (1: one at a time).
    pub append_pipeline_depth: usize,
    /// Cluster mode (`chronik-server cluster`); `None` runs standalone, a cluster of one with
    /// no Raft listener.
    pub cluster: Option<ClusterOptions>,
}

/// How a clustered node reaches the others (`[cluster]` and `[cluster.network]`).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the Raft listener binds (`node_addr`).
    pub listen_addr: String,
    /// Nodes a new node joins through (`seed_nodes`); empty bootstraps a new cluster.
    pub seeds: Vec<(NodeId, String)>,
    pub connect_timeout: Duration,
    pub max_message_size: usize,
}

impl NodeOptions {
    /// The options a config file (already validated) describes.
    pub fn from_config(c: &Config) -> NodeOptions {
        let s = &c.cluster.storage;
        NodeOptions {
            data_dir: c.data_dir.clone(),
            node_id: c.cluster.node_id,
            raft_addr: c.cluster.advertised_node_addr().to_string(),
            kafka_addr: c.advertised_kafka_addr().to_string(),
            wal: WalOptions {
                segment_size: s.wal_segment_size,
                sync_mode: match s.wal_sync_mode {
                    WalSyncMode::Always => SyncMode::Always,
                    WalSyncMode::Periodic => SyncMode::Periodic(Duration::from_millis(s.wal_sync_interval_ms)),
                },
                page_cache_window: (s.wal_page_cache_bytes > 0).then_some(s.wal_page_cache_bytes),
                ..WalOptions::default()
            },
            raft: c.cluster.raft.clone(),
            topic_defaults: TopicDefaults::from_config(c),
            retention_check_interval: Duration::from_millis(c.kafka.retention_check_interval_ms),
            producer_id_expiration: Duration::from_millis(c.kafka.producer_id_expiration_ms),
            wal_retention_bytes: s.wal_retention_bytes,
            compaction_io_bytes_per_second: c.kafka.log_cleaner_io_max_bytes_per_second,
            request_timeout: Duration::from_millis(c.cluster.network.request_timeout_ms),
            append_pipeline_depth: c.cluster.network.append_pipeline_depth as usize,
            cluster: c.cluster.enabled.then(|| ClusterOptions {
                listen_addr: c.cluster.node_addr.clone(),
                seeds: c.cluster.seeds().into_iter().map(|s| (s.id, s.addr)).collect(),
                connect_timeout: Duration::from_millis(c.cluster.network.connect_timeout_ms),
                max_message_size: c.cluster.network.max_message_size as usize,
            }),
        }
    }

    /// How every group's messages to other nodes go.
    pub(crate) fn peer_settings(&self) -> crate::raft::PeerSettings {
        crate::raft::PeerSettings {
            request_timeout: self.request_timeout,
            pipeline_depth: self.append_pipeline_depth,
            max_message_size: self.cluster.as_ref().map_or(usize::MAX, |c| c.max_message_size),
        }
    }

    /// openraft settings of the metadata group: snapshots every `snapshot_threshold` entries,
    /// keeping `compaction_retain_entries` behind them.
    pub(super) fn metadata_raft(&self) -> Result<Arc<OpenraftConfig>, ClusterError> {
        let r = &self.raft;
        openraft_config(r, SnapshotPolicy::LogsSinceLast(r.snapshot_threshold), r.compaction_retain_entries, "meta")
    }

    /// openraft settings of partition groups. Their snapshots are small (state, and the log's
    /// files by reference), so taking them often bounds re-apply at restart; the log is the
    /// partition's data, so openraft never purges it behind a snapshot: only retention and
    /// moves into segment files do.
    pub(crate) fn partition_raft(&self) -> Result<Arc<OpenraftConfig>, ClusterError> {
        openraft_config(&self.raft, SnapshotPolicy::LogsSinceLast(10_000), u64::MAX, "partition")
    }
}

fn openraft_config(
    r: &RaftConfig,
    snapshot_policy: SnapshotPolicy,
    keep: u64,
    kind: &str,
) -> Result<Arc<OpenraftConfig>, ClusterError> {
    let c = OpenraftConfig {
        cluster_name: format!("chronik-{kind}"),
        heartbeat_interval: r.heartbeat_interval_ms,
        // openraft's leader lease is `election_timeout_max`: a follower neither starts nor
        // grants an election while it has heard from its leader within it, and a timer that
        // fires sooner does nothing. So the configured timeout is the lease (how long a silent
        // leader is presumed alive); the timers fire from two heartbeats on, and the first one
        // after the lease runs out starts the election. (A range of [t, 2t] made a failover
        // take two draws, 1.5-2 s at the 500 ms default.)
        election_timeout_min: (r.heartbeat_interval_ms * 2).min(r.election_timeout_ms - 1),
        election_timeout_max: r.election_timeout_ms,
        max_payload_entries: r.max_payload_entries,
        snapshot_policy,
        max_in_snapshot_log_to_keep: keep,
        // A node cut off and back must not force an election by its raised term: it asks
        // first (the transport carries a real pre-vote).
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| ClusterError::Settings(e.into()))?))
}
