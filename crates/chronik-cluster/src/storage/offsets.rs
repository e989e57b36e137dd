//! A partition's map from Kafka offsets to Raft log entries, for every entry in the log
//! (committed or not). Kafka offsets are a pure function of the log: each data entry takes the
//! offsets right after the previous one's, so the map can be rebuilt from the entries alone.

use std::collections::VecDeque;

/// One data entry (one produce: one or more record batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOffsets {
    pub raft_index: u64,
    pub base_offset: u64,
    pub last_offset: u64,
    /// Largest batch maxTimestamp in the entry (for time-based lookup and retention).
    pub max_timestamp: i64,
    /// Record-batch bytes in the entry.
    pub bytes: u64,
    /// The Raft term the entry was written in (its batches' Kafka leader epoch).
    pub epoch: u64,
}

#[derive(Debug, Clone, Default)]
pub struct OffsetIndex {
    entries: VecDeque<EntryOffsets>,
    /// The time index: for each entry, the largest timestamp up to and including it. It never
    /// decreases, so a lookup by time is a binary search (Kafka's time index idea; timestamps
    /// themselves need not be in order).
    max_timestamp_so_far: VecDeque<i64>,
    /// The offset the first entry starts at (after purges: the first unpurged offset).
    front_offset: u64,
    bytes: u64,
}

impl OffsetIndex {
    pub fn starting_at(front_offset: u64) -> OffsetIndex {
        OffsetIndex { front_offset, ..Default::default() }
    }

    /// The offset the next data entry gets.
    pub fn next_offset(&self) -> u64 {
        self.entries.back().map_or(self.front_offset, |e| e.last_offset + 1)
    }

    /// The first offset still in the log.
    pub fn front_offset(&self) -> u64 {
        self.front_offset
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn first(&self) -> Option<&EntryOffsets> {
        self.entries.front()
    }

    /// Where the first entry of an epoch above `epoch` starts (the log end if none does).
    pub fn first_offset_of_epoch_after(&self, epoch: u64) -> u64 {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        self.entries.get(i).map_or(self.next_offset(), |e| e.base_offset)
    }

    pub fn push(&mut self, e: EntryOffsets) {
        debug_assert_eq!(e.base_offset, self.next_offset(), "offsets follow the log");
        debug_assert!(self.entries.back().is_none_or(|b| b.raft_index < e.raft_index));
        self.bytes += e.bytes;
        let so_far = self.max_timestamp_so_far.back().map_or(e.max_timestamp, |m| (*m).max(e.max_timestamp));
        self.max_timestamp_so_far.push_back(so_far);
        self.entries.push_back(e);
    }

    /// Forgets entries at or above `raft_index` (Raft truncated them).
    pub fn truncate_from(&mut self, raft_index: u64) {
        while self.entries.back().is_some_and(|e| e.raft_index >= raft_index) {
            let e = self.entries.pop_back().expect("checked");
            self.max_timestamp_so_far.pop_back();
            self.bytes -= e.bytes;
        }
    }

    /// Forgets entries at or below `raft_index` (purged); the front moves past them.
    pub fn purge_through(&mut self, raft_index: u64) {
        while self.entries.front().is_some_and(|e| e.raft_index <= raft_index) {
            let e = self.entries.pop_front().expect("checked");
            self.max_timestamp_so_far.pop_front();
            self.bytes -= e.bytes;
            self.front_offset = e.last_offset + 1;
        }
    }

    /// Moves the front to `offset` when the log holds nothing (a snapshot of its own, installed
    /// again at start, with every entry it covers purged).
    pub fn start_at_if_empty(&mut self, offset: u64) {
        if self.entries.is_empty() {
            self.front_offset = offset;
        }
    }

    /// After a snapshot through Raft index `raft_index` (next offset `next_offset`) was
    /// installed: entries it covers go, and so do later ones that do not follow it (Raft
    /// truncates those); the front moves to the snapshot's next offset if nothing is left.
    pub fn install(&mut self, raft_index: u64, next_offset: u64) {
        self.purge_through(raft_index);
        if self.entries.front().is_some_and(|e| e.base_offset != next_offset) {
            *self = OffsetIndex::default();
        }
        if self.entries.is_empty() {
            self.front_offset = next_offset;
        }
    }

    /// The position of the entry holding `offset`, or of the first entry after it.
    pub fn position_of(&self, offset: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.last_offset < offset);
        (i < self.entries.len()).then_some(i)
    }

    pub fn get(&self, position: usize) -> Option<&EntryOffsets> {
        self.entries.get(position)
    }

    /// The position of the first entry that is not wholly below `offset` (the number of
    /// entries that are).
    pub fn entries_below(&self, offset: u64) -> usize {
        self.entries.partition_point(|e| e.last_offset < offset)
    }

