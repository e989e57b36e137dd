//! openraft as Chronik uses it: the types every group shares (commands, responses, the type
//! config), the network, and how a group of one goes quiet. Nothing outside this crate sees
//! an openraft type.

mod network;
#[cfg(test)]
pub(crate) mod sim;
pub(crate) mod transport;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};

pub(crate) use network::{MESSAGE_ENVELOPE, NetworkFactory, PeerSettings};
pub(crate) use transport::{Inbound, NoTransport, SharedTransport, SnapshotSource};

use crate::metadata::{MetaCommand, MetaResponse};

pub type NodeId = u64;
/// A Raft group (and WAL group): `__meta` is 0, partitions get ids from the metadata.
pub type GroupId = u64;

/// What a group's log entries carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Kafka record batches for a partition, exactly as the client sent them (compressed batches
    /// stay compressed). The log store stamps base offsets and the leader epoch into them.
    Produce { records: Bytes },
    /// Record batches copied from another log (a migration): they keep the offsets stamped in
    /// them, which may leave gaps, and only the leader epoch is stamped. The entry spans the
    /// offsets from the partition's log tail to its last batch's last offset, so the offsets
    /// stay a function of the log alone.
    Import { records: Bytes },
    /// Moves the partition's log start offset forward (DeleteRecords, retention).
    AdvanceLogStart { offset: u64 },
    /// Forgets the partition's idempotent producers last seen before this time (ms), as the
    /// leader proposes it: the time travels in the log, so every replica forgets the same.
    ExpireProducers { before_ms: i64 },
    /// A compaction pass the leader decided: every replica runs it over its own segment files
    /// and, compaction being a pure function of the log and the plan, keeps the same records.
    Compact(CompactionPlan),
    /// A metadata change (`__meta` group only).
    Meta(MetaCommand),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Produce { records } => write!(f, "produce({} bytes)", records.len()),
            Command::Import { records } => write!(f, "import({} bytes)", records.len()),
            Command::AdvanceLogStart { offset } => write!(f, "advance-log-start({offset})"),
            Command::ExpireProducers { before_ms } => write!(f, "expire-producers(before {before_ms})"),
            Command::Compact(p) => write!(f, "compact({}..{} at {})", p.dirty_start, p.end, p.now_ms),
            Command::Meta(m) => write!(f, "meta:{m}"),
        }
    }
}

/// One compaction pass over a partition (`cleanup.policy=compact`), with everything that
/// decides what it keeps: the records in `[dirty_start, end)` supersede older ones with the
/// same key, and tombstones older than `delete_retention_ms` at `now_ms` go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionPlan {
    /// Where the part not yet cleaned starts (the previous pass's end).
    pub dirty_start: u64,
    /// Offsets from here on are left alone.
    pub end: u64,
    /// The leader's clock when it decided.
    pub now_ms: i64,
    pub delete_retention_ms: i64,
}

/// What applying an entry answered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    Produced {
        base_offset: u64,
        last_offset: u64,
    },
    LogStart {
        offset: u64,
    },
    Meta(MetaResponse),
    /// The command could not be applied by this group (e.g. a metadata command in a partition).
    Invalid(String),
}

openraft::declare_raft_types!(
    /// Raft types for every Chronik group (partitions and `__meta`). Leader ids are Raft's
    /// standard ones, at most one leader per term: the term is the Kafka leader epoch, which
    /// must name one leader (openraft's default ids let several leaders share a term).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// Snapshots of both kinds of group are small serialized values.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Bytes>;

/// The id of the entry at `index` written in `term` (a term has one leader, so the term
/// names it).
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(term.into(), index)
}

/// A group whose only voter is this node needs no timers once it leads: no one to heartbeat,
/// no election to time out. Stopping its ticks is what lets thousands of partitions idle.
pub(crate) async fn quiet_if_alone<SM: openraft::storage::RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    me: NodeId,
) {
    // The membership is known once the group has a leader (an alone voter elects itself at once).
    let led = raft.wait(Some(Duration::from_secs(10))).metrics(|m| m.current_leader.is_some(), "a leader").await;
    if let Err(e) = &led {
        // A group of one elects itself at once: waiting this long means something is stuck.
        let m = raft.metrics().borrow_watched().clone();
        tracing::warn!(state = ?m.state, term = m.current_term, "a group of one has no leader yet: {e}");
    }
    let voters: Vec<NodeId> = raft.voter_ids().collect();
    if led.is_ok() && voters == [me] && raft.metrics().borrow_watched().state == ServerState::Leader {
        raft.runtime_config().tick(false);
    }
}

