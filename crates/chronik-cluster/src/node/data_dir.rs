//! A node's claim on its data directory: an exclusive lock (one process at a time) and the
//! identity file (one node of one cluster), checked before anything in it is read.

use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::ClusterError;
use crate::identity::{IdentityError, NodeIdentity};
use crate::raft::NodeId;

/// The held directory: dropping it releases the lock.
pub(super) struct DataDir {
    dir: PathBuf,
    node_id: NodeId,
    /// The identity the directory holds; `None` until a new node knows its cluster (it
    /// creates one, or joins one through the seeds).
    pub identity: Option<NodeIdentity>,
    _lock: File,
}

impl DataDir {
    /// Creates `dir` if needed, locks it and loads the identity it holds (which must be
    /// `node_id`'s). A directory holding a WAL but no identity is refused: its data is of
    /// unknown origin.
    pub fn claim(dir: &Path, node_id: NodeId) -> Result<DataDir, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir.display().to_string(), e))?;
        let lock = lock(dir)?;
        let identity = NodeIdentity::read(dir)?;
        let has_wal = std::fs::read_dir(dir.join("wal")).map(|mut d| d.next().is_some()).unwrap_or(false);
        match identity {
            None if has_wal => {
                return Err(ClusterError::DataDir(format!(
                    "{} holds a WAL but no node identity file; refusing to adopt data of unknown origin",
                    dir.display()
                )));
            }
            Some(found) if found.node_id != node_id => {
                return Err(IdentityError::OtherNode {
                    dir: dir.into(),
                    found: found.node_id,
                    wanted: node_id,
                    cluster: found.cluster_id,
                }
                .into());
            }
            _ => {}
        }
        Ok(DataDir { dir: dir.into(), node_id, identity, _lock: lock })
    }

    /// Writes a new node's identity in `cluster` (durably, before any data is written).
    pub fn adopt(&mut self, cluster: Uuid) -> Result<NodeIdentity, ClusterError> {
        let identity = NodeIdentity { cluster_id: cluster, node_id: self.node_id };
        identity.write(&self.dir)?;
        self.identity = Some(identity);
        Ok(identity)
    }
}

/// Takes an exclusive lock on `<dir>/LOCK` so two processes never share a data directory.
fn lock(dir: &Path) -> Result<File, ClusterError> {
    let path = dir.join("LOCK");
    let f = File::create(&path).map_err(|e| ClusterError::io(path.display().to_string(), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(ClusterError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(ClusterError::io(format!("locking {}", path.display()), e)),
    }
}
