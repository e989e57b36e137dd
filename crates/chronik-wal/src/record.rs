//! The V3 record: the unit the WAL writes. Layout is documented byte for byte in
//! docs/WAL_FORMAT.md; `tests/format_doc.rs` decodes a record built by hand from that document.
//!
//! All integers are little-endian. The CRC-32C covers the payload first and then the segment's
//! sequence number and the header: the payload's CRC is computed before the writer lock is
//! taken and extended by 44 bytes under it, and a record left over from a recycled segment's
//! previous life never validates.

use crate::error::RecordError;

/// First four bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"CHR3";
/// Record format version written by this code.
pub const RECORD_VERSION: u8 = 3;
/// Fixed header size; the payload follows immediately.
pub const RECORD_HEADER_LEN: usize = 48;

/// What a record means to the WAL. The WAL interprets these; `entry_kind` it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    /// A log entry appended at `index` (must be the group's next index).
    Entry = 1,
    /// A copy of a live entry moved forward by segment garbage collection.
    EntryRewrite = 2,
    /// Drop every entry of the group above `index`.
    Truncate = 3,
    /// Drop every entry of the group at or below `index`; `term`/`leader_id` name the purged entry.
    Purge = 4,
    /// A small durable value for the group (`entry_kind` is the key), e.g. the Raft vote.
    State = 5,
    /// The group no longer exists; forget all of it.
    DropGroup = 6,
}

impl RecordType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Entry,
            2 => Self::EntryRewrite,
            3 => Self::Truncate,
            4 => Self::Purge,
            5 => Self::State,
            6 => Self::DropGroup,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Entry => "entry",
            Self::EntryRewrite => "entry-rewrite",
            Self::Truncate => "truncate",
            Self::Purge => "purge",
            Self::State => "state",
            Self::DropGroup => "drop-group",
        }
    }
}

/// The decoded fixed header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub record_type: RecordType,
    /// Opaque to the WAL: for Raft entries, blank / normal / membership; for state records, the key.
    pub entry_kind: u8,
    pub payload_len: u32,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub leader_id: u64,
}

impl RecordHeader {
    pub fn total_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len as usize
    }

    /// Encodes the header with the CRC of header and payload filled in.
    /// `payload_crc` is `crc32c(payload)`, computed by the caller outside any lock.
    pub fn encode(&self, segment_seq: u64, payload_crc: u32) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4] = RECORD_VERSION;
        b[5] = self.record_type as u8;
        b[6] = self.entry_kind;
        b[7] = 0; // flags, reserved
        b[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.group.to_le_bytes());
        b[24..32].copy_from_slice(&self.term.to_le_bytes());
        b[32..40].copy_from_slice(&self.index.to_le_bytes());
        b[40..48].copy_from_slice(&self.leader_id.to_le_bytes());
        let crc = header_crc(payload_crc, segment_seq, &b);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates the record starting at `buf[0]` in a segment with `segment_seq`.
    /// `buf` may extend past the record; it must hold at least the whole record.
    pub fn decode(buf: &[u8], segment_seq: u64) -> Result<RecordHeader, RecordError> {
        if buf.len() < RECORD_HEADER_LEN {
            return Err(RecordError::Truncated);
        }
        if buf[0..4] != RECORD_MAGIC {
            return Err(if buf[0..4] == [0; 4] { RecordError::Zeroes } else { RecordError::BadMagic });
        }
        if buf[4] != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(buf[4]));
        }
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
        let payload_len = u32_at(12);
        let total = RECORD_HEADER_LEN + payload_len as usize;
        if buf.len() < total {
            return Err(RecordError::Truncated);
        }
        let stored_crc = u32_at(8);
        let crc = header_crc(crc32c::crc32c(&buf[RECORD_HEADER_LEN..total]), segment_seq, &buf[..RECORD_HEADER_LEN]);
        if crc != stored_crc {
            return Err(RecordError::BadChecksum { stored: stored_crc, computed: crc });
        }
        let record_type = RecordType::from_u8(buf[5]).ok_or(RecordError::UnknownType(buf[5]))?;
        Ok(RecordHeader {
            record_type,
            entry_kind: buf[6],
            payload_len,
            group: u64_at(16),
            term: u64_at(24),
            index: u64_at(32),
            leader_id: u64_at(40),
        })
    }
}

impl RecordHeader {
    /// Decodes a header the WAL already validated (at write or recovery) without re-checking the
    /// checksum: the read path must not pay a CRC pass per fetch.
    pub fn decode_unchecked(buf: &[u8]) -> Option<RecordHeader> {
        if buf.len() < RECORD_HEADER_LEN || buf[0..4] != RECORD_MAGIC {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
        Some(RecordHeader {
            record_type: RecordType::from_u8(buf[5])?,
            entry_kind: buf[6],
            payload_len: u32::from_le_bytes(buf[12..16].try_into().unwrap()),
            group: u64_at(16),
            term: u64_at(24),
            index: u64_at(32),
            leader_id: u64_at(40),
        })
    }
}

/// Extends the payload's CRC over the segment sequence number and the header bytes other than
/// magic and the CRC itself.
fn header_crc(payload_crc: u32, segment_seq: u64, header: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(payload_crc, &segment_seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &header[4..8]);
    crc32c::crc32c_append(crc, &header[12..RECORD_HEADER_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: u32) -> RecordHeader {
        RecordHeader {
            record_type: RecordType::Entry,
            entry_kind: 1,
            payload_len,
            group: 7,
            term: 3,
            index: 42,
            leader_id: 2,
        }
    }

    fn encode(h: &RecordHeader, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = h.encode(seq, crc32c::crc32c(payload)).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn round_trip() {
        let h = header(5);
        let buf = encode(&h, 9, b"hello");
        assert_eq!(RecordHeader::decode(&buf, 9).unwrap(), h);
    }

    #[test]
    fn decode_rejects() {
        let h = header(5);
        let good = encode(&h, 9, b"hello");
        type Case = (&'static str, Vec<u8>, u64, fn(&RecordError) -> bool);
        let cases: Vec<Case> = vec![
            ("other segment", good.clone(), 10, |e| matches!(e, RecordError::BadChecksum { .. })),
            ("short", good[..20].to_vec(), 9, |e| matches!(e, RecordError::Truncated)),
            ("short payload", good[..50].to_vec(), 9, |e| matches!(e, RecordError::Truncated)),
            ("zeroes", vec![0; 64], 9, |e| matches!(e, RecordError::Zeroes)),
            (
                "payload bit flip",
                {
                    let mut b = good.clone();
                    b[50] ^= 1;
                    b
                },
                9,
                |e| matches!(e, RecordError::BadChecksum { .. }),
            ),
            (
                "term bit flip",
                {
                    let mut b = good.clone();
                    b[25] ^= 0x80;
                    b
                },
                9,
                |e| matches!(e, RecordError::BadChecksum { .. }),
            ),
            (
                "type bit flip",
                {
                    let mut b = good.clone();
                    b[5] ^= 0x40;
                    b
                },
                9,
                |e| matches!(e, RecordError::BadChecksum { .. }),
            ),
            (
                "magic",
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                9,
                |e| matches!(e, RecordError::BadMagic),
            ),
            (
                "version",
                {
                    let mut b = good.clone();
                    b[4] = 2;
                    b
                },
                9,
                |e| matches!(e, RecordError::UnknownVersion(2)),
            ),
        ];
        for (name, buf, seq, expect) in cases {
            let err = RecordHeader::decode(&buf, seq).expect_err(name);
            assert!(expect(&err), "{name}: unexpected {err:?}");
        }
    }
}
