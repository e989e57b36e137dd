//! openraft's network for one group, over the node's `Transport` (`transport.rs`): a client per (group,
//! target node) that addresses every message to that group on that node. Transport failures
//! become the openraft errors that make it back off (unreachable) or retry (timeout).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, OptionalSend};

use super::transport::{Reply, Request, SharedTransport, SnapshotSourceCell, TransportError};
use super::{Command, Entry, GroupId, LogId, NodeId, Snapshot, TypeConfig, Vote};

/// How a group's messages to a peer go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSettings {
    /// The longest any message waits for its answer (`cluster.network.request_timeout_ms`).
    pub request_timeout: Duration,
    /// Appends to one follower on their way at once (`cluster.network.append_pipeline_depth`;
    /// 1: each waits for the answer to the one before).
    pub pipeline_depth: usize,
    /// The largest message the transport carries (`cluster.network.max_message_size`): an
    /// append of more entries than fit goes in parts.
    pub max_message_size: usize,
}

/// Room in a message for what is not the entries' records (framing, the request's fields,
/// each entry's id and kind).
pub(crate) const MESSAGE_ENVELOPE: usize = 64 << 10;

#[derive(Clone)]
pub(crate) struct NetworkFactory {
    transport: SharedTransport,
    group: GroupId,
    request_timeout: Duration,
    pipeline_depth: usize,
    /// Entries per append go up to this many bytes (see [`fit`]).
    append_budget: usize,
    /// A partition group's replica, which builds the snapshots (with their logs) to send.
    snapshots: SnapshotSourceCell,
}

impl NetworkFactory {
    pub(crate) fn new(transport: SharedTransport, group: GroupId, settings: PeerSettings) -> NetworkFactory {
        NetworkFactory {
            transport,
            group,
            request_timeout: settings.request_timeout,
            pipeline_depth: settings.pipeline_depth.max(1),
            append_budget: settings.max_message_size.saturating_sub(MESSAGE_ENVELOPE),
            snapshots: SnapshotSourceCell::default(),
        }
    }

