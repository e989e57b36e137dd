//! Partition segment files: the tier below the WAL. Entries older than the WAL's window move
//! here (one sealed file per move), so the WAL keeps only the recent tail and a long-retention
//! partition no longer pins it. See `format.rs` for the file layout.

mod direct;
mod format;
mod install;
mod store;
mod writer;

pub(crate) use install::{InstallMarker, finish_install, incoming_dir, verify_file};
pub(crate) use store::{MovedEntry, SegmentError, SegmentFile, SegmentStore};
pub(crate) use writer::{CompactedSpan, SegmentWriter, file_name as segment_file_name};
