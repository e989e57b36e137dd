//! One partition's batches in offset order, each once: the WAL files first (v1's authoritative
//! copy), with the segment objects filling any offsets the WAL no longer holds (a lost or
//! damaged file). Streams: only the segment objects covering a hole are loaded at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::canonical::{CanonicalBatch, decode_segment_object};
use super::legacy::parse_message_set;
use super::{Damage, PartitionFiles, WalFileReader, read_file};
use crate::error::MigrateError;
use crate::progress::Progress;
use crate::v2::{BatchFields, NewRecord, encode_batch};

/// What reading one partition found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionScan {
    pub batches: u64,
    pub records: u64,
    /// Batches taken from segment objects because the WAL lacked them.
    pub from_segments: u64,
    /// Copies of batches already read (overlapping segment objects, repeated WAL records).
    pub duplicates: u64,
    /// Offset ranges `[from, to)` found in no copy, between the first and last offset read.
    pub gaps: Vec<(i64, i64)>,
    pub first_offset: Option<i64>,
    pub next_offset: Option<i64>,
}

pub struct PartitionReader<'a> {
    files: &'a PartitionFiles,
    progress: Option<Arc<Progress>>,
    skip_corrupt: bool,
    pub damage: Vec<Damage>,
    pub scan: PartitionScan,
}

impl<'a> PartitionReader<'a> {
    pub fn new(files: &'a PartitionFiles, skip_corrupt: bool) -> Self {
        PartitionReader { files, progress: None, skip_corrupt, damage: Vec::new(), scan: PartitionScan::default() }
    }

    /// Counts the WAL bytes read into `progress`.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Hands every batch to `emit`, in offset order, with the Kafka batch to store for it
    /// ([`kafka_batch`]; one that fails its checks is damage like a bad WAL record).
    pub fn read(
        &mut self,
        mut emit: impl FnMut(CanonicalBatch, Bytes) -> Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        // Where the next batch should start: the lowest offset any copy holds.
        let mut next: Option<i64> = self.files.segments.iter().map(|o| o.min).min();
        for path in &self.files.wal {
            let mut reader = WalFileReader::open(path, self.skip_corrupt)?;
            while let Some(rec) = reader.next_record(&mut self.damage)? {
                if let Some(p) = &self.progress {
                    p.add_input(rec.len as u64);
                }
                let batch = match CanonicalBatch::decode(&rec.payload) {
                    Ok(b) if b.base_offset == rec.base_offset => b,
                    Ok(b) => {
                        let reason =
                            format!("record says offset {} but its batch says {}", rec.base_offset, b.base_offset);
                        reader.bad_record(rec.at, Some(rec.payload.len()), reason, &mut self.damage)?;
                        continue;
                    }
                    Err(e) => {
                        let reason = format!("batch payload does not decode: {e}");
                        reader.bad_record(rec.at, Some(rec.payload.len()), reason, &mut self.damage)?;
                        continue;
                    }
                };
                let bytes = match kafka_batch(&batch) {
                    Ok(b) => b,
                    Err(reason) => {
                        reader.bad_record(rec.at, Some(rec.payload.len()), reason, &mut self.damage)?;
                        continue;
                    }
                };
                let last = rec.last_offset.max(batch.base_offset);
                if let Some(n) = next {
                    if last < n {
                        self.scan.duplicates += 1;
                        continue;
                    }
                    if batch.base_offset < n {
                        let reason = format!(
                            "batch {}..={last} overlaps offsets already read (up to {})",
                            batch.base_offset,
                            n - 1
                        );
                        reader.bad_record(rec.at, Some(rec.payload.len()), reason, &mut self.damage)?;
                        continue;
                    }
                    if batch.base_offset > n {
                        self.fill_from_segments(n, batch.base_offset, &mut emit)?;
                    }
                }
                self.take(batch, bytes, last, &mut emit)?;
                next = Some(last + 1);
            }
        }
        if let Some(n) = next {
            self.fill_from_segments(n, i64::MAX, &mut emit)?;
        }
        Ok(())
    }

    fn take(
        &mut self,
        batch: CanonicalBatch,
        bytes: Bytes,
        last: i64,
        emit: &mut impl FnMut(CanonicalBatch, Bytes) -> Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        let s = &mut self.scan;
        if let Some(n) = s.next_offset
            && batch.base_offset > n
        {
            s.gaps.push((n, batch.base_offset));
        }
        s.first_offset.get_or_insert(batch.base_offset);
        s.next_offset = Some(last + 1);
        s.batches += 1;
        s.records += batch.records.len() as u64;
        emit(batch, bytes)
    }