    /// Positions, from `from` on, of the entries whose max timestamp is at or after `ts`,
    /// found through the time index. Purged entries can leave the running maximum above an
    /// entry's own timestamps, so the search lands at or before the first match and steps on.
    pub fn at_or_after_time(&self, ts: i64, from: usize) -> impl Iterator<Item = usize> + '_ {
        let start = self.max_timestamp_so_far.partition_point(|m| *m < ts).max(from);
        (start..self.entries.len()).filter(move |i| self.entries[*i].max_timestamp >= ts)
    }

    /// For OffsetForLeaderEpoch: the largest epoch present that is at most `epoch`, and the
    /// offset where the next larger epoch starts (or the log end).
    pub fn epoch_end(&self, epoch: u64) -> Option<(u64, u64)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let found = self.entries.get(i.checked_sub(1)?)?.epoch;
        let end = self.entries.get(i).map_or(self.next_offset(), |e| e.base_offset);
        Some((found, end))
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &EntryOffsets> {
        self.entries.iter()
    }
}

/// The one of `entries` holding the largest timestamp (the earliest such entry).
pub fn max_timestamp_entry<'a>(entries: impl IntoIterator<Item = &'a EntryOffsets>) -> Option<&'a EntryOffsets> {
    entries.into_iter().fold(None, |best: Option<&EntryOffsets>, e| match best {
        Some(b) if b.max_timestamp >= e.max_timestamp => Some(b),
        _ => Some(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(raft_index: u64, base: u64, count: u64, ts: i64) -> EntryOffsets {
        EntryOffsets {
            raft_index,
            base_offset: base,
            last_offset: base + count - 1,
            max_timestamp: ts,
            bytes: 100,
            epoch: 1,
        }
    }

    fn index() -> OffsetIndex {
        let mut idx = OffsetIndex::starting_at(0);
        idx.push(entry(2, 0, 5, 100)); // offsets 0..=4 (raft index 1 was a blank entry)
        idx.push(entry(3, 5, 1, 300));
        idx.push(entry(5, 6, 4, 200)); // 6..=9
        idx
    }

    #[test]
    fn lookups() {
        let idx = index();
        assert_eq!(idx.next_offset(), 10);
        // (offset, expected raft index of the entry to read from)
        for (offset, raft) in [(0, Some(2)), (4, Some(2)), (5, Some(3)), (7, Some(5)), (9, Some(5)), (10, None)] {
            assert_eq!(idx.position_of(offset).map(|p| idx.get(p).unwrap().raft_index), raft, "offset {offset}");
        }
        let by_time =
            |ts: i64| idx.at_or_after_time(ts, 0).map(|p| idx.get(p).unwrap().base_offset).collect::<Vec<_>>();
        assert_eq!(by_time(150), vec![5, 6], "entries from the first at or after 150 (timestamps 100, 300, 200)");
        assert_eq!(by_time(250), vec![5]);
        assert_eq!(by_time(301), Vec::<u64>::new());
        assert_eq!(idx.at_or_after_time(0, 2).next(), Some(2), "from a position on");
        assert_eq!(max_timestamp_entry(idx.iter()).map(|e| e.base_offset), Some(5));
    }

    #[test]
    fn epoch_ends() {
        let mut idx = OffsetIndex::starting_at(0);
        for (i, (base, epoch)) in [(0, 1), (5, 1), (6, 3), (10, 4)].into_iter().enumerate() {
            idx.push(EntryOffsets {
                raft_index: i as u64 + 1,
                base_offset: base,
                last_offset: base
                    + if base == 0 {
                        4
                    } else if base == 5 {
                        0
                    } else {
                        3
                    },
                max_timestamp: 0,
                bytes: 1,
                epoch,
            });
        }
        // (requested epoch, expected (epoch found, end offset))
        for (asked, expected) in [
            (0, None),
            (1, Some((1, 6))),
            (2, Some((1, 6))),
            (3, Some((3, 10))),
            (4, Some((4, 14))),
            (9, Some((4, 14))),
        ] {
            assert_eq!(idx.epoch_end(asked), expected, "epoch {asked}");
        }
    }

    #[test]
    fn truncate_and_purge() {
        let mut idx = index();
        idx.truncate_from(4);
        assert_eq!((idx.next_offset(), idx.iter().count(), idx.bytes()), (6, 2, 200));
        idx.purge_through(2);
        assert_eq!((idx.front_offset(), idx.next_offset(), idx.iter().count()), (5, 6, 1));
        assert_eq!(idx.at_or_after_time(300, 0).collect::<Vec<_>>(), vec![0], "the time index follows the purge");
        idx.purge_through(10);
        assert_eq!((idx.front_offset(), idx.next_offset(), idx.iter().next().is_none()), (6, 6, true));
        idx.start_at_if_empty(50);
        assert_eq!(idx.next_offset(), 50);
    }

    #[test]
    fn installing_a_snapshot_keeps_only_what_follows_it() {
        // (snapshot's last Raft index, its next offset) -> (front, entries left)
        for (raft, next, expected) in [
            (3, 6, (6, 1)),   // entry 5 follows the snapshot: kept
            (3, 7, (7, 0)),   // entry 5 does not start at the snapshot's next offset: dropped
            (5, 10, (10, 0)), // everything covered
            (9, 40, (40, 0)), // a snapshot beyond this log
        ] {
            let mut idx = index();
            idx.install(raft, next);
            assert_eq!((idx.front_offset(), idx.iter().count()), expected, "snapshot ({raft}, {next})");
        }
    }
}
