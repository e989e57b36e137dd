//! Snapshots on an operator's request (`POST /admin/cluster/snapshot`): every group this node
//! hosts snapshots its state at once, and the WAL lets go of what the snapshots cover. For a
//! partition that is what tiering does when the WAL outgrows its window, done now for every
//! committed entry: the entries move to the partition's segment files first, so the snapshot
//! (which a new or lagging replica installs) carries them.

use super::Node;
use crate::error::ClusterError;
use crate::metadata::META_GROUP;
use crate::raft::{GroupId, GroupSnapshot};

/// What one round of [`Node::snapshot_now`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRound {
    /// Each group that snapshotted, as it stands after.
    pub groups: Vec<GroupSnapshot>,
    /// Groups that could not (stopping, or their disk failed), with why.
    pub failed: Vec<(GroupId, String)>,
    /// WAL segments holding log records before and after the round.
    pub wal_segments_before: u64,
    pub wal_segments_after: u64,
}

impl Node {
    /// Every hosted group's last snapshot, the metadata group first.
    pub fn snapshots(&self) -> Vec<GroupSnapshot> {
        let mut all = vec![self.meta.snapshot_state()];
        all.extend(self.registry.all().iter().map(|r| r.snapshot_state()));
        all
    }

    /// Snapshots every hosted group at its applied position, moving each partition's committed
    /// entries to its segment files first, then lets the WAL drop the segments nothing needs.
    pub async fn snapshot_now(&self) -> Result<SnapshotRound, ClusterError> {
        let wal_segments_before = self.wal.stats().live_segments;
        let (mut groups, mut failed) = (Vec::new(), Vec::new());
        match self.meta.snapshot_now().await {
            Ok(s) => groups.push(s),
            Err(e) => failed.push((META_GROUP, e.to_string())),
        }
        for r in self.registry.all() {
            match r.snapshot_now().await {
                Ok(s) => groups.push(s),
                Err(e) => failed.push((r.group(), e.to_string())),
            }
        }
        self.wal.collect_garbage()?;
        Ok(SnapshotRound { groups, failed, wal_segments_before, wal_segments_after: self.wal.stats().live_segments })
    }
}
