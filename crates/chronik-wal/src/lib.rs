//! chronik-wal: one write-ahead log shared by many logical logs ("groups", one per Raft group).
//!
//! - Records use the V3 format ([`record`], docs/WAL_FORMAT.md): magic, version, CRC-32C, Raft
//!   term, index and leader id, entry kind, payload.
//! - Appends from many groups and many callers share fdatasync rounds (group commit). An append
//!   is readable when [`Wal::append`] returns and reported durable later through its callback,
//!   in append order.
//! - Segment files are preallocated (recycled when possible) before use, so appends never grow a
//!   file or allocate blocks.
//! - Recovery keeps exactly the valid prefix; damage inside a sealed segment is an error that
//!   names the file and byte offset.

mod background;
mod cache;
pub mod error;
mod gc;
pub mod index;
pub mod inspect;
pub mod latency;
pub mod options;
pub mod record;
pub mod recovery;
// Unsafe code: segments are read through read-only memory maps (the WAL never rewrites bytes a
// reader has been told about), and pwritev, fallocate and the page-cache advice calls have no
// safe wrapper in std. Each block says why it is sound.
#[allow(unsafe_code)]
pub mod segment;
mod stats;
mod wal;
mod writer;

pub use error::{RecordError, Result, WalError};
pub use index::LogPos;
pub use latency::{LatencyHistogram, LatencySnapshot};
pub use options::{SyncMode, WalOptions};
pub use stats::WalStats;
pub use wal::{AppendEntry, DurableCallback, EntryView, GroupInfo, OpenReport, Wal};
