//! The Raft types shared by every group: commands, responses, and openraft's type config.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::metadata::{MetaCommand, MetaResponse};

pub type NodeId = u64;
/// A Raft group (and WAL group): `__meta` is 0, partitions get ids from the metadata.
pub type GroupId = u64;

/// What a group's log entries carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Kafka record batches for a partition, exactly as the client sent them (compressed batches
    /// stay compressed). The log store stamps base offsets and the leader epoch into them.
    Produce { records: Bytes },
    /// Moves the partition's log start offset forward (DeleteRecords, retention).
    AdvanceLogStart { offset: u64 },
    /// A metadata change (`__meta` group only).
    Meta(MetaCommand),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Produce { records } => write!(f, "produce({} bytes)", records.len()),
            Command::AdvanceLogStart { offset } => write!(f, "advance-log-start({offset})"),
            Command::Meta(m) => write!(f, "meta:{m}"),
        }
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    Produced {
        base_offset: u64,
        last_offset: u64,
    },
    LogStart {
        offset: u64,
    },
    Meta(MetaResponse),
    /// The command could not be applied by this group (e.g. a metadata command in a partition).
    Invalid(String),
}

openraft::declare_raft_types!(
    /// Raft types for every Chronik group (partitions and `__meta`).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// Snapshots of both kinds of group are small serialized values.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Bytes>;

pub fn log_id(term: u64, leader: NodeId, index: u64) -> LogId {
    openraft::LogId::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: leader }, index)
}
