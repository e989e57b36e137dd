//! The records inside a v2 batch, read in place: each record's offset delta, timestamp and key,
//! with its framing checked. Nothing is allocated and the work is bounded by the bytes given,
//! so a hostile length or header count costs no more than the bytes sent. A compressed batch's
//! records are read only after a bounded decompression (compaction, and produce validation on
//! compacted topics, both in the storage module).
//!
//! Record layout (Kafka protocol docs, "Record"): length varint, attributes int8,
//! timestampDelta varlong, offsetDelta varint, key (varint length, -1 null), value (same),
//! headers (varint count, each a key and a value with varint lengths). Varints are zigzag.

use crate::batch::{BATCH_HEADER_LEN, BatchError, BatchHeader};

/// What the broker reads of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta<'a> {
    pub offset_delta: i32,
    pub timestamp: i64,
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone on a compacted topic.
    pub is_tombstone: bool,
    /// The whole record as stored, its length prefix included.
    pub raw: &'a [u8],
}

/// The records of one uncompressed batch (`batch`: its whole bytes, header first).
pub struct Records<'a> {
    rest: &'a [u8],
    base_timestamp: i64,
    index: usize,
}

impl<'a> Records<'a> {
    /// The records of an uncompressed batch (`batch`: its whole bytes, header first).
    pub fn new(batch: &'a [u8], header: &BatchHeader) -> Records<'a> {
        let end = header.total_len().min(batch.len());
        Records::in_section(batch.get(BATCH_HEADER_LEN..end).unwrap_or(&[]), header.base_timestamp)
    }

    /// The records in `section`: the bytes after a batch header (decompressed if need be).
    pub fn in_section(section: &'a [u8], base_timestamp: i64) -> Records<'a> {
        Records { rest: section, base_timestamp, index: 0 }
    }

    fn bad(&self, reason: &'static str) -> BatchError {
        BatchError::BadRecord { index: self.index, reason }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordMeta<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = self.read_one();
        if result.is_err() {
            self.rest = &[]; // stop after the first malformed record
        }
        self.index += 1;
        Some(result)
    }
}

impl<'a> Records<'a> {
    fn read_one(&mut self) -> Result<RecordMeta<'a>, BatchError> {
        let start = self.rest;
        let mut cur = Cursor(self.rest);
        let len = cur.varint().ok_or_else(|| self.bad("truncated length"))?;
        let len = usize::try_from(len).map_err(|_| self.bad("negative length"))?;
        let body = cur.0.get(..len).ok_or_else(|| self.bad("length runs past the batch"))?;
        self.rest = &cur.0[len..];
        let raw = &start[..start.len() - self.rest.len()];
        let mut r = Cursor(body);
        r.take(1).ok_or_else(|| self.bad("truncated attributes"))?;
        let ts_delta = r.varint().ok_or_else(|| self.bad("truncated timestamp delta"))?;
        let offset_delta = r.varint().ok_or_else(|| self.bad("truncated offset delta"))?;
        let offset_delta = i32::try_from(offset_delta).map_err(|_| self.bad("offset delta out of range"))?;
        let key = r.bytes().ok_or_else(|| self.bad("bad key length"))?;
        let value = r.bytes().ok_or_else(|| self.bad("bad value length"))?;
        let headers = r.varint().ok_or_else(|| self.bad("truncated header count"))?;
        // Each header takes at least two bytes (two lengths): a count the bytes cannot hold
        // is refused before anything is read.
        if headers < 0 || headers as u64 > r.0.len() as u64 / 2 {
            return Err(self.bad("header count does not fit the record"));
        }
        for _ in 0..headers {
            let key = r.bytes().ok_or_else(|| self.bad("bad header key"))?;
            if key.is_none() {
                return Err(self.bad("null header key"));
            }
            r.bytes().ok_or_else(|| self.bad("bad header value"))?;
        }
        if !r.0.is_empty() {
            return Err(self.bad("bytes left after the record's fields"));
        }
        Ok(RecordMeta {
            offset_delta,
            timestamp: self.base_timestamp.wrapping_add(ts_delta),
            key,
            is_tombstone: value.is_none(),
            raw,
        })
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    /// A zigzag varint of up to 64 bits.
    fn varint(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for (i, byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// A varint-length byte string; `Some(None)` for a null one (length -1).
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n => self.take(usize::try_from(n).ok()?).map(Some),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::split_batches;
    use crate::batch::tests::batch_of;

    fn zigzag(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// A record with a key and a value or none (a tombstone), no headers.
    pub fn keyed(ts_delta: i64, offset_delta: i64, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0u8];
        zigzag(ts_delta, &mut body);
        zigzag(offset_delta, &mut body);
        zigzag(key.len() as i64, &mut body);
        body.extend_from_slice(key);
        match value {
            Some(v) => {
                zigzag(v.len() as i64, &mut body);
                body.extend_from_slice(v);
            }
            None => zigzag(-1, &mut body),
        }
        zigzag(0, &mut body);
        let mut out = Vec::new();
        zigzag(body.len() as i64, &mut out);
        out.extend(body);
        out
    }

    /// One record's bytes: (timestamp delta, offset delta, key, value, headers).
    pub fn record(
        ts_delta: i64,
        offset_delta: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        zigzag(ts_delta, &mut body);
        zigzag(offset_delta, &mut body);
        match key {
            Some(k) => {
                zigzag(k.len() as i64, &mut body);
                body.extend_from_slice(k);
            }
            None => zigzag(-1, &mut body),
        }
        zigzag(value.len() as i64, &mut body);
        body.extend_from_slice(value);
        zigzag(headers.len() as i64, &mut body);
        for (k, v) in headers {
            zigzag(k.len() as i64, &mut body);
            body.extend_from_slice(k.as_bytes());
            zigzag(v.len() as i64, &mut body);
            body.extend_from_slice(v);
        }
        let mut out = Vec::new();
        zigzag(body.len() as i64, &mut out);
        out.extend(body);
        out
    }

    /// (offset delta, timestamp, key, tombstone)
    type Walked = (i32, i64, Option<Vec<u8>>, bool);

    fn walk(b: &[u8]) -> Vec<Result<Walked, BatchError>> {
        let h = split_batches(b, true).unwrap()[0].header;
        Records::new(b, &h)
            .map(|r| r.map(|m| (m.offset_delta, m.timestamp, m.key.map(<[u8]>::to_vec), m.is_tombstone)))
            .collect()
    }

    #[test]
    fn reads_offsets_and_timestamps_of_each_record() {
        let recs = [
            record(0, 0, Some(b"k0"), b"v0", &[]),
            record(7, 1, None, b"", &[("h", b"x"), ("h2", b"")]),
            record(-3, 2, Some(b""), b"value", &[]),
        ];
        let b = batch_of(&recs, 3, 2, 1000, 1007);
        let metas: Vec<_> = walk(&b).into_iter().map(Result::unwrap).collect();
        let expected =
            [(0, 1000, Some(b"k0".to_vec()), false), (1, 1007, None, false), (2, 997, Some(Vec::new()), false)];
        assert_eq!(metas, expected);
        let h = split_batches(&b, true).unwrap()[0].header;
        let raw: Vec<u8> = Records::new(&b, &h).flat_map(|r| r.unwrap().raw.to_vec()).collect();
        assert_eq!(raw, recs.concat(), "the raw records are the stored bytes, whole");
    }

    #[test]
    fn malformed_records_are_refused_without_reading_past_the_batch() {
        let good = record(0, 0, Some(b"k"), b"v", &[]);
        let mut claims_many_headers = record(0, 0, Some(b"k"), b"v", &[]);
        // The header count is the last byte: claim 2^31-ish headers.
        let n = claims_many_headers.len();
        claims_many_headers.truncate(n - 1);
        claims_many_headers.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        claims_many_headers[0] += 8; // the (zigzag) record length grows by the four extra bytes
        let mut long_length = good.clone();
        long_length[0] = 0x7e; // 63 bytes, more than there are
        let mut trailing = good.clone();
        trailing[0] += 4; // two more bytes, zigzag
        trailing.extend_from_slice(&[0, 0]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("header count beyond the bytes", claims_many_headers, "header count does not fit the record"),
            ("length past the batch", long_length, "length runs past the batch"),
            ("bytes left over", trailing, "bytes left after the record's fields"),
        ];
        for (name, bad, reason) in cases {
            let b = batch_of(&[good.clone(), bad], 2, 1, 0, 0);
            let got = walk(&b);
            assert!(got[0].is_ok(), "{name}: the good record reads");
            assert_eq!(got[1], Err(BatchError::BadRecord { index: 1, reason }), "{name}");
            assert_eq!(got.len(), 2, "{name}: nothing is read after a bad record");
        }
    }
}
