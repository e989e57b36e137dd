//! One record batch through compaction: its records' keys read (decompressing, bounded, if
//! need be), and the batch rewritten with only the records kept.
//!
//! A rewritten batch keeps everything Kafka's cleaner keeps: base offset, lastOffsetDelta (so
//! the batch still ends where it did and offsets stay a function of the log), timestamps,
//! producer id, epoch and base sequence, attributes and codec. Only the record count, the
//! records, the length and the CRC change. A batch with no record left is dropped (this broker
//! keeps producer state in its snapshots, not in the log, so no empty batch need stay for
//! that), except where the caller asks to keep it: then it stays as an empty batch (no records,
//! uncompressed), which consumers step over to the offset after it, as they do over Kafka's.

use std::borrow::Cow;

use super::codec::{self, CodecError};
use crate::batch::{BATCH_HEADER_LEN, BatchError, BatchHeader, CRC_START};
use crate::records::{RecordMeta, Records};

/// The most a batch's records may expand to when decompressed. A larger batch is kept as it
/// is (its keys unread): compaction then keeps more than it must, never less.
pub const MAX_RECORDS_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("cannot read the batch at offset {offset}: {source}")]
    Codec {
        offset: i64,
        #[source]
        source: CodecError,
    },
    #[error("malformed batch at offset {offset}: {source}")]
    Record {
        offset: i64,
        #[source]
        source: BatchError,
    },
}

/// The records section of `batch` (its bytes after the header), decompressed if need be.
fn records_section<'a>(batch: &'a [u8], h: &BatchHeader) -> Result<Cow<'a, [u8]>, FilterError> {
    let section = batch.get(BATCH_HEADER_LEN..h.total_len().min(batch.len())).unwrap_or(&[]);
    if h.is_uncompressed() {
        return Ok(Cow::Borrowed(section));
    }
    codec::decompress(h.compression(), section, MAX_RECORDS_BYTES)
        .map(Cow::Owned)
        .map_err(|source| FilterError::Codec { offset: h.base_offset, source })
}

/// Calls `f` with each record of `batch` and its offset.
pub fn visit(batch: &[u8], h: &BatchHeader, mut f: impl FnMut(u64, &RecordMeta<'_>)) -> Result<(), FilterError> {
    let section = records_section(batch, h)?;
    for record in Records::in_section(&section, h.base_timestamp) {
        let r = record.map_err(|source| FilterError::Record { offset: h.base_offset, source })?;
        f((h.base_offset + i64::from(r.offset_delta)) as u64, &r);
    }
    Ok(())
}

/// What compaction does with one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    Unchanged,
    Dropped,
    Rewritten(Vec<u8>),
}