    /// Where the replica registers itself as the source of its group's snapshots.
    pub(crate) fn snapshot_source(&self) -> SnapshotSourceCell {
        self.snapshots.clone()
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

/// How long the end of a snapshot session may take, in request timeouts: the receiver checks
/// the staged log and installs it before it answers.
const INSTALL_TIMEOUTS: u32 = 4;

impl PeerClient {
    async fn send_partition_snapshot(&self) -> Result<SnapshotResponse<TypeConfig>, TransportError> {
        let (node, group) = (self.target, self.net.group);
        let refused = |reason: String| TransportError::Refused { node, group, reason };
        let source = self.net.snapshots.get().and_then(std::sync::Weak::upgrade);
        let source = source.ok_or_else(|| refused("the replica is not ready to send a snapshot".into()))?;
        let mut parts = source.outgoing().await.map_err(refused)?;
        let session = uuid::Uuid::new_v4().as_u64_pair().0;
        let timeout = self.net.request_timeout;
        let send = |request: Request, timeout: Duration| self.net.transport.send(node, group, request, timeout);
        expect_ack(send(Request::SnapshotStart { session, header: parts.header }, timeout).await?, node, group)?;
        while let Some(chunk) = futures::StreamExt::next(&mut parts.chunks).await {
            let chunk = chunk.map_err(refused)?;
            expect_ack(send(Request::SnapshotChunk { session, chunk }, timeout).await?, node, group)?;
        }
        match send(Request::SnapshotEnd { session }, timeout * INSTALL_TIMEOUTS).await? {
            Reply::Snapshot(r) => Ok(r),
            _ => Err(refused("answered a snapshot's end with another kind of reply".into())),
        }
    }
}

fn expect_ack(reply: Reply, node: NodeId, group: GroupId) -> Result<(), TransportError> {
    match reply {
        Reply::Ack => Ok(()),
        _ => {
            Err(TransportError::Refused { node, group, reason: "answered a snapshot chunk with another reply".into() })
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
        let (rpc, cut) = fit(rpc, self.net.append_budget);
        let sent_last = rpc.entries.last().map(|e| e.log_id);
        match self.call(Request::Append(rpc), &option).await.map_err(rpc_error)? {
            // Only the part that fit went: openraft sends the rest next.
            Reply::Append(AppendEntriesResponse::Success) if cut.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(sent_last))
            }
            Reply::Append(r) => Ok(r),
            _ => Err(rpc_error(self.mismatch("append"))),
        }
    }

    /// Pipelined: up to `cluster.network.append_pipeline_depth` appends to the follower are on their way at once,
    /// each sent as openraft hands it over (the transport keeps their order on the wire, and
    /// the follower hands them to its Raft in that order), and their answers come back in
    /// order. openraft's default sends one and waits for its answer before the next. The
    /// stream ends after an answer that is not a full success (a conflict, a higher vote, a
    /// partial append): the appends sent after it no longer fit, and openraft starts again.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let (transport, target, group) = (self.net.transport.clone(), self.target, self.net.group);
        let timeout = option.hard_ttl().min(self.net.request_timeout);
        let (depth, budget) = (self.net.pipeline_depth, self.net.append_budget);
        Box::pin(async move {
            let sent = input.map(move |request| {
                // What did not fit in one message goes in the next stream (this one ends
                // after it, its answer not reaching the whole request's last entry).
                let (request, cut) = fit(request, budget);
                let prev = request.prev_log_id;
                let last = request.entries.last().map(|e| e.log_id).or(prev);
                let whole = cut.or(last);
                // Sent now, in the order openraft hands them over; answered in the background.
                let reply = transport.send(target, group, Request::Append(request), timeout);
                async move { (prev, last, whole, reply.await) }
            });
            // The stream ends right after an answer that stops it, without waiting for openraft's
            // next request: openraft waits for the end before it starts again from the answer,
            // and may have nothing more to send until then (a partial append would stall).
            // State: the answers still to read (None once stopped), the last entry matched.
            let answers =
                futures::stream::unfold((Some(sent.buffered(depth)), None), move |(replies, acked)| async move {
                    let mut replies = replies?;
                    let (prev, last, whole, reply) = replies.next().await?;
                    let answer = match reply {
                        // A conflict at an entry this stream already matched: the follower got
                        // this append before one sent ahead of it (the network reordered them,
                        // as the in-process router does). Not a conflict of logs: the stream
                        // ends, and openraft goes on from what was matched. (Passed on, it
                        // would look like a follower that lost its log.)
                        Ok(Reply::Append(r)) if r.is_conflict() && prev.is_some() && prev <= acked => return None,
                        Ok(Reply::Append(r)) => r.into_stream_result(prev, last),
                        Ok(_) => {
                            let reason = "answered an append with another kind of reply".into();
                            return Some((
                                Err(rpc_error(TransportError::Refused { node: target, group, reason })),
                                (None, acked),
                            ));
                        }
                        Err(e) => return Some((Err(rpc_error(e)), (None, acked))),
                    };
                    // Only a whole append lets the ones sent after it fit.
                    let going = matches!(&answer, Ok(matched) if *matched == whole);
                    let acked = answer.as_ref().map_or(acked, |matched| *matched);
                    Some((Ok(answer), (going.then_some(replies), acked)))
                });
            let answers: BoxStream<'s, _> = Box::pin(answers);
            Ok(answers)
        })
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
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        if self.net.group != crate::metadata::META_GROUP {
            // A partition's snapshot is its state plus its log: the replica builds it fresh
            // (files by reference, the WAL tail as entries) and it goes as a session of chunks.
            // openraft's snapshot alone would leave the follower without the records below it.
            let _ = (vote, snapshot);
            let transfer = async {
                let sent = self.send_partition_snapshot().await;
                if let Err(e) = &sent {
                    tracing::debug!(group = self.net.group, to = self.target, "sending a snapshot: {e}");
                }
                sent
            };
            return tokio::select! {
                r = transfer => r.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e))),
                closed = cancel => Err(StreamingError::Closed(closed)),
            };
        }
        match self.call(Request::Snapshot { vote, snapshot }, &option).await {
            Ok(Reply::Snapshot(r)) => Ok(r),
            Ok(_) => Err(StreamingError::Unreachable(Unreachable::new(&self.mismatch("snapshot")))),
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}

