//! Raft entries <-> WAL records.
//!
//! The WAL record's `entry_kind` is the entry's kind (0 blank, 1 normal, 2 membership). A normal
//! entry's payload is a one-byte tag and the command: for `Produce` the record batches follow
//! as raw bytes, with base offsets and leader epoch stamped in, so a fetch serves the stored
//! bytes as they are. `Import` is the same after an 8-byte offset where the entry's span starts
//! (its batches keep their own offsets). Other commands and memberships are postcard-encoded.

use std::io;
use std::ops::Range;

use bytes::Bytes;
use chronik_wal::EntryView;
use openraft::EntryPayload;

use super::offsets::EntryOffsets;
use crate::batch::{self, STAMP_LEN};
use crate::raft::{Command, Entry, log_id};

pub const KIND_BLANK: u8 = 0;
pub const KIND_NORMAL: u8 = 1;
pub const KIND_MEMBERSHIP: u8 = 2;

const TAG_PRODUCE: u8 = 1;
const TAG_LOG_START: u8 = 2;
const TAG_META: u8 = 3;
const TAG_EXPIRE_PRODUCERS: u8 = 4;
const TAG_COMPACT: u8 = 5;
const TAG_IMPORT: u8 = 6;
/// Tag and span start in front of an import entry's batches.
const IMPORT_PREFIX_LEN: usize = 9;

enum Part {
    Owned(Range<usize>),
    Shared(Bytes),
}

/// An entry laid out for the WAL: small owned pieces (tag, stamped batch headers, encoded
/// commands) interleaved with the client's batch bytes, which are never copied.
pub struct Encoded {
    pub index: u64,
    pub term: u64,
    pub leader_id: u64,
    pub kind: u8,
    owned: Vec<u8>,
    parts: Vec<Part>,
    /// For a produce entry of a partition: the offsets it took.
    pub offsets: Option<EntryOffsets>,
}

impl Encoded {
    pub fn payload_parts(&self) -> Vec<&[u8]> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Owned(r) => &self.owned[r.clone()],
                Part::Shared(b) => &b[..],
            })
            .collect()
    }

    fn push_owned(&mut self, bytes: &[u8]) {
        let start = self.owned.len();
        self.owned.extend_from_slice(bytes);
        self.parts.push(Part::Owned(start..self.owned.len()));
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Encodes `entry`. With `next_offset` (a partition's log tail), produce entries get their
/// batches stamped with consecutive offsets starting there and the entry's term as leader epoch.
pub fn encode(entry: &Entry, next_offset: Option<u64>) -> io::Result<Encoded> {
    let mut e = Encoded {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        // A term has one leader, so the term names it; the record's leader field stays 0.
        leader_id: 0,
        kind: KIND_BLANK,
        owned: Vec::new(),
        parts: Vec::new(),
        offsets: None,
    };
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Membership(m) => {
            e.kind = KIND_MEMBERSHIP;
            e.owned = postcard::to_stdvec(m).map_err(io_err)?;
            e.parts.push(Part::Owned(0..e.owned.len()));
        }
        EntryPayload::Normal(cmd) => {
            e.kind = KIND_NORMAL;
            match cmd {
                Command::Produce { records } => {
                    e.push_owned(&[TAG_PRODUCE]);
                    match next_offset.map(|n| (n, batch::split_batches(records, false))) {
                        Some((mut next, Ok(spans))) => {
                            let epoch = i32::try_from(e.term).unwrap_or(i32::MAX);
                            let base = next;
                            let mut max_ts = i64::MIN;
                            for s in &spans {
                                e.push_owned(&batch::stamped_prefix(&records[s.range.clone()], next, epoch));
                                e.parts.push(Part::Shared(records.slice(s.range.start + STAMP_LEN..s.range.end)));
                                next += s.header.last_offset_delta as u64 + 1;
                                max_ts = max_ts.max(s.header.max_timestamp);
                            }
                            e.offsets = Some(EntryOffsets {
                                raft_index: e.index,
                                base_offset: base,
                                last_offset: next - 1,
                                max_timestamp: max_ts,
                                bytes: records.len() as u64,
                                epoch: e.term,
                            });
                        }
                        // Not a partition, or bytes the front end should have refused: stored
                        // as they are, taking no offsets; the state machine rejects them.
                        _ => e.parts.push(Part::Shared(records.clone())),
                    }
                }
                Command::Import { records } => {
                    e.push_owned(&[TAG_IMPORT]);
                    e.push_owned(&next_offset.unwrap_or(0).to_le_bytes());
                    let spans = batch::split_batches(records, false).ok();
                    let placed = next_offset.zip(spans).and_then(|(next, spans)| {
                        batch::import_last_offset(&spans, next).map(|last| (next, last, spans))
                    });
                    match placed {
                        Some((next, last, spans)) => {
                            let epoch = i32::try_from(e.term).unwrap_or(i32::MAX);
                            for s in &spans {
                                let own = s.header.base_offset as u64;
                                e.push_owned(&batch::stamped_prefix(&records[s.range.clone()], own, epoch));
                                e.parts.push(Part::Shared(records.slice(s.range.start + STAMP_LEN..s.range.end)));
                            }
                            e.offsets = Some(EntryOffsets {
                                raft_index: e.index,
                                base_offset: next,
                                last_offset: last,
                                max_timestamp: spans.iter().map(|s| s.header.max_timestamp).max().unwrap_or(i64::MIN),
                                bytes: records.len() as u64,
                                epoch: e.term,
                            });
                        }
                        // As for produce: stored as sent, taking no offsets, refused on apply.
                        None => e.parts.push(Part::Shared(records.clone())),
                    }
                }
                Command::AdvanceLogStart { offset } => {
                    e.push_owned(&[TAG_LOG_START]);
                    e.push_owned(&offset.to_le_bytes());
                }
                Command::ExpireProducers { before_ms } => {
                    e.push_owned(&[TAG_EXPIRE_PRODUCERS]);
                    e.push_owned(&before_ms.to_le_bytes());
                }
                Command::Compact(plan) => {
                    e.push_owned(&[TAG_COMPACT]);
                    let body = postcard::to_stdvec(plan).map_err(io_err)?;
                    e.push_owned(&body);
                }
                Command::Meta(m) => {
                    e.push_owned(&[TAG_META]);
                    let body = postcard::to_stdvec(m).map_err(io_err)?;
                    e.push_owned(&body);
                }
            }
        }
    }
    Ok(e)
}

/// Rebuilds the Raft entry from a WAL record (zero-copy for record batches).
pub fn decode(v: &EntryView) -> io::Result<Entry> {
    let payload = match v.entry_kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_MEMBERSHIP => EntryPayload::Membership(postcard::from_bytes(&v.payload).map_err(io_err)?),
        KIND_NORMAL => EntryPayload::Normal(decode_command(&v.payload)?),
        other => return Err(io_err(format!("entry {} has unknown kind {other}", v.index))),
    };
    Ok(Entry { log_id: log_id(v.term, v.index), payload })
}

