//! This node's side of the `__meta` group: its Raft, the applied metadata everyone reads, the
//! first-start bootstrap, proposals, and the block of producer ids the node hands out.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chronik_wal::Wal;
use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;

use super::cluster::FINAL_REFUSAL;
use super::options::NodeOptions;
use crate::error::ClusterError;
use crate::identity::NodeIdentity;
use crate::liveness::Liveness;
use crate::metadata::{META_GROUP, MetaCommand, MetaError, MetaResponse, MetadataState, NodeInfo};
use crate::raft::transport::{Inbound, Reply, Request, TransportError};
use crate::raft::{self, Command, NodeId, Response, SharedTransport, TypeConfig};
use crate::state_machine::MetadataStateMachine;
use crate::storage::LogStore;

/// Producer ids reserved through the metadata at a time.
const PRODUCER_ID_BLOCK: u32 = 1000;
/// The most voters the metadata group has; further nodes stay learners (more voters make
/// every metadata write wait for more acknowledgements, and buy nothing past five).
const MAX_METADATA_VOTERS: usize = 5;
/// A learner this close to the leader's last entry is caught up enough to vote.
const CAUGHT_UP_SLACK: u64 = 16;
/// How long a proposal keeps trying through an election, and waits for the leader's answer.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
const PROPOSE_RETRY: Duration = Duration::from_millis(100);
/// How often a node that waits for the metadata group says so.
const SLOW_START_REPORT: Duration = Duration::from_secs(10);

/// This node's reserved producer ids: `next..end`, and the first id of a spare block.
#[derive(Default)]
struct ProducerIds {
    next: i64,
    end: i64,
    spare: Option<i64>,
}

/// How long an operator's snapshot of the metadata may take.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

pub(super) struct MetaGroup {
    raft: Raft<TypeConfig, MetadataStateMachine>,
    view: Arc<RwLock<MetadataState>>,
    version: watch::Receiver<u64>,
    /// The producer ids this node hands out, and its spare block.
    producer_ids: tokio::sync::Mutex<ProducerIds>,
    me: NodeId,
    /// Where proposals made here go when another node leads.
    transport: SharedTransport,
    /// Cluster mode: the group has (or will have) other members, so it never goes quiet.
    clustered: bool,
    /// Cluster mode: which peers are alive (a proposal is not sent to a silent leader).
    liveness: Option<Arc<Liveness>>,
    /// Cluster mode over TCP: a peer refused this node as removed (the transport's
    /// `Tombstones`), which a node removed while it was down learns no other way.
    told_removed: Option<watch::Receiver<bool>>,
}

impl MetaGroup {
    pub async fn open(
        wal: &Arc<Wal>,
        opts: &NodeOptions,
        (transport, liveness, told_removed): (SharedTransport, Option<Arc<Liveness>>, Option<watch::Receiver<bool>>),
    ) -> Result<MetaGroup, ClusterError> {
        let sm = MetadataStateMachine::new(wal.clone());
        let view = sm.view();
        let version = sm.subscribe();
        let store = LogStore::new(wal.clone(), META_GROUP, None);
        let network = raft::NetworkFactory::new(transport.clone(), META_GROUP, opts.peer_settings());
        let raft = Raft::new(opts.node_id, opts.metadata_raft()?, network, store, sm)
            .await
            .map_err(|e| ClusterError::stopped(META_GROUP, e))?;
        Ok(MetaGroup {
            raft,
            view,
            version,
            producer_ids: tokio::sync::Mutex::new(ProducerIds::default()),
            me: opts.node_id,
            transport,
            clustered: opts.cluster.is_some(),
            liveness,
            told_removed,
        })
    }

    /// The applied metadata, shared (the transport reads node addresses from it).
    pub fn view(&self) -> Arc<RwLock<MetadataState>> {
        self.view.clone()
    }

