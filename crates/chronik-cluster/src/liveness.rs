//! Node-level liveness: which peers are alive, judged once per node rather than once per Raft
//! group, and what that means for each hosted group's own timers.
//!
//! A node with thousands of replicas cannot let every group heartbeat and run election timers
//! on its own (each openraft group ticks about five times per heartbeat interval). Instead
//! every node sends every other a heartbeat once per heartbeat interval, and twice a second
//! which groups it leads (see `node/leadership.rs`); a peer heard from within an election
//! timeout, whose connection has not broken since, is alive. Then:
//!
//! - a follower whose group's leader is a live node that reports leading it needs no timers:
//!   no election can be wanted;
//! - a leader needs its timers (heartbeats) only while it has something to replicate: a
//!   follower behind, or entries still arriving;
//! - a group whose leader is dead (or unknown) gets its timers back as a backstop, and one
//!   designated surviving voter asks for the leadership at once (a pre-vote), the others
//!   after it in turn, so a dead node's groups do not all start competing elections.
//!
//! The decisions are plain functions of what a node knows, tested by tables below; the loop
//! that applies them is `node/timers.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::raft::{GroupId, NodeId};

/// What the transport knows of a peer: when a frame last came from it, when a connection to
/// it last broke or was refused, and when a connection with it last completed its handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Evidence {
    pub heard: Option<Instant>,
    pub lost: Option<Instant>,
    pub connected: Option<Instant>,
}

/// The transport's evidence about a peer (TCP; none in the in-process tests).
pub(crate) type HeardElsewhere = Box<dyn Fn(NodeId) -> Evidence + Send + Sync>;

/// When each peer was last heard from, and how long a silence makes it dead.
pub(crate) struct Liveness {
    me: NodeId,
    dead_after: Duration,
    started: Instant,
    heard: Mutex<HashMap<NodeId, Instant>>,
    elsewhere: Option<HeardElsewhere>,
}

impl Liveness {
    /// A peer silent for `dead_after` (the election timeout) is dead.
    pub fn new(me: NodeId, dead_after: Duration, elsewhere: Option<HeardElsewhere>) -> Liveness {
        Liveness { me, dead_after, started: Instant::now(), heard: Mutex::default(), elsewhere }
    }

    /// A node-level message from `peer` arrived.
    pub fn heard(&self, peer: NodeId) {
        self.heard.lock().insert(peer, Instant::now());
    }

    /// When `peer` was last heard from by any means; `None` if never since this node started.
    pub fn last_heard(&self, peer: NodeId) -> Option<Instant> {
        let reported = self.heard.lock().get(&peer).copied();
        let other = self.elsewhere.as_ref().and_then(|f| f(peer).heard);
        reported.max(other)
    }

    /// Heard from within `within` (this node always is).
    pub fn heard_within(&self, peer: NodeId, within: Duration, now: Instant) -> bool {
        peer == self.me || self.last_heard(peer).is_some_and(|at| now.saturating_duration_since(at) < within)
    }

    /// Alive: heard from within the election timeout, and no connection to it broke or was
    /// refused since the last one made (a killed process closes its sockets at once; its
    /// silence would take an election timeout to tell). Frames still being read off another
    /// connection after a loss do not bring a peer back; a new connection does.
    pub fn is_alive(&self, peer: NodeId, now: Instant) -> bool {
        if peer == self.me {
            return true;
        }
        let evidence = self.evidence(peer);
        let last = self.heard.lock().get(&peer).copied().max(evidence.heard);
        let fresh = last.is_some_and(|at| now.saturating_duration_since(at) < self.dead_after);
        fresh && !connection_lost(&evidence)
    }

    /// Dead: its connection broke or was refused since the last one was made, or this node
    /// is past its first election timeout (when a peer may simply not have been heard from
    /// yet) and has not heard from it within one. A node restarted a moment ago must not
    /// name as leader a peer whose connection it just saw break: clients would believe it
    /// (librdkafka then waits for its next one-second scan).
    pub fn presumed_dead(&self, peer: NodeId, now: Instant) -> bool {
        if peer == self.me {
            return false;
        }
        connection_lost(&self.evidence(peer)) || (!self.settling(now) && !self.is_alive(peer, now))
    }

    fn evidence(&self, peer: NodeId) -> Evidence {
        self.elsewhere.as_ref().map(|f| f(peer)).unwrap_or_default()
    }

    /// During the first election timeout after start a peer not heard from yet is not
    /// presumed dead: its first message may still be on the way.
    pub fn settling(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < self.dead_after
    }

    pub fn dead_after(&self) -> Duration {
        self.dead_after
    }
}

/// A connection with the peer broke or was refused, and none was made since.
fn connection_lost(evidence: &Evidence) -> bool {
    evidence.lost.is_some_and(|lost| evidence.connected.is_none_or(|c| c < lost))
}

/// A hosted replica's part in its group, as the timer decisions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Leader {
        /// Every voter's log reaches the leader's last entry, and no entry arrived since the
        /// last look: nothing to replicate.
        settled: bool,
    },
    /// A voter that does not lead (follower or candidate).
    Voter {
        /// A live node leads the group: it says so in a fresh report at a term not below this
        /// replica's, or this replica follows it.
        live_leader: bool,
    },
    /// Learners never elect.
    Learner,
}

