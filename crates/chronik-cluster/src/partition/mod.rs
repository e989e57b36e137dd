//! One partition replica on this node: its Raft group, its log as Kafka sees it, the leader's
//! idempotent-producer guard, and its cancellation scope. The Kafka front end works against
//! this handle; the node's registry starts and stops it.

mod idempotence;
mod inbound;
mod moves;
mod snapshot_transfer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config as RaftConfig, Raft, ServerState};
use uuid::Uuid;

pub use idempotence::{IdempotenceError, ProducerBatch, SharedAppend};
pub use snapshot_transfer::OutgoingSnapshot;

use crate::error::ClusterError;
use crate::liveness::Liveness;
use crate::raft::{self, Command, GroupId, NodeId, Response, TypeConfig};
use crate::state_machine::PartitionStateMachine;
use crate::storage::compaction::{CompactionOutcome, CompactionRules, IoBudget};
use crate::storage::{LogStore, PartitionLog};
use crate::tasks::Tasks;
use crate::topic_config::TopicSettings;
use idempotence::{IdempotenceGuard, Verdict};

type PartitionRaft = Raft<TypeConfig, PartitionStateMachine>;

/// What the registry needs to open a replica.
pub(crate) struct ReplicaSpec {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub group: GroupId,
    /// The group's voters with their Raft addresses (used only to create a new group).
    pub voters: BTreeMap<NodeId, BasicNode>,
    /// Where the partition's segment files live.
    pub segments_dir: std::path::PathBuf,
    /// Cluster mode: the node's liveness runs this group's timers, which start stopped (see
    /// `liveness.rs`). `None`: openraft's own timers run.
    pub liveness: Option<Arc<Liveness>>,
}

pub struct PartitionReplica {
    topic: String,
    topic_id: Uuid,
    partition: i32,
    group: GroupId,
    raft: PartitionRaft,
    log: Arc<PartitionLog>,
    state_machine: PartitionStateMachine,
    /// Idempotent producers as the leader sees them (applied and in flight).
    producers: tokio::sync::Mutex<IdempotenceGuard>,
    /// Cancelled when the replica stops: waits on this partition give up.
    tasks: Tasks,
    liveness: Option<Arc<Liveness>>,
}

/// What the node's timer loop reads of a replica's Raft group ([`PartitionReplica::glance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glance {
    pub state: ServerState,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    /// Where this node leads: every voter's log reaches the last entry.
    pub all_caught_up: bool,
    pub voters: Vec<NodeId>,
}

/// A partition group's replicas as one node sees them ([`PartitionReplica::replication`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationView {
    pub leader: Option<NodeId>,
    /// The leader's term: the Kafka leader epoch.
    pub leader_epoch: u64,
    pub voters: Vec<NodeId>,
    /// The Raft index everything up to which is committed.
    pub commit_index: Option<u64>,
    /// The Raft index everything up to which this replica has applied.
    pub applied_index: Option<u64>,
    /// Voters whose log reaches the commit index (known where this node leads).
    pub isr: Option<Vec<NodeId>>,
    /// Entries each replica is behind the leader's log (known where this node leads).
    pub lag_entries: Option<BTreeMap<NodeId, u64>>,
    /// Record-batch bytes of those entries (counted over the entries still in the WAL).
    pub lag_bytes: Option<BTreeMap<NodeId, u64>>,
}

/// A produce queued in the partition's Raft log, not yet committed.
pub struct PendingAppend {
    group: GroupId,
    rx: tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>,
}

impl PendingAppend {
    /// Waits until the entry is committed and applied; returns (base offset, last offset).
    pub async fn committed(self) -> Result<(u64, u64), ClusterError> {
        let result = self.rx.await.map_err(|_| ClusterError::stopped(self.group, "shut down before the commit"))?;
        match result.map_err(|e| ClusterError::from_refused_write(self.group, e))?.data {
            Response::Produced { base_offset, last_offset } => Ok((base_offset, last_offset)),
            other => Err(ClusterError::unexpected(self.group, other)),
        }
    }
}

