//! Idempotent producer state: per producer id, its epoch, last sequence number and its last
//! few batches, as Kafka keeps it. The partition state machine updates it for every applied
//! batch (so it survives restarts in snapshots); the partition leader checks new batches
//! against it (plus what it has in flight) before proposing them.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer for duplicate detection (Kafka's max.in.flight limit).
pub const RECENT_BATCHES: usize = 5;

/// A batch as remembered for duplicate detection: which sequence numbers it covered.
pub trait SeqRange {
    fn first_seq(&self) -> i32;
    fn last_seq(&self) -> i32;
}

/// A batch the state machine applied, with the offset it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
}

impl SeqRange for BatchSeq {
    fn first_seq(&self) -> i32 {
        self.first_seq
    }
    fn last_seq(&self) -> i32 {
        self.last_seq
    }
}

/// One producer's sequence state with its last few batches (`B`: what is remembered of each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer<B> {
    pub epoch: i16,
    pub last_seq: i32,
    pub recent: VecDeque<B>,
}

impl<B> Default for Producer<B> {
    fn default() -> Self {
        Producer { epoch: 0, last_seq: 0, recent: VecDeque::new() }
    }
}

/// What the state machine keeps (and snapshots) per producer.
pub type ProducerState = Producer<BatchSeq>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Accept,
    /// The same batch was already appended (a retry): answer with its offsets.
    Duplicate,
    OutOfOrder {
        expected: i32,
    },
    StaleEpoch {
        current: i16,
    },
}

/// The sequence number after `seq` (sequences wrap at i32::MAX, as in Kafka).
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// Whether a batch (`epoch`, `first_seq..=last_seq`) may follow `state`.
pub fn check<B: SeqRange>(state: Option<&Producer<B>>, epoch: i16, first_seq: i32, last_seq: i32) -> Check {
    let Some(s) = state else { return Check::Accept };
    if epoch < s.epoch {
        return Check::StaleEpoch { current: s.epoch };
    }
    if epoch > s.epoch {
        return if first_seq == 0 { Check::Accept } else { Check::OutOfOrder { expected: 0 } };
    }
    if s.recent.iter().any(|b| b.first_seq() == first_seq && b.last_seq() == last_seq) {
        return Check::Duplicate;
    }
    let expected = next_seq(s.last_seq);
    if first_seq == expected { Check::Accept } else { Check::OutOfOrder { expected } }
}

/// Records an accepted batch.
pub fn record<B: SeqRange>(state: &mut Producer<B>, epoch: i16, batch: B) {
    if epoch != state.epoch {
        state.recent.clear();
        state.epoch = epoch;
    }
    state.last_seq = batch.last_seq();
    state.recent.push_back(batch);
    while state.recent.len() > RECENT_BATCHES {
        state.recent.pop_front();
    }
}

/// A bound on the bytes one producer takes in a partition snapshot (id, epoch, sequence, five
/// recent batches, last-seen time, all as varints), to size the table to what a snapshot holds.
pub const SNAPSHOT_BYTES_PER_PRODUCER: usize = 160;

/// The idempotent producers a partition remembers: sequence state and when each last produced,
/// at most `cap` of them. Only the log changes it, so every replica holds the same table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTable {
    pub states: BTreeMap<i64, ProducerState>,
    /// The largest timestamp of each producer's last batch (Kafka's `lastTimestamp`).
    pub last_seen: BTreeMap<i64, i64>,
}

impl ProducerTable {
    /// Records an applied batch of `producer_id`. A new producer beyond `cap` displaces the one
    /// seen longest ago (smallest id first among equals): the table, and so the snapshot, stays
    /// bounded whatever producer ids clients bring.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchSeq, timestamp: i64, cap: usize) {
        if !self.states.contains_key(&producer_id)
            && self.states.len() >= cap
            && let Some(oldest) = self.last_seen.iter().min_by_key(|(id, seen)| (**seen, **id)).map(|(id, _)| *id)
        {
            self.states.remove(&oldest);
            self.last_seen.remove(&oldest);
        }
        record(self.states.entry(producer_id).or_default(), epoch, batch);
        self.last_seen.insert(producer_id, timestamp);
    }

    /// Forgets producers last seen before `before_ms` (`producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, before_ms: i64) -> usize {
        let expired: Vec<i64> =
            self.last_seen.iter().filter(|(_, seen)| **seen < before_ms).map(|(id, _)| *id).collect();
        for id in &expired {
            self.states.remove(id);
            self.last_seen.remove(id);
        }
        expired.len()
    }

    pub fn any_seen_before(&self, before_ms: i64) -> bool {
        self.last_seen.values().any(|seen| *seen < before_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: i16, batches: &[(i32, i32)]) -> ProducerState {
        let mut s = ProducerState { epoch, ..Producer::default() };
        for (i, (f, l)) in batches.iter().enumerate() {
            record(&mut s, epoch, BatchSeq { first_seq: *f, last_seq: *l, base_offset: i as u64 * 10 });
        }
        s
    }

    #[test]
    fn check_table() {
        let s = state(2, &[(0, 4), (5, 9)]);
        let cases = [
            ("unknown producer", None, 0, 7, 9, Check::Accept),
            ("next batch", Some(&s), 2, 10, 12, Check::Accept),
            ("retry of the last batch", Some(&s), 2, 5, 9, Check::Duplicate),
            ("retry of an earlier batch", Some(&s), 2, 0, 4, Check::Duplicate),
            ("gap", Some(&s), 2, 12, 13, Check::OutOfOrder { expected: 10 }),
            ("older epoch", Some(&s), 1, 10, 12, Check::StaleEpoch { current: 2 }),
            ("new epoch from zero", Some(&s), 3, 0, 3, Check::Accept),
            ("new epoch not from zero", Some(&s), 3, 10, 12, Check::OutOfOrder { expected: 0 }),
        ];
        for (name, st, epoch, first, last, want) in cases {
            assert_eq!(check(st, epoch, first, last), want, "{name}");
        }
    }

    #[test]
    fn the_table_is_bounded_and_expires_idle_producers() {
        let b = |seq| BatchSeq { first_seq: seq, last_seq: seq, base_offset: 0 };
        let mut t = ProducerTable::default();
        // (producer, last seen): at a cap of 3, a fourth producer displaces the one seen longest ago.
        for (id, seen) in [(10, 500), (11, 100), (12, 300)] {
            t.record(id, 0, b(0), seen, 3);
        }
        t.record(11, 0, b(1), 900, 3); // seen again: now the newest
        t.record(13, 0, b(0), 1000, 3);
        assert_eq!(t.states.keys().copied().collect::<Vec<_>>(), vec![10, 11, 13], "12 (seen at 300) went");
        assert_eq!(t.states.len(), t.last_seen.len());
        assert!(t.any_seen_before(600) && !t.any_seen_before(500));
        assert_eq!(t.expire(950), 2, "10 (500) and 11 (900) idle since before 950");
        assert_eq!(t.states.keys().copied().collect::<Vec<_>>(), vec![13]);
    }

    #[test]
    fn remembers_only_recent_batches_and_wraps() {
        let s = state(0, &[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
        assert_eq!(s.recent.len(), RECENT_BATCHES);
        assert_eq!(check(Some(&s), 0, 0, 0), Check::OutOfOrder { expected: 6 }, "too old to be recognised");
        assert_eq!(next_seq(i32::MAX), 0);
    }
}
