//! Votes, committed positions and snapshot metadata as earlier builds stored them, with
//! openraft's default leader ids (a term and a node id, several leaders allowed per term).
//! Chronik now uses standard Raft leader ids (one leader per term: the term is the Kafka
//! leader epoch) and stores these records under new keys; a data directory an earlier build
//! wrote is read through these mirrors once and written back in the current form.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::raft::{LogId, NodeId, SnapshotMeta, StoredMembership, Vote, log_id};

#[derive(Serialize, Deserialize)]
struct LeaderId {
    term: u64,
    node_id: NodeId,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct LegacyLogId {
    leader_id: LeaderId,
    index: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct LegacyVote {
    leader_id: LeaderId,
    committed: bool,
}

#[derive(Serialize, Deserialize)]
struct LegacyStoredMembership {
    log_id: Option<LegacyLogId>,
    membership: openraft::Membership<NodeId, openraft::BasicNode>,
}

#[derive(Serialize, Deserialize)]
struct LegacySnapshotMeta {
    last_log_id: Option<LegacyLogId>,
    last_membership: LegacyStoredMembership,
    snapshot_id: String,
}

/// A stored snapshot record as earlier builds wrote it.
#[derive(Serialize, Deserialize)]
pub(crate) struct LegacyStoredSnapshot {
    meta: LegacySnapshotMeta,
    data: Bytes,
}

impl From<LegacyLogId> for LogId {
    fn from(l: LegacyLogId) -> LogId {
        log_id(l.leader_id.term, l.index)
    }
}

impl From<LegacyVote> for Vote {
    fn from(v: LegacyVote) -> Vote {
        if v.committed {
            Vote::new_committed(v.leader_id.term, v.leader_id.node_id)
        } else {
            Vote::new(v.leader_id.term, v.leader_id.node_id)
        }
    }
}

impl LegacyStoredSnapshot {
    pub(crate) fn into_current(self) -> (SnapshotMeta, Bytes) {
        let m = self.meta;
        let membership = StoredMembership::new(m.last_membership.log_id.map(LogId::from), m.last_membership.membership);
        (SnapshotMeta { last_log_id: m.last_log_id.map(LogId::from), last_membership: membership }, self.data)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::BasicNode;

    use super::*;

    #[test]
    fn earlier_records_read_as_the_same_positions() {
        let lid = |term, node_id| LeaderId { term, node_id };
        let vote = LegacyVote { leader_id: lid(7, 2), committed: true };
        let bytes = postcard::to_stdvec(&vote).unwrap();
        let back: Vote = postcard::from_bytes::<LegacyVote>(&bytes).unwrap().into();
        assert_eq!(back, Vote::new_committed(7, 2));
        let uncommitted: Vote = LegacyVote { leader_id: lid(3, 1), committed: false }.into();
        assert_eq!(uncommitted, Vote::new(3, 1));

        let committed = Some(LegacyLogId { leader_id: lid(7, 2), index: 99 });
        let bytes = postcard::to_stdvec(&committed).unwrap();
        let back: Option<LogId> = postcard::from_bytes::<Option<LegacyLogId>>(&bytes).unwrap().map(Into::into);
        assert_eq!(back, Some(log_id(7, 99)));

        let nodes = BTreeMap::from([(1, BasicNode::new("a:1")), (2, BasicNode::new("b:2"))]);
        let membership = openraft::Membership::new(vec![BTreeSet::from([1, 2])], nodes).unwrap();
        let snapshot = LegacyStoredSnapshot {
            meta: LegacySnapshotMeta {
                last_log_id: Some(LegacyLogId { leader_id: lid(4, 1), index: 50 }),
                last_membership: LegacyStoredMembership {
                    log_id: Some(LegacyLogId { leader_id: lid(1, 1), index: 1 }),
                    membership: membership.clone(),
                },
                snapshot_id: "4-1-50".into(),
            },
            data: Bytes::from_static(b"state"),
        };
        let bytes = postcard::to_stdvec(&snapshot).unwrap();
        let (meta, data) = postcard::from_bytes::<LegacyStoredSnapshot>(&bytes).unwrap().into_current();
        assert_eq!(meta.last_log_id, Some(log_id(4, 50)));
        assert_eq!(meta.last_membership, StoredMembership::new(Some(log_id(1, 1)), membership));
        assert_eq!(data, Bytes::from_static(b"state"));
    }
}
