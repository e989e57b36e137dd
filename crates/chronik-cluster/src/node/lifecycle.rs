//! The loops that keep a node's replicas in line with the metadata and its topics' settings:
//! reconcile (start and stop replicas as assignments change), retention (move log starts and
//! drop what lies below them), the segment tier (move data out of the WAL), log compaction,
//! and the one-off cleanup of data that deleted partitions left behind.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use openraft::BasicNode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::error::ClusterError;
use crate::metadata::META_GROUP;
use crate::partition::{PartitionReplica, ReplicaSpec};
use crate::raft::GroupId;
use crate::storage::compaction::{CompactionOutcome, IoBudget};
use crate::topic_config::{TopicDefaults, TopicSettings};

impl Node {
    /// Starts replicas of partitions assigned here (or moving here) and stops those no longer
    /// in the metadata, dropping their data: the partition was deleted (group ids are never
    /// reused), or moved away, which the metadata records only once the group's new
    /// membership without this node has committed.
    pub(super) async fn reconcile(&self) {
        let wanted: Vec<ReplicaSpec> = self.with_metadata(|m| {
            m.partitions_of(self.node_id)
                .map(|(t, p)| ReplicaSpec {
                    topic: t.name.clone(),
                    topic_id: t.id,
                    partition: p.partition,
                    group: p.group,
                    // Only a partition's first replicas create its group, all with the same
                    // voters; a replica added later (or one of a moved group that lost its
                    // state) starts empty and waits for the leader to bring it in.
                    voters: match p.replicas.contains(&self.node_id) && !m.moved_groups.contains(&p.group) {
                        true => p
                            .replicas
                            .iter()
                            .map(|id| (*id, BasicNode::new(m.nodes.get(id).map_or("", |n| n.raft_addr.as_str()))))
                            .collect::<BTreeMap<_, _>>(),
                        false => BTreeMap::new(),
                    },
                    segments_dir: self.registry.segments_dir(p.group),
                    liveness: self.liveness.clone(),
                })
                .collect()
        });
        let wanted_groups: HashSet<GroupId> = wanted.iter().map(|w| w.group).collect();
        let running = self.registry.groups();
        for gone in running.iter().filter(|g| !wanted_groups.contains(g)) {
            self.registry.stop(*gone, true).await;
        }
        for spec in wanted.into_iter().filter(|w| !running.contains(&w.group)) {
            let (topic, partition, group) = (spec.topic.clone(), spec.partition, spec.group);
            if let Err(e) = self.registry.start(spec).await {
                tracing::error!(%topic, partition, group, "cannot start partition: {e}");
            }
        }
    }

    /// At start: drops the WAL data of partitions deleted, or moved off this node, while no
    /// reconciler saw them go (a crash or a stop right after the change): nothing else would
    /// ever drop it, and garbage collection cannot retire a segment it holds. Safe with
    /// metadata that is still catching up: it is a prefix of the metadata log that includes
    /// every entry this node had applied before it stopped (the node waits for that at
    /// start), so it includes the change that started each replica this node has data of; a
    /// group below `next_group_id` not assigned here was deleted or moved away since.
    pub(super) fn drop_orphaned_groups(&self) {
        let (allocated_below, held) = self.with_metadata(|m| {
            let held: HashSet<GroupId> = m.partitions_of(self.node_id).map(|(_, p)| p.group).collect();
            (m.next_group_id, held)
        });
        let running = self.registry.groups();
        let mut orphans: Vec<GroupId> = self.wal.groups().into_iter().chain(self.registry.groups_on_disk()).collect();
        orphans.sort_unstable();
        orphans.dedup();
        for group in orphans {
            if group != META_GROUP && group < allocated_below && !held.contains(&group) && !running.contains(&group) {
                tracing::info!(group, "dropping the data of a partition deleted or moved away");
                self.registry.drop_data(group);
            }
        }
    }

    /// Applies each led partition's retention (its topic's `retention.ms` / `retention.bytes`
    /// over `defaults`) by moving its log start offset through Raft, then drops every local
    /// replica's log below its log start. Returns the partitions whose log start moved.
    pub async fn enforce_retention(&self, defaults: &TopicDefaults, now_ms: i64) -> Vec<(String, i32, u64)> {
        let mut moved = Vec::new();
        for r in self.registry.all() {
            if let Some(start) = self.apply_retention(&r, defaults, now_ms).await {
                moved.push((r.topic().to_string(), r.partition(), start));
            }
        }
        moved
    }

