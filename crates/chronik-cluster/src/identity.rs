//! The node identity file (`<data_dir>/node.identity`): which cluster and node a data
//! directory belongs to. Checked at every start so a data directory is never used by another
//! node or cluster. Written once, by durable rename: magic, version, cluster id, node id, CRC-32C.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

const FILE_NAME: &str = "node.identity";
const MAGIC: &[u8; 8] = b"CHRNODE\0";
const VERSION: u32 = 1;
const LEN: usize = 8 + 4 + 16 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster_id: Uuid,
    pub node_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged ({reason}); refusing to guess which node this data belongs to")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "data directory {dir} belongs to node {found} of cluster {cluster}; refusing to start it as node {wanted} \
         (point data_dir at this node's own directory)"
    )]
    OtherNode { dir: PathBuf, found: u64, wanted: u64, cluster: Uuid },
}

impl NodeIdentity {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..28].copy_from_slice(self.cluster_id.as_bytes());
        b[28..36].copy_from_slice(&self.node_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<NodeIdentity, String> {
        if b.len() != LEN {
            return Err(format!("{} bytes, expected {LEN}", b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        if u32::from_le_bytes(b[36..40].try_into().unwrap()) != crc32c::crc32c(&b[..36]) {
            return Err("checksum mismatch".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        Ok(NodeIdentity {
            cluster_id: Uuid::from_bytes(b[12..28].try_into().unwrap()),
            node_id: u64::from_le_bytes(b[28..36].try_into().unwrap()),
        })
    }

    pub fn read(data_dir: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
        let path = data_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(b) => NodeIdentity::decode(&b).map(Some).map_err(|reason| IdentityError::Corrupt { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Writes the file durably: temp file, fsync, rename, fsync of the directory.
    pub fn write(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let path = data_dir.join(FILE_NAME);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let io = |source| IdentityError::Io { path: path.clone(), source };
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&self.encode()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        File::open(data_dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeIdentity::read(dir.path()).unwrap(), None);
        let id = NodeIdentity { cluster_id: Uuid::from_u128(9), node_id: 1 };
        id.write(dir.path()).unwrap();
        assert_eq!(NodeIdentity::read(dir.path()).unwrap(), Some(id));
    }

    #[test]
    fn damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        NodeIdentity { cluster_id: Uuid::from_u128(9), node_id: 1 }.write(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut b = std::fs::read(&path).unwrap();
        b[30] ^= 1;
        std::fs::write(&path, b).unwrap();
        assert!(matches!(NodeIdentity::read(dir.path()), Err(IdentityError::Corrupt { .. })));
    }
}
