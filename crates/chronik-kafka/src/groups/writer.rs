//! The one writer of `__consumer_offsets`. Commits queue up while the previous entry commits,
//! and the next entry carries all of them (group commit: a thousand consumers committing once a
//! second cost a few Raft round trips, not a thousand). Once an entry is durable its changes are
//! applied to the map, in log order, and each committer gets its answer. Every
//! `CHECKPOINT_EVERY` commits the whole map is written again (in entries of bounded size) and
//! the log start moves to it, so replay at start stays short. Nothing is in flight during a
//! checkpoint, so no commit before it can be lost when the log start moves.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store::{Committed, Key, OffsetStoreError, Shared, WriteRequest, apply_change, encode_chunks};

/// Commits between checkpoints.
const CHECKPOINT_EVERY: usize = 2000;
/// Most commits one entry carries (the rest wait for the next).
const MAX_BATCH: usize = 1024;

pub(super) async fn run(
    store: Arc<Shared>,
    mut queue: mpsc::Receiver<WriteRequest>,
    cancel: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut since_checkpoint = 0;
    loop {
        let first = tokio::select! {
            request = queue.recv() => match request {
                Some(r) => r,
                None => return Ok(()),
            },
            _ = cancel.cancelled() => return Ok(()),
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let result = write(&store, &batch).await.map_err(Arc::new);
        since_checkpoint += batch.len();
        for request in batch {
            let _ = request.reply.send(result.clone()); // a committer that gave up is fine
        }
        if since_checkpoint >= CHECKPOINT_EVERY {
            match checkpoint(&store).await {
                Ok(()) => since_checkpoint = 0,
                Err(e) => tracing::warn!("checkpointing committed offsets: {e}"),
            }
        }
    }
}

/// Appends the batch's changes and, once durable, applies them in order.
async fn write(store: &Shared, batch: &[WriteRequest]) -> Result<(), OffsetStoreError> {
    let changes = batch.iter().flat_map(|r| r.changes.iter().map(|(k, v)| (k, v.as_ref())));
    let mut pending = Vec::new();
    for entry in encode_chunks(changes, store.max_entry_bytes)? {
        pending.push(store.partition.submit(entry).await?);
    }
    for p in pending {
        p.committed().await?;
    }
    let mut offsets = store.offsets.lock();
    for request in batch {
        for (k, v) in &request.changes {
            apply_change(&mut offsets, k.clone(), v.clone());
        }
    }
    Ok(())
}

/// Writes the whole map and moves the log start to it.
async fn checkpoint(store: &Shared) -> Result<(), OffsetStoreError> {
    let snapshot: Vec<(Key, Committed)> = store.offsets.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut first = None;
    for entry in encode_chunks(snapshot.iter().map(|(k, v)| (k, Some(v))), store.max_entry_bytes)? {
        let (base, _) = store.partition.append(entry).await?;
        first.get_or_insert(base);
    }
    if let Some(base) = first {
        store.partition.advance_log_start(base).await?;
        let _ = store.partition.compact().await;
    }
    Ok(())
}
