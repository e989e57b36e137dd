//! The operator's cluster operations, as the node sees them: moving partitions and removing
//! nodes (requests made through the metadata group; each partition leader carries its moves
//! out, the metadata leader retires nodes that host nothing any more, and a removed node
//! notices that it is), promoting a metadata learner, and handing a group's leadership to a
//! chosen voter.

use std::collections::BTreeSet;

use super::Node;
use crate::error::ClusterError;
use crate::metadata::{META_GROUP, MetaCommand, MetaError};
use crate::raft::NodeId;
use crate::raft::transport::{HAND_OVER_WAIT, Reply, Request};

/// The group whose leadership an operator moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipTarget {
    Metadata,
    Partition { topic: String, partition: i32 },
}

/// One replica set change, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    pub topic: String,
    pub partition: i32,
    pub from: Vec<NodeId>,
    pub to: Vec<NodeId>,
}

impl Node {
    /// Starts removing `node` from the cluster: each partition replica on it moves to the
    /// active node hosting the fewest; once none is left there, the metadata leader removes
    /// the node from the metadata group and tombstones its id, and the node stops itself.
    /// Answers the moves this started.
    pub async fn remove_node(&self, node: NodeId) -> Result<Vec<PlannedMove>, ClusterError> {
        self.propose_meta(MetaCommand::RemoveNode { node }).await?;
        Ok(self.moves_in_progress().into_iter().filter(|m| m.from.contains(&node) && !m.to.contains(&node)).collect())
    }

    /// Makes `node`, a caught-up learner of the metadata group, a voter now (asked of any
    /// node; the metadata leader makes it). Nodes are promoted on their own up to five voters;
    /// this is how an operator goes past that, or does not wait.
    pub async fn promote(&self, node: NodeId) -> Result<(), ClusterError> {
        self.meta.promote(node).await
    }

    /// Starts moving a partition to `replicas` (carried out by its leader).
    pub async fn move_partition(
        &self,
        topic: &str,
        partition: i32,
        replicas: Vec<NodeId>,
    ) -> Result<Option<PlannedMove>, ClusterError> {
        let cmd = MetaCommand::MovePartition { topic: topic.to_string(), partition, replicas };
        self.propose_meta(cmd).await?;
        Ok(self.moves_in_progress().into_iter().find(|m| m.topic == topic && m.partition == partition))
    }

    /// Every partition move under way.
    pub fn moves_in_progress(&self) -> Vec<PlannedMove> {
        self.with_metadata(|m| {
            m.topics
                .values()
                .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
                .filter_map(|(t, p)| {
                    let to = m.moves.get(&p.group)?;
                    Some(PlannedMove {
                        topic: t.name.clone(),
                        partition: p.partition,
                        from: p.replicas.clone(),
                        to: to.clone(),
                    })
                })
                .collect()
        })
    }

    /// Hands the leadership of `target` to its voter `to` and waits until `to` leads (the
    /// request goes to the current leader, wherever it is). Answers at once if `to` leads.
    pub async fn transfer_leadership(&self, target: &LeadershipTarget, to: NodeId) -> Result<(), ClusterError> {
        let (group, leader, voters) = match target {
            LeadershipTarget::Metadata => (META_GROUP, self.meta.leader(), self.meta.voters()),
            LeadershipTarget::Partition { topic, partition } => {
                let (group, replicas) = self.with_metadata(|m| {
                    let p = m.partition(topic, *partition)?;
                    // During a move the group's voters are somewhere between the two sets.
                    let mut all = p.replicas.clone();
                    all.extend(m.moves.get(&p.group).into_iter().flatten().filter(|n| !p.replicas.contains(n)));
                    Ok::<_, MetaError>((p.group, all))
                })?;
                // The group's own voters where it is hosted here; else those it may have (its
                // leader refuses a node that does not vote).
                let voters = self.registry.by_group(group).map_or(replicas, |r| r.replication().voters);
                (group, self.partition_leader(topic, *partition).leader, voters)
            }
        };
        if !voters.contains(&to) {
            return Err(ClusterError::NotVoter { node: to });
        }
        // A leader known from another node's report may be stale: the request goes to it
        // anyway, and a node that already is the leader answers at once.
        match leader {
            Some(l) if l == self.node_id => match target {
                LeadershipTarget::Metadata => self.meta.hand_over_to(to).await,
                LeadershipTarget::Partition { .. } => match self.registry.by_group(group) {
                    Some(replica) => replica.hand_over_to(to).await,
                    None => Err(ClusterError::NotLeader { group, leader: None }),
                },
            },
            Some(l) => {
                let reply = self.transport.send(l, group, Request::HandOver { to }, HAND_OVER_WAIT * 2).await;
                match reply.map_err(|e| ClusterError::from_transport(l, e))? {
                    Reply::Ack => Ok(()),
                    _ => Err(ClusterError::Internal(format!("node {l} answered a hand-over with another reply"))),
                }
            }
            None => Err(ClusterError::NotLeader { group, leader: None }),
        }
    }

