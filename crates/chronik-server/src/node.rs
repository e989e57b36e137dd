//! A running node: the Raft groups (chronik-cluster), the Kafka listener (chronik-kafka) and the
//! admin API, until the shutdown future resolves or a main task dies. Then: in a cluster, hand
//! the groups this node leads to other nodes; stop accepting, let in-flight requests finish,
//! stop every task and group, make the WAL durable.

use std::future::Future;

use anyhow::Context;
use chronik_cluster::Tasks;
use chronik_config::Config;
use chronik_kafka::Broker;
use tokio::net::TcpListener;

/// Runs the node until `shutdown` resolves (exit 0) or one of its main tasks dies (an error
/// naming the task, after everything else has stopped cleanly).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Bind first: a port conflict should fail before any data is touched.
    let kafka = TcpListener::bind(&config.kafka_addr)
        .await
        .with_context(|| format!("binding kafka_addr {}", config.kafka_addr))?;
    let admin = TcpListener::bind(&config.admin_addr)
        .await
        .with_context(|| format!("binding admin_addr {}", config.admin_addr))?;
    let tasks = Tasks::new();
    let broker = Broker::start(&config, &tasks).await?;
    let node = broker.node.clone();
    let listener_broker = broker.clone();
    tasks.spawn("kafka-listener", move |cancel| chronik_kafka::server::serve(kafka, listener_broker, cancel));
    let admin_state = crate::admin::AdminState::new(node.clone(), broker.metrics.clone(), &config);
    tasks.spawn("admin-api", move |cancel| crate::admin::serve(admin, admin_state, cancel));
    tracing::info!(
        kafka = %config.kafka_addr,
        advertised = %config.advertised_kafka_addr(),
        admin = %config.admin_addr,
        data_dir = %config.data_dir.display(),
        "chronik-server ready"
    );

    tokio::select! {
        _ = shutdown => {
            // In a cluster, the groups this node leads move to caught-up followers first,
            // while the transport still runs; a request that arrives meanwhile for one of
            // them is answered NOT_LEADER_OR_FOLLOWER and the client retries at the new leader.
            node.hand_over_leadership().await;
        }
        _ = tasks.failed() => {}
        _ = node.removed_from_cluster() => {
            tracing::info!("this node was removed from the cluster; stopping");
        }
    }
    let failure = tasks.shutdown().await;
    drop(broker);
    node.shutdown().await.context("stopping the node")?;
    match failure {
        Some(f) => Err(anyhow::Error::new(f).context("a main task died; the node was stopped")),
        None => {
            tracing::info!("shut down cleanly");
            Ok(())
        }
    }
}
