//! A partition's log on its way to another replica, with a snapshot: the sender's segment files
//! exactly as they are on disk (opened when the transfer starts, so retention deleting one
//! meanwhile does not matter), then the entries above them up to the snapshot point (its WAL
//! tail) one by one. The receiver writes the files into its staging directory and checks each
//! whole, writes the entries into a new file of its own, and ends with the install marker; the
//! partition then installs the snapshot and adopts the files (`segments/install.rs`).
//!
//! Nothing here knows about the network: a chunk encodes to bytes and back, so the cluster
//! transport only carries them.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::segments::{InstallMarker, SegmentError, SegmentWriter, incoming_dir, segment_file_name, verify_file};
use super::{EntryOffsets, PartitionLog, ReadError};
use crate::batch;

/// The received entries go into files of at most this many bytes.
const RECEIVED_FILE_BYTES: u64 = 256 << 20;

/// One piece of a partition's log in transfer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChunk {
    /// A sealed segment file follows: its first offset and its length in bytes.
    FileStart { base_offset: u64, len: u64 },
    /// The next bytes of that file, as they are on disk.
    FileBytes(Bytes),
    /// One entry's record batches, as stored (stamped offsets and leader epoch), and where
    /// its offsets start: its first batch's offset, or before it for an import entry whose
    /// batches leave a gap (see `Command::Import`).
    Entry { start: u64, records: Bytes },
}

const TAG_FILE_START: u8 = 1;
const TAG_FILE_BYTES: u8 = 2;
const TAG_ENTRY: u8 = 3;
/// An entry whose offsets start before its first batch: the start, then the batches.
const TAG_ENTRY_AT: u8 = 4;

impl LogChunk {
    pub fn encode(&self) -> Bytes {
        match self {
            LogChunk::FileStart { base_offset, len } => {
                let mut b = BytesMut::with_capacity(17);
                b.put_u8(TAG_FILE_START);
                b.put_u64(*base_offset);
                b.put_u64(*len);
                b.freeze()
            }
            LogChunk::FileBytes(data) => {
                let mut b = BytesMut::with_capacity(1 + data.len());
                b.put_u8(TAG_FILE_BYTES);
                b.put_slice(data);
                b.freeze()
            }
            LogChunk::Entry { start, records } => {
                let mut b = BytesMut::with_capacity(9 + records.len());
                // Most entries start at their first batch: the layout earlier builds read.
                if first_batch_offset(records) == Some(*start) {
                    b.put_u8(TAG_ENTRY);
                } else {
                    b.put_u8(TAG_ENTRY_AT);
                    b.put_u64(*start);
                }
                b.put_slice(records);
                b.freeze()
            }
        }
    }

