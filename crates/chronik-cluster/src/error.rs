//! The error every fallible operation of this crate returns. Each variant keeps its cause (a
//! typed source, never a flattened string), so the Kafka front end maps it to an error code by
//! matching, not by guessing (chronik-kafka's `error.rs`).

use std::path::PathBuf;

use openraft::errors::{ClientWriteError, RaftError};

use crate::identity::IdentityError;
use crate::metadata::MetaError;
use crate::raft::{GroupId, NodeId, Response, TypeConfig};

/// A cause that comes from a library whose types stay inside this crate (openraft).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("WAL: {0}")]
    Wal(#[from] chronik_wal::WalError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another chronik-server process")]
    Locked(PathBuf),
    /// The data directory holds something this node must not adopt (named in the message).
    #[error("{0}")]
    DataDir(String),
    /// Raft settings openraft refuses.
    #[error("Raft settings: {0}")]
    Settings(#[source] Cause),
    /// This replica cannot take the write; `leader` is who can, when known.
    #[error("this node is not the leader of Raft group {group} (leader: {leader:?})")]
    NotLeader { group: GroupId, leader: Option<NodeId> },
    /// The metadata group refused the change.
    #[error(transparent)]
    Rejected(#[from] MetaError),
    /// The group's state machine refused the entry (a batch that does not follow the log).
    #[error("Raft group {group} refused the entry: {reason}")]
    EntryRefused { group: GroupId, reason: String },
    #[error("Raft group {group} stopped: {source}")]
    GroupStopped {
        group: GroupId,
        #[source]
        source: Cause,
    },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A peer could not be reached (the cluster transport; a node of one never sees it).
    #[error("node {node} is unreachable: {source}")]
    PeerUnreachable {
        node: NodeId,
        #[source]
        source: Cause,
    },
    /// The node a request was forwarded to (the metadata leader) could not make it.
    #[error("node {node} refused the forwarded request: {reason}")]
    Forwarded { node: NodeId, reason: String },
    /// A node could not join the cluster through its seeds (each seed's answer is named).
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// A partition's log could not be read or moved (its WAL or segment files).
    #[error(transparent)]
    Log(#[from] crate::storage::ReadError),
    /// A snapshot's log could not be sent or received (a replica catching up).
    #[error(transparent)]
    Transfer(#[from] crate::storage::TransferError),
    /// A leadership transfer named a node that does not vote in the group.
    #[error("node {node} is not a voter of the group, so it cannot lead it")]
    NotVoter { node: NodeId },
    /// This node was removed from its cluster (its id is tombstoned for good).
    #[error(
        "node {node} was removed from cluster {cluster} and cannot serve again: to bring this machine back, \
         start it with a node_id never used in the cluster and an empty data_dir, and it joins as a new node"
    )]
    Removed { node: NodeId, cluster: uuid::Uuid },
    /// A state the code does not expect (a bug): reported, never guessed into a client error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ClusterError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> ClusterError {
        ClusterError::Io { context: context.into(), source }
    }

    pub(crate) fn stopped(group: GroupId, source: impl Into<Cause>) -> ClusterError {
        ClusterError::GroupStopped { group, source: source.into() }
    }

    /// A message to another node that did not get its answer.
    pub(crate) fn from_transport(node: NodeId, e: crate::raft::transport::TransportError) -> ClusterError {
        use crate::raft::transport::TransportError;
        match e {
            TransportError::Refused { reason, .. } => ClusterError::Forwarded { node, reason },
            TransportError::Timeout { after, .. } => {
                ClusterError::Timeout(format!("node {node} to answer ({after:?})"))
            }
            unreachable @ TransportError::Unreachable { .. } => {
                ClusterError::PeerUnreachable { node, source: Box::new(unreachable) }
            }
        }
    }

    /// A hand-over of `group`'s leadership to `to` that did not happen.
    pub(crate) fn from_hand_over(group: GroupId, to: NodeId, e: crate::raft::HandOverRefused) -> ClusterError {
        use crate::raft::HandOverRefused;
        match e {
            HandOverRefused::Elsewhere { leader } => ClusterError::NotLeader { group, leader },
            HandOverRefused::NoVote => ClusterError::NotVoter { node: to },
            HandOverRefused::Untaken { after } => {
                ClusterError::Timeout(format!("node {to} to take the leadership of group {group} ({after:?})"))
            }
        }
    }

    /// A client write openraft did not take.
    pub(crate) fn from_write(group: GroupId, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ClusterError {
        match e {
            RaftError::APIError(e) => ClusterError::from_refused_write(group, e),
            RaftError::Fatal(f) => ClusterError::stopped(group, f),
        }
    }

    pub(crate) fn from_refused_write(group: GroupId, e: ClientWriteError<TypeConfig>) -> ClusterError {
        match e {
            ClientWriteError::ForwardToLeader(f) | ClientWriteError::LogEntryDiscarded(f) => {
                ClusterError::NotLeader { group, leader: f.leader_id }
            }
            // Membership changes and preconditions: no write of this crate uses either.
            other => ClusterError::Internal(format!("group {group}: write refused: {other}")),
        }
    }

    /// What a write answered when that is not what it asked for: the group refused the entry,
    /// or the code is wrong.
    pub(crate) fn unexpected(group: GroupId, response: Response) -> ClusterError {
        match response {
            Response::Invalid(reason) => ClusterError::EntryRefused { group, reason },
            other => ClusterError::Internal(format!("group {group} answered {other:?}")),
        }
    }
}