    /// One replica's retention: where it leads, moves the log start by its topic's settings;
    /// then drops what lies below the log start. Returns the new log start if it moved.
    async fn apply_retention(&self, r: &PartitionReplica, defaults: &TopicDefaults, now_ms: i64) -> Option<u64> {
        let mut moved = None;
        if r.is_leader(self.node_id) {
            let settings =
                self.with_metadata(|m| m.topic(r.topic()).map(|t| TopicSettings::resolve(defaults, &t.configs)))?;
            if !settings.cleanup.delete {
                return None; // `compact` alone: nothing expires
            }
            if let Some(new_start) = r.log().retention_plan(now_ms, settings.retention_ms, settings.retention_bytes) {
                match r.advance_log_start(new_start).await {
                    Ok(s) => moved = Some(s),
                    Err(e) => tracing::warn!(topic = %r.topic(), partition = r.partition(), "retention: {e}"),
                }
            }
        }
        if let Err(e) = r.drop_below_log_start().await {
            tracing::warn!(topic = %r.topic(), partition = r.partition(), "dropping below the log start: {e}");
        }
        moved
    }

    /// Forgets, in every partition this node leads, the idempotent producers last seen before
    /// `before_ms` (Kafka's `producer.id.expiration.ms`).
    pub async fn expire_idle_producers(&self, before_ms: i64) {
        for r in self.registry.all().into_iter().filter(|r| r.is_leader(self.node_id)) {
            if let Err(e) = r.expire_producers(before_ms).await {
                tracing::warn!(topic = %r.topic(), partition = r.partition(), "expiring producers: {e}");
            }
        }
    }
}

