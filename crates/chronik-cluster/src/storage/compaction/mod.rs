//! Log compaction (`cleanup.policy=compact`): the latest record of each key stays, superseded
//! records and expired tombstones go. It runs on a partition's segment files only, never on
//! the WAL tail, and writes new files with gaps in their offsets (as Kafka's cleaner does).
//!
//! The leader decides each pass ([`plan`]: which offsets, at what time) and proposes it through
//! the partition's Raft log; every replica runs it over its own files ([`run()`]). What a pass
//! keeps is a pure function of the log and the plan ([`cleaner`]), so replicas that compact on
//! their own serve the same bytes at the same offsets.

mod batch_filter;
mod cleaner;
mod codec;
mod run;

pub use batch_filter::{FilterError, MAX_RECORDS_BYTES, visit as visit_records};
pub use cleaner::{CompactionRules, FileSummary, plan};
pub use codec::{CodecError, decompress};
pub use run::{CompactionOutcome, IoBudget};
pub(crate) use run::{MAP_CAPACITY, run};