    /// Nodes being removed.
    pub fn leaving_nodes(&self) -> BTreeSet<NodeId> {
        self.with_metadata(|m| m.leaving.clone())
    }

    /// Takes the next step of every move of a partition this node leads, and records the moves
    /// whose group membership is done.
    pub(super) async fn advance_moves(&self) {
        let moves: Vec<(u64, Vec<NodeId>)> = self.with_metadata(|m| m.moves.clone().into_iter().collect());
        for (group, to) in moves {
            let Some(replica) = self.registry.by_group(group) else { continue };
            let target: BTreeSet<NodeId> = to.iter().copied().collect();
            let addr =
                |n: NodeId| self.with_metadata(|m| m.nodes.get(&n).map(|n| n.raft_addr.clone()).unwrap_or_default());
            match replica.advance_move(self.node_id, &target, addr).await {
                Ok(false) => {}
                Ok(true) => match self.propose_meta(MetaCommand::FinishMove { group, replicas: to.clone() }).await {
                    Ok(()) => tracing::info!(
                        topic = %replica.topic(),
                        partition = replica.partition(),
                        replicas = ?to,
                        "partition moved"
                    ),
                    // Another leader of the group finished it first.
                    Err(ClusterError::Rejected(MetaError::InvalidReplicas(_))) => {}
                    Err(e) => tracing::warn!(group, "recording a finished move: {e}"),
                },
                Err(e) => {
                    tracing::warn!(topic = %replica.topic(), partition = replica.partition(), "moving replicas: {e}")
                }
            }
        }
    }

    /// On the metadata leader, for a leaving node that hosts nothing any more: it stops being
    /// a metadata voter (while it still answers: a group of two voters needs its vote for
    /// that), then its id is tombstoned, and once it has stopped (or is dead) it is taken out
    /// of the group. While it is still a learner the leader keeps replicating to it, so it
    /// learns that its tombstone committed and stops itself; taken out at once, it might never
    /// hear of it. The leader hands the group over first if it is the one leaving.
    pub(super) async fn retire_leaving_nodes(&self) {
        if self.meta.leader() != Some(self.node_id) {
            return;
        }
        let members = self.meta.members();
        let (done, removed_members) = self.with_metadata(|m| {
            let done: Vec<NodeId> = m.leaving.iter().copied().filter(|n| !m.hosts_anything(*n)).collect();
            let now = std::time::Instant::now();
            let stopped = |id: NodeId| self.liveness.as_ref().is_none_or(|l| l.presumed_dead(id, now));
            let removed: Vec<NodeId> =
                members.iter().map(|(id, _)| *id).filter(|id| m.removed_nodes.contains(id) && stopped(*id)).collect();
            (done, removed)
        });
        for node in done {
            if node == self.node_id {
                self.meta.hand_over_leadership(super::HAND_OVER_TIMEOUT).await;
                return;
            }
            if self.meta.is_voter(node) {
                if let Err(e) = self.meta.demote_to_learner(node).await.map(drop) {
                    tracing::warn!(node, "removing a node from the metadata voters: {e}");
                }
                continue;
            }
            // Tombstoned while still a member, so the node applies its own removal and stops.
            match self.propose_meta(MetaCommand::ForgetNode { node }).await {
                Ok(()) => tracing::info!(node, "node removed from the cluster"),
                Err(e) => tracing::warn!(node, "removing a node: {e}"),
            }
        }
        for node in removed_members {
            if let Err(e) = self.meta.remove_member(node).await {
                tracing::warn!(node, "taking a removed node out of the metadata group: {e}");
            }
        }
    }

    /// Whether this node's id is tombstoned: it was removed from the cluster (it applied its
    /// tombstone, or a peer refused it as removed).
    pub fn is_removed(&self) -> bool {
        self.meta.tombstoned() || self.meta.told_removed()
    }

    /// Resolves once this node has been removed from the cluster (never, standalone).
    pub async fn removed_from_cluster(&self) {
        let mut version = self.meta.subscribe();
        let tombstone_applied = async {
            while !self.meta.tombstoned() {
                if version.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = tombstone_applied => {}
            () = self.meta.until_told_removed() => {}
        }
    }
}