    /// Emits the batches segment objects hold in `[from, to)`, in order.
    fn fill_from_segments(
        &mut self,
        from: i64,
        to: i64,
        emit: &mut impl FnMut(CanonicalBatch, Bytes) -> Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        let mut found: BTreeMap<i64, (CanonicalBatch, Bytes)> = BTreeMap::new();
        for object in self.files.segments.iter().filter(|o| o.min < to && o.max >= from) {
            let data = read_file(&object.path)?;
            match decode_segment_object(&data) {
                Ok(batches) => {
                    for b in batches.into_iter().filter(|b| b.base_offset >= from && b.base_offset < to) {
                        if found.contains_key(&b.base_offset) {
                            self.scan.duplicates += 1;
                            continue;
                        }
                        // A copy that fails its checks is left for another object's copy.
                        match kafka_batch(&b) {
                            Ok(bytes) => {
                                found.insert(b.base_offset, (b, bytes));
                            }
                            Err(reason) if self.skip_corrupt => self.damage.push(Damage {
                                file: object.path.clone(),
                                at: 0,
                                kind: "skipped",
                                bytes: 0,
                                reason: format!("the batch at offset {}: {reason}", b.base_offset),
                            }),
                            Err(reason) => {
                                return Err(MigrateError::Corrupt {
                                    path: object.path.clone(),
                                    at: 0,
                                    reason: format!("the batch at offset {}: {reason}", b.base_offset),
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    if !self.skip_corrupt {
                        return Err(MigrateError::Corrupt { path: object.path.clone(), at: e.at, reason: e.what });
                    }
                    let reason = format!("segment object does not decode: {}", e.what);
                    self.damage.push(Damage {
                        file: object.path.clone(),
                        at: e.at,
                        kind: "skipped",
                        bytes: data.len(),
                        reason,
                    });
                }
            }
        }
        let mut cursor = from;
        for (base, (batch, bytes)) in found {
            let last = batch.last_offset();
            if base < cursor {
                self.scan.duplicates += 1;
                continue;
            }
            cursor = last + 1;
            self.scan.from_segments += 1;
            self.take(batch, bytes, last, emit)?;
        }
        Ok(())
    }
}

/// The Kafka v2 batch to store for a v1 batch, as v1 served it: the producer's batch bytes
/// where v1 kept them (its base offset as v1 assigned it, CRC checked), a legacy message set
/// converted, or as a last resort a batch rebuilt from v1's decoded records.
pub fn kafka_batch(b: &CanonicalBatch) -> Result<Bytes, String> {
    if let Some(wire) = &b.v2_wire {
        if wire.len() < 61 || wire[16] != 2 {
            return Err(format!("stored v2 batch at offset {} is malformed", b.base_offset));
        }
        let stored = u32::from_be_bytes(wire[17..21].try_into().expect("4"));
        let computed = crc32c::crc32c(&wire[21..]);
        if stored != computed {
            return Err(format!(
                "stored v2 batch at offset {} fails its CRC-32C (stored {stored:#010x}, computed {computed:#010x})",
                b.base_offset
            ));
        }
        if wire[..8] == b.base_offset.to_be_bytes() {
            return Ok(wire.clone());
        }
        let mut fixed = BytesMut::from(&wire[..]);
        fixed[..8].copy_from_slice(&b.base_offset.to_be_bytes());
        return Ok(fixed.freeze());
    }
    let records = records_as_served(b)?;
    let log_append_time = match &b.v1_wire {
        Some(set) => parse_message_set(set)?.first().is_some_and(|m| m.log_append_time),
        None => b.timestamp_type == 1,
    };
    let fields = BatchFields {
        producer_id: b.producer_id,
        producer_epoch: b.producer_epoch,
        base_sequence: b.base_sequence,
        transactional: b.is_transactional,
        control: b.is_control,
        log_append_time,
    };
    Ok(encode_batch(fields, &records).into())
}

/// The records of a batch as v1 served them: v1's decoded copy, except that a legacy set's
/// timestamps come from its wire bytes (v1's decoder got them wrong).
pub fn records_as_served(b: &CanonicalBatch) -> Result<Vec<NewRecord>, String> {
    if let Some(set) = &b.v1_wire {
        let messages = parse_message_set(set)?;
        return Ok(messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| NewRecord {
                offset: b.base_offset + i as i64,
                timestamp: m.timestamp,
                key: m.key,
                value: m.value,
                headers: Vec::new(),
            })
            .collect());
    }
    if b.records.is_empty() {
        return Err(format!("batch at offset {} has no records", b.base_offset));
    }
    Ok(b.records
        .iter()
        .map(|r| NewRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
        })
        .collect())
}
