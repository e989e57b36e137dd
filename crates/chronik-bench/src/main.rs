//! `chronik-bench`: the benchmark commands named in README.md and docs/BENCHMARKS.md.
//! Each prints its figures as `key=value` lines; nothing here is a pass/fail test.

mod cluster;
mod compact;
mod disk;
mod kafka;
mod load;
mod machine;
mod migrate;
mod ports;
mod raft;
mod stats;
mod tier;
mod wal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chronik-bench", about = "Chronik benchmarks: raw disk, WAL group commit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw disk (fdatasync per 1 MiB, 4 KiB write+fdatasync latency), then the WAL in `always`
    /// mode with 64 appenders over 8 logs; ends with `wal_vs_disk_ratio=`.
    Wal(wal::WalArgs),
    /// The WAL (16 KiB, as above), then the same load through Raft into partition groups;
    /// ends with `raft_vs_wal_ratio=`.
    Raft(raft::RaftArgs),
    /// 1,000 partitions in one standalone node: creation and restart time, memory, idle CPU.
    Partitions(raft::PartitionsArgs),
    /// The broker with librdkafka's rdkafka_performance and a paced rdkafka-crate producer:
    /// produce throughput, end-to-end latency at half the peak rate, fetch of a 2 GB topic
    /// (scripts/bench-kafka.sh runs it).
    Kafka(kafka::KafkaArgs),
    /// The segment tier: produce through Raft with data moving out of the WAL against the
    /// tier idle (`tier_active_vs_idle_ratio=`), memory per retained GiB, fetch from segment
    /// files cold and warm, restart with 20 GiB over 1,000 partitions.
    Tier(tier::TierArgs),
    /// Log compaction: a pass's throughput (MB/s of input) and the produce latency of another
    /// topic while it runs, against the same probe with no pass running.
    Compact(compact::CompactArgs),
    /// Three `chronik-server cluster` processes on this machine: RF=3 acks=all produce against
    /// standalone (`cluster_vs_standalone_ratio=`), failover time after SIGKILL of a partition
    /// leader (p50/p99 over `--trials`), and with `--partitions`, idle CPU, memory and
    /// restart-to-all-led time for that many RF=3 partitions.
    Cluster(cluster::ClusterArgs),
    /// `chronik-server migrate-wal` on a generated v1 data directory (`--mb` of WAL data):
    /// MB/s of v1 data (`migrate_v1_mb_per_second=`).
    Migrate(migrate::MigrateArgs),
    /// Used by `tier`: starts a node on a data directory in a fresh process, waits for its
    /// topics' leaders, prints the time and resident memory, exits.
    #[command(hide = true)]
    TierOpen(tier::OpenArgs),
    /// The paced producer of the latency runs, alone, against a running broker: stamped 1 KiB
    /// messages at a fixed rate (for rdkafka_performance -C -l to measure); prints the rate
    /// achieved.
    Produce(load::ProduceArgs),
}

fn main() -> anyhow::Result<()> {
    // The in-process benchmarks run nodes: their warnings and errors go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Wal(args) => wal::run(args),
        Command::Raft(args) => raft::run(args),
        Command::Partitions(args) => raft::partitions(args),
        Command::Kafka(args) => kafka::run(args),
        Command::Produce(args) => load::run(args),
        Command::Tier(args) => tier::run(args),
        Command::Compact(args) => compact::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::TierOpen(args) => tier::open_and_report(args),
    }
}
