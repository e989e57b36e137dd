//! Produce validation, as Kafka's log validator does it, from what the batch carries without
//! decompressing it: the record count against the last offset delta, the attributes (codec,
//! control and transactional bits), the size, and the CreateTime timestamp bounds
//! (`message.timestamp.before.max.ms` / `after.max.ms`). An uncompressed batch's records are
//! also walked in place (offset deltas in order, timestamps in bounds, framing and header
//! counts that fit the bytes). A compressed batch is checked by its header only: the broker
//! never decompresses what clients send, so a small hostile batch cannot cost it more than its
//! size; its first and largest timestamps (both in the header) are held to the bounds.

use chronik_cluster::{BatchHeader, Records, TimestampType, TopicSettings};
use kafka_protocol::ResponseError;

use crate::error::ApiError;

/// Codec ids Kafka defines (none, gzip, snappy, lz4, zstd).
const MAX_CODEC: u8 = 4;
/// A client timestamp meaning "none" (Kafka's NO_TIMESTAMP): not held to the bounds.
const NO_TIMESTAMP: i64 = -1;

/// Checks one batch (`bytes`: the whole batch, CRC already checked) against its topic's rules.
pub fn check_batch(h: &BatchHeader, bytes: &[u8], topic: &TopicSettings, now_ms: i64) -> Result<(), ApiError> {
    let invalid = |m: String| ApiError::new(ResponseError::InvalidRecord, m);
    if h.total_len() as u64 > topic.max_message_bytes {
        return Err(ApiError::new(
            ResponseError::MessageTooLarge,
            format!("record batch of {} bytes exceeds max.message.bytes ({})", h.total_len(), topic.max_message_bytes),
        ));
    }
    if h.compression() > MAX_CODEC {
        return Err(ApiError::new(
            ResponseError::CorruptMessage,
            format!("record batch names compression codec {}, which does not exist", h.compression()),
        ));
    }
    if h.is_transactional() {
        return Err(ApiError::new(ResponseError::InvalidRequest, "transactions are not supported"));
    }
    if h.is_control() {
        return Err(invalid("clients may not write control batches".into()));
    }
    if i64::from(h.record_count) != i64::from(h.last_offset_delta) + 1 {
        return Err(invalid(format!(
            "record count {} does not match lastOffsetDelta {} + 1",
            h.record_count, h.last_offset_delta
        )));
    }
    let bounds = match topic.timestamp_type {
        TimestampType::CreateTime => Some(TimestampBounds::new(topic, now_ms)),
        TimestampType::LogAppendTime => None, // the broker's clock replaces them
    };
    if let Some(b) = &bounds {
        b.check(h.base_timestamp, "first record")?;
        b.check(h.max_timestamp, "largest")?;
    }
    if h.is_uncompressed() {
        let mut count = 0i64;
        for (i, record) in Records::new(bytes, h).enumerate() {
            let r = record.map_err(|e| ApiError::new(ResponseError::CorruptMessage, e.to_string()))?;
            if i64::from(r.offset_delta) != i as i64 {
                return Err(invalid(format!("record {i} has offset delta {}", r.offset_delta)));
            }
            if let Some(b) = &bounds {
                b.check(r.timestamp, "record")?;
            }
            count += 1;
        }
        if count != i64::from(h.record_count) {
            return Err(invalid(format!("batch claims {} records and holds {count}", h.record_count)));
        }
    }
    if topic.cleanup.compact {
        check_keys(h, bytes)?;
    }
    Ok(())
}

/// A compacted topic keeps the latest record per key, so every record needs one (Kafka's
/// validator refuses the batch the same way). A compressed batch is decompressed for this,
/// within a bound: one that expands further is refused, as compaction could not read it.
fn check_keys(h: &BatchHeader, bytes: &[u8]) -> Result<(), ApiError> {
    let mut keyless = 0usize;
    chronik_cluster::visit_records(bytes, h, |_, r| keyless += usize::from(r.key.is_none()))
        .map_err(|e| ApiError::new(ResponseError::CorruptMessage, e.to_string()))?;
    if keyless > 0 {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            format!("compacted topic cannot accept records without a key ({keyless} in the batch)"),
        ));
    }
    Ok(())
}

/// The CreateTime window `[now - before.max, now + after.max]`.
struct TimestampBounds {
    earliest: i64,
    latest: i64,
}

impl TimestampBounds {
    fn new(topic: &TopicSettings, now_ms: i64) -> TimestampBounds {
        TimestampBounds {
            earliest: now_ms.saturating_sub(topic.timestamp_before_max_ms),
            latest: now_ms.saturating_add(topic.timestamp_after_max_ms),
        }
    }

