//! Per-group in-memory index: entry index -> (segment, offset). Pure data structure; the WAL
//! keeps it consistent with what it writes, and recovery rebuilds it by replaying records.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
}

/// A position in a group's log: Raft's log id (index, term, leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogPos {
    pub index: u64,
    pub term: u64,
    pub leader_id: u64,
}

/// A durable value and the segment its newest record lives in (needed by segment GC).
#[derive(Debug, Clone)]
pub struct StateValue {
    pub value: Bytes,
    pub segment: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("entry {got} is not the next index (expected {expected})")]
    NotNext { expected: u64, got: u64 },
}

/// The index of one group. `locs[i]` is entry `first + i`.
#[derive(Debug, Clone, Default)]
pub struct GroupIndex {
    first: u64,
    locs: VecDeque<Loc>,
    last_purged: Option<LogPos>,
    /// Segment holding the newest purge record; it must survive (or be re-written) before the
    /// segment can be deleted.
    purge_segment: Option<u64>,
    states: BTreeMap<u8, StateValue>,
}

impl GroupIndex {
    /// Index the next appended entry must have, if the group has any history.
    pub fn next_index(&self) -> Option<u64> {
        if !self.locs.is_empty() {
            Some(self.first + self.locs.len() as u64)
        } else {
            self.last_purged.map(|p| p.index + 1)
        }
    }

    pub fn first_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then_some(self.first)
    }

    pub fn last_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }

    pub fn len(&self) -> usize {
        self.locs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }

    pub fn last_purged(&self) -> Option<LogPos> {
        self.last_purged
    }

    pub fn purge_segment(&self) -> Option<u64> {
        self.purge_segment
    }

    pub fn get(&self, index: u64) -> Option<Loc> {
        let i = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(i).ok()?).copied()
    }

    pub fn first_loc(&self) -> Option<Loc> {
        self.locs.front().copied()
    }

    /// The last entry stored in segments up to `seq` (entries lie in segment order, but for
    /// the few garbage collection moved forward, which this may count as newer).
    pub fn last_index_through_segment(&self, seq: u64) -> Option<u64> {
        let n = self.locs.partition_point(|l| l.segment <= seq);
        (n > 0).then(|| self.first + n as u64 - 1)
    }

    pub fn check_next(&self, index: u64) -> Result<(), IndexError> {
        match self.next_index() {
            Some(expected) if expected != index => Err(IndexError::NotNext { expected, got: index }),
            _ => Ok(()),
        }
    }

    /// Appends entry `index`; `check_next` must have passed.
    pub fn push(&mut self, index: u64, loc: Loc) {
        if self.locs.is_empty() {
            self.first = index;
        }
        self.locs.push_back(loc);
    }

    /// Drops every entry at or above `index`.
    pub fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first).min(self.locs.len() as u64);
        self.locs.truncate(keep as usize);
    }

    /// Drops every entry at or below `upto.index` and remembers `upto` as the last purged id.
    pub fn purge(&mut self, upto: LogPos, record_segment: u64) {
        if self.last_purged.is_some_and(|p| p.index > upto.index) {
            // A re-written (older) purge record replayed after a newer one.
            return;
        }
        if !self.locs.is_empty() {
            let drop = (upto.index + 1).saturating_sub(self.first).min(self.locs.len() as u64);
            self.locs.drain(..drop as usize);
            self.first += drop;
        }
        if self.locs.is_empty() {
            self.first = upto.index + 1;
        }
        self.last_purged = Some(upto);
        self.purge_segment = Some(record_segment);
    }

    /// A garbage-collection copy of live entry `index` now lives at `loc`.
    pub fn relocate(&mut self, index: u64, loc: Loc) {
        if let Some(i) = index.checked_sub(self.first).filter(|i| *i < self.locs.len() as u64) {
            self.locs[i as usize] = loc;
        }
    }

    /// Builds an index from what recovery replayed.
    pub fn from_recovered(
        first: u64,
        locs: VecDeque<Loc>,
        last_purged: Option<LogPos>,
        purge_segment: Option<u64>,
        states: BTreeMap<u8, StateValue>,
    ) -> GroupIndex {
        let first = if locs.is_empty() { last_purged.map_or(0, |p| p.index + 1) } else { first };
        GroupIndex { first, locs, last_purged, purge_segment, states }
    }

    pub fn set_state(&mut self, key: u8, value: Bytes, segment: u64) {
        self.states.insert(key, StateValue { value, segment });
    }

    pub fn state(&self, key: u8) -> Option<&StateValue> {
        self.states.get(&key)
    }

    pub fn states(&self) -> impl Iterator<Item = (u8, &StateValue)> {
        self.states.iter().map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(o: u64) -> Loc {
        Loc { segment: 1, offset: o }
    }

    fn pos(index: u64) -> LogPos {
        LogPos { index, term: 1, leader_id: 1 }
    }

    #[test]
    fn append_truncate_purge_table() {
        // (operations, expected first, expected last, expected next)
        enum Op {
            Push(u64),
            Truncate(u64),
            Purge(u64),
        }
        use Op::*;
        type Case = (&'static str, Vec<Op>, Option<u64>, Option<u64>, Option<u64>);
        let cases: Vec<Case> = vec![
            ("empty", vec![], None, None, None),
            ("push from zero", vec![Push(0), Push(1)], Some(0), Some(1), Some(2)),
            ("truncate middle", vec![Push(1), Push(2), Push(3), Truncate(1)], Some(1), Some(1), Some(2)),
            ("truncate below first empties", vec![Push(5), Push(6), Truncate(3)], None, None, None),
            ("truncate above last is a no-op", vec![Push(5), Truncate(9)], Some(5), Some(5), Some(6)),
            ("purge front", vec![Push(1), Push(2), Push(3), Purge(2)], Some(3), Some(3), Some(4)),
            ("purge all", vec![Push(1), Push(2), Purge(2)], None, None, Some(3)),
            ("purge beyond last (snapshot install)", vec![Push(1), Purge(10)], None, None, Some(11)),
            ("append after purge", vec![Push(1), Purge(10), Push(11)], Some(11), Some(11), Some(12)),
            ("older purge ignored", vec![Push(1), Push(2), Push(3), Purge(2), Purge(1)], Some(3), Some(3), Some(4)),
        ];
        for (name, ops, first, last, next) in cases {
            let mut g = GroupIndex::default();
            for op in ops {
                match op {
                    Push(i) => {
                        g.check_next(i).unwrap_or_else(|e| panic!("{name}: {e}"));
                        g.push(i, loc(i));
                    }
                    Truncate(i) => g.truncate_from(i + 1),
                    Purge(i) => g.purge(pos(i), 1),
                }
            }
            assert_eq!((g.first_index(), g.last_index(), g.next_index()), (first, last, next), "{name}");
        }
    }

    #[test]
    fn rejects_out_of_order() {
        let mut g = GroupIndex::default();
        g.push(1, loc(1));
        assert_eq!(g.check_next(3), Err(IndexError::NotNext { expected: 2, got: 3 }));
        assert_eq!(g.check_next(1), Err(IndexError::NotNext { expected: 2, got: 1 }));
    }
}
