//! v1's WAL framing (format document, section 2): a file is V2 records back to back, each a
//! 12-byte header (magic, version, flags, length, CRC-32) and a body naming the partition and
//! holding the payload and its offsets. v1 never checked the CRC; we do.

use bytes::Bytes;

const MAGIC: [u8; 2] = [0x7E, 0xCA];
const VERSION: u8 = 2;
const HEADER_LEN: usize = 12;

/// One whole, checksum-valid record.
#[derive(Debug, Clone)]
pub struct WalRecord {
    /// Byte position of the record in its file.
    pub at: usize,
    pub topic: String,
    pub partition: i32,
    pub payload: Bytes,
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    /// Bytes the whole record takes in the file.
    pub len: usize,
}

#[derive(Debug, Clone)]
pub enum Frame {
    Record(WalRecord),
    /// A record that does not check out. With `len` the reader can step over it; without, the
    /// rest of the file cannot be framed and reading stops.
    Corrupt {
        at: usize,
        len: Option<usize>,
        reason: String,
    },
    /// The file ends inside a record (a write cut short): `bytes` from `at` on are not a whole
    /// record. Reading stops.
    TornTail {
        at: usize,
        bytes: usize,
    },
}

/// The frames of one file's bytes, in order.
pub struct Frames {
    data: Bytes,
    pos: usize,
    done: bool,
}

impl Frames {
    pub fn new(data: Bytes) -> Frames {
        Frames { data, pos: 0, done: false }
    }

    fn stop(&mut self, frame: Frame) -> Option<Frame> {
        self.done = true;
        Some(frame)
    }

    fn frame_at(&mut self, at: usize) -> Option<Frame> {
        let rest = &self.data[at..];
        let torn = Frame::TornTail { at, bytes: rest.len() };
        if rest.len() < HEADER_LEN {
            return self.stop(torn);
        }
        if rest[..2] != MAGIC || rest[2] != VERSION {
            // A tail of zeros is space a write never filled, not damage in the middle.
            if rest.iter().all(|b| *b == 0) {
                return self.stop(torn);
            }
            let reason = if rest[..2] == MAGIC {
                format!("record version {} (only version 2 is read, as v1 itself did)", rest[2])
            } else {
                format!("bad record magic {:02x}{:02x}", rest[1], rest[0])
            };
            return self.stop(Frame::Corrupt { at, len: None, reason });
        }
        let length = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        if length == 0 {
            return self.stop(Frame::Corrupt { at, len: None, reason: "record length 0".into() });
        }
        let Some(total) = HEADER_LEN.checked_add(length).filter(|t| *t <= rest.len()) else {
            // A cut write leaves nothing whole after it; a damaged length field does.
            return match self.whole_record_after(at + 1) {
                Some(next) => {
                    self.pos = next;
                    let reason =
                        format!("record length {length} runs past the end, yet a whole record follows at byte {next}");
                    Some(Frame::Corrupt { at, len: Some(next - at), reason })
                }
                None => self.stop(torn),
            };
        };
        let stored_crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        let mut crc = crc32fast::Hasher::new();
        crc.update(&rest[..8]);
        crc.update(&rest[HEADER_LEN..total]);
        let computed = crc.finalize();
        self.pos = at + total;
        if computed != stored_crc {
            let reason = format!("checksum mismatch (stored {stored_crc:#010x}, computed {computed:#010x})");
            return Some(Frame::Corrupt { at, len: Some(total), reason });
        }
        Some(match parse_body(&self.data, at, total) {
            Ok(r) => Frame::Record(r),
            Err(reason) => Frame::Corrupt { at, len: Some(total), reason },
        })
    }
}

impl Frames {
    /// The position of the first whole, checksum-valid record at or after `from`.
    fn whole_record_after(&self, from: usize) -> Option<usize> {
        let data = &self.data[..];
        (from..data.len().saturating_sub(HEADER_LEN)).find(|&p| {
            let rest = &data[p..];
            if rest[..2] != MAGIC || rest[2] != VERSION {
                return false;
            }
            let length = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
            let Some(total) = HEADER_LEN.checked_add(length).filter(|t| length > 0 && *t <= rest.len()) else {
                return false;
            };
            let mut crc = crc32fast::Hasher::new();
            crc.update(&rest[..8]);
            crc.update(&rest[HEADER_LEN..total]);
            crc.finalize() == u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"))
        })
    }
}

