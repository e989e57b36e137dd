//! Quorum-loss recovery: a stopped node whose peers are gone for good makes itself the only
//! voter of every group it holds, so that it can serve again on its next start.
//!
//! Raft cannot change a group's voters without a quorum of them, so this is done offline, in
//! the log: each group gets a membership entry naming this node alone, in a term above any
//! this node has seen in it, and a vote for itself in that term. (A lost node may have seen a
//! higher term; it is refused at the transport's handshake once the tombstones below apply.) On its next start the node elects itself in
//! each group and commits what its log holds, entries no quorum acknowledged included. The
//! metadata group also gets a [`MetaCommand::RecoverQuorumLoss`] entry: once committed it
//! removes every other node (their ids are tombstoned, as their logs may have diverged) and
//! makes this node the only replica of the partitions it holds. Partitions it holds no log of
//! (no replica here, a replica still to receive its first entries, or one of a topic whose
//! creation this node had not applied yet) are lost: they keep replicas that are all removed.
//!
//! Unsafe by nature, as Raft's guarantees need a quorum: it must run on one node only (two
//! nodes recovered apart make two clusters), and writes acknowledged by a quorum this node was
//! not part of are lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chronik_wal::Wal;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{BasicNode, EntryPayload, Membership};

use super::NodeOptions;
use super::data_dir::DataDir;
use crate::error::ClusterError;
use crate::metadata::{META_GROUP, MetaCommand};
use crate::raft::{Command, Entry, GroupId, NodeId, Vote, log_id};
use crate::storage::LogStore;

/// What a recovery wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumLossRecovery {
    pub node_id: NodeId,
    pub cluster_id: uuid::Uuid,
    /// The groups this node is now the only voter of, each with the term of its new membership.
    /// The metadata group is group 0.
    pub groups: BTreeMap<GroupId, u64>,
    /// Groups present on this node with no log at all (a replica that never received an
    /// entry): left alone, as there is nothing of them to serve.
    pub empty_groups: Vec<GroupId>,
}

/// Makes the node of `opts` (stopped: its data directory must not be locked) the only voter
/// of every group it holds. See the module documentation for what this gives up.
pub async fn recover_from_quorum_loss(opts: &NodeOptions) -> Result<QuorumLossRecovery, ClusterError> {
    if opts.cluster.is_none() {
        return Err(ClusterError::DataDir(
            "quorum-loss recovery is for a node of a cluster (`[cluster] enabled = true`); a standalone node has no \
             quorum to lose"
                .into(),
        ));
    }
    let data_dir = DataDir::claim(&opts.data_dir, opts.node_id)?;
    let Some(identity) = data_dir.identity else {
        return Err(ClusterError::DataDir(format!(
            "{} holds no node of any cluster (no identity file): there is nothing to recover",
            opts.data_dir.display()
        )));
    };
    let (wal, _) = Wal::open(&opts.data_dir.join("wal"), opts.wal.clone())?;
    let wal = Arc::new(wal);
    let all = wal.groups();
    if !all.contains(&META_GROUP) {
        return Err(ClusterError::DataDir(format!(
            "{} holds no metadata group: this node never joined its cluster, so there is nothing to recover",
            opts.data_dir.display()
        )));
    }
    let me = BTreeMap::from([(opts.node_id, BasicNode::new(&opts.raft_addr))]);
    let alone = Membership::new(vec![BTreeSet::from([opts.node_id])], me)
        .map_err(|e| ClusterError::Internal(format!("a membership of this node alone: {e}")))?;
    let mut report = QuorumLossRecovery {
        node_id: opts.node_id,
        cluster_id: identity.cluster_id,
        groups: BTreeMap::new(),
        empty_groups: Vec::new(),
    };
    // Partitions first: the metadata entry names the groups that were recovered.
    for group in all.iter().copied().filter(|g| *g != META_GROUP) {
        match force_sole_voter(&wal, group, opts.node_id, &alone, None).await? {
            Some(term) => {
                report.groups.insert(group, term);
            }
            None => report.empty_groups.push(group),
        }
    }
    let recovered: Vec<GroupId> = report.groups.keys().copied().collect();
    let cmd = MetaCommand::RecoverQuorumLoss { survivor: opts.node_id, groups: recovered };
    let term = force_sole_voter(&wal, META_GROUP, opts.node_id, &alone, Some(cmd)).await?.ok_or_else(|| {
        ClusterError::DataDir("the metadata group has no log on this node: there is nothing to recover".into())
    })?;
    report.groups.insert(META_GROUP, term);
    wal.sync()?;
    wal.close()?;
    Ok(report)
}

/// Appends to `group`'s log a membership of `alone` (then `then`, if any) in a term above
/// every one this node has seen in the group, and votes for this node in that term. Answers the term, or
/// `None` for a group with no log (left alone).
async fn force_sole_voter(
    wal: &Arc<Wal>,
    group: GroupId,
    me: NodeId,
    alone: &Membership<NodeId, BasicNode>,
    then: Option<MetaCommand>,
) -> Result<Option<u64>, ClusterError> {
    let mut store = LogStore::new(wal.clone(), group, None);
    let io = |what: &str, e: std::io::Error| ClusterError::io(format!("group {group}: {what}"), e);
    let last = store.get_log_state().await.map_err(|e| io("reading the log's state", e))?.last_log_id;
    let Some(last) = last else { return Ok(None) };
    let vote = store.read_vote().await.map_err(|e| io("reading the vote", e))?;
    let term = vote.map_or(0, |v| v.leader_id.term).max(last.leader_id.term) + 1;
    let mut entries =
        vec![Entry { log_id: log_id(term, last.index + 1), payload: EntryPayload::Membership(alone.clone()) }];
    if let Some(cmd) = then {
        entries.push(Entry { log_id: log_id(term, last.index + 2), payload: EntryPayload::Normal(Command::Meta(cmd)) });
    }
    store.write(entries, None).map_err(|e| io("writing the membership", e))?;
    // Voted for itself in that term, not yet elected: on start it campaigns in a later term,
    // wins alone, and commits everything above with its first entry.
    store.write_vote(&Vote::new(term, me), None).map_err(|e| io("writing the vote", e))?;
    Ok(Some(term))
}
