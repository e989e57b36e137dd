//! A node's claim on its data directory: an exclusive lock (one process at a time) and the
//! identity file (one node of one cluster), checked before anything in it is read.

use std::fs::File;
use std::path::Path;

use crate::error::ClusterError;
use crate::identity::NodeIdentity;
use crate::raft::NodeId;

/// The held directory: dropping it releases the lock.
pub(super) struct DataDir {
    pub identity: NodeIdentity,
    /// Whether the identity was created by this start (a new node of a new cluster).
    pub fresh: bool,
    _lock: File,
}

impl DataDir {
    /// Creates `dir` if needed, locks it and loads (or, for an empty directory, creates) the
    /// identity of `node_id`. A directory holding a WAL but no identity is refused: its data
    /// is of unknown origin.
    pub fn claim(dir: &Path, node_id: NodeId) -> Result<DataDir, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir.display().to_string(), e))?;
        let lock = lock(dir)?;
        let has_wal = std::fs::read_dir(dir.join("wal")).map(|mut d| d.next().is_some()).unwrap_or(false);
        if NodeIdentity::read(dir)?.is_none() && has_wal {
            return Err(ClusterError::DataDir(format!(
                "{} holds a WAL but no node identity file; refusing to adopt data of unknown origin",
                dir.display()
            )));
        }
        let (identity, fresh) = NodeIdentity::load_or_create(dir, node_id)?;
        Ok(DataDir { identity, fresh, _lock: lock })
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
