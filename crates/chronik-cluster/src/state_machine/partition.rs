//! A partition's state machine: applied position, next offset (so the high watermark), log
//! start offset. Applying is cheap: only batch headers are read.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use chronik_wal::Wal;
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{load_snapshot, save_snapshot};
use std::collections::BTreeMap;

use crate::batch;
use crate::producers::{self, BatchSeq, ProducerState};
use crate::raft::{Command, GroupId, LogId, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::PartitionLog;

/// What a partition snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub next_offset: u64,
    pub log_start: u64,
    /// Idempotent producers' sequence state, by producer id.
    pub producers: BTreeMap<i64, ProducerState>,
}

#[derive(Default)]
struct State {
    applied: Option<LogId>,
    membership: StoredMembership,
    data: PartitionSnapshot,
}

#[derive(Clone)]
pub struct PartitionStateMachine {
    wal: Arc<Wal>,
    group: GroupId,
    log: Arc<PartitionLog>,
    state: Arc<Mutex<State>>,
}

impl PartitionStateMachine {
    pub fn new(wal: Arc<Wal>, group: GroupId, log: Arc<PartitionLog>) -> Self {
        PartitionStateMachine { wal, group, log, state: Arc::default() }
    }

    /// The snapshot's data as stored, for building the partition log before the group starts.
    pub fn stored_snapshot(wal: &Arc<Wal>, group: GroupId) -> io::Result<PartitionSnapshot> {
        match load_snapshot(wal, group)? {
            Some(s) => postcard::from_bytes(&s.snapshot).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(PartitionSnapshot::default()),
        }
    }

    /// Producer state as of the last applied entry.
    pub fn producers(&self) -> BTreeMap<i64, ProducerState> {
        self.state.lock().data.producers.clone()
    }

    fn apply_command(&self, s: &mut State, cmd: Command) -> Response {
        match cmd {
            Command::Produce { records } => match batch::split_batches(&records, false) {
                Ok(spans) => {
                    let base = spans[0].header.base_offset as u64;
                    let last = spans[spans.len() - 1].header.last_offset() as u64;
                    if base != s.data.next_offset {
                        tracing::error!(
                            group = self.group,
                            base,
                            expected = s.data.next_offset,
                            "produce entry out of offset order"
                        );
                        return Response::Invalid(format!(
                            "entry starts at offset {base}, expected {}",
                            s.data.next_offset
                        ));
                    }
                    s.data.next_offset = last + 1;
                    for span in spans.iter().filter(|sp| sp.header.producer_id >= 0) {
                        let h = &span.header;
                        let batch = BatchSeq {
                            first_seq: h.base_sequence,
                            last_seq: h.last_sequence(),
                            base_offset: h.base_offset as u64,
                        };
                        producers::record(s.data.producers.entry(h.producer_id).or_default(), h.producer_epoch, batch);
                    }
                    Response::Produced { base_offset: base, last_offset: last }
                }
                Err(e) => Response::Invalid(e.to_string()),
            },
            Command::AdvanceLogStart { offset } => {
                s.data.log_start = s.data.log_start.max(offset.min(s.data.next_offset));
                self.log.set_log_start(s.data.log_start);
                Response::LogStart { offset: s.data.log_start }
            }
            Command::Meta(_) => Response::Invalid("metadata command sent to a partition".into()),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for PartitionStateMachine {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (meta, data) = {
            let s = self.state.lock();
            let meta = SnapshotMeta { last_log_id: s.applied, last_membership: s.membership.clone() };
            (meta, Bytes::from(postcard::to_stdvec(&s.data).map_err(io::Error::other)?))
        };
        save_snapshot(&self.wal, self.group, &meta, &data).await?;
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let s = self.state.lock();
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut replies = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut s = self.state.lock();
            s.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::None
                }
                EntryPayload::Normal(cmd) => self.apply_command(&mut s, cmd),
            };
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }
        // Acknowledged data must be visible to consumers: move the high watermark first.
        let next = self.state.lock().data.next_offset;
        self.log.set_high_watermark(next);
        for (r, response) in replies {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> io::Result<()> {
        let data: PartitionSnapshot =
            postcard::from_bytes(&snapshot).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        save_snapshot(&self.wal, self.group, meta, &snapshot).await?;
        self.log.reset_front(data.next_offset);
        self.log.set_log_start(data.log_start);
        self.log.set_high_watermark(data.next_offset);
        let mut s = self.state.lock();
        s.applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.data = data;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        load_snapshot(&self.wal, self.group)
    }
}
