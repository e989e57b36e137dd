//! A node: the WAL, the `__meta` group, and one Raft group per partition replica it holds.
//! Partition groups are started and stopped to follow the metadata (a reconciler watches it).
//!
//! In this build a node is a cluster of one (standalone): every group has this node as its
//! only voter, so a write commits once the local WAL has made it durable.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_wal::{Wal, WalOptions};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config as RaftConfig, Raft, ServerState, SnapshotPolicy};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::idempotence::IdempotenceGuard;
use crate::identity::{IdentityError, NodeIdentity};
use crate::metadata::{META_GROUP, MetaCommand, MetaError, MetaResponse, MetadataState, NodeInfo, TopicInfo};
use crate::network::NetworkFactory;
use crate::partition_log::PartitionLog;
use crate::raft_storage::LogStore;
use crate::state_machine::{MetadataStateMachine, PartitionStateMachine};
use crate::topic_config::{TopicDefaults, TopicSettings};
use crate::types::{Command, GroupId, NodeId, Response, TypeConfig};

pub type MetaRaft = Raft<TypeConfig, MetadataStateMachine>;
pub type PartitionRaft = Raft<TypeConfig, PartitionStateMachine>;

/// Raft timing and log-compaction settings (from chronik.toml's `[cluster.raft]`).
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub max_payload_entries: u64,
    pub snapshot_threshold: u64,
    pub compaction_retain_entries: u64,
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// host:port other nodes reach this node's Raft listener on.
    pub raft_addr: String,
    /// host:port Kafka clients are told to use.
    pub kafka_addr: String,
    pub wal: WalOptions,
    pub raft: RaftSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("WAL: {0}")]
    Wal(#[from] chronik_wal::WalError),
    #[error("{0}")]
    Io(String),
    #[error("data directory {0} is in use by another chronik-server process")]
    Locked(PathBuf),
    #[error("this node is not the leader of that group (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Rejected(#[from] MetaError),
    #[error("Raft group {group} stopped: {reason}")]
    GroupStopped { group: GroupId, reason: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Invalid(String),
}

/// One partition replica on this node.
pub struct PartitionGroup {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub group: GroupId,
    pub raft: PartitionRaft,
    pub log: Arc<PartitionLog>,
    pub(crate) sm: PartitionStateMachine,
    /// Idempotent producers as the leader sees them (applied and in flight).
    pub(crate) producers: tokio::sync::Mutex<IdempotenceGuard>,
}

/// A produce queued in the partition's Raft log, not yet committed.
pub struct PendingAppend {
    group: GroupId,
    rx: tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>,
}

impl PendingAppend {
    /// Waits until the entry is committed and applied; returns (base offset, last offset).
    pub async fn committed(self) -> Result<(u64, u64), NodeError> {
        let result =
            self.rx.await.map_err(|_| NodeError::GroupStopped { group: self.group, reason: "shut down".into() })?;
        match result {
            Ok(r) => match r.data {
                Response::Produced { base_offset, last_offset } => Ok((base_offset, last_offset)),
                Response::Invalid(reason) => Err(NodeError::Invalid(reason)),
                other => Err(NodeError::Invalid(format!("unexpected response {other:?}"))),
            },
            Err(e) => Err(write_error(self.group, RaftError::APIError(e))),
        }
    }
}

impl PartitionGroup {
    /// Queues record batches in the partition's log. Calls made one after another are appended
    /// in that order; the returned handle resolves once the entry is committed.
    pub async fn submit(&self, records: Bytes) -> Result<PendingAppend, NodeError> {
        let (responder, rx) = openraft::impls::ProgressResponder::complete_only();
        self.raft
            .write(Command::Produce { records })
            .responder(responder)
            .await
            .map_err(|e| NodeError::GroupStopped { group: self.group, reason: e.to_string() })?;
        Ok(PendingAppend { group: self.group, rx })
    }

    /// Appends record batches through Raft; returns (base offset, last offset) once committed
    /// and applied (so visible to consumers).
    pub async fn append(&self, records: Bytes) -> Result<(u64, u64), NodeError> {
        self.submit(records).await?.committed().await
    }

    /// Moves the log start offset (DeleteRecords); returns the new log start.
    pub async fn advance_log_start(&self, offset: u64) -> Result<u64, NodeError> {
        match self.raft.client_write(Command::AdvanceLogStart { offset }).await {
            Ok(r) => match r.data {
                Response::LogStart { offset } => Ok(offset),
                other => Err(NodeError::Invalid(format!("unexpected response {other:?}"))),
            },
            Err(e) => Err(write_error(self.group, e)),
        }
    }

    /// The Raft term (Kafka leader epoch) and leader, as this node sees them.
    pub fn leadership(&self) -> (u64, Option<NodeId>) {
        let m = self.raft.metrics().borrow_watched().clone();
        (m.current_term, m.current_leader)
    }

    pub fn is_leader(&self, node: NodeId) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.state == ServerState::Leader && m.current_leader == Some(node)
    }

    /// Drops the log below the log start offset: snapshot at the applied position, then purge
    /// the entries wholly below the log start. Returns how many Raft entries became purgeable.
    pub async fn compact(&self) -> Result<(), NodeError> {
        let start = self.log.log_start_offset();
        let upto = {
            let index = self.log.index.read();
            index.iter().take_while(|e| e.last_offset < start).last().map(|e| e.raft_index)
        };
        let Some(upto) = upto else { return Ok(()) };
        let stopped = |e: openraft::errors::Fatal<TypeConfig>| NodeError::GroupStopped {
            group: self.group,
            reason: e.to_string(),
        };
        let m = self.raft.metrics().borrow_watched().clone();
        if m.snapshot.is_none_or(|s| s.index < upto) {
            self.raft.trigger().snapshot().await.map_err(stopped)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let m = self.raft.metrics().borrow_watched().clone();
                if m.snapshot.is_some_and(|s| s.index >= upto) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(NodeError::Timeout(format!("snapshot of group {} for compaction", self.group)));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.raft.trigger().purge_log(upto).await.map_err(stopped)
    }
}

/// A group whose only voter is this node needs no timers once it leads: no one to heartbeat,
/// no election to time out. Stopping its ticks is what lets thousands of partitions idle.
async fn quiet_if_alone<SM: openraft::storage::RaftStateMachine<TypeConfig>>(raft: &Raft<TypeConfig, SM>, me: NodeId) {
    // The membership is known once the group has a leader (an alone voter elects itself at once).
    let led = raft.wait(Some(Duration::from_secs(10))).metrics(|m| m.current_leader.is_some(), "a leader").await;
    let voters: Vec<NodeId> = raft.voter_ids().collect();
    if led.is_ok() && voters == [me] && raft.metrics().borrow_watched().state == ServerState::Leader {
        raft.runtime_config().tick(false);
    }
}

fn write_error(group: GroupId, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NodeError::NotLeader { leader: f.leader_id },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => NodeError::NotLeader { leader: f.leader_id },
        RaftError::APIError(other) => NodeError::Invalid(other.to_string()),
        RaftError::Fatal(f) => NodeError::GroupStopped { group, reason: f.to_string() },
    }
}

