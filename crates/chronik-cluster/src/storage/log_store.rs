//! openraft log storage over chronik-wal: one WAL group per Raft group.
//!
//! - `append` returns once the entries are readable and reports them flushed, in order, only
//!   after the WAL's group-commit fdatasync covers them.
//! - `save_vote` is durable before it returns.
//! - For a partition, `append` stamps each produce entry's batches with the offsets that follow
//!   the log's tail: offsets are a pure function of the log prefix, identical on every replica.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use chronik_wal::{AppendEntry, DurableCallback, LogPos, Wal, WalError};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};

use super::codec;
use super::legacy_ids::{LegacyLogId, LegacyVote};
use super::partition_log::PartitionLog;
use crate::raft::{Entry, GroupId, LogId, TypeConfig, Vote, log_id};

/// Keys of the WAL state records a group keeps. Keys 1-3 hold the same records as earlier
/// builds wrote them (other leader ids: `legacy_ids.rs`); they are read only when the current
/// key has no record yet.
pub const STATE_VOTE: u8 = 4;
pub const STATE_COMMITTED: u8 = 5;
pub const STATE_SNAPSHOT: u8 = 6;
pub const LEGACY_STATE_VOTE: u8 = 1;
pub const LEGACY_STATE_COMMITTED: u8 = 2;
pub const LEGACY_STATE_SNAPSHOT: u8 = 3;

/// Most bytes one replication request reads (openraft also caps the entry count).
const MAX_REPLICATION_BYTES: usize = 4 << 20;

pub(crate) fn wal_io(e: WalError) -> io::Error {
    let kind = match e {
        WalError::DiskFull { .. } => io::ErrorKind::StorageFull,
        WalError::Corrupt { .. } => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

fn decode_err(e: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The log storage of one group. Clones share everything (a clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    group: GroupId,
    /// Present for partition groups: where offsets are kept.
    partition: Option<Arc<PartitionLog>>,
}

impl LogStore {
    pub fn new(wal: Arc<Wal>, group: GroupId, partition: Option<Arc<PartitionLog>>) -> LogStore {
        LogStore { wal, group, partition }
    }

    fn bounds(&self, range: impl RangeBounds<u64>) -> (u64, u64) {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        (start, end)
    }

    /// Writes `entries` after the log's tail (a partition's produce entries stamped with the
    /// offsets that follow it); `on_durable` runs once the WAL's sync covers them.
    pub(crate) fn write(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        on_durable: Option<DurableCallback>,
    ) -> io::Result<()> {
        let mut next_offset = self.partition.as_ref().map(|p| p.index.read().next_offset());
        let mut encoded = Vec::new();
        for entry in entries {
            let e = codec::encode(&entry, next_offset)?;
            if let (Some(n), Some(o)) = (next_offset.as_mut(), &e.offsets) {
                *n = o.last_offset + 1;
            }
            encoded.push(e);
        }
        let parts: Vec<Vec<&[u8]>> = encoded.iter().map(|e| e.payload_parts()).collect();
        let appends: Vec<AppendEntry<'_>> = encoded
            .iter()
            .zip(&parts)
            .map(|(e, p)| AppendEntry {
                index: e.index,
                term: e.term,
                leader_id: e.leader_id,
                entry_kind: e.kind,
                payload: p,
            })
            .collect();
        self.wal.append(self.group, &appends, on_durable).map_err(wal_io)?;
        if let Some(p) = &self.partition {
            let mut index = p.index.write();
            for o in encoded.iter().filter_map(|e| e.offsets) {
                index.push(o);
            }
        }
        Ok(())
    }

    /// Writes the group's vote; `on_durable` runs once the WAL's sync covers it.
    pub(crate) fn write_vote(&self, vote: &Vote, on_durable: Option<DurableCallback>) -> io::Result<()> {
        let bytes = postcard::to_stdvec(vote).map_err(decode_err)?;
        self.wal.set_state(self.group, STATE_VOTE, &bytes, on_durable).map_err(wal_io)
    }

    fn read(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.wal.read_range(self.group, start, end, max_bytes).map_err(wal_io)?.iter().map(codec::decode).collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = self.bounds(range);
        self.read(start, end, usize::MAX)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        if let Some(b) = self.wal.state(self.group, STATE_VOTE) {
            return postcard::from_bytes(&b).map(Some).map_err(decode_err);
        }
        let legacy = self.wal.state(self.group, LEGACY_STATE_VOTE);
        legacy.map(|b| postcard::from_bytes::<LegacyVote>(&b).map(Vote::from).map_err(decode_err)).transpose()
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read(start, end, MAX_REPLICATION_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let info = self.wal.group_info(self.group).unwrap_or_default();
        let to_id = |p: LogPos| log_id(p.term, p.index);
        let last_purged_log_id = info.last_purged.map(to_id);
        let last_log_id = info.last.map(to_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write_vote(vote, Some(Box::new(move |r| drop(tx.send(r)))))?;
        rx.await.map_err(|_| io::Error::other("WAL closed while saving the vote"))?.map_err(wal_io)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let bytes = postcard::to_stdvec(&committed).map_err(decode_err)?;
        // A hint that shortens recovery; it rides with the next sync like any write.
        self.wal.set_state(self.group, STATE_COMMITTED, &bytes, None).map_err(wal_io)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        if let Some(b) = self.wal.state(self.group, STATE_COMMITTED) {
            return postcard::from_bytes(&b).map_err(decode_err);
        }
        match self.wal.state(self.group, LEGACY_STATE_COMMITTED) {
            Some(b) => postcard::from_bytes::<Option<LegacyLogId>>(&b).map(|c| c.map(LogId::from)).map_err(decode_err),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.write(entries, Some(Box::new(move |r| callback.io_completed(r.map_err(wal_io)))))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.wal.truncate_from(self.group, from).map_err(wal_io)?;
        if let Some(p) = &self.partition {
            p.index.write().truncate_from(from);
        }
        Ok(())
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let pos = LogPos { index: upto.index, term: upto.leader_id.term, leader_id: 0 };
        // The offset index first: from then on readers look for these entries in the segment
        // files (where a move put them) or not at all (below the log start), never in the WAL.
        if let Some(p) = &self.partition {
            p.index.write().purge_through(upto.index);
        }
        self.wal.purge(self.group, pos).map_err(wal_io)
    }
}
