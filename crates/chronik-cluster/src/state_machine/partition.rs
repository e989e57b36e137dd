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
use crate::producers::{BatchSeq, ProducerState, ProducerTable, SNAPSHOT_BYTES_PER_PRODUCER};
use crate::raft::{Command, GroupId, LogId, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::PartitionLog;

/// What a partition snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub next_offset: u64,
    pub log_start: u64,
    /// Idempotent producers: sequence state and when each was last seen.
    pub producers: ProducerTable,
}

/// Marks a snapshot in this layout; snapshots of earlier builds have no mark.
const SNAPSHOT_MAGIC: &[u8; 4] = b"CPS2";

/// The layout of earlier builds' partition snapshots (no last-seen times).
#[derive(Deserialize)]
struct LegacySnapshot {
    next_offset: u64,
    log_start: u64,
    producers: BTreeMap<i64, ProducerState>,
}

impl PartitionSnapshot {
    pub fn encode(&self) -> io::Result<Bytes> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend(postcard::to_stdvec(self).map_err(io::Error::other)?);
        Ok(out.into())
    }

    /// Decodes this layout or an earlier build's. (An earlier snapshot cannot begin with the
    /// mark: its log start, 80, would lie past its next offset, 67.) Producers of an earlier
    /// snapshot count as seen now.
    pub fn decode(b: &[u8]) -> io::Result<PartitionSnapshot> {
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        if let Some(body) = b.strip_prefix(SNAPSHOT_MAGIC) {
            return postcard::from_bytes(body).map_err(invalid);
        }
        let legacy: LegacySnapshot = postcard::from_bytes(b).map_err(invalid)?;
        let now = crate::now_ms();
        let last_seen = legacy.producers.keys().map(|id| (*id, now)).collect();
        Ok(PartitionSnapshot {
            next_offset: legacy.next_offset,
            log_start: legacy.log_start,
            producers: ProducerTable { states: legacy.producers, last_seen },
        })
    }
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

    /// The stored snapshot's last entry (index and term) and data, for building the partition
    /// log before the group starts.
    pub fn stored_snapshot(wal: &Arc<Wal>, group: GroupId) -> io::Result<(Option<(u64, u64)>, PartitionSnapshot)> {
        match load_snapshot(wal, group)? {
            Some(s) => {
                Ok((s.meta.last_log_id.map(|l| (l.index, l.leader_id.term)), PartitionSnapshot::decode(&s.snapshot)?))
            }
            None => Ok((None, PartitionSnapshot::default())),
        }
    }

    /// Producer state as of the last applied entry.
    pub fn producers(&self) -> BTreeMap<i64, ProducerState> {
        self.state.lock().data.producers.states.clone()
    }

    /// Whether an idempotent producer was last seen before `before_ms` (so expiry has work).
    pub fn has_producers_seen_before(&self, before_ms: i64) -> bool {
        self.state.lock().data.producers.any_seen_before(before_ms)
    }

    /// Most producers one partition remembers: what half of a WAL record holds, since the
    /// snapshot carrying them is one record.
    fn producer_cap(&self) -> usize {
        (self.wal.max_payload_len() / 2 / SNAPSHOT_BYTES_PER_PRODUCER).max(16)
    }

    /// Idempotent producers' sequences, from the batches' headers.
    fn record_producers(&self, s: &mut State, spans: &[batch::BatchSpan]) {
        let cap = self.producer_cap();
        for span in spans.iter().filter(|sp| sp.header.producer_id >= 0) {
            let h = &span.header;
            let batch =
                BatchSeq { first_seq: h.base_sequence, last_seq: h.last_sequence(), base_offset: h.base_offset as u64 };
            s.data.producers.record(h.producer_id, h.producer_epoch, batch, h.max_timestamp, cap);
        }
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
                    self.record_producers(s, &spans);
                    Response::Produced { base_offset: base, last_offset: last }
                }
                Err(e) => Response::Invalid(e.to_string()),
            },
            Command::Import { records } => match batch::split_batches(&records, false) {
                Ok(spans) => match batch::import_last_offset(&spans, s.data.next_offset) {
                    Some(last) => {
                        let base = s.data.next_offset;
                        s.data.next_offset = last + 1;
                        self.record_producers(s, &spans);
                        Response::Produced { base_offset: base, last_offset: last }
                    }
                    None => Response::Invalid(format!(
                        "imported batches start at offset {}, before the log's next offset {} or out of order",
                        spans[0].header.base_offset, s.data.next_offset
                    )),
                },
                Err(e) => Response::Invalid(e.to_string()),
            },
            Command::AdvanceLogStart { offset } => {
                s.data.log_start = s.data.log_start.max(offset.min(s.data.next_offset));
                self.log.set_log_start(s.data.log_start);
                Response::LogStart { offset: s.data.log_start }
            }
            Command::ExpireProducers { before_ms } => {
                let expired = s.data.producers.expire(before_ms);
                if expired > 0 {
                    tracing::debug!(group = self.group, expired, "idle idempotent producers expired");
                }
                Response::None
            }
            Command::Compact(plan) => {
                // The pass runs in the background (the lifecycle's compaction loop), over this
                // replica's own segment files.
                self.log.request_compaction(plan);
                Response::None
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
            (meta, s.data.encode()?)
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
        let data = PartitionSnapshot::decode(&snapshot)?;
        // At start openraft installs the stored snapshot again: its files are already in place.
        let stored = load_snapshot(&self.wal, self.group)?.map(|s| s.meta.last_log_id);
        let from_another_replica = stored != Some(meta.last_log_id);
        save_snapshot(&self.wal, self.group, meta, &snapshot).await?;
        let last = meta.last_log_id.map_or((0, 0), |l| (l.index, l.leader_id.term));
        self.log
            .adopt_installed(last, data.next_offset, data.log_start, from_another_replica)
            .map_err(io::Error::other)?;
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Earlier {
        next_offset: u64,
        log_start: u64,
        producers: BTreeMap<i64, ProducerState>,
    }

    #[test]
    fn snapshots_of_this_build_and_of_earlier_builds_decode() {
        let state = ProducerState {
            epoch: 3,
            last_seq: 9,
            recent: VecDeque::from([BatchSeq { first_seq: 5, last_seq: 9, base_offset: 40 }]),
        };
        let mut table = ProducerTable::default();
        table.record(11, 3, BatchSeq { first_seq: 5, last_seq: 9, base_offset: 40 }, 1234, 16);
        let now = PartitionSnapshot { next_offset: 45, log_start: 2, producers: table };
        assert_eq!(PartitionSnapshot::decode(&now.encode().unwrap()).unwrap(), now);

        let earlier = Earlier { next_offset: 45, log_start: 2, producers: BTreeMap::from([(11, state.clone())]) };
        let decoded = PartitionSnapshot::decode(&postcard::to_stdvec(&earlier).unwrap()).unwrap();
        assert_eq!((decoded.next_offset, decoded.log_start), (45, 2));
        assert_eq!(decoded.producers.states, BTreeMap::from([(11, state)]), "sequence state carried over");
        assert!(decoded.producers.last_seen[&11] > 1_700_000_000_000, "earlier producers count as seen now");
        assert!(PartitionSnapshot::decode(b"CPS2\xff").is_err());
    }
}
