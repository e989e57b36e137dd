//! The partition leader's check of idempotent producers' batches: the state machine's applied
//! producer state plus the batches proposed since. Rebuilt whenever the term changes or an
//! append fails, so it never vouches for a batch that did not make it into the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::FutureExt;

use crate::batch::BatchHeader;
use crate::error::ClusterError;
use crate::producers::{self, Producer, ProducerState, SeqRange};

/// The outcome of an append as several waiters can share it (a retried batch waits for the
/// original): (base offset, last offset), or why it failed.
pub type SharedAppend =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<(u64, u64), Arc<ClusterError>>>>;

/// Why an idempotent batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdempotenceError {
    #[error("sequence {got} where {expected} was expected")]
    OutOfOrder { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than {current}")]
    StaleEpoch { current: i16, got: i16 },
    /// The partition could not check or queue the batch.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// An idempotent producer's batch: who sent it and which sequence numbers it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl ProducerBatch {
    /// The producer fields of a batch header (`None` for a batch of no idempotent producer).
    pub fn of(h: &BatchHeader) -> Option<ProducerBatch> {
        (h.producer_id >= 0).then(|| ProducerBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
        })
    }
}

/// What the guard says about a batch it accepts.
pub(super) enum Verdict {
    /// New: append it, then [`IdempotenceGuard::record`] it.
    Accept,
    /// A retry of a batch already appended: its outcome.
    Duplicate(SharedAppend),
}

/// A batch the leader let through, with the outcome of its append.
struct GuardBatch {
    first_seq: i32,
    last_seq: i32,
    outcome: SharedAppend,
}

impl SeqRange for GuardBatch {
    fn first_seq(&self) -> i32 {
        self.first_seq
    }
    fn last_seq(&self) -> i32 {
        self.last_seq
    }
}

#[derive(Default)]
pub(super) struct IdempotenceGuard {
    term: Option<u64>,
    producers: HashMap<i64, Producer<GuardBatch>>,
}

impl IdempotenceGuard {
    /// The guard for `term` from the applied producer state (the whole log applied).
    pub fn rebuild(term: u64, applied: BTreeMap<i64, ProducerState>) -> IdempotenceGuard {
        let producers = applied
            .into_iter()
            .map(|(id, s)| {
                let recent = s
                    .recent
                    .iter()
                    .map(|b| {
                        let records = (b.last_seq as i64 - b.first_seq as i64).rem_euclid(i32::MAX as i64 + 1) as u64;
                        let done: Result<(u64, u64), Arc<ClusterError>> = Ok((b.base_offset, b.base_offset + records));
                        let outcome = futures::future::ready(done).boxed().shared();
                        GuardBatch { first_seq: b.first_seq, last_seq: b.last_seq, outcome }
                    })
                    .collect();
                (id, Producer { epoch: s.epoch, last_seq: s.last_seq, recent })
            })
            .collect();
        IdempotenceGuard { term: Some(term), producers }
    }

    /// Whether the guard must be rebuilt before it can vouch for anything: another term, or
    /// a batch it let through failed (the log may not hold what it remembers).
    pub fn is_stale(&self, term: u64) -> bool {
        self.term != Some(term)
            || self.producers.values().any(|p| p.recent.iter().any(|b| matches!(b.outcome.peek(), Some(Err(_)))))
    }

    pub fn check(&self, b: &ProducerBatch) -> Result<Verdict, IdempotenceError> {
        let entry = self.producers.get(&b.producer_id);
        match producers::check(entry, b.epoch, b.first_seq, b.last_seq) {
            producers::Check::Accept => Ok(Verdict::Accept),
            producers::Check::Duplicate => {
                let original = entry
                    .and_then(|p| p.recent.iter().find(|r| r.first_seq == b.first_seq && r.last_seq == b.last_seq))
                    .map(|r| r.outcome.clone())
                    .ok_or_else(|| ClusterError::Internal("a duplicate batch the guard does not hold".into()))?;
                Ok(Verdict::Duplicate(original))
            }
            producers::Check::OutOfOrder { expected } => {
                Err(IdempotenceError::OutOfOrder { expected, got: b.first_seq })
            }
            producers::Check::StaleEpoch { current } => Err(IdempotenceError::StaleEpoch { current, got: b.epoch }),
        }
    }

    /// Remembers an accepted batch and the outcome of its append.
    pub fn record(&mut self, b: &ProducerBatch, outcome: SharedAppend) {
        let batch = GuardBatch { first_seq: b.first_seq, last_seq: b.last_seq, outcome };
        producers::record(self.producers.entry(b.producer_id).or_default(), b.epoch, batch);
    }
}