impl PartitionReplica {
    /// Opens the replica's log from the WAL and starts its Raft group. Only a group with no
    /// state at all is initialized, with `spec.voters` as its membership.
    pub(crate) async fn open(
        wal: &Arc<chronik_wal::Wal>,
        node_id: NodeId,
        config: Arc<RaftConfig>,
        network: raft::NetworkFactory,
        spec: ReplicaSpec,
        tasks: Tasks,
    ) -> Result<Arc<PartitionReplica>, ClusterError> {
        let ReplicaSpec { topic, topic_id, partition, group, voters, segments_dir, liveness } = spec;
        let io = |e| ClusterError::io(format!("partition {topic}-{partition}"), e);
        let (snapshot_id, snap) = PartitionStateMachine::stored_snapshot(wal, group).map_err(io)?;
        PartitionLog::finish_interrupted_install(&segments_dir, snapshot_id).map_err(io)?;
        let log =
            PartitionLog::recover(wal.clone(), group, snap.next_offset, snap.log_start, &segments_dir).map_err(io)?;
        let store = LogStore::new(wal.clone(), group, Some(log.clone()));
        let state_machine = PartitionStateMachine::new(wal.clone(), group, log.clone());
        let snapshot_source = network.snapshot_source();
        let raft = Raft::new(node_id, config, network, store, state_machine.clone())
            .await
            .map_err(|e| ClusterError::stopped(group, e))?;
        if liveness.is_some() {
            // The node's timer loop starts them if this group needs them.
            raft.runtime_config().tick(false);
        }
        // With no voters given, the replica waits for a leader to bring it the log (a snapshot).
        let creates_group = !voters.is_empty();
        let alone = voters.keys().eq([&node_id]);
        if creates_group
            && !raft.is_initialized().await.map_err(|e| ClusterError::stopped(group, e))?
            && let Err(e) = raft.initialize(voters).await
        {
            tracing::debug!(group, "partition group already initialized: {e}");
        }
        if alone {
            raft::quiet_if_alone(&raft, node_id).await;
        }
        let replica = Arc::new(PartitionReplica {
            topic,
            topic_id,
            partition,
            group,
            raft,
            log,
            state_machine,
            producers: tokio::sync::Mutex::new(IdempotenceGuard::default()),
            tasks,
            liveness,
        });
        let weak: std::sync::Weak<dyn raft::SnapshotSource> = Arc::downgrade(&replica) as _;
        let _ = snapshot_source.set(weak);
        Ok(replica)
    }

    /// Where the transport delivers the Raft messages other nodes send this replica.
    pub(crate) fn inbound(self: &Arc<Self>) -> Arc<dyn raft::Inbound> {
        Arc::new(inbound::PartitionInbound::new(self))
    }

    /// Stops the replica's waits and its Raft group (its data stays in the WAL).
    pub(crate) async fn stop(&self) {
        self.tasks.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.group, "stopping partition group: {e}");
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The partition's Raft group (and WAL group) id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Offsets, high watermark, log start and reads of the stored batches.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Queues record batches in the partition's log. Calls made one after another are appended
    /// in that order; the returned handle resolves once the entry is committed.
    pub async fn submit(&self, records: Bytes) -> Result<PendingAppend, ClusterError> {
        self.submit_command(Command::Produce { records }).await
    }

    /// Queues record batches copied from another log, keeping their offsets (see
    /// `Command::Import`); the handle resolves to the span the entry took once committed.
    pub async fn submit_import(&self, records: Bytes) -> Result<PendingAppend, ClusterError> {
        self.submit_command(Command::Import { records }).await
    }

    async fn submit_command(&self, command: Command) -> Result<PendingAppend, ClusterError> {
        self.renew_lease().await;
        let (responder, rx) = openraft::impls::ProgressResponder::complete_only();
        self.raft.write(command).responder(responder).await.map_err(|e| ClusterError::stopped(self.group, e))?;
        Ok(PendingAppend { group: self.group, rx })
    }

    /// Appends record batches through Raft; returns (base offset, last offset) once committed
    /// and applied (so visible to consumers).
    pub async fn append(&self, records: Bytes) -> Result<(u64, u64), ClusterError> {
        self.submit(records).await?.committed().await
    }