    pub fn decode(mut b: Bytes) -> Result<LogChunk, TransferError> {
        if b.is_empty() {
            return Err(TransferError::Protocol("an empty chunk".into()));
        }
        match b.get_u8() {
            TAG_FILE_START if b.len() == 16 => Ok(LogChunk::FileStart { base_offset: b.get_u64(), len: b.get_u64() }),
            TAG_FILE_BYTES => Ok(LogChunk::FileBytes(b)),
            TAG_ENTRY => match first_batch_offset(&b) {
                Some(start) => Ok(LogChunk::Entry { start, records: b }),
                None => Err(TransferError::Protocol("an entry with no batch".into())),
            },
            TAG_ENTRY_AT if b.len() > 8 => Ok(LogChunk::Entry { start: b.get_u64(), records: b }),
            tag => Err(TransferError::Protocol(format!("unknown chunk (tag {tag}, {} bytes)", b.len()))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("reading the log to send: {0}")]
    Read(#[from] ReadError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("receiving a snapshot's log: {0}")]
    Protocol(String),
}

/// The sending side: an iterator of chunks, reading as it goes (blocking file reads).
pub struct LogSender {
    log: Arc<PartitionLog>,
    files: VecDeque<(u64, u64, File)>,
    current: Option<(File, u64, u64)>,
    /// Entries read but not yet handed out.
    entries: VecDeque<(u64, Bytes)>,
    /// The next offset to send as entries, and where the transfer ends.
    next: u64,
    end: u64,
    chunk_bytes: usize,
}

impl PartitionLog {
    /// Starts sending this log from its log start up to `end` (a snapshot's next offset), in
    /// chunks of about `chunk_bytes`.
    pub(crate) fn transfer(self: &Arc<Self>, end: u64, chunk_bytes: usize) -> Result<LogSender, TransferError> {
        let from = self.log_start_offset();
        let files = self.segments.open_for_transfer(from, end)?;
        let next = files.last().map_or(from, |(_, last, _)| last + 1).max(from);
        Ok(LogSender {
            log: self.clone(),
            files: files.into(),
            current: None,
            entries: VecDeque::new(),
            next,
            end,
            chunk_bytes: chunk_bytes.max(4096),
        })
    }
}

impl LogSender {
    fn next_chunk(&mut self) -> Result<Option<LogChunk>, TransferError> {
        if let Some((file, pos, len)) = &mut self.current {
            if *pos < *len {
                let mut buf = BytesMut::zeroed(((*len - *pos) as usize).min(self.chunk_bytes));
                file.read_exact_at(&mut buf, *pos).map_err(|e| {
                    TransferError::Protocol(format!("reading a segment file to send at byte {pos}: {e}"))
                })?;
                *pos += buf.len() as u64;
                return Ok(Some(LogChunk::FileBytes(buf.freeze())));
            }
            self.current = None;
        }
        if let Some((base, _, file)) = self.files.pop_front() {
            let len =
                file.metadata().map_err(|e| TransferError::Protocol(format!("a segment file to send: {e}")))?.len();
            self.current = Some((file, 0, len));
            return Ok(Some(LogChunk::FileStart { base_offset: base, len }));
        }
        if let Some(e) = self.entries.pop_front() {
            return Ok(Some(LogChunk::Entry { start: e.0, records: e.1 }));
        }
        if self.next >= self.end {
            return Ok(None);
        }
        let read = self.log.read(self.next, self.chunk_bytes)?;
        if read.chunks.is_empty() {
            return Err(TransferError::Protocol(format!("offset {} is not readable yet", self.next)));
        }
        for records in read.chunks {
            let spans = batch::split_batches(&records, false)
                .map_err(|e| TransferError::Protocol(format!("a stored entry at offset {}: {e}", self.next)))?;
            let Some(last) = spans.last() else { continue };
            let last_offset = last.header.last_offset() as u64;
            if last_offset >= self.end {
                break;
            }
            // Where its offsets start: after the entry before; the first one read may begin
            // below `next` (the log start falls inside it).
            let start = self.next.min(spans[0].header.base_offset as u64);
            self.entries.push_back((start, records));
            self.next = last_offset + 1;
        }
        Ok(self.entries.pop_front().map(|(start, records)| LogChunk::Entry { start, records }))
    }
}

impl Iterator for LogSender {
    type Item = Result<LogChunk, TransferError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// A file being received as it is on the sender's disk.
struct IncomingFile {
    base_offset: u64,
    len: u64,
    written: u64,
    path: PathBuf,
    file: File,
}

/// The receiving side: writes what arrives into the partition's staging directory.
pub struct LogReceiver {
    incoming: PathBuf,
    /// The (index, term) of the snapshot's last Raft entry.
    snapshot: (u64, u64),
    file: Option<IncomingFile>,
    writer: Option<SegmentWriter>,
    /// Offset after the last one received.
    next: Option<u64>,
    files: Vec<String>,
}

impl LogReceiver {
    /// Starts receiving the log of the snapshot whose last Raft entry is `snapshot`, for the
    /// partition whose files live in `segments_dir` (anything staged before is dropped).
    pub fn start(segments_dir: &Path, snapshot: (u64, u64)) -> Result<LogReceiver, TransferError> {
        let incoming = incoming_dir(segments_dir);
        let io = |e: std::io::Error| SegmentError::Io { path: incoming.clone(), source: e };
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming).map_err(io)?;
        }
        std::fs::create_dir_all(&incoming).map_err(io)?;
        Ok(LogReceiver { incoming, snapshot, file: None, writer: None, next: None, files: Vec::new() })
    }

    fn expect_at(&self, offset: u64, what: &str) -> Result<(), TransferError> {
        match self.next {
            Some(next) if next != offset => {
                Err(TransferError::Protocol(format!("{what} starts at offset {offset}, expected {next}")))
            }
            _ => Ok(()),
        }
    }

    pub fn accept(&mut self, chunk: LogChunk) -> Result<(), TransferError> {
        match chunk {
            LogChunk::FileStart { base_offset, len } => {
                if self.file.is_some() || self.writer.is_some() {
                    return Err(TransferError::Protocol("a file starts before the previous part ended".into()));
                }
                self.expect_at(base_offset, "a file")?;
                let path = self.incoming.join(segment_file_name(base_offset));
                let file = File::create(&path).map_err(|e| SegmentError::Io { path: path.clone(), source: e })?;
                self.file = Some(IncomingFile { base_offset, len, written: 0, path, file });
                self.finish_file_if_whole()
            }
            LogChunk::FileBytes(data) => {
                let f =
                    self.file.as_mut().ok_or_else(|| TransferError::Protocol("file bytes outside a file".into()))?;
                if f.written + data.len() as u64 > f.len {
                    return Err(TransferError::Protocol(format!("{} runs past its length", f.path.display())));
                }
                f.file
                    .write_all_at(&data, f.written)
                    .map_err(|e| SegmentError::Io { path: f.path.clone(), source: e })?;
                f.written += data.len() as u64;
                self.finish_file_if_whole()
            }
            LogChunk::Entry { start, records } => {
                if self.file.is_some() {
                    return Err(TransferError::Protocol("an entry inside a file".into()));
                }
                let mut offsets = entry_offsets(&records)?;
                if start > offsets.base_offset {
                    return Err(TransferError::Protocol(format!(
                        "an entry said to start at offset {start} holds a batch at {}",
                        offsets.base_offset
                    )));
                }
                offsets.base_offset = start;
                self.expect_at(offsets.base_offset, "an entry")?;
                if self.writer.as_ref().is_some_and(|w| w.data_len() >= RECEIVED_FILE_BYTES) {
                    self.seal_writer()?;
                }
                if self.writer.is_none() {
                    self.writer = Some(SegmentWriter::create(&self.incoming, offsets.base_offset)?);
                }
                self.writer.as_mut().expect("just made").push(&offsets, &records)?;
                self.next = Some(offsets.last_offset + 1);
                Ok(())
            }
        }
    }

    fn finish_file_if_whole(&mut self) -> Result<(), TransferError> {
        if self.file.as_ref().is_none_or(|f| f.written < f.len) {
            return Ok(());
        }
        let f = self.file.take().expect("checked");
        f.file.sync_all().map_err(|e| SegmentError::Io { path: f.path.clone(), source: e })?;
        let footer = verify_file(&f.path, f.base_offset)?;
        self.next = Some(footer.last_offset + 1);
        self.files.push(segment_file_name(f.base_offset));
        Ok(())
    }

    fn seal_writer(&mut self) -> Result<(), TransferError> {
        if let Some(w) = self.writer.take() {
            let (path, footer, _) = w.finish(self.snapshot)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            debug_assert_eq!(name, segment_file_name(footer.base_offset));
            self.files.push(name);
        }
        Ok(())
    }

    /// Ends the transfer: the log received must end at `next_offset` (the snapshot's), unless
    /// nothing was sent (every record below it had expired). Writes the install marker.
    pub fn finish(mut self, next_offset: u64) -> Result<(), TransferError> {
        if let Some(f) = &self.file {
            return Err(TransferError::Protocol(format!(
                "{} ended after {} of {} bytes",
                f.path.display(),
                f.written,
                f.len
            )));
        }
        self.seal_writer()?;
        if let Some(next) = self.next
            && next != next_offset
        {
            return Err(TransferError::Protocol(format!(
                "the log ends at offset {next}, the snapshot at {next_offset}"
            )));
        }
        InstallMarker { snapshot: self.snapshot, files: self.files }.write(&self.incoming)?;
        Ok(())
    }
}

/// The base offset of the first batch in `records`.
fn first_batch_offset(records: &[u8]) -> Option<u64> {
    records.get(..8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// What the offset index would know of an entry, from its batches' headers.
fn entry_offsets(records: &[u8]) -> Result<EntryOffsets, TransferError> {
    let spans = batch::split_batches(records, true).map_err(|e| TransferError::Protocol(format!("an entry: {e}")))?;
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Err(TransferError::Protocol("an entry with no batch".into()));
    };
    Ok(EntryOffsets {
        raft_index: 0,
        base_offset: first.header.base_offset as u64,
        last_offset: last.header.last_offset() as u64,
        max_timestamp: spans.iter().map(|s| s.header.max_timestamp).max().unwrap_or(i64::MIN),
        bytes: records.len() as u64,
        epoch: first.header.partition_leader_epoch as u64,
    })
}
