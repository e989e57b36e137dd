//! `chronik-server migrate-wal`: runs the migration and prints its report.

use chronik_migrate::MigrateOptions;

/// Exit code 0, or 1 when `--verify` found a difference.
pub fn run(opts: MigrateOptions, json: bool) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("chronik-migrate").build()?;
    let report = runtime.block_on(chronik_migrate::migrate(&opts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    let differs = report.verify.as_ref().is_some_and(|v| v.mismatch_count > 0);
    Ok(u8::from(differs))
}
