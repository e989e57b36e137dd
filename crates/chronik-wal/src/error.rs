use std::path::PathBuf;

/// Why a single record failed to decode. Carries no position: callers add file and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record runs past the end of the segment")]
    Truncated,
    #[error("zero bytes where a record header should be")]
    Zeroes,
    #[error("bad record magic")]
    BadMagic,
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum { stored: u32, computed: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no space left on the WAL's disk ({path}): {detail}; appends resume once space is freed")]
    DiskFull { path: PathBuf, detail: String },
    #[error("corrupt WAL segment {path} at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("WAL group {group}: {reason}")]
    Group { group: u64, reason: String },
    #[error("record of {len} bytes does not fit in a WAL segment (at most {max})")]
    RecordTooLarge { len: usize, max: usize },
    #[error("an earlier fdatasync failed ({0}); the WAL refuses writes until the process restarts")]
    SyncFailed(String),
    #[error("the WAL is shut down")]
    Closed,
    #[error("invalid WAL option: {0}")]
    InvalidOption(String),
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) || source.raw_os_error() == Some(libc::EDQUOT) {
            return WalError::DiskFull { path, detail: source.to_string() };
        }
        WalError::Io { path, source }
    }

    /// A copy for handing the same failure to many waiters.
    pub(crate) fn duplicate(&self) -> WalError {
        match self {
            WalError::Io { path, source } => {
                WalError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            WalError::DiskFull { path, detail } => WalError::DiskFull { path: path.clone(), detail: detail.clone() },
            WalError::Corrupt { path, offset, reason } => {
                WalError::Corrupt { path: path.clone(), offset: *offset, reason: reason.clone() }
            }
            WalError::Group { group, reason } => WalError::Group { group: *group, reason: reason.clone() },
            WalError::RecordTooLarge { len, max } => WalError::RecordTooLarge { len: *len, max: *max },
            WalError::SyncFailed(s) => WalError::SyncFailed(s.clone()),
            WalError::Closed => WalError::Closed,
            WalError::InvalidOption(s) => WalError::InvalidOption(s.clone()),
        }
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