impl Iterator for Frames {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        if self.done || self.pos >= self.data.len() {
            return None;
        }
        self.frame_at(self.pos)
    }
}

fn parse_body(data: &Bytes, at: usize, total: usize) -> Result<WalRecord, String> {
    let body = &data[at + HEADER_LEN..at + total];
    let short = || format!("record body of {} bytes is shorter than its fields", body.len());
    let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_le_bytes(b.try_into().expect("2")));
    let u32_at = |i: usize| body.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4")));
    let i64_at = |i: usize| body.get(i..i + 8).map(|b| i64::from_le_bytes(b.try_into().expect("8")));
    let t = u16_at(0).ok_or_else(short)? as usize;
    let topic = body.get(2..2 + t).ok_or_else(short)?;
    let topic = String::from_utf8(topic.to_vec()).map_err(|_| "topic name is not UTF-8".to_string())?;
    let partition = u32_at(2 + t).ok_or_else(short)? as i32;
    let p = u32_at(6 + t).ok_or_else(short)? as usize;
    let payload_start = 10 + t;
    let tail = payload_start.checked_add(p).ok_or_else(short)?;
    if tail + 20 != body.len() {
        return Err(format!("payload length {p} does not match the record length {}", body.len()));
    }
    let base_offset = i64_at(tail).ok_or_else(short)?;
    let last_offset = i64_at(tail + 8).ok_or_else(short)?;
    let record_count = u32_at(tail + 16).ok_or_else(short)? as i32;
    let start = at + HEADER_LEN + payload_start;
    Ok(WalRecord {
        at,
        len: total,
        topic,
        partition,
        payload: data.slice(start..start + p),
        base_offset,
        last_offset,
        record_count,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::v1::writer::wal_record as record;

    fn kinds(data: Vec<u8>) -> Vec<String> {
        Frames::new(data.into())
            .map(|f| match f {
                Frame::Record(r) => {
                    format!("record@{} {}-{} {}..={}", r.at, r.topic, r.partition, r.base_offset, r.last_offset)
                }
                Frame::Corrupt { at, len, .. } => format!("corrupt@{at} {len:?}"),
                Frame::TornTail { at, bytes } => format!("torn@{at} {bytes}"),
            })
            .collect()
    }

    #[test]
    fn frames_table() {
        let a = record("t", 0, b"aaaa", 0, 1);
        let b = record("t", 0, b"bb", 2, 2);
        let n = a.len();
        let whole = [a.clone(), b.clone()].concat();
        let mut flipped = whole.clone();
        flipped[20] ^= 0x40;
        let mut long_length = whole.clone();
        long_length[6] = 0x7f; // the first record's length now runs past the end
        let mut bad_magic = whole.clone();
        bad_magic[n] = 0x11;
        let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
            ("two records", whole.clone(), vec![format!("record@0 t-0 0..=1"), format!("record@{n} t-0 2..=2")]),
            (
                "cut inside the last record",
                whole[..whole.len() - 3].to_vec(),
                vec!["record@0 t-0 0..=1".into(), format!("torn@{n} {}", b.len() - 3)],
            ),
            (
                "cut inside the header",
                whole[..n + 5].to_vec(),
                vec!["record@0 t-0 0..=1".into(), format!("torn@{n} 5")],
            ),
            (
                "zeros after the last record",
                [whole.clone(), vec![0; 40]].concat(),
                vec!["record@0 t-0 0..=1".into(), format!("record@{n} t-0 2..=2"), format!("torn@{} 40", whole.len())],
            ),
            (
                "a flipped byte is stepped over",
                flipped,
                vec![format!("corrupt@0 Some({n})"), format!("record@{n} t-0 2..=2")],
            ),
            ("garbage stops the file", bad_magic, vec!["record@0 t-0 0..=1".into(), format!("corrupt@{n} None")]),
            (
                "a damaged length is not a torn tail",
                long_length,
                vec![format!("corrupt@0 Some({n})"), format!("record@{n} t-0 2..=2")],
            ),
            ("empty file", vec![], vec![]),
        ];
        for (case, data, want) in cases {
            assert_eq!(kinds(data), want, "{case}");
        }
    }
}
