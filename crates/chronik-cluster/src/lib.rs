//! chronik-cluster: every topic partition is its own Raft group (openraft) whose log is the
//! partition's log, stored in the shared chronik-wal; a `__meta` group holds the cluster
//! metadata. The consensus and storage logic here has no sockets.
//!
//! What the Kafka front end and the server use is re-exported here; the modules are private.
//! No openraft type crosses this boundary.
//!
//! - [`Node`] (`node`): the WAL, the metadata group, the registry of hosted replicas and the
//!   loops that follow the metadata.
//! - [`PartitionReplica`] (`partition`): one partition's Raft group, log and idempotence.
//! - [`PartitionLog`] (`storage`): offsets, high watermark and reads of a partition's log.
//! - [`MetadataState`] (`metadata`): topics, nodes, assignments, applied deterministically.
//! - [`Tasks`] (`tasks`): ownership and cancellation of every long-running task.
//! - [`ClusterError`] (`error`): what goes wrong, with its cause.

mod batch;
mod crash_point;
mod error;
mod identity;
mod liveness;
mod metadata;
mod net;
mod node;
mod partition;
mod producers;
mod raft;
mod records;
mod state_machine;
mod storage;
mod tasks;
mod topic_config;

pub use batch::{
    BATCH_HEADER_LEN, BatchError, BatchHeader, BatchSpan, import_last_offset, set_log_append_time, split_batches,
};
pub use error::{Cause, ClusterError};
pub use identity::{IdentityError, NodeIdentity};
pub use metadata::{
    MAX_PARTITIONS_PER_TOPIC, MetaCommand, MetaError, MetadataState, NodeInfo, PartitionInfo, TopicInfo,
    check_topic_name,
};
pub use net::PeerTraffic;
pub use node::{
    ClusterOptions, GroupSnapshot, LeadershipTarget, MemberView, Node, NodeOptions, PartitionLeader, PlannedMove,
    QuorumLossRecovery, SnapshotRound, recover_from_quorum_loss,
};
pub use partition::{
    IdempotenceError, OutgoingSnapshot, PartitionReplica, PendingAppend, ProducerBatch, ReplicationView, SharedAppend,
};
pub use raft::{GroupId, NodeId};
pub use records::{RecordMeta, Records};
pub use storage::compaction::{
    CodecError, CompactionOutcome, FilterError, IoBudget, MAX_RECORDS_BYTES, decompress, visit_records,
};
pub use storage::{EntryOffsets, PartitionLog, ReadBatches, ReadError, TransferError};
pub use tasks::{TaskFailure, Tasks};
pub use topic_config::{TOPIC_CONFIGS, TimestampType, TopicDefaults, TopicSettings, validate_topic_config};

/// Now, in Kafka's millisecond clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod storage_conformance;