    /// Makes sure the group has a leader and this node has applied its log, that it belongs
    /// to this node's cluster, and that it knows this node's current addresses. `initialize`:
    /// this node creates the group (a standalone node, or a new cluster's bootstrap node);
    /// every other node waits for a leader to reach it.
    pub async fn start(&self, identity: &NodeIdentity, me: NodeInfo, initialize: bool) -> Result<(), ClusterError> {
        let stopped = |e| ClusterError::stopped(META_GROUP, e);
        if initialize && !self.raft.is_initialized().await.map_err(stopped)? {
            let members = BTreeMap::from([(me.id, BasicNode::new(&me.raft_addr))]);
            if let Err(e) = self.raft.initialize(members).await {
                tracing::debug!("metadata group already initialized: {e}");
            }
        }
        if self.clustered {
            // A joining node was registered by the leader before it was added; the bootstrap
            // node registers itself below.
            self.wait_until_caught_up((!initialize).then_some(me.id)).await;
        } else {
            self.raft
                .wait(Some(Duration::from_secs(30)))
                .state(ServerState::Leader, "metadata group leader")
                .await
                .map_err(|e| ClusterError::Timeout(format!("the metadata group's election: {e}")))?;
            // A leader applies its log after it is elected: what this node reads next (and
            // what the reconciler starts) must be the whole metadata, not a prefix of it.
            let last = self.raft.metrics().borrow_watched().last_log_index;
            self.raft
                .wait(Some(Duration::from_secs(30)))
                .applied_index_at_least(last, "the metadata log applied")
                .await
                .map_err(|e| ClusterError::Timeout(format!("applying the metadata log: {e}")))?;
        }
        let (cluster_id, registered, removed) =
            self.read(|m| (m.cluster_id, m.nodes.get(&me.id) == Some(&me), m.removed_nodes.contains(&me.id)));
        if removed || self.told_removed() {
            return Err(ClusterError::Removed { node: me.id, cluster: identity.cluster_id });
        }
        match cluster_id {
            Some(id) if id != identity.cluster_id => {
                return Err(ClusterError::DataDir(format!(
                    "metadata belongs to cluster {id} but the node identity says cluster {}",
                    identity.cluster_id
                )));
            }
            Some(_) => {}
            None => self.propose(MetaCommand::InitCluster { cluster_id: identity.cluster_id }).await.map(drop)?,
        }
        if !registered {
            self.propose(MetaCommand::RegisterNode(me)).await?;
        }
        if !self.clustered {
            raft::quiet_if_alone(&self.raft, identity.node_id).await;
        }
        Ok(())
    }

    /// Waits (as long as it takes: without a quorum there is nothing to serve) until the group
    /// has a leader and this node has applied its own log, including (`registered`) its own
    /// registration.
    async fn wait_until_caught_up(&self, registered: Option<NodeId>) {
        let (view, me) = (self.view.clone(), self.me);
        let caught_up = move |m: &openraft::RaftMetrics<TypeConfig>| {
            // A removed node is no member: no leader will ever reach it.
            view.read().removed_nodes.contains(&me)
                || m.current_leader.is_some()
                    && m.last_applied.map(|l| l.index) >= m.last_log_index
                    && registered.is_none_or(|me| view.read().nodes.contains_key(&me))
        };
        let started = std::time::Instant::now();
        loop {
            let wait = self.raft.wait(Some(SLOW_START_REPORT));
            let reached = wait.metrics(caught_up.clone(), "caught up");
            // A removed node is no member: no leader will ever reach it, but a peer may say so.
            let removed = self.until_told_removed();
            let e = tokio::select! {
                done = reached => match done {
                    Ok(_) => return self.wait_to_hear_from_the_leader().await,
                    Err(e) => e,
                },
                () = removed => return,
            };
            let m = self.raft.metrics().borrow_watched().clone();
            tracing::warn!(
                leader = ?m.current_leader,
                applied = ?m.last_applied.map(|l| l.index),
                last_log = ?m.last_log_index,
                "waiting {:?} for the metadata group (a leader, and this node's log applied): {e}",
                started.elapsed()
            );
        }
    }

