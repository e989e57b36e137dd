//! v1's `CanonicalRecord`: one Kafka record batch as v1 stored it (the WAL payload, and the
//! element of a segment object), in bincode (format document, section 4).

use bytes::Bytes;

use super::bincode::{DecodeError, Reader};

/// One record as v1 decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub attributes: i8,
}

/// One batch. `records` are v1's decoded copy (wrong timestamps for some legacy batches, see
/// [`super::legacy`]); the wire copies are what v1 served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBatch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub is_transactional: bool,
    pub is_control: bool,
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub compression: u32,
    /// 0 CreateTime, 1 LogAppendTime.
    pub timestamp_type: u32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub records: Vec<V1Record>,
    pub v1_wire: Option<Bytes>,
    pub v2_wire: Option<Bytes>,
}

impl CanonicalBatch {
    /// Decodes one `CanonicalRecord` at the reader's position.
    pub fn read(r: &mut Reader<'_>) -> Result<CanonicalBatch, DecodeError> {
        let base_offset = r.i64()?;
        let partition_leader_epoch = r.i32()?;
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let base_sequence = r.i32()?;
        let is_transactional = r.bool()?;
        let is_control = r.bool()?;
        let compression = r.u32()?;
        if compression > 4 {
            return r.fail(format!("compression variant {compression}"));
        }
        let timestamp_type = r.u32()?;
        if timestamp_type > 1 {
            return r.fail(format!("timestamp type variant {timestamp_type}"));
        }
        let base_timestamp = r.i64()?;
        let max_timestamp = r.i64()?;
        // Each record takes at least 27 bytes, so a damaged count cannot reserve much.
        let count = r.len()?;
        let mut records = Vec::with_capacity(count.min(r.remaining() / 27));
        for _ in 0..count {
            records.push(read_record(r)?);
        }
        let _records_section = r.opt_bytes()?;
        let v1_wire = r.opt_bytes()?;
        let v2_wire = r.opt_bytes()?;
        Ok(CanonicalBatch {
            base_offset,
            partition_leader_epoch,
            producer_id,
            producer_epoch,
            base_sequence,
            is_transactional,
            is_control,
            compression,
            timestamp_type,
            base_timestamp,
            max_timestamp,
            records,
            v1_wire,
            v2_wire,
        })
    }

    /// Decodes a WAL payload: exactly one `CanonicalRecord`, nothing after it.
    pub fn decode(payload: &Bytes) -> Result<CanonicalBatch, DecodeError> {
        let mut r = Reader::new(payload);
        let batch = CanonicalBatch::read(&mut r)?;
        if r.remaining() != 0 {
            return r.fail(format!("{} bytes after the record batch", r.remaining()));
        }
        Ok(batch)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.records.len().max(1) as i64 - 1
    }
}

fn read_record(r: &mut Reader<'_>) -> Result<V1Record, DecodeError> {
    let offset = r.i64()?;
    let timestamp = r.i64()?;
    let key = r.opt_bytes()?;
    let value = r.opt_bytes()?;
    let n = r.len()?;
    let mut headers = Vec::with_capacity(n.min(r.remaining() / 9));
    for _ in 0..n {
        headers.push((r.string()?, r.opt_bytes()?));
    }
    let attributes = r.u8()? as i8;
    Ok(V1Record { offset, timestamp, key, value, headers, attributes })
}

/// A segment object: a u64 count and that many batches.
pub fn decode_segment_object(data: &Bytes) -> Result<Vec<CanonicalBatch>, DecodeError> {
    let mut r = Reader::new(data);
    let count = r.len()?;
    let mut out = Vec::with_capacity(count.min(r.remaining() / 52));
    for _ in 0..count {
        out.push(CanonicalBatch::read(&mut r)?);
    }
    if r.remaining() != 0 {
        return r.fail(format!("{} bytes after the last batch", r.remaining()));
    }
    Ok(out)
}
