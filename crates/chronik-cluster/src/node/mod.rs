//! A node: the WAL, the `__meta` group, and the partition replicas the metadata assigns it.
//! This is what the Kafka front end and the server hold; the pieces live beside it:
//! [`options`] (what a node starts with), [`data_dir`] (lock and identity), [`meta`] (the
//! metadata group), [`registry`] (the replicas hosted here) and [`lifecycle`] (the loops that
//! keep them in line with the metadata).
//!
//! Standalone, a node is a cluster of one: every group has this node as its only voter, so a
//! write commits once the local WAL has made it durable. In cluster mode ([`cluster`]) the
//! groups reach their other members over the TCP transport.

mod cluster;
#[cfg(test)]
mod cluster_tests;
mod data_dir;
mod leadership;
mod lifecycle;
mod meta;
mod operations;
#[cfg(test)]
mod operations_tests;
mod options;
mod recovery;
#[cfg(test)]
mod recovery_tests;
mod registry;
#[cfg(test)]
mod replication_tests;
mod snapshots;
#[cfg(test)]
mod tcp_tests;
mod timers;
#[cfg(test)]
mod transfer_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use chronik_wal::{Wal, WalStats};

pub use crate::raft::GroupSnapshot;
pub use leadership::PartitionLeader;
pub use operations::{LeadershipTarget, PlannedMove};
pub use options::{ClusterOptions, NodeOptions};
pub use recovery::{QuorumLossRecovery, recover_from_quorum_loss};
pub use snapshots::SnapshotRound;

use crate::error::ClusterError;
use crate::identity::NodeIdentity;
use crate::liveness::{Evidence, HeardElsewhere, Liveness};
use crate::metadata::{META_GROUP, MetaCommand, MetadataState, NodeInfo};
use crate::net::Contacts;
use crate::partition::PartitionReplica;
use crate::raft::transport::{Inbound, NODE_GROUP, Reply, Request};
use crate::raft::{NoTransport, NodeId, SharedTransport};
use crate::storage::compaction::IoBudget;
use crate::tasks::Tasks;
use cluster::AddressBook;
use data_dir::DataDir;
use meta::MetaGroup;
use registry::Registry;
use uuid::Uuid;

/// A peer not heard from for this long is reported unreachable (every node hears from the
/// metadata group's members at least every heartbeat).
const REACHABLE_WITHIN: Duration = Duration::from_secs(3);

/// One node of the cluster, as the node asked sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub raft_addr: String,
    pub kafka_addr: String,
    /// In the metadata group: "voter", "learner", or "none" (registered, not yet added).
    pub metadata_role: &'static str,
    /// Heard from within the last few seconds (always true of the node asked).
    pub reachable: bool,
    /// Milliseconds since it was last heard from; `None` if never (since this node started).
    pub last_contact_ms: Option<u64>,
    /// Partition replicas the metadata assigns it.
    pub partitions_hosted: usize,
    /// Partitions it leads: counted for the node asked, as last reported for the others.
    pub partitions_led: usize,
    /// Being removed: its replicas move to other nodes, then it is taken out of the cluster.
    pub leaving: bool,
    /// Entries its metadata log is behind the leader's (a learner is promoted once within 16);
    /// known when the node asked leads the metadata group, else `None`.
    pub metadata_lag: Option<u64>,
}

/// How a clustered node reaches its peers.
enum Network {
    /// The TCP transport on `cluster.node_addr` (what `chronik-server cluster` runs).
    Tcp,
    /// The tests' in-process router, which cuts, delays and drops messages on request.
    #[cfg(test)]
    Sim(Arc<crate::raft::sim::SimRouter>),
}

/// Messages for the node itself (not one of its groups): other nodes' leadership reports and
/// heartbeats.
struct NodeInbound(std::sync::Weak<Node>);

