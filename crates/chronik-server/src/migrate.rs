//! `chronik-server migrate-wal` (offline, from a v1 data directory), `chronik-server migrate`
//! (online, from a running broker), `backup` and `restore` (a running broker into an archive
//! file, and back into a running Chronik): run them and print their reports.

use chronik_migrate::MigrateOptions;
use chronik_migrate::archive::{BackupOptions, RestoreOptions};
use chronik_migrate::online::{OnlineOptions, OnlineReport};

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("chronik-migrate").build()
}

/// Exit code 0, or 1 when `--verify` found a difference.
pub fn run(opts: MigrateOptions, json: bool) -> anyhow::Result<u8> {
    let runtime = runtime()?;
    let existed = opts.output.exists();
    let report = runtime.block_on(chronik_migrate::migrate(&opts)).map_err(|e| {
        let partial = !matches!(e, chronik_migrate::MigrateError::OutputNotEmpty(_))
            && opts.output.read_dir().is_ok_and(|mut d| d.next().is_some());
        if partial {
            let how = if existed { "empty it" } else { "delete it" };
            anyhow::anyhow!(
                "{e}\n(the partly written output {} was left as it is: {how} before running again)",
                opts.output.display()
            )
        } else {
            e.into()
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    let differs = report.verify.as_ref().is_some_and(|v| v.mismatch_count > 0);
    Ok(u8::from(differs))
}

/// Follows the source until SIGINT/SIGTERM (or one pass with `--once`).
pub fn follow(opts: OnlineOptions, json: bool) -> anyhow::Result<u8> {
    let runtime = runtime()?;
    let report = runtime.block_on(chronik_migrate::online::run(opts, crate::shutdown::signal()))?;
    print_copy(&report, json)
}

/// `chronik-server backup`: writes the archive, prints what it holds.
pub fn backup(opts: BackupOptions, json: bool) -> anyhow::Result<u8> {
    let report = runtime()?.block_on(chronik_migrate::archive::backup(&opts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &report.summary;
        println!(
            "backed up {} topics ({} partitions, {} batches, {} bytes of records) and {} committed offsets to {}",
            s.topics,
            s.partitions,
            s.batches,
            s.bytes,
            s.commits,
            report.file.display()
        );
    }
    Ok(0)
}

/// `chronik-server restore`: copies the archive into the target; exit 1 if a partition failed.
pub fn restore(opts: RestoreOptions, json: bool) -> anyhow::Result<u8> {
    let report = runtime()?.block_on(chronik_migrate::archive::restore(&opts))?;
    print_copy(&report, json)
}

fn print_copy(report: &OnlineReport, json: bool) -> anyhow::Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "copied {} batches ({} bytes) in {} passes; {} topics created; {} commits",
            report.batches,
            report.bytes,
            report.passes,
            report.topics_created.len(),
            report.commits
        );
        for (topic, dropped) in &report.dropped_configs {
            for (k, why) in dropped {
                println!("  {topic}: config {k} NOT carried over: {why}");
            }
        }
        for w in &report.warnings {
            println!("  warning: {w}");
        }
        for (what, e) in &report.errors {
            println!("  FAILED {what}: {e}");
        }
    }
    Ok(u8::from(!report.errors.is_empty()))
}
