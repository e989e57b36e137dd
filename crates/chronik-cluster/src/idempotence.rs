//! The partition leader's check of idempotent producers' batches: the state machine's applied
//! producer state plus the batches proposed since. Rebuilt whenever the term changes or an
//! append fails, so it never vouches for a batch that did not make it into the log.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use openraft::async_runtime::WatchReceiver;

use crate::producers::{self, BatchSeq, ProducerState};
use crate::raft_node::{NodeError, PartitionGroup};

/// The outcome of an append as several waiters can share it (a retried batch waits for the
/// original): (base offset, last offset) or the error's description.
pub type SharedAppend = futures::future::Shared<futures::future::BoxFuture<'static, Result<(u64, u64), String>>>;

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotenceError {
    OutOfOrder { expected: i32, got: i32 },
    StaleEpoch { current: i16, got: i16 },
    Node(String),
}

#[derive(Default)]
struct GuardProducer {
    epoch: i16,
    last_seq: i32,
    recent: VecDeque<(i32, i32, SharedAppend)>,
}

impl GuardProducer {
    fn as_state(&self) -> ProducerState {
        ProducerState {
            epoch: self.epoch,
            last_seq: self.last_seq,
            recent: self
                .recent
                .iter()
                .map(|(f, l, _)| BatchSeq { first_seq: *f, last_seq: *l, base_offset: 0 })
                .collect(),
        }
    }
}

#[derive(Default)]
pub(crate) struct IdempotenceGuard {
    term: Option<u64>,
    producers: HashMap<i64, GuardProducer>,
}

impl PartitionGroup {
    /// Queues a batch of an idempotent producer after checking its sequence numbers; a retry of
    /// a batch already appended gets that batch's outcome instead of a second copy.
    pub async fn submit_idempotent(
        &self,
        records: Bytes,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SharedAppend, IdempotenceError> {
        let mut guard = self.producers.lock().await;
        let term = self.leadership().0;
        let stale = guard.term != Some(term)
            || guard.producers.values().any(|p| p.recent.iter().any(|(_, _, f)| matches!(f.peek(), Some(Err(_)))));
        if stale {
            *guard = self.rebuild_guard(term).await.map_err(|e| IdempotenceError::Node(e.to_string()))?;
        }
        let entry = guard.producers.get(&producer_id);
        let state = entry.map(|p| p.as_state());
        match producers::check(state.as_ref(), epoch, first_seq, last_seq) {
            producers::Check::Duplicate => {
                let p = entry.expect("a duplicate has a known producer");
                let (_, _, f) = p.recent.iter().find(|(f, l, _)| *f == first_seq && *l == last_seq).expect("checked");
                Ok(f.clone())
            }
            producers::Check::OutOfOrder { expected } => Err(IdempotenceError::OutOfOrder { expected, got: first_seq }),
            producers::Check::StaleEpoch { current } => Err(IdempotenceError::StaleEpoch { current, got: epoch }),
            producers::Check::Accept => {
                let pending = self.submit(records).await.map_err(|e| IdempotenceError::Node(e.to_string()))?;
                let shared = pending.committed().map(|r| r.map_err(|e| e.to_string())).boxed().shared();
                let p = guard.producers.entry(producer_id).or_default();
                if p.epoch != epoch {
                    p.recent.clear();
                    p.epoch = epoch;
                }
                p.last_seq = last_seq;
                p.recent.push_back((first_seq, last_seq, shared.clone()));
                while p.recent.len() > producers::RECENT_BATCHES {
                    p.recent.pop_front();
                }
                Ok(shared)
            }
        }
    }

    /// The guard for `term`, from the state machine once it has applied the whole log.
    async fn rebuild_guard(&self, term: u64) -> Result<IdempotenceGuard, NodeError> {
        let last = self.raft.metrics().borrow_watched().last_log_index;
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(last, "apply the log before checking producer sequences")
            .await
            .map_err(|e| NodeError::Timeout(e.to_string()))?;
        let mut producers = HashMap::new();
        for (id, s) in self.sm.producers() {
            let recent = s
                .recent
                .iter()
                .map(|b| {
                    let records = (b.last_seq as i64 - b.first_seq as i64).rem_euclid(i32::MAX as i64 + 1) as u64;
                    let done: Result<(u64, u64), String> = Ok((b.base_offset, b.base_offset + records));
                    (b.first_seq, b.last_seq, futures::future::ready(done).boxed().shared())
                })
                .collect();
            producers.insert(id, GuardProducer { epoch: s.epoch, last_seq: s.last_seq, recent });
        }
        Ok(IdempotenceGuard { term: Some(term), producers })
    }
}
