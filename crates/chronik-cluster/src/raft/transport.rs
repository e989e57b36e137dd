//! How Raft messages travel between nodes, as one abstraction every group shares: a message is
//! addressed to (node, group), and the receiving node hands it to that group's Raft. The TCP
//! transport (one connection per pair of nodes) and the in-process router of the tests
//! (`sim.rs`: cut links, isolate nodes, drop and delay messages) are both a [`Transport`];
//! openraft sees neither (`network.rs` adapts it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::Raft;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;

use uuid::Uuid;

use super::{GroupId, NodeId, Snapshot, TypeConfig, Vote};
use crate::metadata::{MetaCommand, MetaResponse, NodeInfo};

/// A Raft message for one group.
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A whole snapshot of a group whose snapshot is its state (the metadata group).
    Snapshot {
        vote: Vote,
        snapshot: Snapshot,
    },
    /// A partition's snapshot carries its log, so it travels as a session: its header, the
    /// log's chunks in order, then the end, which answers once the receiver installed it.
    SnapshotStart {
        session: u64,
        header: Bytes,
    },
    SnapshotChunk {
        session: u64,
        chunk: Bytes,
    },
    SnapshotEnd {
        session: u64,
    },
    /// A new node asks to join the cluster (metadata group only; the one request a node that
    /// does not know the cluster id yet may send).
    Join(NodeInfo),
    /// A metadata change proposed on a follower, for the leader to make.
    Propose(MetaCommand),
    /// Node-level (group [`NODE_GROUP`]): the partition groups the sender leads, sent to every
    /// node periodically, so a node knows the leaders of partitions it does not host.
    Leading {
        from: NodeId,
        leads: Vec<Lead>,
    },
    /// Node-level: the sender lives (the heartbeat between two reports; `liveness.rs`).
    Alive {
        from: NodeId,
    },
    /// To a group's leader: hand the leadership to voter `to` (an operator's transfer made
    /// through another node); answered once `to` leads.
    HandOver {
        to: NodeId,
    },
    /// To the metadata leader: make learner `node` a voter (an operator's promotion made
    /// through another node); answered as a proposal is, a refusal in its response.
    Promote {
        node: NodeId,
    },
}

/// The pseudo-group of messages for the node itself rather than one of its groups.
pub(crate) const NODE_GROUP: GroupId = u64::MAX;

/// One group the sending node leads: its term (the Kafka leader epoch) and in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lead {
    pub group: GroupId,
    pub term: u64,
    pub isr: Vec<NodeId>,
}

/// The answer to a [`Request`], of the matching kind.
pub(crate) enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    /// A snapshot session's start or chunk was taken.
    Ack,
    /// The joining node was added; this is the cluster it joined.
    Joined {
        cluster_id: Uuid,
    },
    /// What the leader's metadata answered to a forwarded proposal, and the entry's Raft index
    /// (the proposer waits until it has applied that far itself).
    Proposed {
        response: MetaResponse,
        index: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TransportError {
    /// The message did not reach the node (no connection, link down, dropped): Raft backs
    /// off and tries again.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error("node {node} did not answer within {after:?}")]
    Timeout { node: NodeId, after: Duration },
    /// The node got the message and could not handle it (the group is not there, or stopped).
    #[error("node {node}, group {group}: {reason}")]
    Refused { node: NodeId, group: GroupId, reason: String },
}

/// Sends Raft messages from this node to others.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Delivers `request` to `group` on node `to` and waits (at most `timeout`) for its reply.
    fn send(
        &self,
        to: NodeId,
        group: GroupId,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Reply, TransportError>>;
}

/// A standalone node's transport: every group has this node as its only voter, so openraft
/// never sends; if it did, the message is refused as unreachable, saying why.
pub(crate) struct NoTransport;

impl Transport for NoTransport {
    fn send(
        &self,
        to: NodeId,
        _: GroupId,
        _: Request,
        _: Duration,
    ) -> BoxFuture<'static, Result<Reply, TransportError>> {
        let reason = "Raft transport between nodes is not supported in standalone mode".to_string();
        Box::pin(async move { Err(TransportError::Unreachable { node: to, reason }) })
    }
}

/// How long a leadership transfer asked for over the transport waits for the new leader.
pub(crate) const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The receiving end: one group's Raft on this node, handed the messages addressed to it.
pub(crate) trait Inbound: Send + Sync + 'static {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Reply, String>>;
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = bytes::Bytes>> Inbound for Raft<TypeConfig, SM> {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Reply, String>> {
        let raft = self.clone();
        Box::pin(async move {
            match request {
                Request::Append(r) => raft.append_entries(r).await.map(Reply::Append).map_err(|e| e.to_string()),
                Request::Vote(r) => raft.vote(r).await.map(Reply::Vote).map_err(|e| e.to_string()),
                Request::PreVote(r) => raft.pre_vote(r).await.map(Reply::Vote).map_err(|e| e.to_string()),
                Request::TransferLeader(r) => {
                    raft.handle_transfer_leader(r).await.map(Reply::TransferLeader).map_err(|e| e.to_string())
                }
                Request::Snapshot { vote, snapshot } => {
                    raft.install_full_snapshot(vote, snapshot).await.map(Reply::Snapshot).map_err(|e| e.to_string())
                }
                Request::SnapshotStart { .. } | Request::SnapshotChunk { .. } | Request::SnapshotEnd { .. } => {
                    Err("this group takes no snapshot sessions (a partition's replica does)".into())
                }
                Request::Join(_)
                | Request::Propose(_)
                | Request::Leading { .. }
                | Request::Alive { .. }
                | Request::HandOver { .. }
                | Request::Promote { .. } => {
                    Err("joins, proposals, hand-overs, promotions and leadership reports are not for a group's Raft"
                        .into())
                }
            }
        })
    }
}

/// A shared transport.
pub(crate) type SharedTransport = Arc<dyn Transport>;

/// A partition's snapshot as the sender hands it to the network: the header and the log's
/// chunks, in order.
pub(crate) struct OutgoingParts {
    pub header: Bytes,
    pub chunks: futures::stream::BoxStream<'static, Result<Bytes, String>>,
}

/// Where a partition group's network gets the snapshot (with its log) to send: its replica,
/// known once the replica is built (after its Raft).
pub(crate) trait SnapshotSource: Send + Sync + 'static {
    fn outgoing(self: Arc<Self>) -> BoxFuture<'static, Result<OutgoingParts, String>>;
}

/// Set once the replica exists; the network holds it weakly (the replica owns the network).
pub(crate) type SnapshotSourceCell = Arc<std::sync::OnceLock<std::sync::Weak<dyn SnapshotSource>>>;
