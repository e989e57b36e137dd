//! Moving a partition's replicas to other nodes, as its leader carries it out: new replicas
//! join as learners and catch up (by log, or by a snapshot that carries the data), then the
//! voters change through openraft's joint consensus, and a leader that is not among the new
//! replicas hands its leadership to one that is. [`next_step`] decides, from what the leader
//! sees; [`PartitionReplica::advance_move`] takes the step.

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};

use super::PartitionReplica;
use crate::error::ClusterError;
use crate::raft::NodeId;

/// A learner this close to the leader's last entry is caught up enough to become a voter (a
/// voter further behind would hold back commits under the new membership until it caught up).
const CAUGHT_UP_SLACK: u64 = 64;
/// The longest one membership change is waited for: one that cannot commit (a new voter died
/// meanwhile) must not hold up the node's other moves; the next round looks again.
const CHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the leader sees of its group.
#[derive(Debug, Clone)]
pub(crate) struct GroupView {
    pub me: NodeId,
    /// Every voter, of both configurations while a joint one is in force.
    pub voters: BTreeSet<NodeId>,
    /// Voters and learners.
    pub members: BTreeSet<NodeId>,
    /// A joint configuration is in force (a change was cut short by a leader change).
    pub joint: bool,
    /// The newest membership in the log has committed. A leader newly elected may hold one
    /// that has not: a move is done only once it has, or a replica the metadata then drops
    /// could still be needed for a quorum.
    pub membership_committed: bool,
    pub last_log_index: u64,
    /// The last entry each other member is known to hold.
    pub matched: BTreeMap<NodeId, u64>,
}

/// The next thing the leader does to move its group to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MoveStep {
    /// Add these nodes as learners: their replicas start empty and the leader brings them the
    /// log.
    AddLearners(BTreeSet<NodeId>),
    /// These learners are still behind; nothing to do yet.
    CatchUp(BTreeSet<NodeId>),
    /// Make exactly these the voters.
    SetVoters(BTreeSet<NodeId>),
    /// Drop these members (learners left over).
    RemoveMembers(BTreeSet<NodeId>),
    /// The leader is not one of the new replicas: it hands the leadership to this one.
    HandOver(NodeId),
    /// The newest membership has not committed yet; nothing to do until it has.
    AwaitCommit,
    /// The group's members are the target.
    Done,
}

pub(crate) fn next_step(v: &GroupView, target: &BTreeSet<NodeId>) -> MoveStep {
    if !v.membership_committed {
        return MoveStep::AwaitCommit;
    }
    let missing: BTreeSet<NodeId> = target.difference(&v.members).copied().collect();
    if !missing.is_empty() {
        return MoveStep::AddLearners(missing);
    }
    let matched = |n: &NodeId| if *n == v.me { v.last_log_index } else { v.matched.get(n).copied().unwrap_or(0) };
    let behind: BTreeSet<NodeId> =
        target.difference(&v.voters).filter(|n| matched(n) + CAUGHT_UP_SLACK < v.last_log_index).copied().collect();
    if !behind.is_empty() {
        return MoveStep::CatchUp(behind);
    }
    // The leader stays a voter until it has handed over: a leader that votes itself out
    // would leave the group leaderless until an election.
    let mut voters = target.clone();
    voters.insert(v.me);
    if v.voters != voters || v.joint {
        return MoveStep::SetVoters(voters);
    }
    let extra: BTreeSet<NodeId> = v.members.difference(&voters).copied().collect();
    if !extra.is_empty() {
        return MoveStep::RemoveMembers(extra);
    }
    if !target.contains(&v.me) {
        // The most caught-up of the new replicas; ties to the lowest id.
        let to = target.iter().copied().max_by_key(|n| (matched(n), std::cmp::Reverse(*n)));
        return MoveStep::HandOver(to.expect("a move has at least one replica"));
    }
    MoveStep::Done
}

