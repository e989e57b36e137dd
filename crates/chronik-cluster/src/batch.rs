//! Kafka RecordBatch (magic v2) headers: parse, validate, stamp.
//!
//! Layout (Kafka protocol docs, "Record Batch"): baseOffset i64 @0, batchLength i32 @8,
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17 (CRC-32C of bytes 21..end),
//! attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35,
//! producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57.
//! Bytes 0..12 and 12..16 lie outside the CRC, so the broker may stamp the base offset and the
//! leader epoch in place; LogAppendTime changes covered bytes and needs a new CRC.

use std::ops::Range;

pub const BATCH_HEADER_LEN: usize = 61;
/// The bytes a leader stamps: base offset (0..8), batch length (8..12, unchanged), leader epoch (12..16).
pub const STAMP_LEN: usize = 16;
pub(crate) const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {have} bytes where {need} are needed")]
    Truncated { have: usize, need: usize },
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("record batch length {0} is invalid")]
    BadLength(i32),
    #[error("record batch CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch has negative lastOffsetDelta {0}")]
    BadOffsetDelta(i32),
    #[error("request carries no record batch")]
    Empty,
    #[error("record {index} of the batch is malformed: {reason}")]
    BadRecord { index: usize, reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(b: &[u8], o: usize) -> i16 {
    i16::from_be_bytes(b[o..o + 2].try_into().unwrap())
}
fn i32_at(b: &[u8], o: usize) -> i32 {
    i32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn i64_at(b: &[u8], o: usize) -> i64 {
    i64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

impl BatchHeader {
    /// Parses the header at the start of `b` (no CRC check).
    pub fn parse(b: &[u8]) -> Result<BatchHeader, BatchError> {
        if b.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated { have: b.len(), need: BATCH_HEADER_LEN });
        }
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let batch_length = i32_at(b, 8);
        if batch_length < (BATCH_HEADER_LEN - 12) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: i64_at(b, 0),
            batch_length,
            partition_leader_epoch: i32_at(b, 12),
            magic,
            crc: u32::from_be_bytes(b[17..21].try_into().unwrap()),
            attributes: i16_at(b, 21),
            last_offset_delta: i32_at(b, 23),
            base_timestamp: i64_at(b, 27),
            max_timestamp: i64_at(b, 35),
            producer_id: i64_at(b, 43),
            producer_epoch: i16_at(b, 51),
            base_sequence: i32_at(b, 53),
            record_count: i32_at(b, 57),
        })
    }

    /// Bytes the whole batch occupies.
    pub fn total_len(&self) -> usize {
        12 + self.batch_length as usize
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Sequence number of the batch's last record (an idempotent producer's; sequences wrap at
    /// i32::MAX, as in Kafka).
    pub fn last_sequence(&self) -> i32 {
        self.base_sequence.wrapping_add(self.last_offset_delta) & i32::MAX
    }

    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the records are stored as they are (compression codec 0), so they can be read
    /// without decompressing.
    pub fn is_uncompressed(&self) -> bool {
        self.compression() == 0
    }
}

/// A batch found in a records blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpan {
    pub range: Range<usize>,
    pub header: BatchHeader,
}

/// Splits concatenated batches, checking each one's framing (and CRC when `check_crc`).
pub fn split_batches(records: &[u8], check_crc: bool) -> Result<Vec<BatchSpan>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..])?;
        let end = pos + header.total_len();
        if end > records.len() {
            return Err(BatchError::Truncated { have: records.len() - pos, need: header.total_len() });
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::BadOffsetDelta(header.last_offset_delta));
        }
        if check_crc {
            let computed = crc32c::crc32c(&records[pos + CRC_START..end]);
            if computed != header.crc {
                return Err(BatchError::CrcMismatch { stored: header.crc, computed });
            }
        }
        out.push(BatchSpan { range: pos..end, header });
        pos = end;
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