    fn check(&self, ts: i64, which: &str) -> Result<(), ApiError> {
        if ts == NO_TIMESTAMP || (self.earliest..=self.latest).contains(&ts) {
            return Ok(());
        }
        Err(ApiError::new(
            ResponseError::InvalidTimestamp,
            format!(
                "{which} timestamp {ts} is outside [{}, {}] (message.timestamp.before.max.ms / after.max.ms)",
                self.earliest, self.latest
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use chronik_cluster::{TopicDefaults, split_batches};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    /// One batch as a client encodes it: a record per (timestamp, offset).
    fn encoded(records: &[(i64, i64)], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .map(|(timestamp, offset)| crate::codec::plain_record(*offset, *timestamp, None, Some("v".into())))
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    /// `b` with a header field overwritten (at `at`) and the CRC recomputed.
    fn patched(mut b: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
        b[at..at + value.len()].copy_from_slice(value);
        let end = 12 + i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c(&b[21..end]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn topic(timestamp_type: TimestampType) -> TopicSettings {
        let mut t = TopicSettings::resolve(&TopicDefaults::default(), &Default::default());
        (t.timestamp_before_max_ms, t.timestamp_after_max_ms, t.timestamp_type) = (HOUR, HOUR, timestamp_type);
        t
    }

    #[test]
    fn log_validator_table() {
        let (create, append) = (topic(TimestampType::CreateTime), topic(TimestampType::LogAppendTime));
        let none = Compression::None;
        let two = encoded(&[(NOW, 0), (NOW + 5, 1)], none);
        let attrs = |a: i16| patched(encoded(&[(NOW, 0)], none), 21, &a.to_be_bytes());
        // (name, batch, topic, expected error code)
        let cases: Vec<(&str, Vec<u8>, &TopicSettings, Option<ResponseError>)> = vec![
            ("valid", two.clone(), &create, None),
            (
                "count above delta + 1",
                patched(two.clone(), 57, &3i32.to_be_bytes()),
                &create,
                Some(ResponseError::InvalidRecord),
            ),
            (
                "fewer records than claimed",
                patched(patched(two.clone(), 57, &3i32.to_be_bytes()), 23, &2i32.to_be_bytes()),
                &create,
                Some(ResponseError::InvalidRecord),
            ),
            // The first record's offset delta is byte 64 (length, attributes and a zero timestamp
            // delta take one byte each): 2 is zigzag for 1.
            ("first offset delta not 0", patched(two.clone(), 64, &[2]), &create, Some(ResponseError::InvalidRecord)),
            ("unknown codec", attrs(7), &create, Some(ResponseError::CorruptMessage)),
            ("control batch", attrs(0x20), &create, Some(ResponseError::InvalidRecord)),
            ("transactional", attrs(0x10), &create, Some(ResponseError::InvalidRequest)),
            ("too old", encoded(&[(NOW - 2 * HOUR, 0)], none), &create, Some(ResponseError::InvalidTimestamp)),
            ("too far ahead", encoded(&[(NOW + 2 * HOUR, 0)], none), &create, Some(ResponseError::InvalidTimestamp)),
            (
                "one record in the middle too old",
                encoded(&[(NOW, 0), (NOW - 2 * HOUR, 1), (NOW, 2)], none),
                &create,
                Some(ResponseError::InvalidTimestamp),
            ),
            ("old on a LogAppendTime topic", encoded(&[(0, 0)], none), &append, None),
            ("compressed", encoded(&[(NOW, 0), (NOW + 1, 1)], Compression::Gzip), &create, None),
            (
                "compressed, too far ahead (header)",
                encoded(&[(NOW, 0), (NOW + 2 * HOUR, 1)], Compression::Gzip),
                &create,
                Some(ResponseError::InvalidTimestamp),
            ),
            (
                "compressed body that is not gzip: not opened",
                patched(encoded(&[(NOW, 0)], none), 21, &1i16.to_be_bytes()),
                &create,
                None,
            ),
        ];
        for (name, bytes, topic, expected) in cases {
            let h = split_batches(&bytes, true).unwrap_or_else(|e| panic!("{name}: {e}"))[0].header;
            let got = check_batch(&h, &bytes, topic, NOW).err().map(|e| e.code);
            assert_eq!(got, expected, "{name}");
        }
    }

    /// A batch of records with these keys.
    fn keyed(keys: &[Option<&str>], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| crate::codec::plain_record(i as i64, NOW, k.map(|k| k.to_string().into()), Some("v".into())))
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    #[test]
    fn compacted_topics_need_a_key_on_every_record_in_every_codec() {
        let mut compacted = topic(TimestampType::CreateTime);
        compacted.cleanup.compact = true;
        let plain = topic(TimestampType::CreateTime);
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let cases = [
                ("keyed", keyed(&[Some("a"), Some("b")], compression), &compacted, None),
                ("one keyless", keyed(&[Some("a"), None], compression), &compacted, Some(ResponseError::InvalidRecord)),
                ("keyless on a delete topic", keyed(&[None], compression), &plain, None),
            ];
            for (name, bytes, topic, expected) in cases {
                let h = split_batches(&bytes, true).unwrap()[0].header;
                let got = check_batch(&h, &bytes, topic, NOW).err().map(|e| e.code);
                assert_eq!(got, expected, "{name} ({compression:?})");
            }
        }
    }
}
