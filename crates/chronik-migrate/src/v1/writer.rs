//! Writing v1's layout (format document, sections 2 and 4): WAL records holding bincode
//! `CanonicalRecord`s, and JSON metadata events. For building data sets at scale (the
//! migration benchmark) and test inputs; the migration itself only reads v1 data.

use super::canonical::CanonicalBatch;

/// One V2 WAL record, CRC included.
pub fn wal_record(topic: &str, partition: i32, payload: &[u8], base_offset: i64, last_offset: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 30 + topic.len() + payload.len());
    out.extend_from_slice(&[0x7E, 0xCA, 2, 0]);
    let length = 2 + topic.len() + 4 + 4 + payload.len() + 20;
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&last_offset.to_le_bytes());
    out.extend_from_slice(&((last_offset - base_offset + 1) as i32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..8]);
    crc.update(&out[12..]);
    let crc = crc.finalize();
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.push(1);
            bytes(out, b);
        }
        None => out.push(0),
    }
}

/// A `CanonicalRecord` in bincode, as v1 wrote it.
pub fn canonical(b: &CanonicalBatch) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&b.base_offset.to_le_bytes());
    out.extend_from_slice(&b.partition_leader_epoch.to_le_bytes());
    out.extend_from_slice(&b.producer_id.to_le_bytes());
    out.extend_from_slice(&b.producer_epoch.to_le_bytes());
    out.extend_from_slice(&b.base_sequence.to_le_bytes());
    out.push(u8::from(b.is_transactional));
    out.push(u8::from(b.is_control));
    out.extend_from_slice(&b.compression.to_le_bytes());
    out.extend_from_slice(&b.timestamp_type.to_le_bytes());
    out.extend_from_slice(&b.base_timestamp.to_le_bytes());
    out.extend_from_slice(&b.max_timestamp.to_le_bytes());
    out.extend_from_slice(&(b.records.len() as u64).to_le_bytes());
    for r in &b.records {
        out.extend_from_slice(&r.offset.to_le_bytes());
        out.extend_from_slice(&r.timestamp.to_le_bytes());
        opt_bytes(&mut out, r.key.as_deref());
        opt_bytes(&mut out, r.value.as_deref());
        out.extend_from_slice(&(r.headers.len() as u64).to_le_bytes());
        for (k, v) in &r.headers {
            bytes(&mut out, k.as_bytes());
            opt_bytes(&mut out, v.as_deref());
        }
        out.push(r.attributes as u8);
    }
    opt_bytes(&mut out, b.v2_wire.as_ref().map(|w| &w[61.min(w.len())..]));
    opt_bytes(&mut out, b.v1_wire.as_deref());
    opt_bytes(&mut out, b.v2_wire.as_deref());
    out
}

/// A `TopicCreated` metadata event (JSON) for `partitions` partitions and `configs`.
pub fn topic_created_event(name: &str, partitions: u32, configs: &[(&str, &str)]) -> Vec<u8> {
    let config: serde_json::Map<String, serde_json::Value> =
        configs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect();
    serde_json::json!({
        "event_id": format!("generated-{name}"),
        "timestamp": "2026-01-01T00:00:00Z",
        "version": 1,
        "created_by_node": 1,
        "payload": {"type": "TopicCreated", "name": name, "config": {
            "partition_count": partitions, "replication_factor": 1, "retention_ms": null,
            "segment_bytes": 1_073_741_824i64, "config": config}}
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::v1::canonical::V1Record;
    use crate::v1::framing::{Frame, Frames};

    #[test]
    fn written_records_read_back() {
        let batch = CanonicalBatch {
            base_offset: 40,
            partition_leader_epoch: -1,
            producer_id: 9,
            producer_epoch: 0,
            base_sequence: 3,
            is_transactional: false,
            is_control: false,
            compression: 0,
            timestamp_type: 0,
            base_timestamp: 5,
            max_timestamp: 6,
            records: vec![V1Record {
                offset: 40,
                timestamp: 5,
                key: None,
                value: Some(Bytes::from_static(b"")),
                headers: vec![("h".into(), None)],
                attributes: 0,
            }],
            v1_wire: None,
            v2_wire: Some(Bytes::from(vec![7u8; 70])),
        };
        let rec = wal_record("t", 3, &canonical(&batch), 40, 40);
        let frames: Vec<Frame> = Frames::new(rec.into()).collect();
        let [Frame::Record(r)] = &frames[..] else { panic!("{frames:?}") };
        assert_eq!((r.topic.as_str(), r.partition, r.base_offset, r.last_offset), ("t", 3, 40, 40));
        assert_eq!(CanonicalBatch::decode(&r.payload).unwrap(), batch);
    }
}