    /// Until this node has heard from the leader it knows since it started (or leads, or is
    /// told it was removed). A leader restored from this node's own vote is no proof that it
    /// still leads this node: one removed while it was down would serve until a peer refused it.
    /// It says it lives to that leader once a second meanwhile: a node removed while it was
    /// down and demoted to learner before that never campaigns, and this is how it reaches a
    /// peer that refuses it.
    async fn wait_to_hear_from_the_leader(&self) {
        let Some(liveness) = &self.liveness else { return };
        let started = std::time::Instant::now();
        let (mut said_alive, mut reported) = (None::<std::time::Instant>, started);
        loop {
            let leader = self.raft.metrics().borrow_watched().current_leader;
            let removed = self.tombstoned() || self.told_removed();
            if removed || leader.is_some_and(|l| l == self.me || liveness.last_heard(l).is_some()) {
                return;
            }
            if let Some(l) = leader.filter(|_| said_alive.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))) {
                said_alive = Some(std::time::Instant::now());
                let alive = Request::Alive { from: self.me };
                let _ = self.transport.send(l, crate::raft::transport::NODE_GROUP, alive, Duration::from_secs(1)).await;
            }
            if reported.elapsed() >= SLOW_START_REPORT {
                reported = std::time::Instant::now();
                tracing::warn!(?leader, "waiting {:?} to hear from the metadata group's leader", started.elapsed());
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = self.until_told_removed() => return,
            }
        }
    }

    /// Whether this node has applied its own tombstone (it was removed from the cluster).
    pub fn tombstoned(&self) -> bool {
        self.read(|m| m.removed_nodes.contains(&self.me))
    }

    /// Whether a peer refused this node as removed from the cluster.
    pub fn told_removed(&self) -> bool {
        self.told_removed.as_ref().is_some_and(|t| *t.borrow())
    }

    /// Fires when a peer refuses this node as removed (never, if none does).
    pub async fn until_told_removed(&self) {
        let Some(mut told) = self.told_removed.clone() else { return std::future::pending().await };
        if told.wait_for(|removed| *removed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `f` on the applied metadata without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        f(&self.view.read())
    }

    /// Fires whenever the applied metadata changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }

    /// Proposes a change and waits until it is applied; a rejected change is an error. On a
    /// follower the change goes to the leader; while there is no leader (an election), it
    /// is retried for up to [`PROPOSE_TIMEOUT`].
    pub async fn propose(&self, cmd: MetaCommand) -> Result<MetaResponse, ClusterError> {
        let mut deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let mut waited_for_successor = false;
        loop {
            let answer = match self.propose_here(cmd.clone()).await {
                Err(ClusterError::NotLeader { leader: Some(leader), .. }) if self.presumed_dead(leader) => {
                    // The leader this node knows is silent. A majority elsewhere elects a new
                    // one within an election timeout or two; a node cut off from the majority
                    // would wait in vain, so it waits only that long (its client can go to
                    // another node).
                    if !waited_for_successor {
                        waited_for_successor = true;
                        let successor = self.liveness.as_ref().map_or(Duration::ZERO, |l| l.dead_after() * 2);
                        deadline = deadline.min(tokio::time::Instant::now() + successor);
                    }
                    let reason = "it has been silent for an election timeout".to_string();
                    let silent = TransportError::Unreachable { node: leader, reason };
                    Err(ClusterError::PeerUnreachable { node: leader, source: Box::new(silent) })
                }
                Err(ClusterError::NotLeader { leader: Some(leader), .. }) if leader != self.me => {
                    self.forward(leader, cmd.clone()).await
                }
                other => other,
            };
            let retry = matches!(
                answer,
                Err(ClusterError::NotLeader { .. }
                    | ClusterError::PeerUnreachable { .. }
                    | ClusterError::Forwarded { .. })
            );
            if !retry || tokio::time::Instant::now() >= deadline {
                return match answer? {
                    MetaResponse::Rejected(e) => Err(ClusterError::Rejected(e)),
                    ok => Ok(ok),
                };
            }
            tokio::time::sleep(PROPOSE_RETRY).await;
        }
    }

    /// Cluster mode: `node` has been silent for an election timeout.
    fn presumed_dead(&self, node: NodeId) -> bool {
        node != self.me && self.liveness.as_ref().is_some_and(|l| l.presumed_dead(node, std::time::Instant::now()))
    }

    /// Proposes on this node's Raft (it must lead).
    async fn propose_here(&self, cmd: MetaCommand) -> Result<MetaResponse, ClusterError> {
        self.propose_at(cmd).await.map(|(response, _)| response)
    }

    /// Proposes on this node's Raft (it must lead); answers the response and the entry's index.
    async fn propose_at(&self, cmd: MetaCommand) -> Result<(MetaResponse, u64), ClusterError> {
        let written = self.raft.client_write(Command::Meta(cmd)).await;
        let written = written.map_err(|e| ClusterError::from_write(META_GROUP, e))?;
        match written.data {
            Response::Meta(r) => Ok((r, written.log_id.index)),
            other => Err(ClusterError::unexpected(META_GROUP, other)),
        }
    }

    /// Sends a proposal to the leader, which makes it.
    async fn forward(&self, leader: NodeId, cmd: MetaCommand) -> Result<MetaResponse, ClusterError> {
        let reply = self.transport.send(leader, META_GROUP, Request::Propose(cmd), PROPOSE_TIMEOUT).await;
        let (response, index) = match reply.map_err(|e| ClusterError::from_transport(leader, e))? {
            Reply::Proposed { response, index } => (response, index),
            _ => {
                return Err(ClusterError::Internal(format!(
                    "node {leader} answered a proposal with another kind of reply"
                )));
            }
        };
        // Whoever proposed reads its own metadata next (CreateTopics waits for the topic's
        // leaders): it must have applied the change, as on the leader.
        self.raft
            .wait(Some(PROPOSE_TIMEOUT))
            .applied_index_at_least(Some(index), "the forwarded change applied here")
            .await
            .map_err(|e| ClusterError::Timeout(format!("applying the forwarded change: {e}")))?;
        Ok(response)
    }

    /// A new node asks to join (through this node): the leader checks its id, registers its
    /// addresses and adds it to the group as a learner; it becomes a voter once caught up
    /// ([`Self::promote_caught_up_learners`]). Answers the cluster id the node adopts.
    async fn admit(&self, node: NodeInfo) -> Result<Uuid, String> {
        let leader = self.leader();
        if leader != Some(self.me) {
            let Some(leader) = leader else {
                return Err("the metadata group has no leader (an election); retry".into());
            };
            let reply = self.transport.send(leader, META_GROUP, Request::Join(node), PROPOSE_TIMEOUT).await;
            // The leader's refusal goes back as it is (the joining node tells a final one by
            // its words).
            let reply = reply.map_err(|e| match e {
                TransportError::Refused { reason, .. } => reason,
                other => other.to_string(),
            });
            return match reply? {
                Reply::Joined { cluster_id } => Ok(cluster_id),
                _ => Err(format!("node {leader} answered a join with another kind of reply")),
            };
        }
        let id = node.id;
        let (cluster, removed, registered) =
            self.read(|m| (m.cluster_id, m.removed_nodes.contains(&id), m.nodes.contains_key(&id)));
        let cluster = cluster.ok_or("the cluster is still starting (no cluster id yet); retry")?;
        if removed {
            return Err(format!(
                "{FINAL_REFUSAL}node id {id} belonged to a node removed from cluster {cluster} and can never be used again; \
                 start this node with a node_id not used before"
            ));
        }
        let member = self.raft.metrics().borrow_watched().membership_config.membership().get_node(&id).is_some();
        if registered && member {
            return Err(format!(
                "{FINAL_REFUSAL}node id {id} is already a member of cluster {cluster}; a node that lost its data directory \
                 cannot take its old id back (the group would count a vote it no longer remembers): start \
                 it with a new node_id, and remove the old one"
            ));
        }
        let addr = node.raft_addr.clone();
        let registered = self.propose_here(MetaCommand::RegisterNode(node)).await.map_err(|e| e.to_string())?;
        if let MetaResponse::Rejected(e) = registered {
            return Err(e.to_string());
        }
        self.raft.add_learner(id, BasicNode::new(&addr), false).await.map_err(|e| e.to_string())?;
        tracing::info!(node = id, %addr, "node joined the cluster as a learner of the metadata group");
        Ok(cluster)
    }

    /// On the leader: makes caught-up learners voters, one at a time, up to
    /// [`MAX_METADATA_VOTERS`] (more nodes stay learners of the metadata group). Nodes being
    /// removed are not promoted.
    pub async fn promote_caught_up_learners(&self) {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let membership = m.membership_config.membership();
        if membership.voter_ids().count() >= MAX_METADATA_VOTERS {
            return;
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = |id: &NodeId| m.replication.as_ref()?.get(id).cloned().flatten().map(|l| l.index);
        let going = |id: &NodeId| self.read(|m| m.leaving.contains(id) || m.removed_nodes.contains(id));
        let caught_up =
            membership.learner_ids().find(|id| !going(id) && matched(id) >= Some(last.saturating_sub(CAUGHT_UP_SLACK)));
        if let Some(id) = caught_up {
            match self.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await {
                Ok(_) => tracing::info!(node = id, "promoted to voter of the metadata group"),
                Err(e) => tracing::warn!(node = id, "promoting to voter of the metadata group: {e}"),
            }
        }
    }

    /// An operator's promotion: makes learner `node` a voter now, made by the leader (this
    /// node, or the leader it forwards to). Unlike the automatic promotion it may take the
    /// group past [`MAX_METADATA_VOTERS`]. A voter already is answered at once.
    pub async fn promote(&self, node: NodeId) -> Result<(), ClusterError> {
        match self.leader() {
            Some(leader) if leader == self.me => self.promote_here(node).await,
            Some(leader) => {
                let reply = self.transport.send(leader, META_GROUP, Request::Promote { node }, PROPOSE_TIMEOUT).await;
                match reply.map_err(|e| ClusterError::from_transport(leader, e))? {
                    Reply::Proposed { response: MetaResponse::Rejected(e), .. } => Err(ClusterError::Rejected(e)),
                    Reply::Proposed { .. } => Ok(()),
                    _ => Err(ClusterError::Internal(format!("node {leader} answered a promotion with another reply"))),
                }
            }
            None => Err(ClusterError::NotLeader { group: META_GROUP, leader: None }),
        }
    }

    /// [`Self::promote`] on the leader: refused (with the reason) for a node unknown, being
    /// removed, not a learner yet, or more than [`CAUGHT_UP_SLACK`] entries behind.
    async fn promote_here(&self, node: NodeId) -> Result<(), ClusterError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return Err(ClusterError::NotLeader { group: META_GROUP, leader: m.current_leader });
        }
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == node) {
            return Ok(());
        }
        let refuse = |reason: String| Err(ClusterError::Rejected(MetaError::CannotPromote { node, reason }));
        let (known, going) =
            self.read(|s| (s.nodes.contains_key(&node), s.leaving.contains(&node) || s.removed_nodes.contains(&node)));
        if going {
            return refuse("it is being removed from the cluster".into());
        }
        if !known {
            return Err(ClusterError::Rejected(MetaError::UnknownNode(node)));
        }
        if membership.get_node(&node).is_none() {
            return refuse("it is not a learner of the metadata group yet (it is still joining)".into());
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&node).cloned().flatten()).map(|l| l.index);
        let behind = last - matched.unwrap_or(0).min(last);
        if matched.is_none() || behind > CAUGHT_UP_SLACK {
            return refuse(format!(
                "it has not caught up: {behind} metadata entries behind the leader (at most {CAUGHT_UP_SLACK}); retry \
                 once it has"
            ));
        }
        self.change_membership(ChangeMembers::AddVoterIds([node].into()), false).await?;
        tracing::info!(node, "promoted to voter of the metadata group by an operator");
        Ok(())
    }

    /// The group's last snapshot here, and how far its log is purged.
    pub fn snapshot_state(&self) -> raft::GroupSnapshot {
        raft::group_snapshot(META_GROUP, None, &self.raft.metrics().borrow_watched())
    }

    /// Snapshots the metadata at its applied position (openraft then purges the log it covers,
    /// keeping `cluster.raft.compaction_retain_entries`).
    pub async fn snapshot_now(&self) -> Result<raft::GroupSnapshot, ClusterError> {
        let stopped = |e| ClusterError::stopped(META_GROUP, e);
        let Some(applied) = self.raft.metrics().borrow_watched().last_applied.map(|l| l.index) else {
            return Ok(self.snapshot_state());
        };
        let current = |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= applied);
        if !current(&self.raft.metrics().borrow_watched()) {
            self.raft.trigger().snapshot().await.map_err(stopped)?;
            let wait = self.raft.wait(Some(SNAPSHOT_WAIT));
            wait.metrics(current, "a metadata snapshot").await.map_err(|e| ClusterError::Timeout(e.to_string()))?;
        }
        Ok(self.snapshot_state())
    }

    /// Whether `node` votes in the group.
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.raft.voter_ids().any(|v| v == node)
    }

    /// On the leader: makes a voter a learner (the first step of removing its node, taken
    /// while the node still answers: in a group of two voters the change needs its vote).
    /// Not while the voters left would have no live majority (false): the joint
    /// configuration needs one, and waiting for it would stop every metadata change.
    pub async fn demote_to_learner(&self, node: NodeId) -> Result<bool, ClusterError> {
        let left: Vec<NodeId> = self.raft.voter_ids().filter(|v| *v != node).collect();
        let live = left.iter().filter(|v| **v == self.me || !self.presumed_dead(**v)).count();
        if live <= left.len() / 2 {
            tracing::debug!(node, ?left, "not demoting yet: the voters left have no live majority");
            return Ok(false);
        }
        self.change_membership(ChangeMembers::RemoveVoters([node].into()), true).await?;
        tracing::info!(node, "no longer a voter of the metadata group (being removed)");
        Ok(true)
    }

    /// On the leader: takes a removed node (a learner by now) out of the group.
    pub async fn remove_member(&self, node: NodeId) -> Result<(), ClusterError> {
        self.change_membership(ChangeMembers::RemoveNodes([node].into()), false).await?;
        tracing::info!(node, "removed from the metadata group");
        Ok(())
    }

    /// A membership change of the group, waited for [`PROPOSE_TIMEOUT`] at most (one that
    /// cannot commit must not hold up the membership loop).
    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), ClusterError> {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.change_membership(change, retain)).await {
            Ok(changed) => changed.map(drop).map_err(|e| ClusterError::from_write(META_GROUP, e)),
            Err(_) => Err(ClusterError::Timeout(format!("a metadata membership change ({PROPOSE_TIMEOUT:?})"))),
        }
    }

    /// A producer id never handed out before, cluster-wide: the next of this node's reserved
    /// block (a new block is reserved through the metadata group when it runs out, or taken
    /// from the spare that [`Self::reserve_spare_producer_ids`] keeps).
    pub async fn allocate_producer_id(&self) -> Result<i64, ClusterError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.next >= ids.end {
            let start = match ids.spare.take() {
                Some(start) => start,
                None => self.reserve_producer_ids().await?,
            };
            (ids.next, ids.end) = (start, start + PRODUCER_ID_BLOCK as i64);
        }
        ids.next += 1;
        Ok(ids.next - 1)
    }

    /// Drops this node's reserved producer ids up to `max` (another broker's, imported), so
    /// none of them is handed out; the next allocation reserves a fresh block.
    pub async fn discard_producer_ids_through(&self, max: i64) {
        let mut ids = self.producer_ids.lock().await;
        if ids.next <= max {
            ids.next = ids.end;
        }
        if ids.spare.is_some_and(|start| start <= max) {
            ids.spare = None;
        }
    }

    /// Cluster mode: keeps a spare block of producer ids reserved once the current one is
    /// nine-tenths used (or there is none), as Kafka's brokers do, so that a node cut off from
    /// the metadata leader still answers InitProducerId for a while.
    pub async fn reserve_spare_producer_ids(&self) -> Result<(), ClusterError> {
        {
            let ids = self.producer_ids.lock().await;
            if ids.spare.is_some() || ids.end - ids.next > PRODUCER_ID_BLOCK as i64 / 10 {
                return Ok(());
            }
        }
        // Reserved without holding the lock: allocations go on meanwhile.
        let start = self.reserve_producer_ids().await?;
        let mut ids = self.producer_ids.lock().await;
        match ids.spare {
            // Another reservation won; this block is left unused (ids are plentiful).
            Some(_) => {}
            None => ids.spare = Some(start),
        }
        Ok(())
    }

    /// Reserves a block of producer ids through the metadata group; answers its first id.
    async fn reserve_producer_ids(&self) -> Result<i64, ClusterError> {
        match self.propose(MetaCommand::AllocateProducerIds { count: PRODUCER_ID_BLOCK }).await? {
            MetaResponse::ProducerIds { start } => Ok(start),
            other => Err(ClusterError::Internal(format!("producer ids answered with {other:?}"))),
        }
    }

    /// The group's leader (the "controller" in Kafka terms).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// This node's role in the group (see `raft::role_name`).
    pub fn role(&self) -> &'static str {
        raft::role_name(self.raft.metrics().borrow_watched().state)
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.raft.voter_ids().collect()
    }

    /// The group's members: (node, voter).
    pub fn members(&self) -> Vec<(NodeId, bool)> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        m.membership().nodes().map(|(id, _)| (*id, voters.contains(id))).collect()
    }

    /// On the leader, how many entries each member's log is behind its own (itself 0); empty
    /// elsewhere (only the leader follows replication).
    pub fn lag_behind_leader(&self) -> std::collections::HashMap<NodeId, u64> {
        let m = self.raft.metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        let Some(replication) = m.replication.as_ref().filter(|_| m.state == ServerState::Leader) else {
            return Default::default();
        };
        let mut lag: std::collections::HashMap<NodeId, u64> =
            replication.iter().map(|(id, matched)| (*id, last - matched.map_or(0, |l| l.index).min(last))).collect();
        lag.insert(self.me, 0);
        lag
    }

    /// What receives the messages other nodes send to this group: its Raft's, joins and
    /// forwarded proposals.
    pub fn inbound(self: &Arc<Self>) -> Arc<dyn Inbound> {
        Arc::new(MetaInbound(Arc::downgrade(self)))
    }

    /// Where this node leads the group: hands the leadership to voter `to` and waits until it
    /// leads.
    pub async fn hand_over_to(&self, to: NodeId) -> Result<(), ClusterError> {
        let handed = raft::hand_over_to(&self.raft, to, raft::transport::HAND_OVER_WAIT).await;
        handed.map_err(|e| ClusterError::from_hand_over(META_GROUP, to, e))
    }

    /// See `raft::hand_over_leadership`.
    pub async fn hand_over_leadership(&self, timeout: Duration) -> bool {
        raft::hand_over_leadership(&self.raft, self.me, timeout).await
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("stopping the metadata group: {e}");
        }
    }
}

