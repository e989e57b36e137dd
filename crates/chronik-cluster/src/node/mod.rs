//! A node: the WAL, the `__meta` group, and the partition replicas the metadata assigns it.
//! This is what the Kafka front end and the server hold; the pieces live beside it:
//! [`options`] (what a node starts with), [`data_dir`] (lock and identity), [`meta`] (the
//! metadata group), [`registry`] (the replicas hosted here) and [`lifecycle`] (the loops that
//! keep them in line with the metadata).
//!
//! In this build a node is a cluster of one (standalone): every group has this node as its
//! only voter, so a write commits once the local WAL has made it durable.

mod data_dir;
mod lifecycle;
mod meta;
mod options;
mod registry;
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tcp_tests;
#[cfg(test)]
mod transfer_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chronik_wal::{Wal, WalStats};

pub use options::NodeOptions;

use crate::error::ClusterError;
use crate::identity::NodeIdentity;
use crate::metadata::{MetaCommand, MetadataState, NodeInfo};
use crate::partition::PartitionReplica;
use crate::raft::{NoTransport, NodeId, SharedTransport};
use crate::storage::compaction::IoBudget;
use crate::tasks::Tasks;
use data_dir::DataDir;
use meta::MetaGroup;
use registry::Registry;

/// A running node.
pub struct Node {
    node_id: NodeId,
    identity: NodeIdentity,
    wal: Arc<Wal>,
    meta: MetaGroup,
    registry: Registry,
    /// The node's scope: its loops run here, each replica in a child.
    tasks: Tasks,
    /// The reconciler's own scope, so tests can stop it alone.
    reconciler: Tasks,
    _data_dir: DataDir,
}

impl Node {
    /// Opens the data directory and starts every group this node holds, with its loops in a
    /// child scope of `tasks`. On first start the node bootstraps a new cluster of one.
    pub async fn start(opts: NodeOptions, tasks: &Tasks) -> Result<Arc<Node>, ClusterError> {
        let started = Instant::now();
        let data_dir = DataDir::claim(&opts.data_dir, opts.node_id)?;
        let (wal, report) = Wal::open(&opts.data_dir.join("wal"), opts.wal.clone())?;
        tracing::info!(
            segments = report.segments,
            records = report.records,
            groups = report.groups,
            "WAL opened in {:?}{}",
            started.elapsed(),
            if data_dir.fresh { " (new node)" } else { "" }
        );
        let wal = Arc::new(wal);
        // Standalone: every group's only voter is this node (the cluster transport comes with
        // cluster mode).
        let transport: SharedTransport = Arc::new(NoTransport);
        let meta = MetaGroup::open(&wal, &opts, transport.clone()).await?;
        let tasks = tasks.child();
        let node = Arc::new(Node {
            node_id: opts.node_id,
            identity: data_dir.identity,
            registry: Registry::new(
                wal.clone(),
                &opts.data_dir,
                opts.node_id,
                opts.partition_raft()?,
                (transport.clone(), opts.request_timeout),
                tasks.child(),
            ),
            wal,
            meta,
            reconciler: tasks.child(),
            tasks,
            _data_dir: data_dir,
        });
        let me = NodeInfo { id: node.node_id, raft_addr: opts.raft_addr.clone(), kafka_addr: opts.kafka_addr.clone() };
        node.meta.bootstrap(&node.identity, me).await?;
        node.reconcile().await;
        node.drop_orphaned_groups();
        let (weak, version) = (Arc::downgrade(&node), node.meta.subscribe());
        node.reconciler.spawn("reconciler", move |cancel| lifecycle::reconcile_loop(weak, version, cancel));
        let (weak, window, defaults) = (Arc::downgrade(&node), opts.wal_retention_bytes, opts.topic_defaults.clone());
        node.tasks.spawn("tiering", move |cancel| lifecycle::tiering_loop(weak, window, defaults, cancel));
        let housekeeping = lifecycle::Housekeeping {
            defaults: opts.topic_defaults,
            every: opts.retention_check_interval,
            producer_expiration: opts.producer_id_expiration,
            compaction_budget: Arc::new(IoBudget::new(opts.compaction_io_bytes_per_second)),
        };
        let weak = Arc::downgrade(&node);
        node.tasks.spawn("housekeeping", move |cancel| lifecycle::housekeeping_loop(weak, housekeeping, cancel));
        tracing::info!(
            node = node.node_id,
            cluster = %node.identity.cluster_id,
            partitions = node.registry.len(),
            "node started in {:?}",
            started.elapsed()
        );
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn identity(&self) -> NodeIdentity {
        self.identity
    }

    /// A copy of the current metadata.
    pub fn metadata(&self) -> MetadataState {
        self.meta.read(|m| m.clone())
    }

    /// Runs `f` on the current metadata without copying it.
    pub fn with_metadata<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        self.meta.read(f)
    }

    /// Proposes a metadata change and waits until it is applied; a rejected change is an error.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> Result<(), ClusterError> {
        self.meta.propose(cmd).await.map(drop)
    }

    /// A producer id never handed out before, cluster-wide.
    pub async fn allocate_producer_id(&self) -> Result<i64, ClusterError> {
        self.meta.allocate_producer_id().await
    }

    /// The metadata group's leader (the "controller" in Kafka terms).
    pub fn metadata_leader(&self) -> Option<NodeId> {
        self.meta.leader()
    }

    /// The metadata group's voters (the other members are learners).
    pub fn metadata_voters(&self) -> Vec<NodeId> {
        self.meta.voters()
    }

    /// This node's replica of a partition, if it hosts one.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionReplica>> {
        self.registry.get(topic, partition)
    }

    /// Every partition replica this node hosts.
    pub fn partitions(&self) -> Vec<Arc<PartitionReplica>> {
        self.registry.all()
    }

    /// Waits until every partition of `topic` is hosted here with a leader; false if the topic
    /// does not exist or `timeout` passes first.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before looking, so no change between the look and the wait is missed.
        let mut started = self.registry.subscribe();
        let mut changed = self.meta.subscribe();
        loop {
            let Some(partitions) = self.with_metadata(|m| m.topic(topic).map(|t| t.partitions.clone())) else {
                return false;
            };
            let hosted: Option<Vec<_>> = partitions.iter().map(|p| self.partition(topic, p.partition)).collect();
            if let Some(replicas) = hosted {
                for r in replicas {
                    if !r.wait_for_leader(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                        return false;
                    }
                }
                return true;
            }
            tokio::select! {
                _ = started.changed() => {}
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Largest record-batch bytes one partition entry may carry: one WAL record (less its
    /// framing) must hold it.
    pub fn max_entry_bytes(&self) -> usize {
        self.wal.max_payload_len().saturating_sub(64)
    }

    /// Refuses a write of `bytes` the disk has no room for (KAFKA_STORAGE_ERROR at the front).
    pub fn check_space(&self, bytes: usize) -> Result<(), ClusterError> {
        Ok(self.wal.check_space(bytes)?)
    }

    pub fn wal_stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// The node's WAL, for tests and benchmarks that look below the node.
    #[doc(hidden)]
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// Stops following the metadata (tests use it to recreate what a crash right after a
    /// metadata change leaves behind).
    #[doc(hidden)]
    pub async fn stop_reconciler(&self) {
        self.reconciler.stop().await;
    }

    /// Stops the node's loops and every group, and makes the WAL durable.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        self.tasks.stop().await;
        self.registry.stop_all().await;
        self.meta.shutdown().await;
        self.wal.close()?;
        Ok(())
    }
}