/// `batch` with only the records `keep(offset, record)` keeps; with none left, dropped, or
/// empty if `keep_empty`.
pub fn filter(
    batch: &[u8],
    h: &BatchHeader,
    keep_empty: bool,
    mut keep: impl FnMut(u64, &RecordMeta<'_>) -> bool,
) -> Result<Filtered, FilterError> {
    let section = records_section(batch, h)?;
    let mut kept = Vec::new();
    let (mut count, mut total) = (0i32, 0i32);
    for record in Records::in_section(&section, h.base_timestamp) {
        let r = record.map_err(|source| FilterError::Record { offset: h.base_offset, source })?;
        total += 1;
        if keep((h.base_offset + i64::from(r.offset_delta)) as u64, &r) {
            kept.extend_from_slice(r.raw);
            count += 1;
        }
    }
    if count == total {
        return Ok(Filtered::Unchanged);
    }
    if count == 0 && !keep_empty {
        return Ok(Filtered::Dropped);
    }
    let records = if count == 0 {
        Vec::new()
    } else {
        codec::compress(h.compression(), &kept)
            .map_err(|source| FilterError::Codec { offset: h.base_offset, source })?
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    if count == 0 {
        let attributes = h.attributes & !0x07; // nothing to decompress
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
    }
    out.extend_from_slice(&records);
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rewritten(out))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::split_batches;
    use crate::batch::tests::batch_of;
    use crate::records::tests::keyed;

    /// A batch at `base` of (key, value) records, compressed with `codec`.
    pub(crate) fn keyed_batch(base: i64, codec: u8, records: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
        let recs: Vec<Vec<u8>> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| keyed(i as i64, i as i64, k.as_bytes(), v.map(str::as_bytes)))
            .collect();
        let n = records.len() as i32;
        let mut b = batch_of(&recs, n, n - 1, ts, ts + i64::from(n) - 1);
        b[0..8].copy_from_slice(&base.to_be_bytes());
        if codec != 0 {
            let packed = codec::compress(codec, &b[BATCH_HEADER_LEN..]).unwrap();
            b.truncate(BATCH_HEADER_LEN);
            b.extend(packed);
            let attributes = i16::from(codec);
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            let length = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&length.to_be_bytes());
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        b
    }

    fn keys_of(batch: &[u8]) -> Vec<(u64, String, bool)> {
        let h = split_batches(batch, true).unwrap()[0].header;
        let mut out = Vec::new();
        visit(batch, &h, |o, r| out.push((o, String::from_utf8(r.key.unwrap().to_vec()).unwrap(), r.is_tombstone)))
            .unwrap();
        out
    }

    #[test]
    fn filtering_keeps_offsets_and_rewrites_count_and_crc_in_every_codec() {
        for codec in 0..=4u8 {
            let b = keyed_batch(100, codec, &[("a", Some("1")), ("b", Some("2")), ("a", None), ("c", Some("3"))], 5);
            let h = split_batches(&b, true).unwrap()[0].header;
            assert_eq!(keys_of(&b)[2], (102, "a".into(), true), "codec {codec}");
            assert_eq!(filter(&b, &h, false, |_, _| true).unwrap(), Filtered::Unchanged);
            assert_eq!(filter(&b, &h, false, |_, _| false).unwrap(), Filtered::Dropped);
            let Filtered::Rewritten(empty) = filter(&b, &h, true, |_, _| false).unwrap() else {
                panic!("codec {codec}: kept empty")
            };
            let eh = split_batches(&empty, true).expect("the CRC is valid")[0].header;
            assert_eq!((eh.base_offset, eh.last_offset(), eh.record_count, eh.compression()), (100, 103, 0, 0));
            assert_eq!(empty.len(), BATCH_HEADER_LEN);
            let Filtered::Rewritten(out) = filter(&b, &h, false, |o, _| o == 101 || o == 103).unwrap() else {
                panic!("codec {codec}: rewritten")
            };
            let nh = split_batches(&out, true).expect("the CRC is valid")[0].header;
            assert_eq!(
                (nh.base_offset, nh.last_offset(), nh.record_count, nh.compression()),
                (100, 103, 2, codec),
                "codec {codec}: offsets kept, count updated"
            );
            assert_eq!((nh.base_timestamp, nh.max_timestamp), (h.base_timestamp, h.max_timestamp));
            assert_eq!(keys_of(&out), vec![(101, "b".into(), false), (103, "c".into(), false)], "codec {codec}");
        }
    }

    #[test]
    fn a_batch_that_expands_too_far_is_an_error_not_an_allocation() {
        let big = "x".repeat(1 << 20);
        let records: Vec<(&str, Option<&str>)> = (0..80).map(|_| ("k", Some(big.as_str()))).collect();
        let b = keyed_batch(0, 4, &records, 0);
        assert!(b.len() < 1 << 20, "zstd packs it small ({} bytes)", b.len());
        let h = split_batches(&b, true).unwrap()[0].header;
        assert_eq!(
            visit(&b, &h, |_, _| {}),
            Err(FilterError::Codec { offset: 0, source: CodecError::TooLarge { limit: MAX_RECORDS_BYTES } })
        );
    }
}