    /// Queues a batch of an idempotent producer after checking its sequence numbers; a retry of
    /// a batch already appended gets that batch's outcome instead of a second copy.
    pub async fn submit_idempotent(
        &self,
        records: Bytes,
        batch: ProducerBatch,
    ) -> Result<SharedAppend, IdempotenceError> {
        let mut guard = self.producers.lock().await;
        let term = self.leadership().0;
        if guard.is_stale(term) {
            *guard = IdempotenceGuard::rebuild(term, self.applied_producers().await?);
        }
        match guard.check(&batch)? {
            Verdict::Duplicate(outcome) => Ok(outcome),
            Verdict::Accept => {
                let pending = self.submit(records).await?;
                let outcome = pending.committed().map(|r| r.map_err(Arc::new)).boxed().shared();
                guard.record(&batch, outcome.clone());
                Ok(outcome)
            }
        }
    }

    /// Idempotent producers as the state machine has applied them.
    #[cfg(test)]
    pub(crate) fn applied_producer_state(&self) -> BTreeMap<i64, crate::producers::ProducerState> {
        self.state_machine.producers()
    }

    /// The producer state once the state machine has applied the whole log.
    async fn applied_producers(&self) -> Result<BTreeMap<i64, crate::producers::ProducerState>, ClusterError> {
        let last = self.raft.metrics().borrow_watched().last_log_index;
        let wait = self.raft.wait(Some(Duration::from_secs(30)));
        let applied = wait.applied_index_at_least(last, "the log applied");
        tokio::select! {
            r = applied => r.map_err(|e| ClusterError::Timeout(format!("group {}: {e}", self.group)))?,
            _ = self.tasks.cancelled() => return Err(ClusterError::stopped(self.group, "stopping")),
        };
        Ok(self.state_machine.producers())
    }

    /// Moves the log start offset (DeleteRecords, retention); returns the new log start.
    pub async fn advance_log_start(&self, offset: u64) -> Result<u64, ClusterError> {
        self.renew_lease().await;
        let r = self.raft.client_write(Command::AdvanceLogStart { offset }).await;
        match r.map_err(|e| ClusterError::from_write(self.group, e))?.data {
            Response::LogStart { offset } => Ok(offset),
            other => Err(ClusterError::unexpected(self.group, other)),
        }
    }

    /// One round of log compaction on a compacted topic's replica: its WAL tail rolls into a
    /// segment file once it reaches `segment.bytes` or its oldest record `segment.ms`; where
    /// this node leads, the next pass is proposed through Raft when one is due; then any pass
    /// Raft delivered runs over this replica's files (on a blocking thread, within `budget`).
    pub(crate) async fn compaction_round(
        &self,
        settings: &TopicSettings,
        node: NodeId,
        now_ms: i64,
        budget: Arc<IoBudget>,
    ) -> Result<Option<CompactionOutcome>, ClusterError> {
        if settings.cleanup.compact {
            let (tail_bytes, oldest) = self.log.wal_tail();
            let aged = oldest.is_some_and(|ts| now_ms.saturating_sub(ts) >= settings.segment_ms);
            if (tail_bytes >= settings.segment_bytes || aged)
                && let Some(upto) = self.log.last_committed_raft_index()
            {
                self.move_to_segments(upto).await?;
            }
            let rules = CompactionRules {
                min_cleanable_dirty_ratio: settings.min_cleanable_dirty_ratio,
                min_compaction_lag_ms: settings.min_compaction_lag_ms,
                max_compaction_lag_ms: settings.max_compaction_lag_ms,
                delete_retention_ms: settings.delete_retention_ms,
            };
            if self.is_leader(node)
                && !self.log.has_pending_compaction()
                && let Some(plan) = self.log.compaction_plan(&rules, now_ms)
            {
                self.renew_lease().await;
                self.raft
                    .client_write(Command::Compact(plan))
                    .await
                    .map_err(|e| ClusterError::from_write(self.group, e))?;
            }
        }
        if !self.log.has_pending_compaction() {
            return Ok(None);
        }
        let (log, segment_bytes) = (self.log.clone(), settings.segment_bytes);
        let outcome = tokio::task::spawn_blocking(move || log.run_pending_compaction(segment_bytes, &budget))
            .await
            .map_err(|e| ClusterError::Internal(format!("group {}: a compaction task: {e}", self.group)))?;
        Ok(outcome?)
    }