impl PartitionReplica {
    /// Where this node (`me`) leads the group: takes the next step of moving it to `target`
    /// (`addr` gives a node's Raft address). True once the group's members are the target,
    /// committed; false while the move goes on (or this node does not lead).
    pub(crate) async fn advance_move(
        &self,
        me: NodeId,
        target: &BTreeSet<NodeId>,
        addr: impl Fn(NodeId) -> String,
    ) -> Result<bool, ClusterError> {
        if !self.is_leader(me) {
            return Ok(false);
        }
        let view = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            GroupView {
                me,
                voters: membership.voter_ids().collect(),
                members: membership.nodes().map(|(id, _)| *id).collect(),
                joint: membership.get_joint_config().len() > 1,
                membership_committed: m.committed_membership_config.log_id() == m.membership_config.log_id(),
                last_log_index: m.last_log_index.unwrap_or(0),
                matched: m
                    .replication
                    .iter()
                    .flatten()
                    .filter_map(|(id, l)| l.as_ref().map(|l| (*id, l.index)))
                    .collect(),
            }
        };
        let step = next_step(&view, target);
        tracing::debug!(group = self.group, ?step, "moving replicas");
        let group = self.group;
        let changed = |r: Result<Result<_, _>, tokio::time::error::Elapsed>| match r {
            Ok(written) => written.map(drop).map_err(|e| ClusterError::from_write(group, e)),
            Err(_) => Err(ClusterError::Timeout(format!("group {group}: a membership change ({CHANGE_TIMEOUT:?})"))),
        };
        match step {
            MoveStep::AddLearners(nodes) => {
                // Membership changes are writes: a quiet leader confirms its lease first.
                self.renew_lease().await;
                for n in nodes {
                    tracing::info!(topic = %self.topic, partition = self.partition, node = n, "adding a replica");
                    changed(bounded(self.raft.add_learner(n, BasicNode::new(addr(n)), false)).await)?;
                }
            }
            MoveStep::CatchUp(_) | MoveStep::AwaitCommit => {}
            MoveStep::SetVoters(voters) => {
                self.renew_lease().await;
                tracing::info!(topic = %self.topic, partition = self.partition, ?voters, "changing the voters");
                changed(bounded(self.raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false)).await)?;
            }
            MoveStep::RemoveMembers(nodes) => {
                self.renew_lease().await;
                changed(bounded(self.raft.change_membership(ChangeMembers::RemoveNodes(nodes), false)).await)?;
            }
            MoveStep::HandOver(to) => {
                tracing::info!(topic = %self.topic, partition = self.partition, to, "handing over to a new replica");
                crate::raft::transfer_leadership(&self.raft, to).await;
            }
            MoveStep::Done => return Ok(true),
        }
        Ok(false)
    }
}

/// A membership change, waited for [`CHANGE_TIMEOUT`] at most.
fn bounded<F: std::future::Future>(change: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(CHANGE_TIMEOUT, change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn view(me: NodeId, voters: &[NodeId], learners: &[NodeId], matched: &[(NodeId, u64)]) -> GroupView {
        GroupView {
            me,
            voters: set(voters),
            members: voters.iter().chain(learners).copied().collect(),
            joint: false,
            membership_committed: true,
            last_log_index: 1000,
            matched: matched.iter().copied().collect(),
        }
    }

    #[test]
    fn step_table() {
        use MoveStep::*;
        let all = [(1, 1000), (2, 1000), (3, 1000), (4, 1000)];
        // (what happens, the leader's view, the target, the step)
        let cases: Vec<(&str, GroupView, &[NodeId], MoveStep)> = vec![
            ("a new node joins as a learner", view(1, &[1, 2, 3], &[], &all), &[1, 2, 4], AddLearners(set(&[4]))),
            ("it catches up first", view(1, &[1, 2, 3], &[4], &[(2, 1000), (4, 900)]), &[1, 2, 4], CatchUp(set(&[4]))),
            (
                "within the slack is caught up",
                view(1, &[1, 2, 3], &[4], &[(4, 950)]),
                &[1, 2, 4],
                SetVoters(set(&[1, 2, 4])),
            ),
            (
                "the leader stays a voter until it hands over",
                view(3, &[1, 2, 3], &[4], &all),
                &[1, 2, 4],
                SetVoters(set(&[1, 2, 3, 4])),
            ),
            (
                "then hands over to the most caught-up new replica",
                view(3, &[1, 2, 3, 4], &[], &[(1, 990), (2, 1000), (4, 1000)]),
                &[1, 2, 4],
                HandOver(2),
            ),
            ("the new leader drops the old", view(2, &[1, 2, 3, 4], &[], &all), &[1, 2, 4], SetVoters(set(&[1, 2, 4]))),
            (
                "a joint configuration is finished",
                GroupView { joint: true, ..view(1, &[1, 2, 4], &[], &all) },
                &[1, 2, 4],
                SetVoters(set(&[1, 2, 4])),
            ),
            ("left-over learners go", view(1, &[1, 2, 4], &[3], &all), &[1, 2, 4], RemoveMembers(set(&[3]))),
            ("done", view(1, &[1, 2, 4], &[], &all), &[1, 2, 4], Done),
            (
                "not done before the membership commits (a new leader)",
                GroupView { membership_committed: false, ..view(1, &[1, 2, 4], &[], &all) },
                &[1, 2, 4],
                AwaitCommit,
            ),
            ("every replica moves", view(1, &[1], &[], &[]), &[2, 3], AddLearners(set(&[2, 3]))),
        ];
        for (name, v, target, expected) in cases {
            assert_eq!(next_step(&v, &set(target)), expected, "{name}");
        }
    }
}
