//! The layout of a partition segment file: sealed, immutable, one per span of offsets.
//!
//! ```text
//! entry*            one per Raft entry moved out of the WAL, in offset order:
//!                     header (48 bytes, little endian): magic u32 "CSE1", batches length u32,
//!                     CRC-32C of the batches u32, reserved u32, base offset u64, last offset u64,
//!                     max timestamp i64, leader epoch u64
//!                     then the record batches exactly as the WAL stored them
//! offset index      sparse: (offset - base u32, file position u32) for the entry holding it,
//!                     one every `INDEX_INTERVAL` bytes of entries (and the first)
//! time index        sparse: (running max timestamp i64, offset - base u32), same rhythm
//! epochs            (leader epoch u64, first offset u64) for each epoch the file starts
//! footer (96 bytes) magic "CHRSEGF\0", version u32, entries u32, base offset u64, last offset
//!                     u64, max timestamp i64, data length u64, index entries u32, time
//!                     entries u32, epoch entries u32, flags u32, last Raft index u64, last
//!                     Raft term u64, cleaned through u64, CRC-32C of the three index
//!                     sections u32, CRC-32C of the footer's first 92 bytes u32
//! ```
//!
//! A file written by compaction (flag `COMPACTED`) holds the span of offsets of the files it
//! replaced (base to last offset), but its entries may leave gaps where records were removed,
//! and it may hold none at all. Such a file is named `<base>.<generation>.seg`: a file of a
//! higher generation replaces the files whose span it covers (see `SegmentStore::open`).
//!
//! The footer makes a file self-describing: opening one reads only its footer (its entries are
//! checked by their CRCs when read), so a restart costs the same whatever is retained.

pub const ENTRY_MAGIC: u32 = u32::from_le_bytes(*b"CSE1");
pub const ENTRY_HEADER_LEN: usize = 48;
pub const FOOTER_MAGIC: [u8; 8] = *b"CHRSEGF\0";
pub const FOOTER_LEN: usize = 96;
pub const VERSION: u32 = 1;
/// Footer flag: the file was written by compaction.
pub const COMPACTED: u32 = 1;
/// Bytes of entries between two index points (Kafka's `index.interval.bytes` idea, coarser:
/// the indexes of the files a broker reads stay small in memory).
pub const INDEX_INTERVAL: u64 = 64 * 1024;

/// One entry as the file holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub len: u32,
    pub crc: u32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    pub epoch: u64,
}

impl EntryHeader {
    pub fn encode(&self) -> [u8; ENTRY_HEADER_LEN] {
        let mut b = [0u8; ENTRY_HEADER_LEN];
        b[0..4].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..12].copy_from_slice(&self.crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.last_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_timestamp.to_le_bytes());
        b[40..48].copy_from_slice(&self.epoch.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<EntryHeader> {
        let b = b.get(..ENTRY_HEADER_LEN)?;
        if u32_at(b, 0) != ENTRY_MAGIC {
            return None;
        }
        Some(EntryHeader {
            len: u32_at(b, 4),
            crc: u32_at(b, 8),
            base_offset: u64_at(b, 16),
            last_offset: u64_at(b, 24),
            max_timestamp: u64_at(b, 32) as i64,
            epoch: u64_at(b, 40),
        })
    }

    /// Bytes the entry takes in the file, header included.
    pub fn footprint(&self) -> u64 {
        ENTRY_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// What the footer says about its file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footer {
    pub entries: u32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// Bytes of entries (they start at the file's beginning).
    pub data_len: u64,
    pub index_entries: u32,
    pub time_entries: u32,
    pub epoch_entries: u32,
    /// The last Raft entry the file holds (index and term): where the partition's snapshot
    /// point must be before the WAL may drop these entries.
    pub last_raft_index: u64,
    pub last_raft_term: u64,
    /// `COMPACTED` or 0.
    pub flags: u32,
    /// For a compacted file: the offset below which the compaction that wrote it removed
    /// superseded records (the partition is clean up to there).
    pub cleaned_through: u64,
    pub sections_crc: u32,
}

pub const INDEX_POINT_LEN: usize = 8;
pub const TIME_POINT_LEN: usize = 12;
pub const EPOCH_POINT_LEN: usize = 16;

impl Footer {
    pub fn sections_len(&self) -> u64 {
        u64::from(self.index_entries) * INDEX_POINT_LEN as u64
            + u64::from(self.time_entries) * TIME_POINT_LEN as u64
            + u64::from(self.epoch_entries) * EPOCH_POINT_LEN as u64
    }

    pub fn is_compacted(&self) -> bool {
        self.flags & COMPACTED != 0
    }

    /// The file's size, as its footer describes it.
    pub fn file_len(&self) -> u64 {
        self.data_len + self.sections_len() + FOOTER_LEN as u64
    }

    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&FOOTER_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.entries.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.last_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_timestamp.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_len.to_le_bytes());
        b[48..52].copy_from_slice(&self.index_entries.to_le_bytes());
        b[52..56].copy_from_slice(&self.time_entries.to_le_bytes());
        b[56..60].copy_from_slice(&self.epoch_entries.to_le_bytes());
        b[60..64].copy_from_slice(&self.flags.to_le_bytes());
        b[64..72].copy_from_slice(&self.last_raft_index.to_le_bytes());
        b[72..80].copy_from_slice(&self.last_raft_term.to_le_bytes());
        b[80..88].copy_from_slice(&self.cleaned_through.to_le_bytes());
        b[88..92].copy_from_slice(&self.sections_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..92]);
        b[92..96].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The footer at the end of `b`, if it is one (magic, version and checksum).
    pub fn decode(b: &[u8]) -> Result<Footer, &'static str> {
        let b = b.get(b.len().checked_sub(FOOTER_LEN).ok_or("shorter than a footer")?..).ok_or("no footer")?;
        if b[0..8] != FOOTER_MAGIC {
            return Err("no footer magic");
        }
        if u32_at(b, 92) != crc32c::crc32c(&b[..92]) {
            return Err("footer checksum mismatch");
        }
        if u32_at(b, 8) != VERSION {
            return Err("unknown segment file version");
        }
        Ok(Footer {
            entries: u32_at(b, 12),
            base_offset: u64_at(b, 16),
            last_offset: u64_at(b, 24),
            max_timestamp: u64_at(b, 32) as i64,
            data_len: u64_at(b, 40),
            index_entries: u32_at(b, 48),
            time_entries: u32_at(b, 52),
            epoch_entries: u32_at(b, 56),
            flags: u32_at(b, 60),
            last_raft_index: u64_at(b, 64),
            last_raft_term: u64_at(b, 72),
            cleaned_through: u64_at(b, 80),
            sections_crc: u32_at(b, 88),
        })
    }
}

