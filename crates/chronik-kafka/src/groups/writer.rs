//! The one writer of `__consumer_offsets`. Commits queue up while the previous entry commits,
//! and the next entry carries all of them (group commit: a thousand consumers committing once a
//! second cost a few Raft round trips, not a thousand). Once an entry is durable its changes are
//! applied to the map, in log order, and each committer gets its answer. The topic is compacted
//! (`store.rs`), so what replay reads at start stays bounded without rewriting the map.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store::{OffsetStoreError, Shared, WriteRequest, apply_change, encode_chunks};

/// Most commits one entry carries (the rest wait for the next).
const MAX_BATCH: usize = 1024;

pub(super) async fn run(
    store: Arc<Shared>,
    mut queue: mpsc::Receiver<WriteRequest>,
    cancel: CancellationToken,
) -> Result<(), std::convert::Infallible> {
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
        for request in batch {
            let _ = request.reply.send(result.clone()); // a committer that gave up is fine
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