    /// Forgets idempotent producers last seen before `before_ms`, through the log (nothing is
    /// proposed when none is that old).
    pub async fn expire_producers(&self, before_ms: i64) -> Result<(), ClusterError> {
        if !self.state_machine.has_producers_seen_before(before_ms) {
            return Ok(());
        }
        let mut guard = self.producers.lock().await;
        self.renew_lease().await;
        let r = self.raft.client_write(Command::ExpireProducers { before_ms }).await;
        // The leader's view of in-flight batches goes too; it is rebuilt from the state machine.
        *guard = IdempotenceGuard::default();
        r.map(drop).map_err(|e| ClusterError::from_write(self.group, e))
    }

    /// openraft takes a write only on a leader a majority acknowledged within the lease (the
    /// election timeout), and an idle group's leader sends no heartbeats (`liveness.rs`), so
    /// its last acknowledgement may be older. Such a leader heartbeats once and waits for the
    /// majority's answer (a round trip) before it writes; a leader that gets none writes
    /// anyway and openraft refuses the write as from a leader it cannot confirm.
    async fn renew_lease(&self) {
        if self.liveness.is_none() {
            return;
        }
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let fresh = move |m: &openraft::RaftMetrics<TypeConfig>| {
            m.state != ServerState::Leader
                || m.last_quorum_acked.as_ref().is_some_and(|t| openraft::Instant::elapsed(&**t) < lease / 2)
        };
        if fresh(&self.raft.metrics().borrow_watched()) {
            return;
        }
        if self.raft.trigger().heartbeat().await.is_ok() {
            let wait = self.raft.wait(Some(lease));
            let confirmed = wait.metrics(fresh, "a majority's acknowledgement");
            tokio::select! {
                _ = confirmed => {}
                _ = self.tasks.cancelled() => {}
            }
        }
    }

    /// The Raft term (Kafka leader epoch) and leader, as this node sees them.
    pub fn leadership(&self) -> (u64, Option<NodeId>) {
        let m = self.raft.metrics().borrow_watched().clone();
        (m.current_term, m.current_leader)
    }

    /// On a leader of several voters: how long since a majority last acknowledged it, if
    /// that is longer than two election timeouts (its followers are gone or cut off: what
    /// it appends cannot commit). `None` when it is in contact, alone, or not the leader.
    pub fn quorum_silence(&self) -> Option<Duration> {
        // Read in place: this runs on every produce.
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().count() < 2 {
            return None;
        }
        let limit = Duration::from_millis(self.raft.config().election_timeout_max * 2);
        // Never acknowledged yet: a leader just elected (it serves only once a majority took
        // an entry of its term, see `is_leader`).
        let since = openraft::Instant::elapsed(&**m.last_quorum_acked.as_ref()?);
        if since <= limit {
            return None;
        }
        // An idle group sends no heartbeats, so its acknowledgements age; what counts then is
        // whether a majority of its voters' nodes are heard from.
        if let Some(liveness) = &self.liveness {
            let now = std::time::Instant::now();
            let voters = m.membership_config.membership().voter_ids().collect::<Vec<_>>();
            let heard = voters.iter().filter(|v| liveness.heard_within(**v, limit, now)).count();
            if heard > voters.len() / 2 {
                return None;
            }
        }
        Some(since)
    }

    /// The group's state as the node's timer loop needs it, read in place.
    pub(crate) fn glance(&self) -> Glance {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let all_caught_up = match (&m.replication, m.state) {
            (Some(progress), ServerState::Leader) => voters
                .iter()
                .filter(|v| **v != m.id)
                .all(|v| progress.get(v).copied().flatten().map(|l| l.index) == m.last_log_index),
            _ => false,
        };
        Glance {
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            all_caught_up,
            voters,
        }
    }

    /// Starts or stops the group's own Raft timers (heartbeats, election timeouts).
    pub(crate) fn set_timers(&self, on: bool) {
        self.raft.runtime_config().tick(on);
    }