pub fn decode_command(payload: &Bytes) -> io::Result<Command> {
    let (&tag, body) = payload.split_first().ok_or_else(|| io_err("empty command"))?;
    Ok(match tag {
        TAG_PRODUCE => Command::Produce { records: payload.slice(1..) },
        TAG_IMPORT if payload.len() >= IMPORT_PREFIX_LEN => {
            Command::Import { records: payload.slice(IMPORT_PREFIX_LEN..) }
        }
        TAG_LOG_START => Command::AdvanceLogStart {
            offset: u64::from_le_bytes(body.try_into().map_err(|_| io_err("bad advance-log-start command"))?),
        },
        TAG_META => Command::Meta(postcard::from_bytes(body).map_err(io_err)?),
        TAG_EXPIRE_PRODUCERS => Command::ExpireProducers {
            before_ms: i64::from_le_bytes(body.try_into().map_err(|_| io_err("bad expire-producers command"))?),
        },
        TAG_COMPACT => Command::Compact(postcard::from_bytes(body).map_err(io_err)?),
        other => return Err(io_err(format!("unknown command tag {other}"))),
    })
}

/// The record batches of a stored produce or import entry (what a fetch returns), if it is one.
pub fn stored_records(v: &EntryView) -> Option<Bytes> {
    if v.entry_kind != KIND_NORMAL {
        return None;
    }
    match v.payload.first() {
        Some(&TAG_PRODUCE) => Some(v.payload.slice(1..)),
        Some(&TAG_IMPORT) if v.payload.len() > IMPORT_PREFIX_LEN => Some(v.payload.slice(IMPORT_PREFIX_LEN..)),
        _ => None,
    }
}

