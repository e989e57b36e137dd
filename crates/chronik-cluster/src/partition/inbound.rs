//! A partition replica's side of the Raft transport: what peers send it. Raft's messages go to
//! its Raft; a snapshot comes as a session (header, the log's chunks, end) that feeds
//! [`PartitionReplica::install_snapshot`], so the log arrives with the snapshot and is checked
//! whole before Raft sees it. The sending side is [`SnapshotSource`]: the replica builds a
//! fresh snapshot with its log when its group's network needs one.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::PartitionReplica;
use crate::error::ClusterError;
use crate::raft::transport::{Inbound, OutgoingParts, Reply, Request, SnapshotSource};

/// Chunks of a snapshot's log, as sent.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks a receiving session holds before the sender waits.
const SESSION_BUFFER: usize = 4;

/// A snapshot being received: where its chunks go, and how its install ends.
struct Session {
    id: u64,
    chunks: Option<mpsc::Sender<Bytes>>,
    done: Option<oneshot::Receiver<Result<(), ClusterError>>>,
}

pub(crate) struct PartitionInbound {
    replica: Weak<PartitionReplica>,
    /// At most one snapshot at a time: a new session replaces (and so fails) an older one.
    session: Mutex<Option<Session>>,
}

impl PartitionInbound {
    pub(crate) fn new(replica: &Arc<PartitionReplica>) -> PartitionInbound {
        PartitionInbound { replica: Arc::downgrade(replica), session: Mutex::new(None) }
    }

    fn start(&self, replica: Arc<PartitionReplica>, id: u64, header: Bytes) {
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let (done_tx, done) = oneshot::channel();
        // Lives as long as the chunks come: a sender that goes away ends the stream, and the
        // install fails (the log is incomplete) leaving the replica as it was.
        let tasks = replica.tasks.clone();
        tasks.spawn_transient("snapshot-install", async move {
            let chunks =
                Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }));
            let _ = done_tx.send(replica.install_snapshot(&header, chunks).await);
        });
        *self.session.lock() = Some(Session { id, chunks: Some(tx), done: Some(done) });
    }

    fn sender(&self, id: u64) -> Option<mpsc::Sender<Bytes>> {
        self.session.lock().as_ref().filter(|s| s.id == id).and_then(|s| s.chunks.clone())
    }

    /// Closes the session's chunks and hands back how its install ends.
    fn finish(&self, id: u64) -> Option<oneshot::Receiver<Result<(), ClusterError>>> {
        let mut slot = self.session.lock();
        let session = slot.as_mut().filter(|s| s.id == id)?;
        session.chunks = None;
        let done = session.done.take();
        *slot = None;
        done
    }
}

impl Inbound for PartitionInbound {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Reply, String>> {
        let Some(replica) = self.replica.upgrade() else {
            return Box::pin(async { Err("the replica has stopped".to_string()) });
        };
        match request {
            Request::SnapshotStart { session, header } => {
                self.start(replica, session, header);
                Box::pin(async { Ok(Reply::Ack) })
            }
            Request::SnapshotChunk { session, chunk } => {
                let tx = self.sender(session);
                Box::pin(async move {
                    let tx = tx.ok_or_else(|| format!("no snapshot session {session}"))?;
                    tx.send(chunk).await.map_err(|_| "the snapshot's install stopped".to_string())?;
                    Ok(Reply::Ack)
                })
            }
            Request::SnapshotEnd { session } => {
                let done = self.finish(session);
                Box::pin(async move {
                    let done = done.ok_or_else(|| format!("no snapshot session {session}"))?;
                    match done.await.map_err(|_| "the snapshot's install stopped".to_string())? {
                        // Refused for a newer leader: the sender learns it from the vote.
                        Ok(()) | Err(ClusterError::NotLeader { .. }) => {
                            let vote = replica.raft.metrics().borrow_watched().vote;
                            Ok(Reply::Snapshot(openraft::raft::SnapshotResponse::new(vote)))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
            }
            Request::HandOver { to } => Box::pin(async move {
                let handed = replica.hand_over_to(to).await;
                handed.map(|()| Reply::Ack).map_err(|e| e.to_string())
            }),
            other => replica.raft.handle(other),
        }
    }
}

impl SnapshotSource for PartitionReplica {
    fn outgoing(self: Arc<Self>) -> BoxFuture<'static, Result<OutgoingParts, String>> {
        Box::pin(async move {
            let out = self.outgoing_snapshot(CHUNK_BYTES).await.map_err(|e| e.to_string())?;
            let header = out.header();
            // The log is read from files with blocking reads, off the async threads.
            let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(SESSION_BUFFER);
            tokio::task::spawn_blocking(move || {
                for chunk in out.into_chunks() {
                    if tx.blocking_send(chunk.map_err(|e| e.to_string())).is_err() {
                        return; // the transfer was given up
                    }
                }
            });
            Ok(OutgoingParts { header, chunks: Box::pin(received(rx)) })
        })
    }
}

/// What a channel receives, as a stream (ends when every sender is gone).
fn received<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