/// The file's indexes, decoded from their sections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indexes {
    /// (offset - base, position of the entry holding it)
    pub offsets: Vec<(u32, u32)>,
    /// (largest timestamp up to here, offset - base of the entry that reached it)
    pub times: Vec<(i64, u32)>,
    /// (leader epoch, first offset)
    pub epochs: Vec<(u64, u64)>,
}

impl Indexes {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            self.offsets.len() * INDEX_POINT_LEN
                + self.times.len() * TIME_POINT_LEN
                + self.epochs.len() * EPOCH_POINT_LEN,
        );
        for (rel, pos) in &self.offsets {
            b.extend_from_slice(&rel.to_le_bytes());
            b.extend_from_slice(&pos.to_le_bytes());
        }
        for (ts, rel) in &self.times {
            b.extend_from_slice(&ts.to_le_bytes());
            b.extend_from_slice(&rel.to_le_bytes());
        }
        for (epoch, offset) in &self.epochs {
            b.extend_from_slice(&epoch.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
        }
        b
    }

    /// The sections `b` (exactly their bytes) of a file whose footer is `f`.
    pub fn decode(b: &[u8], f: &Footer) -> Result<Indexes, &'static str> {
        if b.len() as u64 != f.sections_len() {
            return Err("index sections of the wrong length");
        }
        if crc32c::crc32c(b) != f.sections_crc {
            return Err("index sections checksum mismatch");
        }
        let (offsets, rest) = b.split_at(f.index_entries as usize * INDEX_POINT_LEN);
        let (times, epochs) = rest.split_at(f.time_entries as usize * TIME_POINT_LEN);
        Ok(Indexes {
            offsets: offsets.chunks_exact(INDEX_POINT_LEN).map(|c| (u32_at(c, 0), u32_at(c, 4))).collect(),
            times: times.chunks_exact(TIME_POINT_LEN).map(|c| (u64_at(c, 0) as i64, u32_at(c, 8))).collect(),
            epochs: epochs.chunks_exact(EPOCH_POINT_LEN).map(|c| (u64_at(c, 0), u64_at(c, 8))).collect(),
        })
    }

    /// The position to start scanning from for `offset` (the index point at or before it).
    pub fn position_for(&self, rel_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|(rel, _)| *rel <= rel_offset);
        i.checked_sub(1).map_or(0, |i| self.offsets[i].1)
    }

    /// The offset (relative) to start scanning from for a timestamp `ts`: the entry where the
    /// running maximum first reached `ts` lies at or after the last point below it.
    pub fn scan_from_for_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|(max, _)| *max < ts);
        i.checked_sub(1).map_or(0, |i| self.times[i].1)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_footers_and_indexes_round_trip() {
        let h = EntryHeader { len: 10, crc: 7, base_offset: 100, last_offset: 104, max_timestamp: -5, epoch: 3 };
        assert_eq!(EntryHeader::decode(&h.encode()), Some(h));
        assert_eq!(EntryHeader::decode(&[0u8; ENTRY_HEADER_LEN]), None, "zeros are no entry");
        let idx = Indexes { offsets: vec![(0, 0), (9, 4096)], times: vec![(50, 0), (80, 9)], epochs: vec![(3, 100)] };
        let sections = idx.encode();
        let f = Footer {
            entries: 2,
            base_offset: 100,
            last_offset: 120,
            max_timestamp: 80,
            data_len: 5000,
            index_entries: 2,
            time_entries: 2,
            epoch_entries: 1,
            last_raft_index: 77,
            last_raft_term: 3,
            flags: COMPACTED,
            cleaned_through: 110,
            sections_crc: crc32c::crc32c(&sections),
        };
        let mut file = vec![1u8; 20];
        file.extend(f.encode());
        assert_eq!(Footer::decode(&file), Ok(f));
        assert_eq!(Indexes::decode(&sections, &f), Ok(idx.clone()));
        let mut bad = file.clone();
        bad[30] ^= 1;
        assert_eq!(Footer::decode(&bad), Err("footer checksum mismatch"));
        assert_eq!(Footer::decode(&file[..50]), Err("shorter than a footer"));
        assert!(Indexes::decode(&sections[1..], &f).is_err());
        // Lookups: (relative offset, position to scan from)
        for (rel, pos) in [(0, 0), (8, 0), (9, 4096), (20, 4096)] {
            assert_eq!(idx.position_for(rel), pos, "offset {rel}");
        }
        for (ts, from) in [(10, 0), (50, 0), (51, 0), (80, 0), (81, 9)] {
            assert_eq!(idx.scan_from_for_time(ts), from, "time {ts}");
        }
    }
}