/// A running node.
pub struct RaftNode {
    pub node_id: NodeId,
    pub identity: NodeIdentity,
    opts: NodeOptions,
    wal: Arc<Wal>,
    meta: MetaRaft,
    meta_view: Arc<RwLock<MetadataState>>,
    meta_version: watch::Receiver<u64>,
    partition_config: Arc<RaftConfig>,
    partitions: RwLock<HashMap<GroupId, Arc<PartitionGroup>>>,
    /// (topic, partition) -> group, for request routing.
    routes: RwLock<HashMap<(String, i32), GroupId>>,
    reconciler: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// The reserved block of producer ids: (next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    _lock: File,
}

fn raft_config(
    s: &RaftSettings,
    snapshot: SnapshotPolicy,
    keep: u64,
    name: &str,
) -> Result<Arc<RaftConfig>, NodeError> {
    let c = RaftConfig {
        cluster_name: name.into(),
        heartbeat_interval: s.heartbeat_interval_ms,
        election_timeout_min: s.election_timeout_ms,
        election_timeout_max: s.election_timeout_ms * 2,
        max_payload_entries: s.max_payload_entries,
        snapshot_policy: snapshot,
        max_in_snapshot_log_to_keep: keep,
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| NodeError::Invalid(format!("Raft settings: {e}")))?))
}