impl Inbound for NodeInbound {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Reply, String>> {
        let answer = match (self.0.upgrade(), request) {
            (None, _) => Err("the node is stopping".into()),
            (Some(node), Request::Leading { from, leads }) => {
                if let Some(l) = &node.liveness {
                    l.heard(from);
                }
                node.reports.record(from, leads);
                Ok(Reply::Ack)
            }
            (Some(node), Request::Alive { from }) => {
                if let Some(l) = &node.liveness {
                    l.heard(from);
                }
                Ok(Reply::Ack)
            }
            (Some(_), _) => Err("the node itself takes only leadership reports and heartbeats".into()),
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Events counted since the node started (see [`Node::leader_changes`]).
#[derive(Default)]
struct NodeCounters {
    leader_changes: AtomicU64,
    elections_won: AtomicU64,
    leadership_asks: AtomicU64,
}

/// How long a graceful stop waits for the groups this node leads to have new leaders.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running node.
pub struct Node {
    node_id: NodeId,
    identity: NodeIdentity,
    wal: Arc<Wal>,
    meta: Arc<MetaGroup>,
    registry: Registry,
    /// Cluster mode: when each peer was last heard from.
    contacts: Option<Contacts>,
    /// How this node's groups reach other nodes (and how it reports what it leads).
    transport: SharedTransport,
    /// What other nodes report leading.
    reports: leadership::LeaderReports,
    /// Cluster mode: which peers are alive; it runs the partition groups' timers.
    liveness: Option<Arc<Liveness>>,
    counters: NodeCounters,
    /// The node's scope: its loops run here, each replica in a child.
    tasks: Tasks,
    /// The reconciler's own scope, so tests can stop it alone.
    reconciler: Tasks,
    _data_dir: DataDir,
}

impl Node {
    /// Opens the data directory and starts every group this node holds, with its loops in a
    /// child scope of `tasks`. Standalone, a first start bootstraps a cluster of one. In
    /// cluster mode (`opts.cluster`) the node listens for its peers; a first start either
    /// bootstraps a new cluster (no seeds) or joins one through its seeds, and every start
    /// returns once the metadata group has a leader and this node has applied its log.
    pub async fn start(opts: NodeOptions, tasks: &Tasks) -> Result<Arc<Node>, ClusterError> {
        Node::start_on(opts, Network::Tcp, tasks).await
    }

    /// A clustered node whose messages go through the tests' in-process router.
    #[cfg(test)]
    pub(crate) async fn start_in_sim(
        opts: NodeOptions,
        router: Arc<crate::raft::sim::SimRouter>,
        tasks: &Tasks,
    ) -> Result<Arc<Node>, ClusterError> {
        Node::start_on(opts, Network::Sim(router), tasks).await
    }

    async fn start_on(opts: NodeOptions, network: Network, tasks: &Tasks) -> Result<Arc<Node>, ClusterError> {
        let started = Instant::now();
        // Bound first: a port in use fails the start before any data is touched.
        let listener = match (&opts.cluster, &network) {
            (Some(c), Network::Tcp) => Some(
                tokio::net::TcpListener::bind(&c.listen_addr)
                    .await
                    .map_err(|e| ClusterError::io(format!("binding cluster.node_addr {}", c.listen_addr), e))?,
            ),
            _ => None,
        };
        let mut data_dir = DataDir::claim(&opts.data_dir, opts.node_id)?;
        let tasks = tasks.child();
        let me = NodeInfo { id: opts.node_id, raft_addr: opts.raft_addr.clone(), kafka_addr: opts.kafka_addr.clone() };
        let fresh = data_dir.identity.is_none();
        let identity = match (data_dir.identity, &opts.cluster) {
            (Some(identity), _) => identity,
            (None, Some(c)) if !c.seeds.is_empty() => {
                let cluster = match &network {
                    Network::Tcp => cluster::join(c, &me, &tasks).await?,
                    #[cfg(test)]
                    Network::Sim(router) => {
                        cluster::join_through(router.transport(me.id).as_ref(), &c.seeds, &me).await?
                    }
                };
                data_dir.adopt(cluster)?
            }
            (None, _) => data_dir.adopt(Uuid::new_v4())?,
        };
        // Only a standalone node or the bootstrap node of a new cluster creates the metadata
        // group; every other node is brought into it by the leader.
        let initialize = opts.cluster.as_ref().is_none_or(|c| c.seeds.is_empty());
        let (wal, report) = Wal::open(&opts.data_dir.join("wal"), opts.wal.clone())?;
        tracing::info!(
            segments = report.segments,
            records = report.records,
            groups = report.groups,
            "WAL opened in {:?}{}",
            started.elapsed(),
            if fresh { " (new node)" } else { "" }
        );
        let wal = Arc::new(wal);
        let contacts = opts.cluster.as_ref().map(|_| Contacts::default());
        let liveness = contacts.clone().map(|contacts| {
            let any_frame: HeardElsewhere = Box::new(move |peer| {
                let traffic = contacts.lock().get(&peer).copied().unwrap_or_default();
                Evidence { heard: traffic.last_heard, lost: traffic.lost_at, connected: traffic.connected_at }
            });
            let dead_after = Duration::from_millis(opts.raft.election_timeout_ms);
            Arc::new(Liveness::new(opts.node_id, dead_after, Some(any_frame)))
        });
        let book = AddressBook::new(opts.cluster.as_ref().map_or(&[][..], |c| &c.seeds));
        let (transport, listen): (SharedTransport, _) = match (&opts.cluster, &contacts, &network) {
            (Some(c), Some(contacts), Network::Tcp) => {
                let t = cluster::transport(c, identity.cluster_id, opts.node_id, &book, contacts, &tasks);
                (t.clone(), Some(t))
            }
            #[cfg(test)]
            (Some(_), _, Network::Sim(router)) => (router.transport(opts.node_id), None),
            // Standalone: every group's only voter is this node.
            _ => (Arc::new(NoTransport), None),
        };
        let told_removed =
            listen.as_ref().map(|t: &Arc<crate::net::TcpTransport>| t.settings().tombstones.told.subscribe());
        let meta = Arc::new(MetaGroup::open(&wal, &opts, (transport.clone(), liveness.clone(), told_removed)).await?);
        book.follow(meta.view());
        let node = Arc::new(Node {
            node_id: opts.node_id,
            identity,
            registry: Registry::new(
                wal.clone(),
                &opts.data_dir,
                opts.node_id,
                opts.partition_raft()?,
                (transport.clone(), opts.peer_settings()),
                tasks.child(),
            ),
            wal,
            meta,
            contacts,
            transport,
            reports: Default::default(),
            liveness,
            counters: NodeCounters::default(),
            reconciler: tasks.child(),
            tasks,
            _data_dir: data_dir,
        });
        if let (Some(listener), Some(tcp)) = (listener, listen) {
            node.listen(listener, tcp);
        }
        #[cfg(test)]
        if let (Some(_), Network::Sim(router)) = (&opts.cluster, &network) {
            router.register_node(node.node_id, node.groups());
        }
        node.meta.start(&node.identity, me, initialize).await?;
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
        if opts.cluster.is_some() {
            let weak = Arc::downgrade(&node);
            node.tasks.spawn("metadata-membership", move |cancel| lifecycle::membership_loop(weak, cancel));
            let (weak, heartbeat) = (Arc::downgrade(&node), Duration::from_millis(opts.raft.heartbeat_interval_ms));
            node.tasks.spawn("leadership-reports", move |cancel| leadership::report_loop(weak, heartbeat, cancel));
            if let Some(liveness) = node.liveness.clone() {
                let weak = Arc::downgrade(&node);
                node.tasks.spawn("group-timers", move |cancel| timers::timers_loop(weak, liveness, heartbeat, cancel));
            }
        }
        tracing::info!(
            node = node.node_id,
            cluster = %node.identity.cluster_id,
            partitions = node.registry.len(),
            "node started in {:?}",
            started.elapsed()
        );
        Ok(node)
    }

    /// Serves peers' Raft messages on `listener`: the metadata group's, and each hosted
    /// replica's.
    fn listen(self: &Arc<Self>, listener: tokio::net::TcpListener, tcp: Arc<crate::net::TcpTransport>) {
        let groups = self.groups();
        self.tasks.spawn("raft-listener", move |_| crate::net::serve(listener, tcp, groups));
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

    /// Makes sure no producer id up to `max` is handed out from now on: imported batches
    /// (a migration) carry another broker's producer ids, whose sequence state came with them.
    pub async fn reserve_producer_ids_through(&self, max: i64) -> Result<(), ClusterError> {
        loop {
            let next = self.with_metadata(|m| m.next_producer_id);
            if next > max {
                break;
            }
            let count = u32::try_from(max - next + 1).unwrap_or(u32::MAX);
            self.propose_meta(MetaCommand::AllocateProducerIds { count }).await?;
        }
        // Blocks this node reserved before are dropped after: any reserved from now on
        // starts above `max`.
        self.meta.discard_producer_ids_through(max).await;
        Ok(())
    }

    /// The metadata group's leader (the "controller" in Kafka terms).
    pub fn metadata_leader(&self) -> Option<NodeId> {
        self.meta.leader()
    }

    /// This node's Raft role in the metadata group.
    pub fn metadata_role(&self) -> &'static str {
        self.meta.role()
    }

    /// How long the WAL's fdatasync rounds took.
    pub fn wal_sync_latency(&self) -> chronik_wal::LatencySnapshot {
        self.wal.sync_latency()
    }

    /// How many times a hosted partition group got a new leader or term, as this node saw it.
    pub fn leader_changes(&self) -> u64 {
        self.counters.leader_changes.load(Ordering::Relaxed)
    }

    /// How many times this node became the leader of a hosted partition group (a new term).
    pub fn elections_won(&self) -> u64 {
        self.counters.elections_won.load(Ordering::Relaxed)
    }

    /// How many times this node asked for the leadership of a leaderless partition group in
    /// its turn (a pre-vote; see `liveness.rs`).
    pub fn leadership_asks(&self) -> u64 {
        self.counters.leadership_asks.load(Ordering::Relaxed)
    }

    /// The metadata group's voters (the other members are learners).
    pub fn metadata_voters(&self) -> Vec<NodeId> {
        self.meta.voters()
    }

    /// Where a message from a peer goes: the metadata group, the node itself (leadership
    /// reports), or a hosted replica.
    fn groups(self: &Arc<Self>) -> crate::net::Groups {
        let weak = Arc::downgrade(self);
        let meta = self.meta.inbound();
        let itself: Arc<dyn Inbound> = Arc::new(NodeInbound(weak.clone()));
        Arc::new(move |group| match group {
            META_GROUP => Some(meta.clone()),
            NODE_GROUP => Some(itself.clone()),
            _ => weak.upgrade()?.registry.by_group(group).map(|r| r.inbound()),
        })
    }

    /// Every node of the cluster as this node sees it (see [`MemberView`]).
    pub fn members(&self) -> Vec<MemberView> {
        let roles: std::collections::HashMap<NodeId, bool> = self.meta.members().into_iter().collect();
        let lag = self.meta.lag_behind_leader();
        let reported = self.reports.counts();
        let led = |id: NodeId| match id == self.node_id {
            true => self.registry.all().iter().filter(|r| r.is_leader(id)).count(),
            false => reported.get(&id).copied().unwrap_or(0),
        };
        self.with_metadata(|m| {
            m.nodes
                .values()
                .map(|n| {
                    let since = match &self.contacts {
                        _ if n.id == self.node_id => Some(Duration::ZERO),
                        Some(c) => cluster::since_contact(c, n.id),
                        None => None,
                    };
                    MemberView {
                        id: n.id,
                        raft_addr: n.raft_addr.clone(),
                        kafka_addr: n.kafka_addr.clone(),
                        metadata_role: match roles.get(&n.id) {
                            Some(true) => "voter",
                            Some(false) => "learner",
                            None => "none",
                        },
                        reachable: since.is_some_and(|d| d < REACHABLE_WITHIN),
                        last_contact_ms: since.map(|d| d.as_millis() as u64),
                        partitions_hosted: m.partitions_of(n.id).count(),
                        partitions_led: led(n.id),
                        leaving: m.leaving.contains(&n.id),
                        metadata_lag: lag.get(&n.id).copied(),
                    }
                })
                .collect()
        })
    }

    /// Raft transport traffic with each peer since start (cluster mode over TCP; empty
    /// otherwise).
    pub fn peer_traffic(&self) -> Vec<(NodeId, crate::net::PeerTraffic)> {
        let mut all: Vec<_> =
            self.contacts.as_ref().map(|c| c.lock().iter().map(|(n, t)| (*n, *t)).collect()).unwrap_or_default();
        all.sort_unstable_by_key(|(n, _)| *n);
        all
    }

    /// This node's replica of a partition, if it hosts one.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionReplica>> {
        self.registry.get(topic, partition)
    }

    /// Every partition replica this node hosts.
    pub fn partitions(&self) -> Vec<Arc<PartitionReplica>> {
        self.registry.all()
    }

    /// Waits until every partition of `topic` has a leader (and, where this node hosts a
    /// replica of it, that replica runs here and knows its leader); false if the topic does
    /// not exist or `timeout` passes first.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before looking, so no change between the look and the wait is missed.
        let mut started = self.registry.subscribe();
        let mut changed = self.meta.subscribe();
        let mut reported = self.reports.subscribe();
        loop {
            let Some(partitions) = self.with_metadata(|m| m.topic(topic).map(|t| t.partitions.clone())) else {
                return false;
            };
            let hosted_here_run = partitions
                .iter()
                .filter(|p| p.replicas.contains(&self.node_id))
                .all(|p| self.partition(topic, p.partition).is_some());
            if hosted_here_run {
                let mut all_led = true;
                for p in &partitions {
                    match self.partition(topic, p.partition) {
                        Some(r) => {
                            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                            if !r.wait_for_leader(left).await {
                                return false;
                            }
                        }
                        None => all_led &= self.partition_leader(topic, p.partition).leader.is_some(),
                    }
                }
                if all_led {
                    return true;
                }
            }
            tokio::select! {
                _ = started.changed() => {}
                _ = changed.changed() => {}
                _ = reported.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Largest record-batch bytes one partition entry may carry: one WAL record (less its
    /// framing) must hold it.
    pub fn max_entry_bytes(&self) -> usize {
        let wal = self.wal.max_payload_len().saturating_sub(64);
        // In a cluster every entry must also fit one Raft message to a follower.
        wal.min(self.registry.peer_settings().max_message_size.saturating_sub(crate::raft::MESSAGE_ENVELOPE))
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

    /// In cluster mode, hands every group this node leads (the metadata group too) to a
    /// caught-up follower and waits, up to `HAND_OVER_TIMEOUT` (5 s), until each has a new
    /// leader: a graceful stop then pauses writes for an election's length at most, not an
    /// election timeout. Returns how many groups did not hand over in time.
    pub async fn hand_over_leadership(&self) -> usize {
        if self.contacts.is_none() {
            return 0; // standalone: nobody to hand over to
        }
        let me = self.node_id;
        let replicas = self.registry.all();
        let partitions = replicas.iter().map(|r| r.hand_over_leadership(me, HAND_OVER_TIMEOUT));
        let (moved, meta) =
            tokio::join!(futures::future::join_all(partitions), self.meta.hand_over_leadership(HAND_OVER_TIMEOUT));
        let stuck = moved.iter().filter(|ok| !**ok).count() + usize::from(!meta);
        tracing::info!(groups = replicas.len() + 1, stuck, "leadership handed over before stopping");
        stuck
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