    /// Asks the other voters whether they would elect this replica (a pre-vote; an election
    /// follows if a majority would). A no-op while this replica has heard from a leader within
    /// the election timeout, or leads.
    pub(crate) async fn ask_for_leadership(&self) {
        if let Err(e) = self.raft.trigger().elect(true).await {
            tracing::debug!(group = self.group, "asking for the leadership: {e}");
        }
    }

    /// Hands this group's leadership to its most caught-up voter if this node (`me`) leads
    /// it, waiting up to `timeout` for the new leader; false if none took over in time.
    pub(crate) async fn hand_over_leadership(&self, me: NodeId, timeout: Duration) -> bool {
        crate::raft::hand_over_leadership(&self.raft, me, timeout).await
    }

    /// Where this node leads the group: hands the leadership to voter `to` and waits until it
    /// leads (see `raft::hand_over_to`).
    pub(crate) async fn hand_over_to(&self, to: NodeId) -> Result<(), ClusterError> {
        let handed = crate::raft::hand_over_to(&self.raft, to, crate::raft::transport::HAND_OVER_WAIT).await;
        handed.map_err(|e| ClusterError::from_hand_over(self.group, to, e))
    }

    /// This replica's Raft role: leader, follower, candidate, learner or shutdown.
    pub fn raft_role(&self) -> &'static str {
        crate::raft::role_name(self.raft.metrics().borrow_watched().state)
    }

    /// Whether `node` (this node) leads the group and may serve: a new leader serves nothing
    /// until it has applied an entry of its own term, so its high watermark and producer
    /// state include everything its predecessors committed.
    pub fn is_leader(&self, node: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader
            && m.current_leader == Some(node)
            && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// How the group's replicas stand as this node sees them. Where this node leads it knows
    /// each replica's progress: the in-sync replicas (voters whose log reaches the commit
    /// index) and each replica's lag in entries; elsewhere those are `None`.
    pub fn replication(&self) -> ReplicationView {
        let m = self.raft.metrics().borrow_watched().clone();
        let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
        let commit = m.cluster_committed.map(|l| l.index);
        let (mut isr, mut lag, mut lag_bytes) = (None, None, None);
        if let (Some(progress), ServerState::Leader) = (&m.replication, m.state) {
            let last = m.last_log_index.unwrap_or(0);
            let matched = |id: &NodeId| {
                if *id == m.id { m.last_log_index } else { progress.get(id).copied().flatten().map(|l| l.index) }
            };
            isr = Some(voters.iter().copied().filter(|id| matched(id) >= commit).collect());
            lag = Some(
                voters
                    .iter()
                    .chain(progress.keys())
                    .map(|id| (*id, last.saturating_sub(matched(id).unwrap_or(0))))
                    .collect(),
            );
            lag_bytes = Some(
                voters
                    .iter()
                    .chain(progress.keys())
                    .map(|id| (*id, self.log.bytes_after_raft_index(matched(id).unwrap_or(0))))
                    .collect(),
            );
        }
        ReplicationView {
            leader: m.current_leader,
            leader_epoch: m.current_term,
            voters,
            commit_index: commit,
            applied_index: m.last_applied.map(|l| l.index),
            isr,
            lag_bytes,
            lag_entries: lag,
        }
    }

    /// Where this node leads: its term and the voters whose log reaches the commit index (what
    /// the leadership reports carry; cheaper than [`Self::replication`]).
    pub(crate) fn led_isr(&self) -> Option<(u64, Vec<NodeId>)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let progress = m.replication.as_ref().filter(|_| m.state == ServerState::Leader)?;
        let commit = m.cluster_committed.map(|l| l.index);
        let matched = |id: &NodeId| {
            if *id == m.id { m.last_log_index } else { progress.get(id).copied().flatten().map(|l| l.index) }
        };
        let isr = m.membership_config.membership().voter_ids().filter(|id| matched(id) >= commit).collect();
        Some((m.current_term, isr))
    }

    /// Waits until the group has a leader that may serve (true) or `timeout` passes (false).
    pub(crate) async fn wait_for_leader(&self, timeout: Duration) -> bool {
        // Where this node is the leader, until it may serve (see `is_leader`).
        let serving = |m: &openraft::RaftMetrics<TypeConfig>| {
            m.current_leader.is_some()
                && (m.state != ServerState::Leader
                    || m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term))
        };
        self.raft.wait(Some(timeout)).metrics(serving, "a leader").await.is_ok()
    }

    /// Drops the log below the log start offset: the segment files wholly below it, then (with
    /// a snapshot at the applied position) the WAL entries wholly below it.
    pub async fn drop_below_log_start(&self) -> Result<(), ClusterError> {
        self.log.delete_segments_below_log_start()?;
        let Some(upto) = self.log.last_raft_index_below(self.log.log_start_offset()) else { return Ok(()) };
        self.purge_wal_through(upto).await
    }

    /// Moves the committed entries up to Raft index `upto` out of the WAL into a segment file,
    /// then lets the WAL drop them. A crash in between leaves both copies, never neither: the
    /// file is durable before the snapshot point and the purge move.
    pub async fn move_to_segments(&self, upto: u64) -> Result<(), ClusterError> {
        // File writes and fsyncs stay off the async threads that serve produce and fetch.
        let log = self.log.clone();
        let moved = tokio::task::spawn_blocking(move || log.move_to_segments(upto))
            .await
            .map_err(|e| ClusterError::Internal(format!("group {}: a move task: {e}", self.group)))?;
        let Some(moved) = moved? else { return Ok(()) };
        self.purge_wal_through(moved).await
    }

    /// The group's last snapshot here, and how far its WAL entries are purged.
    pub fn snapshot_state(&self) -> crate::raft::GroupSnapshot {
        let place = Some((self.topic().to_string(), self.partition()));
        crate::raft::group_snapshot(self.group, place, &self.raft.metrics().borrow_watched())
    }

    /// Moves every committed entry to the segment files, snapshots at the applied position,
    /// and lets the WAL drop what the files hold (an operator's snapshot).
    pub async fn snapshot_now(&self) -> Result<crate::raft::GroupSnapshot, ClusterError> {
        let Some(applied) = self.raft.metrics().borrow_watched().last_applied.map(|l| l.index) else {
            return Ok(self.snapshot_state());
        };
        self.move_to_segments(applied).await?;
        self.snapshot_through(applied).await?;
        Ok(self.snapshot_state())
    }

    /// Builds a snapshot at the applied position unless the last one reaches `index`, and
    /// waits for it.
    pub(crate) async fn snapshot_through(&self, index: u64) -> Result<(), ClusterError> {
        let covers = |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= index);
        if !covers(&self.raft.metrics().borrow_watched()) {
            self.raft.trigger().snapshot().await.map_err(|e| ClusterError::stopped(self.group, e))?;
            self.wait_for(covers, "a snapshot").await?;
        }
        Ok(())
    }

    /// Snapshot at the applied position (if the last one is older than `upto`), then purge the
    /// WAL through `upto`.
    async fn purge_wal_through(&self, upto: u64) -> Result<(), ClusterError> {
        let stopped = |e| ClusterError::stopped(self.group, e);
        self.snapshot_through(upto).await?;
        crate::crash_point::crash_point("purge.snapshotted");
        self.raft.trigger().purge_log(upto).await.map_err(stopped)?;
        // Purging happens in the background; the caller (tiering, retention) goes on to collect
        // the WAL's garbage, which needs it done.
        self.wait_for(|m| m.purged.is_some_and(|p| p.index >= upto), "the purge").await
    }

    /// Waits (up to 10 s, and not past this replica's stop) until the group's metrics say `done`.
    async fn wait_for(
        &self,
        done: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> bool + Send,
        what: &str,
    ) -> Result<(), ClusterError> {
        let wait = self.raft.wait(Some(Duration::from_secs(10)));
        let reached = wait.metrics(done, what);
        tokio::select! {
            r = reached => r.map(drop).map_err(|e| ClusterError::Timeout(format!("group {}: {e}", self.group))),
            _ = self.tasks.cancelled() => Err(ClusterError::stopped(self.group, "stopping")),
        }
    }
}
