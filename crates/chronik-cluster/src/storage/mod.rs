//! Each group's log in the shared WAL: Raft entries as WAL records ([`codec`]), openraft's log
//! storage over them ([`LogStore`]), a partition's sealed segment files below the WAL
//! (`segments`), and a partition's log as Kafka sees it across both ([`PartitionLog`]:
//! offsets, high watermark, log start, reads, retention plans, moves out of the WAL).

mod codec;
pub(crate) mod compaction;
mod legacy_ids;
mod log_store;
mod offsets;
mod partition_log;
mod retention;
mod segments;
mod transfer;

pub use offsets::EntryOffsets;
pub use partition_log::{PartitionLog, ReadBatches, ReadError};
pub use transfer::TransferError;
pub(crate) use transfer::{LogChunk, LogReceiver, LogSender};

pub(crate) use legacy_ids::LegacyStoredSnapshot;
pub(crate) use log_store::{LEGACY_STATE_SNAPSHOT, LogStore, STATE_SNAPSHOT, wal_io};
