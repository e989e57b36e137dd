//! Writing Kafka v2 record batches (uncompressed), for what v1 did not keep as a v2 batch:
//! legacy (magic 0/1) message sets and, should one lack every wire copy, a batch rebuilt from
//! v1's decoded records.

use bytes::Bytes;

const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The batch-level fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub log_append_time: bool,
}

impl BatchFields {
    pub const PLAIN: BatchFields = BatchFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
        control: false,
        log_append_time: false,
    };
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => varint(out, -1),
    }
}

/// An uncompressed batch of `records` (offsets ascending, the first is the base offset).
pub fn encode_batch(fields: BatchFields, records: &[NewRecord]) -> Vec<u8> {
    let base_offset = records.first().map_or(0, |r| r.offset);
    let base_ts = records.first().map_or(-1, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let last_delta = records.last().map_or(0, |r| r.offset - base_offset) as i32;
    let mut attributes = 0i16;
    if fields.log_append_time {
        attributes |= ATTR_LOG_APPEND_TIME;
    }
    if fields.transactional {
        attributes |= ATTR_TRANSACTIONAL;
    }
    if fields.control {
        attributes |= ATTR_CONTROL;
    }
    let mut b = Vec::with_capacity(61 + records.len() * 32);
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&[0; 4]); // batch length, below
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2);
    b.extend_from_slice(&[0; 4]); // CRC, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&last_delta.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&fields.producer_id.to_be_bytes());
    b.extend_from_slice(&fields.producer_epoch.to_be_bytes());
    b.extend_from_slice(&fields.base_sequence.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    let mut body = Vec::new();
    for r in records {
        body.clear();
        body.push(0); // record attributes
        varint(&mut body, r.timestamp.wrapping_sub(base_ts));
        varint(&mut body, r.offset - base_offset);
        bytes_field(&mut body, r.key.as_deref());
        bytes_field(&mut body, r.value.as_deref());
        varint(&mut body, r.headers.len() as i64);
        for (k, v) in &r.headers {
            bytes_field(&mut body, Some(k.as_bytes()));
            bytes_field(&mut body, v.as_deref());
        }
        varint(&mut b, body.len() as i64);
        b.extend_from_slice(&body);
    }
    let batch_len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A batch of no records taking the one offset `offset` (as Kafka's compaction leaves them):
/// it carries a copied log's next offset past a tail that holds no records any more.
pub fn empty_batch(offset: i64) -> Vec<u8> {
    let mut b = encode_batch(BatchFields::PLAIN, &[]);
    b[0..8].copy_from_slice(&offset.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{RecordBatchDecoder, TimestampType};

    #[test]
    fn batches_decode_as_kafka_reads_them() {
        let records = vec![
            NewRecord {
                offset: 150,
                timestamp: 1_767_225_749_119,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: vec![],
            },
            NewRecord {
                offset: 151,
                timestamp: 1_767_225_748_471, // earlier than the first: a negative delta
                key: Some(Bytes::new()),
                value: None,
                headers: vec![("h".into(), None), ("h".into(), Some(Bytes::from_static(b"x")))],
            },
        ];
        let fields = BatchFields { producer_id: 7, producer_epoch: 1, base_sequence: 3, ..BatchFields::PLAIN };
        let encoded = Bytes::from(encode_batch(fields, &records));
        let set = RecordBatchDecoder::decode(&mut encoded.clone()).expect("valid batch, CRC checked");
        let got: Vec<_> = set
            .records
            .iter()
            .map(|r| {
                (r.offset, r.timestamp, r.timestamp_type, r.key.clone(), r.value.clone(), r.producer_id, r.sequence)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (150, 1_767_225_749_119, TimestampType::Creation, None, Some(Bytes::from_static(b"v")), 7, 3),
                (151, 1_767_225_748_471, TimestampType::Creation, Some(Bytes::new()), None, 7, 4),
            ]
        );
        // kafka-protocol keeps one header per key; our reader keeps duplicates, as clients do.
        let ours: Vec<NewRecord> = crate::verify::decode(&encoded).unwrap().into_iter().map(|(r, _)| r).collect();
        assert_eq!(ours, records);
    }
}
