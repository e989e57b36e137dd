//! A running node: the Raft groups (chronik-cluster), the Kafka listener (chronik-kafka), the
//! admin API and the retention task, until the shutdown future resolves. Then: stop accepting,
//! let in-flight requests finish, stop the groups, make the WAL durable.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chronik_cluster::raft_node::{NodeOptions, RaftNode, RaftSettings};
use chronik_cluster::topic_config::TopicDefaults;
use chronik_config::{Config, WalSyncMode};
use chronik_kafka::groups::GroupCoordinator;
use chronik_kafka::{Broker, BrokerConfig};
use chronik_wal::{SyncMode, WalOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub fn node_options(c: &Config) -> NodeOptions {
    let s = &c.cluster.storage;
    NodeOptions {
        data_dir: c.data_dir.clone(),
        node_id: c.cluster.node_id,
        raft_addr: c.cluster.advertised_node_addr().to_string(),
        kafka_addr: c.advertised_kafka_addr().to_string(),
        wal: WalOptions {
            segment_size: s.wal_segment_size,
            sync_mode: match s.wal_sync_mode {
                WalSyncMode::Always => SyncMode::Always,
                WalSyncMode::Periodic => SyncMode::Periodic(Duration::from_millis(s.wal_sync_interval_ms)),
            },
            page_cache_window: (s.wal_page_cache_bytes > 0).then_some(s.wal_page_cache_bytes),
            ..WalOptions::default()
        },
        raft: RaftSettings {
            heartbeat_interval_ms: c.cluster.raft.heartbeat_interval_ms,
            election_timeout_ms: c.cluster.raft.election_timeout_ms,
            max_payload_entries: c.cluster.raft.max_payload_entries,
            snapshot_threshold: c.cluster.raft.snapshot_threshold,
            compaction_retain_entries: c.cluster.raft.compaction_retain_entries,
        },
    }
}

pub fn topic_defaults(c: &Config) -> TopicDefaults {
    TopicDefaults {
        retention_ms: c.kafka.log_retention_ms,
        retention_bytes: c.kafka.log_retention_bytes,
        max_message_bytes: c.kafka.message_max_bytes,
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Bind first: a port conflict should fail before any data is touched.
    let kafka = TcpListener::bind(&config.kafka_addr)
        .await
        .with_context(|| format!("binding kafka_addr {}", config.kafka_addr))?;
    let admin = TcpListener::bind(&config.admin_addr)
        .await
        .with_context(|| format!("binding admin_addr {}", config.admin_addr))?;
    let node = RaftNode::start(node_options(&config)).await.context("starting the node")?;
    let groups =
        GroupCoordinator::start(&node).await.map_err(|e| anyhow::anyhow!("starting the group coordinator: {e}"))?;
    let broker = Arc::new(Broker {
        node: node.clone(),
        groups,
        config: BrokerConfig {
            auto_create_topics: config.kafka.auto_create_topics,
            num_partitions: config.kafka.num_partitions,
            default_replication_factor: config.kafka.default_replication_factor,
            max_partitions: config.kafka.max_partitions,
            max_request_size: config.kafka.max_request_size as usize,
            topic_defaults: topic_defaults(&config),
        },
    });
    tracing::info!(
        kafka = %config.kafka_addr,
        advertised = %config.advertised_kafka_addr(),
        admin = %config.admin_addr,
        data_dir = %config.data_dir.display(),
        "chronik-server ready"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let kafka_task = tokio::spawn(chronik_kafka::server::serve(kafka, broker.clone(), stopped(stop_rx.clone())));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        crate::admin::AdminState::new(node.clone(), &config),
        stopped(stop_rx.clone()),
    ));
    let retention_task = tokio::spawn(retention_loop(
        node.clone(),
        topic_defaults(&config),
        config.kafka.retention_check_interval_ms,
        stop_rx.clone(),
    ));

    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = kafka_task.await;
    let _ = admin_task.await;
    let _ = retention_task.await;
    drop(broker);
    node.shutdown().await.context("stopping the node")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn retention_loop(node: Arc<RaftNode>, defaults: TopicDefaults, every_ms: u64, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                for (topic, partition, start) in node.enforce_retention(&defaults, now).await {
                    tracing::info!(%topic, partition, log_start = start, "retention moved the log start");
                }
            }
            _ = stop.changed() => return,
        }
    }
}