/// What an entry adds to an append on the wire, about: its records, or (small, rare) its
/// encoding.
fn wire_size(entry: &Entry) -> usize {
    const PER_ENTRY: usize = 64;
    PER_ENTRY
        + match &entry.payload {
            EntryPayload::Normal(Command::Produce { records } | Command::Import { records }) => records.len(),
            other => postcard::to_stdvec(other).map_or(PER_ENTRY, |v| v.len()),
        }
}

/// `request` cut to the entries that fit in `budget` bytes (at least one: every entry fits a
/// message, `Node::max_entry_bytes`), and the whole request's last entry if it was cut.
fn fit(
    mut request: AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> (AppendEntriesRequest<TypeConfig>, Option<LogId>) {
    let mut bytes = 0usize;
    let over = request.entries.iter().position(|e| {
        bytes = bytes.saturating_add(wire_size(e));
        bytes > budget
    });
    match over {
        Some(at) if request.entries.len() > 1 => {
            let whole = request.entries.last().map(|e| e.log_id);
            request.entries.truncate(at.max(1));
            (request, whole)
        }
        _ => (request, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append_of(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        let entries = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                log_id: crate::raft::log_id(1, i as u64 + 1),
                payload: EntryPayload::Normal(Command::Produce { records: Bytes::from(vec![0u8; *n]) }),
            })
            .collect();
        AppendEntriesRequest { vote: Vote::new_committed(1, 1), prev_log_id: None, entries, leader_commit: None }
    }

    #[test]
    fn an_append_larger_than_a_message_goes_in_parts() {
        // (entry sizes, budget, entries sent, cut)
        let cases: &[(&[usize], usize, usize, bool)] = &[
            (&[100, 100, 100], 1 << 20, 3, false),
            (&[1000, 1000, 1000], 2200, 2, true),
            (&[5000, 10, 10], 2200, 1, true), // the first goes alone even if over (validation)
            (&[5000], 2200, 1, false),
            (&[], 2200, 0, false),
        ];
        for (sizes, budget, sent, cut) in cases {
            let (request, whole) = fit(append_of(sizes), *budget);
            assert_eq!(request.entries.len(), *sent, "{sizes:?} in {budget}");
            assert_eq!(whole.is_some(), *cut, "{sizes:?} in {budget}");
            if *cut {
                assert_eq!(whole.map(|l| l.index), Some(sizes.len() as u64));
            }
        }
    }

    /// Acknowledges every append in full.
    struct Accepting;

    impl super::super::transport::Transport for Accepting {
        fn send(
            &self,
            _: NodeId,
            _: GroupId,
            _: Request,
            _: Duration,
        ) -> BoxFuture<'static, Result<Reply, TransportError>> {
            Box::pin(async { Ok(Reply::Append(AppendEntriesResponse::Success)) })
        }
    }

    /// openraft hands over one append too large for a message and then nothing more (no new
    /// entries, no new commit) until the stream ends; the stream must end after the first
    /// part's answer, or replication to that follower stalls for good.
    #[tokio::test]
    async fn a_stream_ends_after_a_partial_answer_without_waiting_for_more() {
        for depth in [1, 8] {
            let settings = PeerSettings {
                request_timeout: Duration::from_secs(1),
                pipeline_depth: depth,
                max_message_size: MESSAGE_ENVELOPE + 2200,
            };
            let mut client =
                PeerClient { net: NetworkFactory::new(std::sync::Arc::new(Accepting), 7, settings), target: 2 };
            let input = futures::stream::iter([append_of(&[1000, 1000, 1000])]).chain(futures::stream::pending());
            let option = RPCOption::new(Duration::from_secs(1));
            let mut answers = client.stream_append(Box::pin(input), option).await.unwrap();
            let first = answers.next().await.expect("an answer").unwrap().unwrap();
            assert_eq!(first.map(|l| l.index), Some(2), "the part that fit (depth {depth})");
            let end = tokio::time::timeout(Duration::from_secs(5), answers.next()).await;
            assert!(matches!(end, Ok(None)), "the stream ends (depth {depth})");
        }
    }
}
