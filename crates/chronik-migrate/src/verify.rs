//! `--verify`: reads the migrated partitions back through the new broker's read path and
//! compares them, record by record, with the input read afresh: offset, timestamp and its
//! type, key, value and headers (in order, duplicates and nulls included).

use std::collections::VecDeque;

use chronik_cluster::{BatchHeader, split_batches};
use tokio::sync::mpsc;

use crate::error::MigrateError;
use crate::report::VerifyReport;
use crate::v1::V1Dir;
use crate::v1::partition::{PartitionReader, records_as_served};
use crate::v2::NewRecord;
use chronik_kafka::Broker;

const SHOWN_MISMATCHES: usize = 20;
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A record with its timestamp type (true: LogAppendTime).
type Compared = (NewRecord, bool);

pub async fn verify(broker: &Broker, input: &V1Dir, skip_corrupt: bool) -> Result<VerifyReport, MigrateError> {
    let mut report = VerifyReport::default();
    for ((topic, partition), files) in &input.partitions {
        let Some(replica) = broker.node.partition(topic, *partition) else {
            note(&mut report, format!("{topic}-{partition}: missing from the output"));
            continue;
        };
        let log = replica.log().clone();
        // After a start the high watermark rises as the log is applied again.
        let mut hw = log.subscribe_high_watermark();
        let end = log.next_offset();
        let _ = tokio::time::timeout(APPLY_WAIT, hw.wait_for(|h| *h >= end)).await;
        let (tx, mut rx) = mpsc::channel::<Vec<Compared>>(64);
        let files = files.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut r = PartitionReader::new(&files, skip_corrupt);
            r.read(|batch, _| {
                let lat = batch.timestamp_type == 1
                    || batch.v1_wire.as_ref().is_some_and(|s| {
                        crate::v1::legacy::parse_message_set(s)
                            .is_ok_and(|m| m.first().is_some_and(|m| m.log_append_time))
                    });
                let records = records_as_served(&batch).unwrap_or_default();
                tx.blocking_send(records.into_iter().map(|r| (r, lat)).collect())
                    .map_err(|_| MigrateError::ReaderLost("the verifier".into()))
            })
        });
        let mut out: VecDeque<Compared> = VecDeque::new();
        let mut cursor = log.log_start_offset();
        let name = format!("{topic}-{partition}");
        while let Some(records) = rx.recv().await {
            for want in records {
                if want.0.offset < log.log_start_offset() as i64 {
                    continue;
                }
                report.records_compared += 1;
                let got = loop {
                    match out.front() {
                        Some(r) if r.0.offset < want.0.offset => {
                            out.pop_front();
                        }
                        Some(_) => break out.pop_front(),
                        None if cursor >= log.next_offset() => break None,
                        None => {
                            let batches = log.read(cursor, 1 << 20).map_err(|source| MigrateError::ReadBack {
                                topic: topic.clone(),
                                partition: *partition,
                                source,
                            })?;
                            for chunk in &batches.chunks {
                                for r in decode(chunk)
                                    .map_err(|reason| MigrateError::Topic { topic: name.clone(), reason })?
                                {
                                    cursor = cursor.max(r.0.offset as u64 + 1);
                                    out.push_back(r);
                                }
                            }
                            if batches.chunks.is_empty() {
                                break None;
                            }
                        }
                    }
                };
                match got {
                    Some(got) if got == want => {}
                    Some(got) => {
                        note(&mut report, format!("{name} offset {}: stored {got:?}, v1 had {want:?}", want.0.offset))
                    }
                    None => note(&mut report, format!("{name} offset {}: missing from the output", want.0.offset)),
                }
            }
        }
        reader.await.map_err(|e| MigrateError::ReaderLost(format!("{name} ({e})")))??;
        if let Some(extra) = out.front().map(|r| r.0.offset).or((cursor < log.next_offset()).then_some(cursor as i64)) {
            note(&mut report, format!("{name}: records from offset {extra} on are not in the input"));
        }
    }
    Ok(report)
}

fn note(report: &mut VerifyReport, mismatch: String) {
    report.mismatch_count += 1;
    if report.mismatches.len() < SHOWN_MISMATCHES {
        report.mismatches.push(mismatch);
    }
}

/// The records of stored batches, decompressed.
pub fn decode(chunk: &[u8]) -> Result<Vec<Compared>, String> {
    let mut out = Vec::new();
    for span in split_batches(chunk, true).map_err(|e| e.to_string())? {
        let h = &span.header;
        let section = &chunk[span.range.start + chronik_cluster::BATCH_HEADER_LEN..span.range.end];
        let plain = chronik_cluster::decompress(h.compression(), section, chronik_cluster::MAX_RECORDS_BYTES)
            .map_err(|e| e.to_string())?;
        decode_records(h, &plain, &mut out).map_err(|e| format!("batch at offset {}: {e}", h.base_offset))?;
    }
    Ok(out)
}

fn decode_records(h: &BatchHeader, mut b: &[u8], out: &mut Vec<Compared>) -> Result<(), &'static str> {
    fn varint(b: &mut &[u8]) -> Result<i64, &'static str> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err("varint too long");
            }
        }
    }
    fn field(b: &mut &[u8]) -> Result<Option<bytes::Bytes>, &'static str> {
        let n = varint(b)?;
        if n < 0 {
            return Ok(None);
        }
        let n = n as usize;
        if n > b.len() {
            return Err("field runs past the record");
        }
        let (v, rest) = b.split_at(n);
        *b = rest;
        Ok(Some(bytes::Bytes::copy_from_slice(v)))
    }
    let lat = h.is_log_append_time();
    while !b.is_empty() {
        let len = varint(&mut b)? as usize;
        if len > b.len() {
            return Err("record runs past the batch");
        }
        let (mut r, rest) = b.split_at(len);
        b = rest;
        r = r.get(1..).ok_or("empty record")?; // attributes
        let ts_delta = varint(&mut r)?;
        let offset_delta = varint(&mut r)?;
        let key = field(&mut r)?;
        let value = field(&mut r)?;
        let n = varint(&mut r)?;
        let mut headers = Vec::new();
        for _ in 0..n.max(0) {
            let k = field(&mut r)?.ok_or("null header key")?;
            let k = String::from_utf8(k.to_vec()).map_err(|_| "header key is not UTF-8")?;
            headers.push((k, field(&mut r)?));
        }
        // A LogAppendTime batch's records all carry the batch's max timestamp (Kafka's rule).
        let timestamp = if lat { h.max_timestamp } else { h.base_timestamp.wrapping_add(ts_delta) };
        out.push((NewRecord { offset: h.base_offset + offset_delta, timestamp, key, value, headers }, lat));
    }
    Ok(())
}
