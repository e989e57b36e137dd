//! Chronik's configuration: `chronik.toml`, overridden by `CHRONIK_*` environment variables,
//! over built-in defaults (env > file > defaults).
//!
//! Every key is listed once in [`keys::KEYS`] (its path, environment variable, kind and meaning);
//! docs/CONFIGURATION.md is checked against that table and against [`Config::default`] by a test.

mod error;
pub mod keys;
mod load;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, ConfigErrors, Origin};
pub use load::{load, load_from_env, resolve_config_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub kafka_addr: String,
    pub advertised_kafka_addr: Option<String>,
    pub admin_addr: String,
    pub log_level: String,
    pub kafka: KafkaConfig,
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            kafka_addr: "127.0.0.1:9092".into(),
            advertised_kafka_addr: None,
            admin_addr: "127.0.0.1:8080".into(),
            log_level: "info".into(),
            kafka: KafkaConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Config {
    /// The address clients are told to connect to.
    pub fn advertised_kafka_addr(&self) -> &str {
        self.advertised_kafka_addr.as_deref().unwrap_or(&self.kafka_addr)
    }
}

/// Broker-wide Kafka defaults (topics can override the log settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub auto_create_topics: bool,
    pub num_partitions: u32,
    pub default_replication_factor: u32,
    pub max_partitions: u32,
    pub max_request_size: u64,
    pub message_max_bytes: u64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub retention_check_interval_ms: u64,
    pub log_message_timestamp_before_max_ms: i64,
    pub log_message_timestamp_after_max_ms: i64,
    pub fetch_max_bytes: u64,
    pub offset_metadata_max_bytes: u64,
    pub group_initial_rebalance_delay_ms: u64,
    pub producer_id_expiration_ms: u64,
    pub log_cleaner_io_max_bytes_per_second: u64,
    pub offsets_topic_segment_bytes: u64,
    pub log_cleaner_max_compaction_lag_ms: i64,
    pub max_connections: u64,
    pub max_connections_per_ip: u64,
    pub queued_max_request_bytes: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: 1,
            max_partitions: 10_000,
            max_request_size: 100 << 20,
            message_max_bytes: 1_048_588,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            retention_check_interval_ms: 30_000,
            log_message_timestamp_before_max_ms: i64::MAX,
            log_message_timestamp_after_max_ms: 3_600_000,
            fetch_max_bytes: 55 << 20,
            offset_metadata_max_bytes: 4096,
            group_initial_rebalance_delay_ms: 3000,
            producer_id_expiration_ms: 86_400_000,
            log_cleaner_io_max_bytes_per_second: 100 << 20,
            offsets_topic_segment_bytes: 100 << 20,
            log_cleaner_max_compaction_lag_ms: i64::MAX,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            queued_max_request_bytes: 512 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub enabled: bool,
    pub node_id: u64,
    pub node_addr: String,
    pub advertised_node_addr: Option<String>,
    pub seed_nodes: Vec<String>,
    pub raft: RaftConfig,
    pub network: NetworkConfig,
    pub storage: StorageConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            node_id: 1,
            node_addr: "0.0.0.0:9093".into(),
            advertised_node_addr: None,
            seed_nodes: Vec::new(),
            raft: RaftConfig::default(),
            network: NetworkConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl ClusterConfig {
    /// Seed nodes as (node id, address); `validate` has already checked the format.
    pub fn seeds(&self) -> Vec<SeedNode> {
        self.seed_nodes.iter().filter_map(|s| SeedNode::parse(s).ok()).collect()
    }

    pub fn advertised_node_addr(&self) -> &str {
        self.advertised_node_addr.as_deref().unwrap_or(&self.node_addr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedNode {
    pub id: u64,
    pub addr: String,
}

impl SeedNode {
    /// Parses `id@host:port`.
    pub fn parse(s: &str) -> Result<SeedNode, String> {
        let (id, addr) = s.split_once('@').ok_or_else(|| format!("`{s}` is not of the form id@host:port"))?;
        let id: u64 = id.parse().map_err(|_| format!("`{s}`: node id `{id}` is not a number"))?;
        if !(1..=65535).contains(&id) {
            return Err(format!("`{s}`: node id must be between 1 and 65535"));
        }
        validate::check_host_port(addr).map_err(|e| format!("`{s}`: {e}"))?;
        Ok(SeedNode { id, addr: addr.to_string() })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_payload_entries: u64,
    pub snapshot_threshold: u64,
    pub compaction_retain_entries: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_timeout_ms: 500,
            heartbeat_interval_ms: 100,
            max_payload_entries: 300,
            snapshot_threshold: 5000,
            compaction_retain_entries: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub max_message_size: u64,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub append_pipeline_depth: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            max_message_size: 128 << 20,
            connect_timeout_ms: 3000,
            request_timeout_ms: 5000,
            append_pipeline_depth: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalSyncMode {
    Always,
    Periodic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub wal_sync_mode: WalSyncMode,
    pub wal_sync_interval_ms: u64,
    pub wal_segment_size: u64,
    pub wal_page_cache_bytes: u64,
    pub wal_retention_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            wal_sync_mode: WalSyncMode::Always,
            wal_sync_interval_ms: 100,
            wal_segment_size: 128 << 20,
            wal_page_cache_bytes: 4 << 30,
            wal_retention_bytes: 4 << 30,
        }
    }
}
