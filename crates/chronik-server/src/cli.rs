use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "chronik-server",
    version,
    about = "Chronik: a Kafka-compatible partitioned log broker on Raft",
    long_about = "With no subcommand, runs a standalone node on the embedded defaults \
                  (Kafka on 127.0.0.1:9092, admin API on 127.0.0.1:8080, data in ./data)."
)]
pub struct Cli {
    /// Config file (else $CHRONIK_CONFIG, ./chronik.toml or /etc/chronik/chronik.toml if present).
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a single node (the default).
    Standalone,
    /// Run as a member of a cluster described by the `[cluster]` section of chronik.toml.
    Cluster,
    /// Check a config file (and CHRONIK_* variables); print every problem, exit non-zero if any.
    ValidateConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Inspect on-disk data of a stopped node.
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
    /// Ask a running node's admin API (prints its JSON answer; exits 1 if it refuses).
    Admin {
        /// The node's admin address (its `admin_addr`).
        #[arg(long, default_value = "127.0.0.1:8080", env = "CHRONIK_ADMIN_ADDR")]
        addr: String,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Convert a v1 (legacy standalone Chronik) data directory into a new data directory,
    /// offline. The input is only read. Prints a report (exit 1 if `--verify` found a
    /// difference); see docs/MIGRATION.md.
    MigrateWal {
        /// The v1 data directory (v1's `--data-dir`).
        #[arg(long)]
        input: PathBuf,
        /// The new data directory: must not exist or be empty.
        #[arg(long)]
        output: PathBuf,
        /// Skip records that fail their checks (each is listed in the report) instead of
        /// stopping at the first.
        #[arg(long)]
        skip_corrupt: bool,
        /// Topics whose retention would delete migrated data at its first check get that
        /// retention turned off (`retention.ms` / `retention.bytes` = -1) instead.
        #[arg(long)]
        keep_expired: bool,
        /// Read the output back and compare it with the input, record by record.
        #[arg(long)]
        verify: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy topics, every record (offsets kept) and committed offsets from a running
    /// Kafka-compatible broker into a running Chronik, then keep following new writes until
    /// SIGINT/SIGTERM (blue-green migration; docs/MIGRATION.md). Resumable: rerun after a
    /// crash and it continues where the target stands.
    Migrate {
        /// The source broker's bootstrap address (host:port).
        #[arg(long)]
        from: String,
        /// The target Chronik's Kafka address.
        #[arg(long)]
        to: String,
        /// The target Chronik's admin API address (batches go in through its import endpoint);
        /// for a cluster, every node's, comma-separated (each partition goes in through its
        /// leader; one led by a node not given is first moved to the first node given).
        #[arg(long)]
        to_admin: String,
        /// Stop after one pass has reached the source's end, instead of following.
        #[arg(long)]
        once: bool,
        /// Pause between passes while following (ms).
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back a running broker up into one archive file: topics and their configs, every record
    /// at its offset, committed offsets (Kafka APIs only; docs/ADMIN_API.md).
    Backup {
        /// The broker's bootstrap address (host:port; any node of a cluster).
        #[arg(long)]
        from: String,
        /// The archive to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore an archive into a running Chronik: its topics are created (it refuses topics
    /// that exist), every record goes back at its offset, and the committed offsets.
    Restore {
        /// The archive `backup` wrote.
        #[arg(long)]
        input: PathBuf,
        /// The target Chronik's Kafka address.
        #[arg(long)]
        to: String,
        /// The target Chronik's admin API address (records go in through its import endpoint);
        /// for a cluster, every node's, comma-separated (as for `migrate`).
        #[arg(long)]
        to_admin: String,
        /// Go on with an interrupted restore (topics already there continue from their end).
        #[arg(long)]
        resume: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Quorum-loss recovery, offline: make this stopped node the only voter of every group
    /// it holds; on its next start it removes every other node. Loses what only other nodes
    /// held; run it on one surviving node only (docs/ADMIN_API.md).
    RecoverQuorumLoss {
        /// Go ahead (without it, the consequences are printed and nothing changes).
        #[arg(long)]
        confirm: bool,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand, Debug)]
// The variants are the subcommands' names (`debug wal-dump`, ...).
#[allow(clippy::enum_variant_names)]
pub enum DebugCommand {
    /// Print every WAL record (segment, offset, type, group, index, term, leader, sizes).
    WalDump {
        /// A WAL directory (<data_dir>/wal) or a data directory.
        path: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every segment and the log's consistency. Exit 0: clean; 2: only a torn tail that
    /// recovery will cut; 1: corruption (named by file and byte offset).
    WalVerify {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Segment, record and per-group counts.
    WalStats {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Every node: addresses, metadata role, reachability, partitions hosted and led, state.
    Members,
    /// The metadata group's leader and voters.
    Leader,
    /// The partitions the node hosts, as their Raft groups stand.
    Partitions,
    /// Nodes being removed and partition moves under way.
    Moves,
    /// Remove a node: its replicas move to the other nodes, then it is removed and stops.
    RemoveNode { node_id: u64 },
    /// Make a caught-up learner of the metadata group a voter now (nodes are promoted on their
    /// own up to five voters).
    Promote { node_id: u64 },
    /// Move a partition to other replicas (comma-separated node ids).
    MovePartition {
        topic: String,
        partition: i32,
        #[arg(value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
    },
    /// Hand the metadata group's leadership (or, with --topic and --partition, a partition's)
    /// to a voter.
    TransferLeader {
        to: u64,
        #[arg(long, requires = "partition")]
        topic: Option<String>,
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
    },
    /// Snapshot every group on the node now (partitions move their committed entries to their
    /// segment files first) and let the WAL drop what the snapshots cover.
    Snapshot,
    /// Each group on the node: its last snapshot and how far its WAL entries are dropped.
    Snapshots,
}
