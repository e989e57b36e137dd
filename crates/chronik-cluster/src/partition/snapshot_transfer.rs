//! Snapshots that carry the partition's log, from one replica to another. The sender's
//! snapshot references its segment files (no copy is made to build it); sending streams them
//! and the WAL tail up to the snapshot point as chunks (`storage/transfer.rs`). The receiver
//! stages and checks the whole log before it hands the snapshot to Raft, and adopts the files
//! when Raft installs it; so a transfer that fails or is cut leaves the receiver as it was.
//!
//! The cluster transport carries the chunks between nodes; everything else is here.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::PartitionReplica;
use crate::error::ClusterError;
use crate::raft::{Snapshot, SnapshotMeta, Vote};
use crate::state_machine::PartitionSnapshot;
use crate::storage::{LogChunk, LogReceiver, LogSender, TransferError};

/// A snapshot on its way out: a header (what Raft installs: the sender's vote, the snapshot's
/// meta and state) and the log it covers, as encoded chunks to send in order after it.
pub struct OutgoingSnapshot {
    header: Bytes,
    log: LogSender,
}

impl OutgoingSnapshot {
    pub fn header(&self) -> Bytes {
        self.header.clone()
    }

    /// The log, chunk by chunk (blocking reads: run it off the async threads).
    pub fn into_chunks(self) -> impl Iterator<Item = Result<Bytes, TransferError>> {
        self.log.map(|c| c.map(|c| c.encode()))
    }
}

/// The header's fields.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
    state: Bytes,
}

impl PartitionReplica {
    /// A snapshot at the group's applied position (built first unless the last one is there)
    /// with its log, in chunks of about `chunk_bytes`. Building it copies nothing: the state is
    /// small and the files are sent as they are.
    pub async fn outgoing_snapshot(&self, chunk_bytes: usize) -> Result<OutgoingSnapshot, ClusterError> {
        let group = self.group;
        let applied = self.raft.metrics().borrow_watched().last_applied.map(|l| l.index);
        if let Some(applied) = applied {
            self.snapshot_through(applied).await?;
        }
        let snapshot = self
            .raft
            .get_snapshot()
            .await
            .map_err(|e| ClusterError::stopped(group, e))?
            .ok_or_else(|| ClusterError::Internal(format!("group {group}: no snapshot after building one")))?;
        let state = PartitionSnapshot::decode(&snapshot.snapshot)
            .map_err(|e| ClusterError::io(format!("group {group}: the stored snapshot"), e))?;
        let log = self.log.transfer(state.next_offset, chunk_bytes)?;
        let vote = self.raft.metrics().borrow_watched().vote;
        let header = SnapshotHeader { vote, meta: snapshot.meta, state: snapshot.snapshot };
        let header =
            postcard::to_stdvec(&header).map_err(|e| ClusterError::Internal(format!("a snapshot header: {e}")))?;
        Ok(OutgoingSnapshot { header: header.into(), log })
    }

    /// Installs a snapshot another replica sent: its header, then its log as encoded chunks in
    /// order. The log is staged and checked whole before Raft sees the snapshot; an error
    /// leaves this replica's log as it was.
    pub async fn install_snapshot(
        &self,
        header: &[u8],
        mut chunks: impl Stream<Item = Bytes> + Unpin,
    ) -> Result<(), ClusterError> {
        let group = self.group;
        let bad = |what: String| TransferError::Protocol(format!("group {group}: {what}"));
        let SnapshotHeader { vote, meta, state } =
            postcard::from_bytes(header).map_err(|e| bad(format!("a snapshot header: {e}")))?;
        let data = PartitionSnapshot::decode(&state).map_err(|e| bad(format!("a snapshot's state: {e}")))?;
        let last = meta.last_log_id.map_or((0, 0), |l| (l.index, l.leader_id.term));
        let dir = self.log.segments_dir().to_path_buf();
        let mut receiver = blocking(move || LogReceiver::start(&dir, last)).await?;
        while let Some(encoded) = chunks.next().await {
            let chunk = LogChunk::decode(encoded)?;
            receiver = blocking(move || receiver.accept(chunk).map(|()| receiver)).await?;
        }
        blocking(move || receiver.finish(data.next_offset)).await?;
        let response = self
            .raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: state })
            .await
            .map_err(|e| ClusterError::stopped(group, e))?;
        if response.vote != vote {
            // Refused: this replica has seen a newer leader. The staged files go at the next
            // start or with the next transfer.
            return Err(ClusterError::NotLeader { group, leader: Some(response.vote.leader_id().voted_for) });
        }
        Ok(())
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Internal(format!("a transfer task: {e}")))?
        .map_err(Into::into)
}
