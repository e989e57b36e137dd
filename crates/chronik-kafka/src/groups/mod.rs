//! The group coordinator: consumer group membership (classic protocol) and committed offsets.
//! This node coordinates every group; membership lives in memory (clients rejoin after a
//! restart, as after a coordinator move in Kafka), offsets are durable.

mod group;
mod store;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_cluster::{Node, Tasks};
use parking_lot::Mutex;
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
    groups: Mutex<HashMap<String, group::Group>>,
    pub offsets: OffsetStore,
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

impl GroupCoordinator {
    /// Opens the committed offsets and starts the reaper in `tasks`.
    pub async fn start(
        node: &Arc<Node>,
        settings: GroupSettings,
        tasks: &Tasks,
    ) -> Result<Arc<GroupCoordinator>, OffsetStoreError> {
        let offsets = OffsetStore::open(node, settings.offsets_segment_bytes, tasks).await?;
        let c = Arc::new(GroupCoordinator { groups: Mutex::new(HashMap::new()), offsets, settings });
        let weak = Arc::downgrade(&c);
        tasks.spawn("group-reaper", move |cancel| reaper(weak, cancel));
        Ok(c)
    }

    pub fn join(&self, req: JoinRequest, group_id: &str) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
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
        match self.groups.lock().get_mut(group_id) {
            Some(g) => g.sync(Instant::now(), member, generation, assignments, tx),
            None => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
        }
        rx
    }

    pub fn heartbeat(&self, group_id: &str, member: &str, generation: i32) -> Result<(), GroupError> {
        self.groups.lock().get_mut(group_id).ok_or(GroupError::UnknownMemberId)?.heartbeat(
            Instant::now(),
            member,
            generation,
        )
    }

    pub fn leave(&self, group_id: &str, member: &str) -> Result<(), GroupError> {
        self.groups.lock().get_mut(group_id).ok_or(GroupError::UnknownMemberId)?.leave(Instant::now(), member)
    }

    pub fn check_commit(&self, group_id: &str, member: &str, generation: i32) -> Result<(), GroupError> {
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
        self.offsets.write(changes).await
    }

    /// The group as DescribeGroups shows it; `None` when the coordinator knows nothing of it
    /// (Kafka's "Dead"). A group with no members but committed offsets is "Empty", as in Kafka:
    /// its offsets can be described and reset.
    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            let empty =
                GroupView { state: "Empty", protocol_type: String::new(), protocol: String::new(), members: vec![] };
            return self.offsets.has_group(group_id).then_some(empty);
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupView {
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
        })
    }

    /// Every known group: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut out: HashMap<String, (String, &'static str)> = HashMap::new();
        for g in self.offsets.groups() {
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
        {
            let mut groups = self.groups.lock();
            if groups.get(group_id).is_some_and(|g| !g.is_empty()) {
                return Err(DeleteGroupError::NotEmpty);
            }
            groups.remove(group_id);
        }
        let changes: Vec<_> =
            self.offsets.of_group(group_id).into_iter().map(|(t, p, _)| ((group_id.to_string(), t, p), None)).collect();
        if changes.is_empty() {
            return Err(DeleteGroupError::NotFound);
        }
        Ok(self.offsets.write(changes).await?)
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
