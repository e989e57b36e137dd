//! A running node: storage and listeners, until the shutdown future resolves.

use std::future::Future;

use chronik_config::Config;

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _ = config;
    shutdown.await;
    Ok(())
}
