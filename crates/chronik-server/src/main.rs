//! chronik-server: parse the command line, load the config, run the chosen command.

mod admin;
mod admin_client;
mod cli;
mod debug;
mod logging;
mod metrics;
mod migrate;
mod node;
mod recover;
mod shutdown;

/// Hostile array lengths in Kafka requests must not abort the process (see chronik_kafka::alloc).
#[global_allocator]
static ALLOCATOR: chronik_kafka::alloc::GuardedAllocator = chronik_kafka::alloc::GuardedAllocator;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, DebugCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let command = cli.command.unwrap_or(Command::Standalone);
    match command {
        Command::Version => {
            println!("chronik-server {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::ValidateConfig { file } => match chronik_config::load_from_env(Some(&file)) {
            Ok(_) => {
                println!("{}: OK", file.display());
                Ok(0)
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
                Ok(1)
            }
        },
        Command::Admin { addr, command } => admin_client::run(&addr, command),
        Command::MigrateWal { input, output, skip_corrupt, keep_expired, verify, json } => {
            let opts = chronik_migrate::MigrateOptions {
                input,
                output,
                skip_corrupt,
                keep_expired,
                verify,
                show_progress: !json,
            };
            logging::init("warn");
            migrate::run(opts, json)
        }
        Command::Migrate { from, to, to_admin, once, poll_ms, json } => {
            logging::init("warn");
            let poll = std::time::Duration::from_millis(poll_ms);
            migrate::follow(chronik_migrate::online::OnlineOptions { from, to, to_admin, once, poll }, json)
        }
        Command::Debug { command } => match command {
            DebugCommand::WalDump { path, json } => debug::dump(&path, json).map(|()| 0),
            DebugCommand::WalVerify { path, json } => debug::verify(&path, json).map(|c| c as u8),
            DebugCommand::WalStats { path, json } => debug::stats(&path, json).map(|()| 0),
        },
        Command::Backup { from, out, json } => {
            logging::init("warn");
            migrate::backup(chronik_migrate::archive::BackupOptions { from, out }, json)
        }
        Command::Restore { input, to, to_admin, resume, json } => {
            logging::init("warn");
            migrate::restore(chronik_migrate::archive::RestoreOptions { input, to, to_admin, resume }, json)
        }
        Command::RecoverQuorumLoss { confirm } => {
            let config = load_config(&cli.config)?;
            logging::init("warn");
            recover::run(&config, confirm)
        }
        Command::Standalone | Command::Cluster => {
            let config = load_config(&cli.config)?;
            logging::init(&config.log_level);
            let clustered = matches!(command, Command::Cluster);
            if clustered && !config.cluster.enabled {
                anyhow::bail!(
                    "`chronik-server cluster` needs `[cluster] enabled = true` in the config (or CHRONIK_ENABLED=true)"
                );
            }
            if !clustered && config.cluster.enabled {
                anyhow::bail!("the config enables [cluster]; start it with `chronik-server cluster`");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("chronik").build()?;
            runtime.block_on(node::run(config, shutdown::signal()))?;
            Ok(0)
        }
    }
}

/// The config file named (or found where it is looked for), with CHRONIK_* overrides.
fn load_config(named: &Option<std::path::PathBuf>) -> anyhow::Result<chronik_config::Config> {
    let path = chronik_config::resolve_config_path(named.as_deref(), &|k| std::env::var(k).ok());
    chronik_config::load_from_env(path.as_deref()).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}
