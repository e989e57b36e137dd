//! Backups: `chronik-server backup` copies a running broker's topics (partition counts and
//! the configs set on them), every record from each partition's log start with its offset,
//! and the groups' committed offsets into one archive file, through Kafka APIs only (so any
//! Kafka-compatible broker can be backed up, a Chronik cluster included). `chronik-server
//! restore` copies an archive into a running Chronik the way `migrate` copies a broker: the
//! same `Copier`, reading the archive instead.
//!
//! The archive: a header (magic, version), then records `[len u32][kind u8][body][crc32c u32]`
//! (big-endian; the CRC covers kind and body), and last an end record with the counts. A
//! backup is written to `<file>.partial` and linked to its name once complete and synced, so a file
//! under the name asked for is whole; a reader refuses one without its end record, or whose
//! counts or CRCs do not match, naming the byte where it went wrong.
//!
//! Each partition is copied up to its end when the backup reached it: a backup of a broker
//! taking writes is consistent per partition, not across partitions.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::MigrateError;
use crate::online::{Commit, Copier, KafkaSource, OnlineReport, Read, Source, batches_from};

const MAGIC: &[u8; 8] = b"CHRBKUP\0";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 12;
/// How often a backup asks again a broker that failed or gave no usable answer (a leader
/// moving), and after what pause: about ten seconds in all.
const RETRIES: u32 = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Empty answers before a partition's end taken to mean nothing more is stored up to it.
const DRAINED_CONFIRMATIONS: u32 = 3;

const KIND_TOPIC: u8 = 1;
const KIND_PARTITION: u8 = 2;
const KIND_BATCHES: u8 = 3;
const KIND_COMMIT: u8 = 4;
const KIND_END: u8 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicEntry {
    name: String,
    partitions: usize,
    configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionEntry {
    topic: String,
    partition: i32,
    log_start: i64,
    end: i64,
}

/// What an archive holds; also its end record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSummary {
    pub topics: u64,
    pub partitions: u64,
    pub batches: u64,
    pub bytes: u64,
    pub commits: u64,
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The broker's bootstrap address (host:port).
    pub from: String,
    /// The archive to write (must not exist).
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub file: PathBuf,
    pub summary: ArchiveSummary,
    /// Per `topic-partition`: the log start offset and end copied.
    pub partitions: BTreeMap<String, (i64, i64)>,
}

fn archive_err(path: &Path, at: u64, what: impl Into<String>) -> MigrateError {
    MigrateError::Archive { path: path.to_path_buf(), at, what: what.into() }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io { path: path.to_path_buf(), source }
}

/// Writes an archive's records.
struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    summary: ArchiveSummary,
}

impl Writer {
    fn create(path: &Path) -> Result<Writer, MigrateError> {
        let file = File::options().write(true).create_new(true).open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => MigrateError::PartialExists(path.to_path_buf()),
            _ => io_err(path)(e),
        })?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC).and_then(|()| out.write_all(&VERSION.to_be_bytes())).map_err(io_err(path))?;
        Ok(Writer { path: path.to_path_buf(), out, summary: ArchiveSummary::default() })
    }

    fn record(&mut self, kind: u8, body: &[u8]) -> Result<(), MigrateError> {
        let mut crc = crc32c::crc32c(&[kind]);
        crc = crc32c::crc32c_append(crc, body);
        let len = u32::try_from(body.len() + 1).map_err(|_| archive_err(&self.path, 0, "a record over 4 GiB"))?;
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&len.to_be_bytes())?;
            out.write_all(&[kind])?;
            out.write_all(body)?;
            out.write_all(&crc.to_be_bytes())
        };
        write(&mut self.out).map_err(io_err(&self.path))
    }

    fn json(&mut self, kind: u8, value: &impl Serialize) -> Result<(), MigrateError> {
        let body = serde_json::to_vec(value).map_err(|e| archive_err(&self.path, 0, e.to_string()))?;
        self.record(kind, &body)
    }

    fn batches(&mut self, topic: &str, partition: i32, batches: &[Bytes]) -> Result<(), MigrateError> {
        let mut body = BytesMut::new();
        body.put_u16(topic.len() as u16);
        body.put_slice(topic.as_bytes());
        body.put_i32(partition);
        for b in batches {
            body.put_slice(b);
            self.summary.bytes += b.len() as u64;
        }
        self.summary.batches += batches.len() as u64;
        self.record(KIND_BATCHES, &body)
    }

    /// Writes the end record and makes the file durable.
    fn finish(mut self) -> Result<ArchiveSummary, MigrateError> {
        let summary = self.summary.clone();
        self.json(KIND_END, &summary)?;
        let file = self.out.into_inner().map_err(|e| io_err(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io_err(&self.path))?;
        Ok(summary)
    }
}

