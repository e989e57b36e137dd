use std::path::PathBuf;

use chronik_cluster::{ClusterError, ReadError};
use chronik_kafka::StartError;
use chronik_kafka::groups::OffsetStoreError;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a v1 data directory: {why}", path.display())]
    NotV1 { path: PathBuf, why: String },
    #[error(
        "{}: corrupt record at byte {at}: {reason} (v1 never checked this; `--skip-corrupt` skips such records and lists each in the report)",
        path.display()
    )]
    Corrupt { path: PathBuf, at: usize, reason: String },
    #[error("the output directory {} is not empty; migrate-wal writes only into a new or empty directory", .0.display())]
    OutputNotEmpty(PathBuf),
    #[error("starting the new broker on {}: {source}", path.display())]
    Start {
        path: PathBuf,
        #[source]
        source: StartError,
    },
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("{topic}-{partition}: {source}")]
    Import {
        topic: String,
        partition: i32,
        #[source]
        source: ClusterError,
    },
    #[error("{topic}-{partition}: reading the output back: {source}")]
    ReadBack {
        topic: String,
        partition: i32,
        #[source]
        source: ReadError,
    },
    #[error("{partition}: the batch at offset {offset}: {reason}")]
    Batch { partition: String, offset: i64, reason: String },
    #[error("storing the committed offsets of group {group}: {source}")]
    Offsets {
        group: String,
        #[source]
        source: OffsetStoreError,
    },
    #[error("metadata: {0}")]
    Metadata(#[source] ClusterError),
    #[error("stopping the new broker: {0}")]
    Stop(#[source] ClusterError),
    #[error("Kafka broker {addr}: {what}")]
    Kafka { addr: String, what: String },
    #[error("admin API {addr}: {what}")]
    Http { addr: String, what: String },
    #[error("the reader of {0} stopped unexpectedly")]
    ReaderLost(String),
    /// A backup archive that cannot be read: damaged, unfinished, or not one at all.
    #[error("backup {}: at byte {at}: {what}", path.display())]
    Archive { path: PathBuf, at: u64, what: String },
    #[error("{} already exists; a backup is written only to a new file", .0.display())]
    OutputExists(PathBuf),
    #[error(
        "{} exists: another backup to this file is running, or one was interrupted (remove it to start again)",
        .0.display()
    )]
    PartialExists(PathBuf),
    #[error(
        "the target already has topic(s) {0:?}; restore writes only topics it creates (delete them first, or pass \
         --resume to go on with an interrupted restore)"
    )]
    RestoreOverExisting(Vec<String>),
}
