//! The group coordinator: consumer group membership (classic protocol) and committed offsets.
//! The node that leads `__consumer_offsets` (one partition) coordinates every group: it
//! replays the partition when it becomes leader and only then serves; on any other node the
//! group APIs answer NOT_COORDINATOR and FindCoordinator names the leader. Membership lives
//! in memory (clients rejoin after a restart or a coordinator move, as in Kafka), offsets
//! are durable.

mod group;
mod store;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_cluster::{Node, Tasks};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use group::{GroupError, JoinRequest, JoinResult, State, SyncResult};
pub use store::{Committed, OffsetStore, OffsetStoreError, TOPIC as OFFSETS_TOPIC};

/// Why DeleteGroups did not delete a group.
#[derive(Debug, thiserror::Error)]
pub enum DeleteGroupError {
    #[error("the group has members")]
    NotEmpty,
    #[error("no such group")]
    NotFound,
    #[error(transparent)]
    Store(#[from] OffsetStoreError),
}

/// How the coordinator behaves (`[kafka]` keys of chronik.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this
    /// long for more members (extended by each newcomer, up to the rebalance timeout).
    pub initial_rebalance_delay: Duration,
    /// `offset.metadata.max.bytes`: a commit with longer metadata is refused for that partition.
    pub offset_metadata_max_bytes: usize,
    /// `segment.bytes` of the compacted `__consumer_offsets` (`offsets.topic.segment.bytes`).
    pub offsets_segment_bytes: u64,
}

impl GroupSettings {
    pub fn from_config(c: &chronik_config::Config) -> GroupSettings {
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(c.kafka.group_initial_rebalance_delay_ms),
            offset_metadata_max_bytes: c.kafka.offset_metadata_max_bytes as usize,
            offsets_segment_bytes: c.kafka.offsets_topic_segment_bytes,
        }
    }
}

pub struct GroupCoordinator {
    node: Arc<Node>,
    groups: Mutex<HashMap<String, group::Group>>,
    /// The committed offsets, while this node coordinates (with the scope of its writer).
    store: RwLock<Option<(Arc<OffsetStore>, Tasks)>>,
    pub settings: GroupSettings,
}

/// A group as DescribeGroups shows it.
pub struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// How often the coordinator checks whether this node leads `__consumer_offsets`.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(100);

impl GroupCoordinator {
    /// Starts the coordinator and its loops in `tasks`. Standalone, this node always
    /// coordinates: the offsets topic is created if need be and replayed before this returns.
    /// In a cluster the coordinator follows the leadership of `__consumer_offsets`; the topic
    /// is created at the first FindCoordinator (so it gets replicas on the nodes that joined).
    pub async fn start(
        node: &Arc<Node>,
        settings: GroupSettings,
        clustered: bool,
        tasks: &Tasks,
    ) -> Result<Arc<GroupCoordinator>, OffsetStoreError> {
        let exists = node.with_metadata(|m| m.topic(OFFSETS_TOPIC).is_some());
        if !clustered || exists {
            OffsetStore::ensure_topic(node, settings.offsets_segment_bytes).await?;
        }
        let c = Arc::new(GroupCoordinator {
            node: node.clone(),
            groups: Mutex::new(HashMap::new()),
            store: RwLock::new(None),
            settings,
        });
        if !clustered {
            let scope = tasks.child();
            let store = OffsetStore::open(node, &scope).await?;
            *c.store.write() = Some((Arc::new(store), scope));
        }
        let weak = Arc::downgrade(&c);
        tasks.spawn("group-reaper", move |cancel| reaper(weak, cancel));
        let (weak, scope) = (Arc::downgrade(&c), tasks.child());
        tasks.spawn("group-coordinator", move |cancel| follow_leadership(weak, scope, cancel));
        Ok(c)
    }

    /// The committed offsets, if this node coordinates.
    fn store(&self) -> Result<Arc<OffsetStore>, GroupError> {
        self.store.read().as_ref().map(|(s, _)| s.clone()).ok_or(GroupError::NotCoordinator)
    }

    pub fn is_coordinator(&self) -> bool {
        self.store.read().is_some()
    }

    /// The node that coordinates groups (leads `__consumer_offsets`), as far as this node
    /// knows. In a cluster, a missing offsets topic is created here first (Kafka creates it
    /// at the first FindCoordinator too), and the answer is `None` until it has a leader.
    pub async fn coordinator(&self) -> Option<u64> {
        if self.node.with_metadata(|m| m.topic(OFFSETS_TOPIC).is_none())
            && let Err(e) = OffsetStore::ensure_topic(&self.node, self.settings.offsets_segment_bytes).await
        {
            tracing::warn!("creating {OFFSETS_TOPIC}: {e}");
        }
        self.node.partition_leader(OFFSETS_TOPIC, 0).leader
    }

    /// A group's committed offset of one partition.
    pub fn committed(&self, key: &store::Key) -> Result<Option<Committed>, GroupError> {
        Ok(self.store()?.get(key))
    }

    /// Every committed offset of `group`.
    pub fn committed_of_group(&self, group: &str) -> Result<Vec<(String, i32, Committed)>, GroupError> {
        Ok(self.store()?.of_group(group))
    }