/// `$call` (a call on the source) made again after a pause (connections dropped, metadata
/// read afresh) while it fails: a leader moving answers with an error for a moment.
macro_rules! retrying {
    ($source:expr, $what:expr, $call:expr) => {{
        let mut attempt = 0;
        loop {
            match $call.await {
                Ok(v) => break Ok::<_, MigrateError>(v),
                Err(e) if attempt < RETRIES => {
                    attempt += 1;
                    tracing::debug!("{}: {e}; retrying", $what);
                    settle($source).await;
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Backs the broker at `opts.from` up into `opts.out`.
pub async fn backup(opts: &BackupOptions) -> Result<BackupReport, MigrateError> {
    if opts.out.exists() {
        return Err(MigrateError::OutputExists(opts.out.clone()));
    }
    // Created new: an existing one is another backup to this file, running or interrupted
    // (killed), and the error names it (remove it to start again). One that fails here goes.
    let partial = PathBuf::from(format!("{}.partial", opts.out.display()));
    let mut w = Writer::create(&partial)?;
    let written = write_backup(&opts.from, &mut w).await;
    let (summary, partitions) = match written.and_then(|partitions| Ok((w.finish()?, partitions))) {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    // A hard link fails where the name exists: a backup never replaces a file.
    std::fs::hard_link(&partial, &opts.out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => MigrateError::OutputExists(opts.out.clone()),
        _ => io_err(&opts.out)(e),
    })?;
    std::fs::remove_file(&partial).map_err(io_err(&partial))?;
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    }
    Ok(BackupReport { file: opts.out.clone(), summary, partitions })
}

/// Writes everything the broker at `from` holds into `w` (its end record aside); answers each
/// partition's log start and end.
async fn write_backup(from: &str, w: &mut Writer) -> Result<BTreeMap<String, (i64, i64)>, MigrateError> {
    let mut source = KafkaSource::new(from);
    let mut partitions = BTreeMap::new();
    let topics = retrying!(&mut source, "listing topics", source.topics())?;
    // Committed offsets first: a consumer commits at most what it read, so each is then at or
    // below the end its partition is copied to.
    let commits = retrying!(&mut source, "reading committed offsets", source.commits())?;
    for c in commits.into_iter().filter(|c| topics.contains_key(&c.topic)) {
        w.json(KIND_COMMIT, &c)?;
        w.summary.commits += 1;
    }
    for (topic, &count) in &topics {
        let configs = retrying!(&mut source, topic, source.configs(topic))?;
        w.json(KIND_TOPIC, &TopicEntry { name: topic.clone(), partitions: count, configs })?;
        w.summary.topics += 1;
        for partition in 0..count as i32 {
            let what = format!("{topic}-{partition}");
            let (log_start, end) = retrying!(&mut source, &what, source.bounds(topic, partition))?;
            w.json(KIND_PARTITION, &PartitionEntry { topic: topic.clone(), partition, log_start, end })?;
            w.summary.partitions += 1;
            copy_partition(&mut source, w, topic, partition, log_start, end).await?;
            partitions.insert(what, (log_start, end));
        }
    }
    Ok(partitions)
}

/// After a failed or empty answer: new connections, fresh metadata (a new leader), a pause.
async fn settle(source: &mut KafkaSource) {
    source.reset();
    tokio::time::sleep(RETRY_PAUSE).await;
    let _ = source.topics().await;
}

/// Copies one partition's batches from `log_start` to `end`. An answer with nothing before
/// `end` (a leader that took over and serves nothing yet, or a log whose tail is gone) is asked
/// again a few times before it is taken for the end: taken too early, the records up to `end`
/// would be missing from the archive with nothing to say so.
async fn copy_partition(
    source: &mut KafkaSource,
    w: &mut Writer,
    topic: &str,
    partition: i32,
    log_start: i64,
    end: i64,
) -> Result<(), MigrateError> {
    let (mut next, mut failed, mut empty) = (log_start, 0, 0);
    while next < end {
        match source.read(topic, partition, next).await {
            Ok(Read::Batches(batches)) => {
                let last = batches.last().expect("a non-empty read");
                let header = chronik_cluster::BatchHeader::parse(last)
                    .map_err(|e| archive_err(&w.path, 0, format!("{topic}-{partition}: {e}")))?;
                next = header.last_offset() + 1;
                w.batches(topic, partition, &batches)?;
                (failed, empty) = (0, 0);
            }
            Ok(Read::Drained) if empty >= DRAINED_CONFIRMATIONS => break,
            Ok(Read::Drained) => {
                empty += 1;
                settle(source).await;
            }
            Ok(Read::Stalled) | Err(_) if failed < RETRIES => {
                failed += 1;
                settle(source).await;
            }
            Ok(Read::Stalled) => {
                return Err(MigrateError::Kafka {
                    addr: topic.to_string(),
                    what: format!("{topic}-{partition}: no records could be read at offset {next}"),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where a chunk of one partition's batches is in the archive.
struct Chunk {
    pos: u64,
    len: usize,
    last_offset: i64,
}

/// An archive opened for reading: checked whole, indexed, its batches read on demand.
pub(crate) struct Archive {
    path: PathBuf,
    file: File,
    topics: BTreeMap<String, TopicEntry>,
    partitions: BTreeMap<(String, i32), (i64, i64)>,
    chunks: BTreeMap<(String, i32), Vec<Chunk>>,
    commits: Vec<Commit>,
    pub summary: ArchiveSummary,
}

impl Archive {
    /// Reads `path` through, checking every record, and indexes it.
    pub fn open(path: &Path) -> Result<Archive, MigrateError> {
        let mut file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header).map_err(|_| archive_err(path, 0, "too short to be a Chronik backup"))?;
        if &header[..8] != MAGIC {
            return Err(archive_err(path, 0, "not a Chronik backup (bad magic)"));
        }
        let version = u32::from_be_bytes(header[8..12].try_into().expect("4"));
        if version != VERSION {
            return Err(archive_err(path, 8, format!("backup format version {version}; this build reads {VERSION}")));
        }
        let mut a = Archive {
            path: path.to_path_buf(),
            file: file.try_clone().map_err(io_err(path))?,
            topics: BTreeMap::new(),
            partitions: BTreeMap::new(),
            chunks: BTreeMap::new(),
            commits: Vec::new(),
            summary: ArchiveSummary::default(),
        };
        let mut seen = ArchiveSummary::default();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut at = HEADER_LEN;
        loop {
            if at == size {
                return Err(archive_err(
                    path,
                    at,
                    "incomplete: it ends before its end record (the backup did not finish)",
                ));
            }
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).map_err(|_| archive_err(path, at, "incomplete: a record cut short"))?;
            let len = u32::from_be_bytes(len) as usize;
            // Checked against what the file holds before anything is allocated for it.
            if len == 0 {
                return Err(archive_err(path, at, "a record of no bytes"));
            }
            if at + 4 + len as u64 + 4 > size {
                return Err(archive_err(path, at, format!("incomplete: a record claims {len} bytes")));
            }
            let mut record = vec![0u8; len + 4];
            reader.read_exact(&mut record).map_err(|_| archive_err(path, at, "incomplete: a record cut short"))?;
            let crc = u32::from_be_bytes(record[len..].try_into().expect("4"));
            if crc != crc32c::crc32c(&record[..len]) {
                return Err(archive_err(path, at, "a record fails its checksum"));
            }
            let (kind, body) = (record[0], &record[1..len]);
            let body_at = at + 5;
            at += 4 + len as u64 + 4;
            let json_err = |e: serde_json::Error| archive_err(path, body_at, e.to_string());
            match kind {
                KIND_TOPIC => {
                    let t: TopicEntry = serde_json::from_slice(body).map_err(json_err)?;
                    seen.topics += 1;
                    a.topics.insert(t.name.clone(), t);
                }
                KIND_PARTITION => {
                    let p: PartitionEntry = serde_json::from_slice(body).map_err(json_err)?;
                    seen.partitions += 1;
                    a.partitions.insert((p.topic, p.partition), (p.log_start, p.end));
                }
                KIND_BATCHES => {
                    let (topic, partition, batches_at) = chunk_owner(body).ok_or_else(|| {
                        archive_err(path, body_at, "a chunk of batches without its topic and partition")
                    })?;
                    let bytes = Bytes::copy_from_slice(&body[batches_at..]);
                    let batches = batches_from(&bytes, i64::MIN).map_err(|e| archive_err(path, body_at, e))?;
                    let last = batches.last().ok_or_else(|| archive_err(path, body_at, "an empty chunk"))?;
                    let last_offset = chronik_cluster::BatchHeader::parse(last)
                        .map_err(|e| archive_err(path, body_at, e.to_string()))?
                        .last_offset();
                    seen.batches += batches.len() as u64;
                    seen.bytes += bytes.len() as u64;
                    let chunk = Chunk { pos: body_at + batches_at as u64, len: bytes.len(), last_offset };
                    a.chunks.entry((topic, partition)).or_default().push(chunk);
                }
                KIND_COMMIT => {
                    a.commits.push(serde_json::from_slice(body).map_err(json_err)?);
                    seen.commits += 1;
                }
                KIND_END => {
                    a.summary = serde_json::from_slice(body).map_err(json_err)?;
                    if a.summary != seen {
                        return Err(archive_err(
                            path,
                            body_at,
                            format!("its end record counts {:?}, the archive holds {seen:?}", a.summary),
                        ));
                    }
                    if at != size {
                        return Err(archive_err(path, at, "bytes after the end record"));
                    }
                    return Ok(a);
                }
                other => return Err(archive_err(path, body_at - 1, format!("unknown record kind {other}"))),
            }
        }
    }

    /// The topics the archive holds.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }
}

/// A chunk's topic, partition, and where its batches start in its body.
fn chunk_owner(body: &[u8]) -> Option<(String, i32, usize)> {
    let len = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(body.get(2..2 + len)?).ok()?.to_string();
    let partition = i32::from_be_bytes(body.get(2 + len..6 + len)?.try_into().ok()?);
    Some((topic, partition, 6 + len))
}

impl Source for Archive {
    async fn topics(&mut self) -> Result<BTreeMap<String, usize>, MigrateError> {
        Ok(self.topics.iter().map(|(name, t)| (name.clone(), t.partitions)).collect())
    }

    async fn configs(&mut self, topic: &str) -> Result<BTreeMap<String, String>, MigrateError> {
        Ok(self.topics.get(topic).map(|t| t.configs.clone()).unwrap_or_default())
    }

    async fn bounds(&mut self, topic: &str, partition: i32) -> Result<(i64, i64), MigrateError> {
        let missing = || archive_err(&self.path, 0, format!("no partition {topic}-{partition} in the archive"));
        self.partitions.get(&(topic.to_string(), partition)).copied().ok_or_else(missing)
    }

    async fn read(&mut self, topic: &str, partition: i32, from: i64) -> Result<Read, MigrateError> {
        let Some(chunks) = self.chunks.get(&(topic.to_string(), partition)) else { return Ok(Read::Drained) };
        let Some(chunk) = chunks.get(chunks.partition_point(|c| c.last_offset < from)) else {
            return Ok(Read::Drained);
        };
        let mut bytes = vec![0u8; chunk.len];
        let read = self.file.seek(SeekFrom::Start(chunk.pos)).and_then(|_| self.file.read_exact(&mut bytes));
        read.map_err(io_err(&self.path))?;
        let batches = batches_from(&Bytes::from(bytes), from).map_err(|e| archive_err(&self.path, chunk.pos, e))?;
        Ok(if batches.is_empty() { Read::Drained } else { Read::Batches(batches) })
    }

    async fn commits(&mut self) -> Result<Vec<Commit>, MigrateError> {
        Ok(self.commits.clone())
    }

    fn reset(&mut self) {}
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The archive to restore.
    pub input: PathBuf,
    /// The target Chronik's Kafka address and admin API address.
    pub to: String,
    pub to_admin: String,
    /// Go on with a restore that was interrupted: topics already on the target are continued
    /// from their next offset instead of refused.
    pub resume: bool,
}

/// Restores an archive into the running Chronik at `opts.to`: topics created with the
/// archive's configs, every record at its offset, the committed offsets. Topics the target
/// already has are refused (nothing is written) unless resuming.
pub async fn restore(opts: &RestoreOptions) -> Result<OnlineReport, MigrateError> {
    let archive = Archive::open(&opts.input)?;
    let names = archive.topic_names();
    let mut copier = Copier::new(archive, &opts.to, &opts.to_admin, Arc::new(AtomicBool::new(false)));
    if !opts.resume {
        let target = copier.target_metadata().await?;
        let present: Vec<String> = names.into_iter().filter(|t| target.topics.contains_key(t)).collect();
        if !present.is_empty() {
            return Err(MigrateError::RestoreOverExisting(present));
        }
    }
    copier.pass().await?;
    Ok(copier.into_report())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::{BatchFields, NewRecord, encode_batch};

    fn batch(offset: i64, n: i64) -> Bytes {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                offset: offset + i,
                timestamp: 1,
                key: None,
                value: Some(vec![i as u8].into()),
                headers: vec![],
            })
            .collect();
        encode_batch(BatchFields::PLAIN, &records).into()
    }

    /// An archive of one topic: partition 0 with batches at 0..3 and 5..7 in two chunks (a gap,
    /// as compaction leaves), partition 1 empty up to its end 4, and one commit.
    fn write(path: &Path) -> ArchiveSummary {
        let mut w = Writer::create(path).unwrap();
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        w.json(KIND_TOPIC, &TopicEntry { name: "t".into(), partitions: 2, configs }).unwrap();
        w.summary.topics += 1;
        w.json(KIND_PARTITION, &PartitionEntry { topic: "t".into(), partition: 0, log_start: 0, end: 8 }).unwrap();
        w.batches("t", 0, &[batch(0, 3)]).unwrap();
        w.batches("t", 0, &[batch(5, 3)]).unwrap();
        w.json(KIND_PARTITION, &PartitionEntry { topic: "t".into(), partition: 1, log_start: 4, end: 4 }).unwrap();
        w.summary.partitions += 2;
        let commit = Commit { group: "g".into(), topic: "t".into(), partition: 0, offset: 6, metadata: None };
        w.json(KIND_COMMIT, &commit).unwrap();
        w.summary.commits += 1;
        w.finish().unwrap()
    }

    #[tokio::test]
    async fn an_archive_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let written = write(&path);
        let mut a = Archive::open(&path).unwrap();
        assert_eq!(a.summary, written);
        assert_eq!(a.topics().await.unwrap(), BTreeMap::from([("t".to_string(), 2)]));
        assert_eq!(a.configs("t").await.unwrap()["cleanup.policy"], "compact");
        assert_eq!(a.bounds("t", 0).await.unwrap(), (0, 8));
        assert_eq!(a.bounds("t", 1).await.unwrap(), (4, 4));
        // (from, first base offset answered, or None when drained): a batch that begins
        // before `from` and ends after it comes whole.
        let cases = [(0, Some(0)), (1, Some(0)), (3, Some(5)), (5, Some(5)), (8, None)];
        for (from, first) in cases {
            let got = match a.read("t", 0, from).await.unwrap() {
                Read::Batches(b) => Some(chronik_cluster::BatchHeader::parse(&b[0]).unwrap().base_offset),
                Read::Drained => None,
                Read::Stalled => panic!("an archive never stalls"),
            };
            assert_eq!(got, first, "from {from}");
        }
        assert!(matches!(a.read("t", 1, 4).await.unwrap(), Read::Drained));
        assert_eq!(a.commits().await.unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_or_unfinished_archive_is_refused_naming_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        write(&path);
        let whole = std::fs::read(&path).unwrap();
        // (what was done to the file, what the refusal says)
        let mut flipped = whole.clone();
        flipped[HEADER_LEN as usize + 10] ^= 1;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("cut before the end record", whole[..whole.len() - 30].to_vec(), "incomplete"),
            ("a byte flipped", flipped, "checksum"),
            ("another file", b"PK\x03\x04 a zip file, say".to_vec(), "bad magic"),
            ("bytes after the end", [whole.clone(), vec![0; 3]].concat(), "after the end record"),
        ];
        for (what, bytes, says) in cases {
            std::fs::write(&path, bytes).unwrap();
            let err = Archive::open(&path).err().unwrap_or_else(|| panic!("{what}: opened")).to_string();
            assert!(err.contains(says), "{what}: {err}");
        }
    }
}