/// The offsets a stored entry took, as the encoder gave them; `None` for an entry that took
/// none. (An import entry recorded where its span starts: the log's next offset then.)
pub fn stored_offsets(v: &EntryView) -> Option<EntryOffsets> {
    let records = stored_records(v)?;
    let spans = batch::split_batches(&records, false).ok()?;
    let last_batch = spans.last()?;
    let base_offset = if v.payload[0] == TAG_IMPORT {
        let start = u64::from_le_bytes(v.payload[1..IMPORT_PREFIX_LEN].try_into().ok()?);
        // Took offsets iff the encoder found the batches in place after `start`.
        batch::import_last_offset(&spans, start)?;
        start
    } else {
        spans[0].header.base_offset as u64
    };
    Some(EntryOffsets {
        raft_index: v.index,
        base_offset,
        last_offset: last_batch.header.last_offset() as u64,
        max_timestamp: spans.iter().map(|s| s.header.max_timestamp).max().unwrap_or(i64::MIN),
        bytes: records.len() as u64,
        epoch: v.term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::batch;
    use crate::metadata::MetaCommand;

    fn view(e: &Encoded) -> EntryView {
        let payload: Vec<u8> = e.payload_parts().concat();
        EntryView { index: e.index, term: e.term, leader_id: e.leader_id, entry_kind: e.kind, payload: payload.into() }
    }

    #[test]
    fn produce_is_stamped_and_round_trips() {
        let records: Bytes = [batch(3, 10), batch(2, 20)].concat().into();
        let entry = Entry { log_id: log_id(7, 42), payload: EntryPayload::Normal(Command::Produce { records }) };
        let enc = encode(&entry, Some(100)).unwrap();
        assert_eq!(
            enc.offsets,
            Some(EntryOffsets {
                raft_index: 42,
                base_offset: 100,
                last_offset: 104,
                max_timestamp: 20,
                bytes: 122,
                epoch: 7
            })
        );
        let v = view(&enc);
        let stored = stored_records(&v).unwrap();
        let spans = batch::split_batches(&stored, true).expect("stamped batches keep valid CRCs");
        assert_eq!(
            spans.iter().map(|s| (s.header.base_offset, s.header.partition_leader_epoch)).collect::<Vec<_>>(),
            vec![(100, 7), (103, 7)]
        );
        let back = decode(&v).unwrap();
        assert_eq!(back.log_id, log_id(7, 42));
        assert!(matches!(back.payload, EntryPayload::Normal(Command::Produce { records }) if records == stored));
    }

    fn at(offset: i64, mut b: Vec<u8>) -> Vec<u8> {
        b[0..8].copy_from_slice(&offset.to_be_bytes());
        b
    }

    #[test]
    fn import_keeps_offsets_and_spans_from_the_log_tail() {
        // Batches at 120..=122 and 130..=131 after a log ending at 100: gaps before and between.
        let records: Bytes = [at(120, batch(3, 10)), at(130, batch(2, 20))].concat().into();
        let entry = Entry { log_id: log_id(4, 9), payload: EntryPayload::Normal(Command::Import { records }) };
        let enc = encode(&entry, Some(100)).unwrap();
        let offsets = enc.offsets.expect("in place after 100");
        assert_eq!((offsets.base_offset, offsets.last_offset, offsets.epoch), (100, 131, 4));
        let v = view(&enc);
        assert_eq!(stored_offsets(&v), Some(offsets), "recovery sees what the append saw");
        let stored = stored_records(&v).unwrap();
        let spans = batch::split_batches(&stored, true).expect("valid CRCs");
        assert_eq!(
            spans.iter().map(|s| (s.header.base_offset, s.header.partition_leader_epoch)).collect::<Vec<_>>(),
            vec![(120, 4), (130, 4)],
            "own offsets kept, leader epoch stamped"
        );
        assert!(
            matches!(decode(&v).unwrap().payload, EntryPayload::Normal(Command::Import { records }) if records == stored)
        );
    }

    #[test]
    fn import_out_of_place_takes_no_offsets() {
        let table: [(&str, Vec<Vec<u8>>, u64); 3] = [
            ("starts before the log tail", vec![at(90, batch(3, 1))], 100),
            ("batches overlap", vec![at(100, batch(3, 1)), at(102, batch(1, 1))], 100),
            ("batches go backwards", vec![at(110, batch(1, 1)), at(105, batch(1, 1))], 100),
        ];
        for (case, batches, next) in table {
            let records: Bytes = batches.concat().into();
            let entry = Entry { log_id: log_id(1, 3), payload: EntryPayload::Normal(Command::Import { records }) };
            let enc = encode(&entry, Some(next)).unwrap();
            assert_eq!(enc.offsets, None, "{case}");
            assert_eq!(stored_offsets(&view(&enc)), None, "{case}: recovery agrees");
        }
    }

    #[test]
    fn other_entries_round_trip() {
        let cases = vec![
            EntryPayload::Blank,
            EntryPayload::Normal(Command::AdvanceLogStart { offset: 77 }),
            EntryPayload::Normal(Command::ExpireProducers { before_ms: -5 }),
            EntryPayload::Normal(Command::Meta(MetaCommand::DeleteTopic { name: "t".into() })),
            EntryPayload::Membership(openraft::Membership::new_with_defaults(vec![[1u64].into()], [1u64])),
        ];
        for payload in cases {
            let entry = Entry { log_id: log_id(2, 9), payload };
            let back = decode(&view(&encode(&entry, None).unwrap())).unwrap();
            assert_eq!(back, entry);
        }
    }
}