    pub fn join(&self, req: JoinRequest, group_id: &str) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if !self.is_coordinator() {
            let _ = tx.send(JoinResult::error(GroupError::NotCoordinator, req.member_id));
            return rx;
        }
        let delay = self.settings.initial_rebalance_delay;
        self.groups.lock().entry(group_id.to_string()).or_insert_with(|| group::Group::new(delay)).join(
            Instant::now(),
            req,
            tx,
        );
        rx
    }

    pub fn sync(
        &self,
        group_id: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        if !self.is_coordinator() {
            let _ = tx.send(Err(GroupError::NotCoordinator));
            return rx;
        }
        match self.groups.lock().get_mut(group_id) {
            Some(g) => g.sync(Instant::now(), member, generation, assignments, tx),
            None => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
        }
        rx
    }

    pub fn heartbeat(&self, group_id: &str, member: &str, generation: i32) -> Result<(), GroupError> {
        self.store()?;
        self.groups.lock().get_mut(group_id).ok_or(GroupError::UnknownMemberId)?.heartbeat(
            Instant::now(),
            member,
            generation,
        )
    }

    pub fn leave(&self, group_id: &str, member: &str) -> Result<(), GroupError> {
        self.store()?;
        self.groups.lock().get_mut(group_id).ok_or(GroupError::UnknownMemberId)?.leave(Instant::now(), member)
    }

    pub fn check_commit(&self, group_id: &str, member: &str, generation: i32) -> Result<(), GroupError> {
        self.store()?;
        match self.groups.lock().get_mut(group_id) {
            Some(g) => g.check_commit(Instant::now(), member, generation),
            None if generation < 0 && member.is_empty() => Ok(()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    pub async fn commit(
        &self,
        group_id: &str,
        offsets: Vec<((String, i32), Committed)>,
    ) -> Result<(), OffsetStoreError> {
        let changes = offsets.into_iter().map(|((t, p), c)| ((group_id.to_string(), t, p), Some(c))).collect();
        let store = self.store().map_err(|_| OffsetStoreError::NotCoordinator)?;
        store.write(changes).await
    }

    /// The group as DescribeGroups shows it; `None` when the coordinator knows nothing of it
    /// (Kafka's "Dead"). A group with no members but committed offsets is "Empty", as in Kafka:
    /// its offsets can be described and reset.
    pub fn describe(&self, group_id: &str) -> Result<Option<GroupView>, GroupError> {
        let store = self.store()?;
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            let empty =
                GroupView { state: "Empty", protocol_type: String::new(), protocol: String::new(), members: vec![] };
            return Ok(store.has_group(group_id).then_some(empty));
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        Ok(Some(GroupView {
            state: if g.members.is_empty() { "Empty" } else { g.state.name() },
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| {
                    let meta =
                        m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, d)| d.clone()).unwrap_or_default();
                    (
                        m.id.clone(),
                        m.group_instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        meta,
                        m.assignment.clone(),
                    )
                })
                .collect(),
        }))
    }

    /// Every group this node coordinates: (id, protocol type, state). Elsewhere, none (as a
    /// Kafka broker lists only the groups it coordinates).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let Ok(store) = self.store() else { return Vec::new() };
        let mut out: HashMap<String, (String, &'static str)> = HashMap::new();
        for g in store.groups() {
            out.insert(g, (String::new(), "Empty"));
        }
        for (id, g) in self.groups.lock().iter() {
            let state = if g.members.is_empty() { "Empty" } else { g.state.name() };
            out.insert(id.clone(), (g.protocol_type.clone().unwrap_or_default(), state));
        }
        let mut v: Vec<_> = out.into_iter().map(|(id, (t, s))| (id, t, s)).collect();
        v.sort();
        v
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete(&self, group_id: &str) -> Result<(), DeleteGroupError> {
        let store = self.store().map_err(|_| DeleteGroupError::Store(OffsetStoreError::NotCoordinator))?;
        {
            let mut groups = self.groups.lock();
            if groups.get(group_id).is_some_and(|g| !g.is_empty()) {
                return Err(DeleteGroupError::NotEmpty);
            }
            groups.remove(group_id);
        }
        let changes: Vec<_> =
            store.of_group(group_id).into_iter().map(|(t, p, _)| ((group_id.to_string(), t, p), None)).collect();
        if changes.is_empty() {
            return Err(DeleteGroupError::NotFound);
        }
        Ok(store.write(changes).await?)
    }
}

/// Makes this node the coordinator while it leads `__consumer_offsets` (replaying the
/// partition first), and stops being it when it no longer leads (forgetting the groups'
/// members: they rejoin at the new coordinator), until cancelled.
async fn follow_leadership(
    c: Weak<GroupCoordinator>,
    scope: Tasks,
    cancel: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(LEADERSHIP_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(c) = c.upgrade() else { return Ok(()) };
        let me = c.node.node_id();
        let leads = c.node.partition(OFFSETS_TOPIC, 0).is_some_and(|p| p.is_leader(me));
        if leads && !c.is_coordinator() {
            let writer = scope.child();
            match OffsetStore::open(&c.node, &writer).await {
                Ok(store) => {
                    tracing::info!("this node is now the group coordinator ({OFFSETS_TOPIC}-0 replayed)");
                    *c.store.write() = Some((Arc::new(store), writer));
                }
                Err(e) => {
                    tracing::warn!("taking over as group coordinator: {e}");
                    writer.stop().await;
                }
            }
        } else if !leads && c.is_coordinator() {
            let taken = c.store.write().take();
            if let Some((_, writer)) = taken {
                writer.stop().await;
            }
            c.groups.lock().clear();
            tracing::info!("this node is no longer the group coordinator");
        }
    }
}

/// Expires members whose session lapsed and completes overdue rebalances, until cancelled.
async fn reaper(c: Weak<GroupCoordinator>, cancel: CancellationToken) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(c) = c.upgrade() else { return Ok(()) };
        let now = Instant::now();
        let mut groups = c.groups.lock();
        for g in groups.values_mut() {
            g.tick(now);
        }
        groups.retain(|_, g| !(g.is_empty() && g.state == State::Empty));
    }
}
