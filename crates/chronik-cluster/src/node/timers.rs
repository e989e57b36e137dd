//! The loop that runs each hosted partition group's timers from node-level liveness (the
//! decisions are in `liveness.rs`): twice per heartbeat interval it looks at the replicas,
//! starts or stops their openraft timers, and, where a group has no live leader, asks for the
//! leadership in this node's turn. A replica whose decision is settled (a quiet leader, a
//! follower of a live leader) is looked at again when a peer lives or dies or a reported
//! leader changes, and otherwise once a second: thousands of idle replicas cost little. (A
//! settled leader that gets writes replicates them without its timers; it only heartbeats
//! again, from the next look, if a follower fell behind.)

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::error::ClusterError;
use crate::liveness::{Liveness, Part, succession_rank, wants_timers};
use crate::partition::Glance;
use crate::raft::{GroupId, NodeId};

/// How long the voters of a leaderless group keep asking in turn before leaving it to their
/// own election timers, in election timeouts.
const ASK_FOR: u32 = 4;
/// Rounds (of half a heartbeat interval) between looks at a replica whose decision is settled.
const RECHECK_SETTLED_EVERY: u64 = 20;

/// What the loop remembers between rounds.
#[derive(Default)]
struct TimerState {
    /// Each led group's last log index at the previous round: a leader settles once it stops
    /// moving.
    last_index: HashMap<GroupId, Option<u64>>,
    /// Leaderless groups this node stands in line for.
    successions: HashMap<GroupId, Succession>,
    /// Each group's (term, leader) at the previous round, to count leader changes.
    leaders: HashMap<GroupId, (u64, Option<u64>)>,
    /// Each hosted group's last decision.
    decided: HashMap<GroupId, Decided>,
    /// The groups whose decision is not settled: all a round between full looks visits.
    unsettled: std::collections::HashSet<GroupId>,
    /// What every group's decision also depends on, as of the previous round.
    shared: Option<SharedInputs>,
    registry_version: Option<u64>,
    round: u64,
}

#[derive(Default)]
struct Decided {
    /// The decision holds until something it depends on changes.
    settled: bool,
    timers: Option<bool>,
}

/// What every group's decision depends on besides its own Raft state.
#[derive(PartialEq, Eq)]
struct SharedInputs {
    alive: Vec<NodeId>,
    leaders_version: u64,
    settling: bool,
}

struct Succession {
    next_ask: Instant,
    give_up: Instant,
}

/// Runs until cancelled; `heartbeat` is the Raft heartbeat interval.
pub(super) async fn timers_loop(
    node: Weak<Node>,
    liveness: Arc<Liveness>,
    heartbeat: Duration,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let mut state = TimerState::default();
    let mut tick = tokio::time::interval(heartbeat / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let Some(node) = node.upgrade() else { return Ok(()) };
        node.timers_round(&liveness, heartbeat, &mut state).await;
    }
}

impl Node {
    async fn timers_round(&self, liveness: &Liveness, heartbeat: Duration, state: &mut TimerState) {
        let (now, me) = (Instant::now(), self.node_id);
        let settling = liveness.settling(now);
        let alive = self.with_metadata(|m| m.nodes.keys().copied().filter(|n| liveness.is_alive(*n, now)).collect());
        let shared = SharedInputs { alive, leaders_version: self.reports.leaders_version(), settling };
        state.round += 1;
        let everything = state.shared.as_ref() != Some(&shared) || state.round.is_multiple_of(RECHECK_SETTLED_EVERY);
        state.shared = Some(shared);
        let version = self.registry.version();
        let everything = everything || state.registry_version != Some(version);
        let replicas = match everything {
            true => self.registry.all(),
            false => state.unsettled.iter().filter_map(|g| self.registry.by_group(*g)).collect(),
        };
        if state.registry_version != Some(version) {
            state.registry_version = Some(version);
            let hosted: std::collections::HashSet<GroupId> = replicas.iter().map(|r| r.group()).collect();
            state.unsettled.retain(|g| hosted.contains(g));
            state.last_index.retain(|g, _| hosted.contains(g));
            state.successions.retain(|g, _| hosted.contains(g));
            state.leaders.retain(|g, _| hosted.contains(g));
            state.decided.retain(|g, _| hosted.contains(g));
        }
        for r in replicas {
            let group = r.group();
            let decided = state.decided.entry(group).or_default();
            if decided.settled && !everything {
                continue;
            }
            let g = r.glance();
            if let Some(l) = g.leader {
                let before = state.leaders.insert(group, (g.term, Some(l)));
                if before.is_some_and(|(t, prev)| prev != Some(l) || t != g.term) {
                    self.counters.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                // Elected here since the last look (or since this node started).
                if l == me && before.is_none_or(|(t, _)| t != g.term) {
                    self.counters.elections_won.fetch_add(1, Ordering::Relaxed);
                }
            }
            let part = match g.state {
                ServerState::Leader => {
                    let before = state.last_index.insert(group, g.last_log_index);
                    // Another node reports leading the group in a later term: this leader was
                    // replaced while it was hung or cut off. Its heartbeats will tell it so.
                    let superseded = self.reports.get(group).is_some_and(|(n, l)| n != me && l.term > g.term);
                    Part::Leader { settled: g.all_caught_up && before == Some(g.last_log_index) && !superseded }
                }
                ServerState::Follower | ServerState::Candidate if g.voters.contains(&me) => {
                    Part::Voter { live_leader: self.has_live_leader(group, &g, liveness, now) }
                }
                _ => Part::Learner,
            };
            if !matches!(part, Part::Leader { .. }) {
                state.last_index.remove(&group);
            }
            decided.settled =
                matches!(part, Part::Leader { settled: true } | Part::Voter { live_leader: true } | Part::Learner);
            match decided.settled {
                true => state.unsettled.remove(&group),
                false => state.unsettled.insert(group),
            };
            let want = wants_timers(part, settling);
            if decided.timers != Some(want) {
                r.set_timers(want);
                decided.timers = Some(want);
            }
            if part != (Part::Voter { live_leader: false }) || settling {
                state.successions.remove(&group);
                continue;
            }
            let Some(rank) = succession_rank(group, &g.voters, me, |v| liveness.is_alive(v, now)) else { continue };
            let turn = state.successions.entry(group).or_insert_with(|| Succession {
                next_ask: now + heartbeat / 2 * rank as u32,
                give_up: now + liveness.dead_after() * ASK_FOR,
            });
            if now >= turn.next_ask && now < turn.give_up {
                // Again at every round (the rounds are half a heartbeat apart).
                turn.next_ask = now + heartbeat / 4;
                self.counters.leadership_asks.fetch_add(1, Ordering::Relaxed);
                r.ask_for_leadership().await;
            }
        }
    }

    /// Whether a live node other than this one leads `group`: this replica follows it, or it
    /// reports leading the group at a term not below this replica's.
    fn has_live_leader(&self, group: GroupId, g: &Glance, liveness: &Liveness, now: Instant) -> bool {
        let me = self.node_id;
        let followed = g.leader.is_some_and(|l| l != me && liveness.is_alive(l, now));
        let reported = self
            .reports
            .get(group)
            .is_some_and(|(node, lead)| node != me && lead.term >= g.term && liveness.is_alive(node, now));
        followed || reported
    }
}