/// Takes an exclusive lock on `<data_dir>/LOCK` so two processes never share a data directory.
fn lock_data_dir(dir: &Path) -> Result<File, NodeError> {
    let path = dir.join("LOCK");
    let f = File::create(&path).map_err(|e| NodeError::Io(format!("{}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(NodeError::Io(format!("locking {}: {e}", path.display()))),
    }
}

impl RaftNode {
    /// Opens the data directory and starts every group this node holds. On first start the node
    /// bootstraps a new cluster of one.
    pub async fn start(opts: NodeOptions) -> Result<Arc<RaftNode>, NodeError> {
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(|e| NodeError::Io(format!("{}: {e}", opts.data_dir.display())))?;
        let lock = lock_data_dir(&opts.data_dir)?;
        let wal_dir = opts.data_dir.join("wal");
        let has_wal = std::fs::read_dir(&wal_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        if NodeIdentity::read(&opts.data_dir)?.is_none() && has_wal {
            return Err(NodeError::Io(format!(
                "{} holds a WAL but no node identity file; refusing to adopt data of unknown origin",
                opts.data_dir.display()
            )));
        }
        let (identity, fresh) = NodeIdentity::load_or_create(&opts.data_dir, opts.node_id)?;
        let started = Instant::now();
        let (wal, report) = Wal::open(&wal_dir, opts.wal.clone())?;
        tracing::info!(
            segments = report.segments,
            records = report.records,
            groups = report.groups,
            "WAL opened in {:?}{}",
            started.elapsed(),
            if fresh { " (new node)" } else { "" }
        );
        let wal = Arc::new(wal);

        let meta_config = raft_config(
            &opts.raft,
            SnapshotPolicy::LogsSinceLast(opts.raft.snapshot_threshold),
            opts.raft.compaction_retain_entries,
            "chronik-meta",
        )?;
        // Partition snapshots are tiny; taking them often bounds re-apply at restart. The log is
        // the partition's data, so it is never purged behind a snapshot (only by retention).
        let partition_config =
            raft_config(&opts.raft, SnapshotPolicy::LogsSinceLast(10_000), u64::MAX, "chronik-partition")?;

        let sm = MetadataStateMachine::new(wal.clone());
        let meta_view = sm.view();
        let meta_version = sm.subscribe();
        let meta =
            Raft::new(opts.node_id, meta_config, NetworkFactory, LogStore::new(wal.clone(), META_GROUP, None), sm)
                .await
                .map_err(|e| NodeError::GroupStopped { group: META_GROUP, reason: e.to_string() })?;
        let node = Arc::new(RaftNode {
            node_id: opts.node_id,
            identity,
            opts,
            wal,
            meta,
            meta_view,
            meta_version,
            partition_config,
            partitions: RwLock::default(),
            routes: RwLock::default(),
            reconciler: parking_lot::Mutex::new(None),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            _lock: lock,
        });
        node.bootstrap_metadata().await?;
        quiet_if_alone(&node.meta, node.node_id).await;
        node.reconcile().await;
        node.drop_orphaned_groups();
        let weak = Arc::downgrade(&node);
        let mut version = node.meta_version.clone();
        *node.reconciler.lock() = Some(tokio::spawn(async move {
            while version.changed().await.is_ok() {
                let Some(node) = weak.upgrade() else { break };
                node.reconcile().await;
            }
        }));
        tracing::info!(
            node = node.node_id,
            cluster = %node.identity.cluster_id,
            partitions = node.partitions.read().len(),
            "node started in {:?}",
            started.elapsed()
        );
        Ok(node)
    }

    /// Makes sure the metadata group has a leader, belongs to this node's cluster, and knows
    /// this node's current addresses.
    async fn bootstrap_metadata(&self) -> Result<(), NodeError> {
        let stopped = |e: openraft::errors::Fatal<TypeConfig>| NodeError::GroupStopped {
            group: META_GROUP,
            reason: e.to_string(),
        };
        if !self.meta.is_initialized().await.map_err(stopped)? {
            let members = BTreeMap::from([(self.node_id, BasicNode::new(&self.opts.raft_addr))]);
            if let Err(e) = self.meta.initialize(members).await {
                tracing::debug!("metadata group already initialized: {e}");
            }
        }
        self.meta
            .wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "metadata group leader")
            .await
            .map_err(|e| NodeError::Timeout(format!("metadata group election: {e}")))?;
        let state = self.metadata();
        match state.cluster_id {
            Some(id) if id != self.identity.cluster_id => {
                return Err(NodeError::Io(format!(
                    "metadata belongs to cluster {id} but the node identity says cluster {}",
                    self.identity.cluster_id
                )));
            }
            Some(_) => {}
            None => self.propose_meta(MetaCommand::InitCluster { cluster_id: self.identity.cluster_id }).await?,
        }
        let me = NodeInfo {
            id: self.node_id,
            raft_addr: self.opts.raft_addr.clone(),
            kafka_addr: self.opts.kafka_addr.clone(),
        };
        if state.nodes.get(&self.node_id) != Some(&me) {
            self.propose_meta(MetaCommand::RegisterNode(me)).await?;
        }
        Ok(())
    }

    /// A copy of the current metadata.
    pub fn metadata(&self) -> MetadataState {
        self.meta_view.read().clone()
    }

    /// Runs `f` on the current metadata without copying it.
    pub fn with_metadata<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        f(&self.meta_view.read())
    }

    /// Proposes a metadata change and waits until it is applied; a rejected change is an error.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> Result<(), NodeError> {
        self.propose_meta_for(cmd).await.map(|_| ())
    }

    async fn propose_meta_for(&self, cmd: MetaCommand) -> Result<MetaResponse, NodeError> {
        match self.meta.client_write(Command::Meta(cmd)).await {
            Ok(r) => match r.data {
                Response::Meta(MetaResponse::Rejected(e)) => Err(NodeError::Rejected(e)),
                Response::Meta(ok) => Ok(ok),
                other => Err(NodeError::Invalid(format!("unexpected metadata response {other:?}"))),
            },
            Err(e) => Err(write_error(META_GROUP, e)),
        }
    }

    /// A producer id never handed out before (ids are reserved in blocks through the metadata).
    pub async fn allocate_producer_id(&self) -> Result<i64, NodeError> {
        const BLOCK: u32 = 1000;
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            match self.propose_meta_for(MetaCommand::AllocateProducerIds { count: BLOCK }).await? {
                MetaResponse::ProducerIds { start } => *ids = (start, start + BLOCK as i64),
                other => return Err(NodeError::Invalid(format!("unexpected metadata response {other:?}"))),
            }
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionGroup>> {
        let group = *self.routes.read().get(&(topic.to_string(), partition))?;
        self.partitions.read().get(&group).cloned()
    }

    pub fn partition_groups(&self) -> Vec<Arc<PartitionGroup>> {
        self.partitions.read().values().cloned().collect()
    }

    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    pub fn meta_raft(&self) -> &MetaRaft {
        &self.meta
    }

    /// The metadata group's leader (the "controller" in Kafka terms).
    pub fn meta_raft_leader(&self) -> Option<NodeId> {
        self.meta.metrics().borrow_watched().current_leader
    }

    /// Waits until every partition of `topic` is running here with a leader (or `timeout`).
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self.with_metadata(|m| {
                m.topic(topic).map(|t| {
                    t.partitions
                        .iter()
                        .all(|p| self.partition(topic, p.partition).is_some_and(|g| g.leadership().1.is_some()))
                })
            });
            if ready != Some(false) {
                return ready.is_some();
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts groups for partitions assigned here and stops those no longer in the metadata.
    async fn reconcile(&self) {
        let wanted: Vec<(TopicInfo, i32, GroupId, Vec<NodeId>)> = self.with_metadata(|m| {
            m.partitions_of(self.node_id).map(|(t, p)| (t.clone(), p.partition, p.group, p.replicas.clone())).collect()
        });
        let wanted_groups: std::collections::HashSet<GroupId> = wanted.iter().map(|w| w.2).collect();
        let gone: Vec<Arc<PartitionGroup>> =
            self.partitions.read().values().filter(|g| !wanted_groups.contains(&g.group)).cloned().collect();
        for g in gone {
            self.stop_partition(&g).await;
        }
        for (topic, partition, group, replicas) in wanted {
            if self.partitions.read().contains_key(&group) {
                continue;
            }
            match self.start_partition(&topic, partition, group, &replicas).await {
                Ok(g) => {
                    self.routes.write().insert((topic.name.clone(), partition), group);
                    self.partitions.write().insert(group, g);
                }
                Err(e) => tracing::error!(topic = %topic.name, partition, group, "cannot start partition: {e}"),
            }
        }
    }

    async fn start_partition(
        &self,
        topic: &TopicInfo,
        partition: i32,
        group: GroupId,
        replicas: &[NodeId],
    ) -> Result<Arc<PartitionGroup>, NodeError> {
        let io = |e: std::io::Error| NodeError::Io(format!("partition {}-{partition}: {e}", topic.name));
        let snap = PartitionStateMachine::stored_snapshot(&self.wal, group).map_err(io)?;
        let log = PartitionLog::recover(self.wal.clone(), group, snap.next_offset, snap.log_start).map_err(io)?;
        let store = LogStore::new(self.wal.clone(), group, Some(log.clone()));
        let sm = PartitionStateMachine::new(self.wal.clone(), group, log.clone());
        let sm_view = sm.clone();
        let raft = Raft::new(self.node_id, self.partition_config.clone(), NetworkFactory, store, sm)
            .await
            .map_err(|e| NodeError::GroupStopped { group, reason: e.to_string() })?;
        let stopped = |e: openraft::errors::Fatal<TypeConfig>| NodeError::GroupStopped { group, reason: e.to_string() };
        if !raft.is_initialized().await.map_err(stopped)? {
            let nodes = self.with_metadata(|m| {
                replicas
                    .iter()
                    .map(|id| (*id, BasicNode::new(m.nodes.get(id).map_or("", |n| n.raft_addr.as_str()))))
                    .collect::<BTreeMap<_, _>>()
            });
            if let Err(e) = raft.initialize(nodes).await {
                tracing::debug!(group, "partition group already initialized: {e}");
            }
        }
        quiet_if_alone(&raft, self.node_id).await;
        Ok(Arc::new(PartitionGroup {
            topic: topic.name.clone(),
            topic_id: topic.id,
            partition,
            group,
            raft,
            log,
            sm: sm_view,
            producers: tokio::sync::Mutex::new(IdempotenceGuard::default()),
        }))
    }

    /// Stops following the metadata (tests use it to recreate what a crash right after a
    /// metadata change leaves behind).
    #[doc(hidden)]
    pub fn stop_reconciler(&self) {
        if let Some(r) = self.reconciler.lock().take() {
            r.abort();
        }
    }

    /// At start: drops the WAL data of partitions deleted while no reconciler saw it go (a crash
    /// or a stop right after DeleteTopics): nothing else would ever drop it, and garbage
    /// collection cannot retire a segment it holds. Safe with metadata that is still catching up: it is a prefix
    /// of the metadata log, group ids are never reused, so a group below `next_group_id` that
    /// no topic holds was deleted for good.
    fn drop_orphaned_groups(&self) {
        let (allocated_below, held) = self.with_metadata(|m| {
            let held: std::collections::HashSet<GroupId> =
                m.topics.values().flat_map(|t| t.partitions.iter().map(|p| p.group)).collect();
            (m.next_group_id, held)
        });
        let running: std::collections::HashSet<GroupId> = self.partitions.read().keys().copied().collect();
        for group in self.wal.groups() {
            if group != META_GROUP && group < allocated_below && !held.contains(&group) && !running.contains(&group) {
                tracing::info!(group, "dropping the WAL data of a deleted partition");
                if let Err(e) = self.wal.drop_group(group) {
                    tracing::error!(group, "dropping the WAL group of a deleted partition: {e}");
                }
            }
        }
    }

    async fn stop_partition(&self, g: &Arc<PartitionGroup>) {
        self.routes.write().remove(&(g.topic.clone(), g.partition));
        self.partitions.write().remove(&g.group);
        if let Err(e) = g.raft.shutdown().await {
            tracing::warn!(group = g.group, "stopping partition group: {e}");
        }
        // The topic is gone from the metadata: its data goes too (group ids are never reused).
        if let Err(e) = self.wal.drop_group(g.group) {
            tracing::error!(group = g.group, "dropping the WAL group of a deleted partition: {e}");
        }
    }

    /// Applies each led partition's retention (its topic's `retention.ms` / `retention.bytes`
    /// over `defaults`) by moving its log start offset through Raft, then compacts every local
    /// replica's log below its log start. Returns the partitions whose log start moved.
    pub async fn enforce_retention(&self, defaults: &TopicDefaults, now_ms: i64) -> Vec<(String, i32, u64)> {
        let mut moved = Vec::new();
        for g in self.partition_groups() {
            if g.is_leader(self.node_id) {
                let Some(settings) =
                    self.with_metadata(|m| m.topic(&g.topic).map(|t| TopicSettings::resolve(defaults, &t.configs)))
                else {
                    continue;
                };
                if let Some(new_start) = g.log.retention_plan(now_ms, settings.retention_ms, settings.retention_bytes) {
                    match g.advance_log_start(new_start).await {
                        Ok(s) => moved.push((g.topic.clone(), g.partition, s)),
                        Err(e) => tracing::warn!(topic = %g.topic, partition = g.partition, "retention: {e}"),
                    }
                }
            }
            if let Err(e) = g.compact().await {
                tracing::warn!(topic = %g.topic, partition = g.partition, "compaction: {e}");
            }
        }
        moved
    }

    /// Stops every group and makes the WAL durable.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.stop_reconciler();
        let groups: Vec<Arc<PartitionGroup>> = self.partitions.read().values().cloned().collect();
        for g in groups {
            let _ = g.raft.shutdown().await;
        }
        let _ = self.meta.shutdown().await;
        self.wal.close()?;
        Ok(())
    }
}