impl Node {
    /// Log compaction on every local replica of a compacted topic (and any replica with a pass
    /// Raft delivered): see `PartitionReplica::compaction_round`.
    /// Returns what each pass that ran did.
    pub async fn compact_topics(
        &self,
        defaults: &TopicDefaults,
        now_ms: i64,
        budget: &Arc<IoBudget>,
    ) -> Vec<CompactionOutcome> {
        let mut done = Vec::new();
        for r in self.registry.all() {
            let Some(settings) =
                self.with_metadata(|m| m.topic(r.topic()).map(|t| TopicSettings::resolve(defaults, &t.configs)))
            else {
                continue;
            };
            if !settings.cleanup.compact && !r.log().has_pending_compaction() {
                continue;
            }
            match r.compaction_round(&settings, self.node_id, now_ms, budget.clone()).await {
                Ok(Some(o)) => {
                    tracing::info!(
                        topic = %r.topic(),
                        partition = r.partition(),
                        files_in = o.files_in,
                        files_out = o.files_out,
                        bytes_in = o.bytes_in,
                        bytes_out = o.bytes_out,
                        cleaned_through = o.cleaned_through,
                        "compacted"
                    );
                    done.push(o);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(topic = %r.topic(), partition = r.partition(), "compaction: {e}"),
            }
        }
        done
    }
}

/// How often the WAL's size is checked against its window.
const TIERING_CHECK: Duration = Duration::from_secs(1);

/// Partitions moving out of the WAL at once: their file writes and fsyncs overlap, and their
/// snapshots and purges share the WAL's sync rounds.
const CONCURRENT_MOVES: usize = 4;

impl Node {
    /// While the WAL holds more than `window` bytes: the partitions with entries in the oldest
    /// segments (as many as it takes to get back within the window) move them, and everything
    /// before them, to their segment files, so those segments can be retired. Retention runs
    /// first, so data about to expire is not copied.
    pub async fn move_out_of_wal(&self, window: u64, defaults: &TopicDefaults) {
        let segment_size = self.wal.options().segment_size;
        loop {
            let live = self.wal.stats().live_segments * segment_size;
            let sealed = self.wal.sealed_segments();
            if live <= window || sealed.is_empty() {
                return;
            }
            let excess = (live - window).div_ceil(segment_size) as usize;
            let through = sealed[excess.clamp(1, sealed.len()) - 1];
            let moves = self.wal.entries_through_segment(through).into_iter().filter_map(|(group, last_index)| {
                let r = self.registry.by_group(group)?;
                Some(async move {
                    self.apply_retention(&r, defaults, crate::now_ms()).await;
                    r.move_to_segments(last_index).await.map_err(|e| (r, e))
                })
            });
            let results: Vec<_> = futures::stream::iter(moves).buffer_unordered(CONCURRENT_MOVES).collect().await;
            let moved_any = !results.is_empty();
            let mut failed = false;
            for (r, e) in results.into_iter().filter_map(Result::err) {
                tracing::warn!(topic = %r.topic(), partition = r.partition(), "moving to segment files: {e}");
                failed = true;
            }
            if failed {
                return; // the segments they share stay; the next check tries again
            }
            crate::crash_point::crash_point("move.purged");
            if let Err(e) = self.wal.collect_garbage() {
                tracing::warn!("WAL garbage collection: {e}");
                return;
            }
            crate::crash_point::crash_point("move.wal_collected");
            if !moved_any || self.wal.sealed_segments().first() == sealed.first() {
                return; // the rest of those segments is not a partition's to move (yet)
            }
        }
    }
}

/// Keeps the WAL within its window, until cancelled.
pub(super) async fn tiering_loop(
    node: Weak<Node>,
    window: u64,
    defaults: TopicDefaults,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let mut tick = tokio::time::interval(TIERING_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(node) = node.upgrade() else { return Ok(()) };
        node.move_out_of_wal(window, &defaults).await;
    }
}

/// What the housekeeping loop applies, and how often.
pub(super) struct Housekeeping {
    pub defaults: TopicDefaults,
    pub every: Duration,
    pub producer_expiration: Duration,
    /// Shared by every compaction pass on the node.
    pub compaction_budget: Arc<IoBudget>,
}

/// Reconciles whenever the metadata changes, until cancelled.
pub(super) async fn reconcile_loop(
    node: Weak<Node>,
    mut version: watch::Receiver<u64>,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    loop {
        tokio::select! {
            changed = version.changed() => {
                if changed.is_err() {
                    return Err(ClusterError::Internal("the metadata state machine went away".into()));
                }
            }
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(node) = node.upgrade() else { return Ok(()) };
        node.reconcile().await;
    }
}

/// Runs retention and producer expiry every `h.every`, until cancelled.
pub(super) async fn housekeeping_loop(
    node: Weak<Node>,
    h: Housekeeping,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let mut tick = tokio::time::interval(h.every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(node) = node.upgrade() else { return Ok(()) };
        let now = crate::now_ms();
        for (topic, partition, start) in node.enforce_retention(&h.defaults, now).await {
            tracing::info!(%topic, partition, log_start = start, "retention moved the log start");
        }
        node.compact_topics(&h.defaults, now, &h.compaction_budget).await;
        let expiration = i64::try_from(h.producer_expiration.as_millis()).unwrap_or(i64::MAX);
        node.expire_idle_producers(now.saturating_sub(expiration)).await;
    }
}

/// How often the metadata leader looks for learners to promote (and every node at its spare
/// producer ids).
const MEMBERSHIP_CHECK: Duration = Duration::from_millis(500);

/// Cluster mode: on whichever node leads the metadata group, promotes caught-up learners to
/// voters and retires removed nodes; on every node, carries out the moves of the partitions
/// it leads and keeps a spare block of producer ids.
pub(super) async fn membership_loop(node: Weak<Node>, cancel: CancellationToken) -> Result<(), ClusterError> {
    every(node, MEMBERSHIP_CHECK, cancel, |node| async move {
        node.meta.promote_caught_up_learners().await;
        node.advance_moves().await;
        node.retire_leaving_nodes().await;
        if let Err(e) = node.meta.reserve_spare_producer_ids().await {
            tracing::debug!("reserving spare producer ids: {e}");
        }
    })
    .await
}

/// Runs `round` on the node every `period`, until cancelled or the node is gone.
pub(super) async fn every<F, Fut>(
    node: Weak<Node>,
    period: Duration,
    cancel: CancellationToken,
    mut round: F,
) -> Result<(), ClusterError>
where
    F: FnMut(Arc<Node>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(node) = node.upgrade() else { return Ok(()) };
        round(node).await;
    }
}
