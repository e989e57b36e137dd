//! `chronik-bench`: the benchmark commands named in README.md and docs/BENCHMARKS.md.
//! Each prints its figures as `key=value` lines; nothing here is a pass/fail test.

mod disk;
mod machine;
mod stats;
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Wal(args) => wal::run(args),
    }
}
