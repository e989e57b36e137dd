//! openraft's network for one group, over the node's `Transport` (`transport.rs`): a client per (group,
//! target node) that addresses every message to that group on that node. Transport failures
//! become the openraft errors that make it back off (unreachable) or retry (timeout).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};

use super::transport::{Reply, Request, SharedTransport, TransportError};
use super::{GroupId, NodeId, Snapshot, TypeConfig, Vote};

#[derive(Clone)]
pub(crate) struct NetworkFactory {
    transport: SharedTransport,
    group: GroupId,
    /// The longest any message waits for its answer (`cluster.network.request_timeout_ms`).
    request_timeout: Duration,
}

impl NetworkFactory {
    pub(crate) fn new(transport: SharedTransport, group: GroupId, request_timeout: Duration) -> NetworkFactory {
        NetworkFactory { transport, group, request_timeout }
    }
}

pub(crate) struct PeerClient {
    net: NetworkFactory,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> PeerClient {
        PeerClient { net: self.clone(), target }
    }
}

impl PeerClient {
    async fn call(&self, request: Request, option: &RPCOption) -> Result<Reply, TransportError> {
        let timeout = option.hard_ttl().min(self.net.request_timeout);
        self.net.transport.send(self.target, self.net.group, request, timeout).await
    }

    /// A reply of the wrong kind means the far end is not speaking this protocol.
    fn mismatch(&self, what: &str) -> TransportError {
        TransportError::Refused {
            node: self.target,
            group: self.net.group,
            reason: format!("answered a {what} with another kind of reply"),
        }
    }
}

fn rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    // A timeout is reported as unreachable too, so openraft backs off instead of hammering a
    // node that is slow or gone.
    RPCError::Unreachable(Unreachable::new(&e))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Append(rpc), &option).await.map_err(rpc_error)? {
            Reply::Append(r) => Ok(r),
            _ => Err(rpc_error(self.mismatch("append"))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Vote(rpc), &option).await.map_err(rpc_error)? {
            Reply::Vote(r) => Ok(r),
            _ => Err(rpc_error(self.mismatch("vote"))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::PreVote(rpc), &option).await.map_err(rpc_error)? {
            Reply::Vote(r) => Ok(r),
            _ => Err(rpc_error(self.mismatch("pre-vote"))),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::TransferLeader(req), &option).await.map_err(rpc_error)? {
            Reply::TransferLeader(r) => Ok(r),
            _ => Err(rpc_error(self.mismatch("transfer-leader"))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        if self.net.group != crate::metadata::META_GROUP {
            // A partition's snapshot is its state plus its log, sent in chunks
            // (`partition/snapshot_transfer.rs`); the openraft snapshot alone would leave the
            // follower without the records below it. Until the transport carries those chunks,
            // a follower that needs a snapshot waits, and nothing is lost.
            let reason = "sending a partition snapshot (with its log) between nodes is not built yet".to_string();
            return Err(StreamingError::Unreachable(Unreachable::new(&TransportError::Unreachable {
                node: self.target,
                reason,
            })));
        }
        match self.call(Request::Snapshot { vote, snapshot }, &option).await {
            Ok(Reply::Snapshot(r)) => Ok(r),
            Ok(_) => Err(StreamingError::Unreachable(Unreachable::new(&self.mismatch("snapshot")))),
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}