/// The last offset an imported entry's batches take, when they may follow a log whose next
/// offset is `next_offset`: each batch starts at or after it and after the batch before (gaps
/// allowed, as a compacted source log has them). `None`: the entry takes no offsets and the
/// state machine refuses it. The WAL encoder, log recovery and the state machine all decide
/// with this, so they agree.
pub fn import_last_offset(spans: &[BatchSpan], next_offset: u64) -> Option<u64> {
    let mut next = next_offset;
    for s in spans {
        let base = u64::try_from(s.header.base_offset).ok()?;
        if base < next {
            return None;
        }
        next = u64::try_from(s.header.last_offset()).ok()?.checked_add(1)?;
    }
    next.checked_sub(1).filter(|_| !spans.is_empty())
}

/// The first 16 bytes of a batch with `base_offset` and `leader_epoch` written in (both outside
/// the batch CRC, so the batch stays valid).
pub fn stamped_prefix(batch: &[u8], base_offset: u64, leader_epoch: i32) -> [u8; STAMP_LEN] {
    let mut p: [u8; STAMP_LEN] = batch[..STAMP_LEN].try_into().expect("batch has a header");
    p[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    p[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    p
}

/// Rewrites a batch for a LogAppendTime topic: timestamp type bit set, maxTimestamp = `now_ms`,
/// CRC recomputed (these bytes are covered by it).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16_at(batch, 21) | ATTR_TIMESTAMP_TYPE;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid batch of `records` empty records (real clients' bytes are tested
    /// end to end; this is for the header logic).
    pub fn batch(records: i32, timestamp: i64) -> Vec<u8> {
        batch_of(&[], records, records - 1, timestamp, timestamp)
    }

    /// A batch holding `records` (their bytes), claiming `count` records and
    /// `last_offset_delta`, with a valid CRC.
    pub fn batch_of(records: &[Vec<u8>], count: i32, last_offset_delta: i32, base_ts: i64, max_ts: i64) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        for r in records {
            b.extend_from_slice(r);
        }
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        b[27..35].copy_from_slice(&base_ts.to_be_bytes());
        b[35..43].copy_from_slice(&max_ts.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn split_and_validate_table() {
        let good = batch(3, 1000);
        let two = [good.clone(), batch(1, 2000)].concat();
        let mut bad_crc = good.clone();
        bad_crc[30] ^= 1;
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        let mut bad_len = good.clone();
        bad_len[8..12].copy_from_slice(&5i32.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, Result<usize, BatchError>)> = vec![
            ("one batch", good.clone(), Ok(1)),
            ("two batches", two, Ok(2)),
            ("empty", vec![], Err(BatchError::Empty)),
            ("short header", good[..40].to_vec(), Err(BatchError::Truncated { have: 40, need: 61 })),
            (
                "length past end",
                [good.clone(), good[..20].to_vec()].concat(),
                Err(BatchError::Truncated { have: 20, need: 61 }),
            ),
            (
                "wrong crc",
                bad_crc,
                Err(BatchError::CrcMismatch { stored: BatchHeader::parse(&good).unwrap().crc, computed: 0 }),
            ),
            ("magic v1", bad_magic, Err(BatchError::UnsupportedMagic(1))),
            ("tiny length", bad_len, Err(BatchError::BadLength(5))),
        ];
        for (name, bytes, expected) in cases {
            let got = split_batches(&bytes, true).map(|v| v.len());
            match (&got, &expected) {
                (Err(BatchError::CrcMismatch { stored: a, .. }), Err(BatchError::CrcMismatch { stored: b, .. })) => {
                    assert_eq!(a, b, "{name}")
                }
                _ => assert_eq!(got, expected, "{name}"),
            }
        }
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut b = batch(5, 1000);
        let prefix = stamped_prefix(&b, 4242, 7);
        b[..STAMP_LEN].copy_from_slice(&prefix);
        let h = split_batches(&b, true).unwrap()[0].header;
        assert_eq!((h.base_offset, h.partition_leader_epoch, h.last_offset()), (4242, 7, 4246));
    }

    #[test]
    fn log_append_time_rewrites_and_recomputes_crc() {
        let mut b = batch(2, 1000);
        set_log_append_time(&mut b, 99_999);
        let h = split_batches(&b, true).unwrap()[0].header;
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_999);
    }
}