/// Hands the group's leadership, if this node holds it, to the voter whose log is furthest
/// along, and waits up to `timeout` until another node leads. True when another node leads
/// (or this node did not lead, or leads alone: nobody to hand over to).
pub(crate) async fn hand_over_leadership<SM: openraft::storage::RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    me: NodeId,
    timeout: Duration,
) -> bool {
    let m = raft.metrics().borrow_watched().clone();
    let Some(progress) = m.replication.as_ref().filter(|_| m.state == ServerState::Leader) else {
        return true;
    };
    let matched = |id: &NodeId| progress.get(id).copied().flatten().map(|l| l.index);
    let Some(to) = m.membership_config.membership().voter_ids().filter(|v| *v != me).max_by_key(|v| matched(v)) else {
        return true;
    };
    if !transfer_leadership(raft, to).await {
        return false;
    }
    raft.wait(Some(timeout)).metrics(|m| m.current_leader.is_some_and(|l| l != me), "another leader").await.is_ok()
}

/// Asks the group's leader (this node) to hand the leadership to `to`; false if the group
/// has stopped. The transfer itself completes in the background.
pub(crate) async fn transfer_leadership<SM: openraft::storage::RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    to: NodeId,
) -> bool {
    // The new leader takes over only once its log is flushed up to the leader's as far as
    // this process run knows; a follower restarted while its group idled (no heartbeats) has
    // flushed nothing yet, and a heartbeat is what brings it to that point.
    raft.trigger().heartbeat().await.is_ok() && raft.trigger().transfer_leader(to).await.is_ok()
}

/// Why a hand-over to a chosen voter did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandOverRefused {
    /// This node does not lead the group (`leader` does, if known).
    Elsewhere { leader: Option<NodeId> },
    /// The chosen node does not vote in the group.
    NoVote,
    /// The group stopped, or the chosen node did not take over within the time given.
    Untaken { after: Duration },
}

/// On the group's leader (this node): hands the leadership to voter `to` and waits up to
/// `timeout` until it leads.
pub(crate) async fn hand_over_to<SM: openraft::storage::RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    to: NodeId,
    timeout: Duration,
) -> Result<(), HandOverRefused> {
    let m = raft.metrics().borrow_watched().clone();
    if m.current_leader == Some(to) {
        return Ok(());
    }
    if m.state != ServerState::Leader {
        return Err(HandOverRefused::Elsewhere { leader: m.current_leader });
    }
    if !m.membership_config.membership().voter_ids().any(|v| v == to) {
        return Err(HandOverRefused::NoVote);
    }
    if !transfer_leadership(raft, to).await {
        return Err(HandOverRefused::Untaken { after: Duration::ZERO });
    }
    let led = raft.wait(Some(timeout)).metrics(|m| m.current_leader == Some(to), "the new leader").await;
    led.map(drop).map_err(|_| HandOverRefused::Untaken { after: timeout })
}

/// A group's Raft role, as metrics and the admin API name it.
pub(crate) fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// A group's last snapshot on this node, and how far its WAL entries are purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub group: GroupId,
    /// `None` for the metadata group.
    pub topic: Option<String>,
    pub partition: Option<i32>,
    /// The Raft index and term the snapshot covers (`None`: none taken yet).
    pub index: Option<u64>,
    pub term: Option<u64>,
    /// The last Raft index dropped from the WAL.
    pub purged_through: Option<u64>,
}

/// From a group's metrics; `place` is a partition's topic and number.
pub(crate) fn group_snapshot(
    group: GroupId,
    place: Option<(String, i32)>,
    m: &openraft::RaftMetrics<TypeConfig>,
) -> GroupSnapshot {
    let (topic, partition) = place.map_or((None, None), |(t, p)| (Some(t), Some(p)));
    GroupSnapshot {
        group,
        topic,
        partition,
        index: m.snapshot.map(|s| s.index),
        term: m.snapshot.map(|s| s.leader_id.term),
        purged_through: m.purged.map(|p| p.index),
    }
}