/// Whether a replica's own Raft timers should run. `settling`: this node started less than
/// an election timeout ago (peers' reports may not have arrived yet).
pub(crate) fn wants_timers(part: Part, settling: bool) -> bool {
    match part {
        Part::Leader { settled } => !settled,
        Part::Voter { live_leader } => !live_leader && !settling,
        Part::Learner => false,
    }
}

/// This node's place in the order in which a leaderless group's live voters ask for its
/// leadership: 0 asks at once, 1 a step later, and so on; `None` if this node is not a live
/// voter. The live voters in id order, rotated by the group id, so that the groups of a dead
/// node (and new groups) spread over the survivors.
pub(crate) fn succession_rank(
    group: GroupId,
    voters: &[NodeId],
    me: NodeId,
    alive: impl Fn(NodeId) -> bool,
) -> Option<usize> {
    let mut live: Vec<NodeId> = voters.iter().copied().filter(|v| *v == me || alive(*v)).collect();
    live.sort_unstable();
    live.dedup();
    let at = live.iter().position(|v| *v == me)?;
    let n = live.len();
    Some((at + n - (group % n as u64) as usize) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_run_only_where_something_can_be_wanted() {
        let table = [
            (Part::Leader { settled: false }, false, true),
            (Part::Leader { settled: true }, false, false),
            (Part::Leader { settled: true }, true, false),
            (Part::Voter { live_leader: true }, false, false),
            (Part::Voter { live_leader: false }, false, true),
            // Just started: the leader's report may be on its way.
            (Part::Voter { live_leader: false }, true, false),
            (Part::Learner, false, false),
        ];
        for (part, settling, want) in table {
            assert_eq!(wants_timers(part, settling), want, "{part:?}, settling {settling}");
        }
    }

    #[test]
    fn succession_order_rotates_over_the_live_voters() {
        let all_alive = |_| true;
        // Three voters: each group has exactly one first, and consecutive groups rotate it.
        for group in 0..6u64 {
            let ranks: Vec<_> = [1, 2, 3].iter().map(|me| succession_rank(group, &[3, 1, 2], *me, all_alive)).collect();
            let mut sorted = ranks.clone();
            sorted.sort();
            assert_eq!(sorted, [Some(0), Some(1), Some(2)], "group {group}");
            let first = [1, 2, 3][ranks.iter().position(|r| *r == Some(0)).unwrap()];
            assert_eq!(first, [1, 2, 3][(group % 3) as usize], "group {group}");
        }
        // A dead voter takes no place: the two survivors share the ranks.
        let without_2 = |v| v != 2;
        for group in 0..4u64 {
            let r1 = succession_rank(group, &[1, 2, 3], 1, without_2).unwrap();
            let r3 = succession_rank(group, &[1, 2, 3], 3, without_2).unwrap();
            assert_eq!(r1 + r3, 1, "group {group}");
        }
        // Not a voter, or the only one left.
        assert_eq!(succession_rank(7, &[1, 2, 3], 4, all_alive), None);
        assert_eq!(succession_rank(7, &[1, 2, 3], 2, |_| false), Some(0));
    }

    #[test]
    fn a_peer_is_dead_after_a_silence_and_never_before_it_is_heard() {
        let l = Liveness::new(1, Duration::from_millis(500), None);
        let now = Instant::now();
        assert!(l.is_alive(1, now), "a node is alive to itself");
        assert!(!l.is_alive(2, now), "never heard");
        assert!(l.settling(now));
        assert!(!l.settling(now + Duration::from_millis(600)));
        l.heard(2);
        assert!(l.is_alive(2, Instant::now()));
        assert!(!l.is_alive(2, Instant::now() + Duration::from_millis(600)));
        assert!(l.heard_within(2, Duration::from_secs(2), Instant::now() + Duration::from_millis(600)));
    }

    #[test]
    fn the_transports_evidence_counts() {
        let at = Instant::now();
        let (later, latest) = (at + Duration::from_millis(10), at + Duration::from_millis(20));
        let evidence = move |p| match p {
            3 => Evidence { heard: Some(at), lost: None, connected: Some(at) },
            // Its connection broke: dead at once, even if frames read later are newer.
            4 => Evidence { heard: Some(latest), lost: Some(later), connected: Some(at) },
            // Connected again after the loss: alive.
            5 => Evidence { heard: Some(latest), lost: Some(at), connected: Some(later) },
            _ => Evidence::default(),
        };
        let l = Liveness::new(1, Duration::from_millis(500), Some(Box::new(evidence)));
        assert!(l.is_alive(3, latest));
        assert!(!l.is_alive(4, latest));
        assert!(l.is_alive(5, latest));
        assert!(!l.is_alive(2, latest));
        assert_eq!(l.last_heard(3), Some(at));
        // While this node settles (just started), silence is no evidence, a broken
        // connection is.
        assert!(l.settling(latest));
        assert!(l.presumed_dead(4, latest), "its connection broke");
        assert!(!l.presumed_dead(2, latest), "not heard yet");
        assert!(!l.presumed_dead(5, latest) && !l.presumed_dead(3, latest) && !l.presumed_dead(1, latest));
        let past = latest + Duration::from_secs(1);
        assert!(l.presumed_dead(2, past) && l.presumed_dead(3, past), "silent for an election timeout");
    }
}