/// The metadata group's side of the transport.
struct MetaInbound(Weak<MetaGroup>);

impl Inbound for MetaInbound {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Reply, String>> {
        let Some(meta) = self.0.upgrade() else { return Box::pin(async { Err("the node is stopping".into()) }) };
        Box::pin(async move {
            match request {
                Request::Join(node) => meta.admit(node).await.map(|cluster_id| Reply::Joined { cluster_id }),
                // Made here or refused: never forwarded again, so a proposal cannot circle.
                Request::Propose(cmd) => match meta.propose_at(cmd).await {
                    Ok((response, index)) => Ok(Reply::Proposed { response, index }),
                    Err(e) => Err(e.to_string()),
                },
                Request::HandOver { to } => meta.hand_over_to(to).await.map(|()| Reply::Ack).map_err(|e| e.to_string()),
                // Made here or refused: never forwarded again.
                Request::Promote { node } => {
                    let response = match meta.promote_here(node).await {
                        Ok(()) => MetaResponse::Done,
                        Err(ClusterError::Rejected(e)) => MetaResponse::Rejected(e),
                        Err(e) => return Err(e.to_string()),
                    };
                    Ok(Reply::Proposed { response, index: 0 })
                }
                raft_message => meta.raft.handle(raft_message).await,
            }
        })
    }
}
