//! The two kinds of state machine: one per partition, one for the cluster metadata. Both keep
//! their whole state in memory and persist it as a small snapshot in a WAL state record; on
//! restart openraft installs that snapshot and re-applies the committed entries after it.

mod metadata;
mod partition;

pub use metadata::MetadataStateMachine;
pub use partition::{PartitionSnapshot, PartitionStateMachine};

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use chronik_wal::Wal;
use serde::{Deserialize, Serialize};

use crate::raft::{GroupId, Snapshot, SnapshotMeta};
use crate::storage::{LEGACY_STATE_SNAPSHOT, LegacyStoredSnapshot, STATE_SNAPSHOT, wal_io};

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Bytes,
}

/// Persists a snapshot durably as the group's snapshot state record.
async fn save_snapshot(wal: &Wal, group: GroupId, meta: &SnapshotMeta, data: &Bytes) -> io::Result<()> {
    let bytes =
        postcard::to_stdvec(&StoredSnapshot { meta: meta.clone(), data: data.clone() }).map_err(io::Error::other)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    wal.set_state(group, STATE_SNAPSHOT, &bytes, Some(Box::new(move |r| drop(tx.send(r))))).map_err(wal_io)?;
    rx.await.map_err(|_| io::Error::other("WAL closed while saving a snapshot"))?.map_err(wal_io)
}

fn load_snapshot(wal: &Arc<Wal>, group: GroupId) -> io::Result<Option<Snapshot>> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    if let Some(bytes) = wal.state(group, STATE_SNAPSHOT) {
        let s: StoredSnapshot = postcard::from_bytes(&bytes).map_err(invalid)?;
        return Ok(Some(Snapshot { meta: s.meta, snapshot: s.data }));
    }
    // Written by an earlier build (other leader ids); the next snapshot is stored anew.
    let Some(bytes) = wal.state(group, LEGACY_STATE_SNAPSHOT) else { return Ok(None) };
    let (meta, data) = postcard::from_bytes::<LegacyStoredSnapshot>(&bytes).map_err(invalid)?.into_current();
    Ok(Some(Snapshot { meta, snapshot: data }))
}
