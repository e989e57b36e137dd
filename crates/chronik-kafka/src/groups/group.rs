//! One consumer group under the classic rebalance protocol, as plain state: joins wait (via
//! channels) until every member has rejoined or the rebalance deadline passes; the leader's
//! SyncGroup hands out assignments; heartbeats and session timeouts keep membership honest.
//! Time is passed in, so the behaviour is testable without sockets or sleeps.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

/// What the group logic refuses with (the crate's error module maps them to Kafka codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    /// This node does not coordinate groups now (it does not lead `__consumer_offsets`).
    NotCoordinator,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    MemberIdRequired,
    NonEmptyGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub client_host: String,
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub last_seen: Instant,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets an id and must rejoin with it (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub(super) fn error(e: GroupError, member_id: String) -> JoinResult {
        JoinResult {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id,
            members: vec![],
        }
    }
}

pub type SyncResult = Result<Bytes, GroupError>;

pub struct Group {
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, each with when it lapses unused.
    pending_ids: HashMap<String, Instant>,
    joining: BTreeMap<String, oneshot::Sender<JoinResult>>,
    syncing: BTreeMap<String, oneshot::Sender<SyncResult>>,
    rebalance_deadline: Option<Instant>,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members, so consumers starting together get one assignment.
    initial_delay: Duration,
    /// The wait of an empty group's first rebalance, while it lasts.
    initial_join: Option<InitialJoin>,
}

/// The delayed first rebalance of an empty group (Kafka's InitialDelayedJoin): it completes
/// once a whole delay passes with no new member, or once the rebalance timeout is used up.
#[derive(Debug, Clone, Copy)]
struct InitialJoin {
    until: Instant,
    /// What is left of the rebalance timeout for further delays.
    remaining: Duration,
    new_member_joined: bool,
}

impl Group {
    pub fn new(initial_delay: Duration) -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: HashMap::new(),
            joining: BTreeMap::new(),
            syncing: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay,
            initial_join: None,
        }
    }

    /// Nothing left to keep the group for: no members, no joins waiting, and no member id
    /// handed out that its client may still come back with.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.joining.is_empty() && self.pending_ids.is_empty()
    }

    pub fn join(&mut self, now: Instant, req: JoinRequest, reply: oneshot::Sender<JoinResult>) {
        if let Some(t) = &self.protocol_type
            && !self.members.is_empty()
            && *t != req.protocol_type
        {
            let _ = reply.send(JoinResult::error(GroupError::InconsistentGroupProtocol, req.member_id));
            return;
        }
        if !self.members.is_empty()
            && !self
                .members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| req.protocols.iter().any(|(q, _)| p == q)))
        {
            let _ = reply.send(JoinResult::error(GroupError::InconsistentGroupProtocol, req.member_id));
            return;
        }
        let member_id = if req.member_id.is_empty() {
            let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id {
                self.pending_ids.insert(id.clone(), now + req.session_timeout);
                let _ = reply.send(JoinResult::error(GroupError::MemberIdRequired, id));
                return;
            }
            id
        } else {
            if !self.members.contains_key(&req.member_id) && self.pending_ids.remove(&req.member_id).is_none() {
                let _ = reply.send(JoinResult::error(GroupError::UnknownMemberId, req.member_id));
                return;
            }
            req.member_id.clone()
        };
        let changed = self.members.get(&member_id).is_none_or(|m| m.protocols != req.protocols);
        if let Some(initial) = self.initial_join.as_mut()
            && !self.members.contains_key(&member_id)
        {
            initial.new_member_joined = true;
        }
        let was_empty = self.state == State::Empty;
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                client_id: req.client_id,
                client_host: req.client_host,
                group_instance_id: req.group_instance_id,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                last_seen: now,
                assignment: Bytes::new(),
            },
        );
        self.protocol_type = Some(req.protocol_type);
        if let Some(old) = self.joining.insert(member_id.clone(), reply) {
            let _ = old.send(JoinResult::error(GroupError::RebalanceInProgress, member_id.clone()));
        }
        // A follower rejoining a stable group with unchanged metadata just gets the current
        // generation; anything else starts (or joins) a rebalance.
        let quiet_rejoin = self.state == State::Stable && !changed && self.leader.as_deref() != Some(&member_id);
        if quiet_rejoin {
            self.reply_current(&member_id);
        } else if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now);
            if was_empty && !self.initial_delay.is_zero() {
                let timeout = self.members[&member_id].rebalance_timeout;
                self.initial_join = Some(InitialJoin {
                    until: now + self.initial_delay,
                    remaining: timeout.saturating_sub(self.initial_delay),
                    new_member_joined: false,
                });
            }
        }
        self.maybe_complete_join(now);
    }

    /// Answers a rejoin without a rebalance (the member is told the current generation).
    fn reply_current(&mut self, member_id: &str) {
        if let Some(tx) = self.joining.remove(member_id) {
            let _ = tx.send(self.join_result(member_id));
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        for (_, tx) in std::mem::take(&mut self.syncing) {
            let _ = tx.send(Err(GroupError::RebalanceInProgress));
        }
        self.state = State::PreparingRebalance;
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(30));
        self.rebalance_deadline = Some(now + timeout);
    }

    /// The join completes once every member has rejoined (or, at the deadline, without those
    /// that did not).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        if let Some(initial) = self.initial_join.as_mut() {
            if now < initial.until {
                return;
            }
            if initial.new_member_joined && !initial.remaining.is_zero() {
                let more = self.initial_delay.min(initial.remaining);
                *initial =
                    InitialJoin { until: now + more, remaining: initial.remaining - more, new_member_joined: false };
                return;
            }
            self.initial_join = None;
        }
        let all_joined = self.members.keys().all(|m| self.joining.contains_key(m));
        let overdue = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !overdue {
            return;
        }
        let absent: Vec<String> = self.members.keys().filter(|m| !self.joining.contains_key(*m)).cloned().collect();
        for m in absent {
            self.members.remove(&m);
        }
        if self.members.is_empty() {
            self.reset_empty();
            return;
        }
        self.generation += 1;
        self.protocol = self.choose_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = State::CompletingRebalance;
        self.rebalance_deadline = None;
        for (member, tx) in std::mem::take(&mut self.joining) {
            let _ = tx.send(self.join_result(&member));
        }
    }

    fn choose_protocol(&self) -> Option<String> {
        let leader = self.leader.as_ref().and_then(|l| self.members.get(l)).or_else(|| self.members.values().next())?;
        leader
            .protocols
            .iter()
            .map(|(p, _)| p)
            .find(|p| self.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == *p)))
            .cloned()
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            let protocol = self.protocol.clone().unwrap_or_default();
            self.members
                .values()
                .map(|m| {
                    let meta =
                        m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, d)| d.clone()).unwrap_or_default();
                    (m.id.clone(), m.group_instance_id.clone(), meta)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn reset_empty(&mut self) {
        self.state = State::Empty;
        self.generation += 1;
        self.leader = None;
        self.protocol = None;
        self.rebalance_deadline = None;
        self.initial_join = None;
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        now: Instant,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        reply: oneshot::Sender<SyncResult>,
    ) {
        if let Err(e) = self.check_member(member_id, generation) {
            let _ = reply.send(Err(e));
            return;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match self.state {
            State::PreparingRebalance | State::Empty => {
                let _ = reply.send(Err(GroupError::RebalanceInProgress));
            }
            State::Stable => {
                let _ = reply.send(Ok(self.members[member_id].assignment.clone()));
            }
            State::CompletingRebalance => {
                self.syncing.insert(member_id.to_string(), reply);
                if self.leader.as_deref() == Some(member_id) {
                    for m in self.members.values_mut() {
                        m.assignment = Bytes::new();
                    }
                    for (m, a) in assignments {
                        if let Some(member) = self.members.get_mut(&m) {
                            member.assignment = a;
                        }
                    }
                    self.state = State::Stable;
                    for (m, tx) in std::mem::take(&mut self.syncing) {
                        let a = self.members.get(&m).map(|x| x.assignment.clone()).unwrap_or_default();
                        let _ = tx.send(Ok(a));
                    }
                }
            }
        }
    }

    pub fn heartbeat(&mut self, now: Instant, member_id: &str, generation: i32) -> Result<(), GroupError> {
        self.check_member(member_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match self.state {
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    pub fn leave(&mut self, now: Instant, member_id: &str) -> Result<(), GroupError> {
        if self.members.remove(member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        if let Some(tx) = self.joining.remove(member_id) {
            let _ = tx.send(JoinResult::error(GroupError::UnknownMemberId, member_id.to_string()));
        }
        self.syncing.remove(member_id);
        if self.members.is_empty() {
            self.reset_empty();
        } else {
            if self.state != State::PreparingRebalance {
                self.prepare_rebalance(now);
            }
            self.maybe_complete_join(now);
        }
        Ok(())
    }

    /// Expires members whose session lapsed, in every state (as Kafka does: a consumer that died
    /// must not hold a rebalance up for its whole rebalance timeout), except those waiting for
    /// our JoinGroup or SyncGroup answer; then completes overdue joins.
    pub fn tick(&mut self, now: Instant) {
        self.pending_ids.retain(|_, lapses| now < *lapses);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !self.joining.contains_key(&m.id) && !self.syncing.contains_key(&m.id))
            .filter(|m| now.duration_since(m.last_seen) > m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        for m in expired {
            let _ = self.leave(now, &m);
        }
        self.maybe_complete_join(now);
    }

    /// Whether offsets may be committed by this member and generation; a commit also counts as
    /// a sign of life. As in Kafka, a member may still commit for its current generation while
    /// a rebalance is being prepared (consumers commit before they rejoin), but not while the
    /// new generation's assignments are being handed out.
    pub fn check_commit(&mut self, now: Instant, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() {
            // A consumer managing its own partitions: allowed while the group has no members.
            return if self.members.is_empty() { Ok(()) } else { Err(GroupError::UnknownMemberId) };
        }
        self.check_member(member_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match self.state {
            State::Stable | State::PreparingRebalance => Ok(()),
            State::CompletingRebalance | State::Empty => Err(GroupError::RebalanceInProgress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_req(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            client_id: "c".into(),
            client_host: "h".into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            require_known_member_id: false,
        }
    }

    fn join(g: &mut Group, now: Instant, req: JoinRequest) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        g.join(now, req, tx);
        rx
    }

    /// A first JoinGroup that requires a known member id: returns the request (to rejoin with
    /// once the id is filled in) and the MEMBER_ID_REQUIRED answer carrying that id.
    fn ask_for_member_id(g: &mut Group, now: Instant) -> (JoinRequest, JoinResult) {
        let mut req = join_req("", &["range"]);
        req.require_known_member_id = true;
        let first = join(g, now, req.clone()).try_recv().unwrap();
        (req, first)
    }

    /// A group whose one member has joined and synced (generation 1); returns its join result.
    fn stable_alone(g: &mut Group, now: Instant) -> JoinResult {
        let a = join(g, now, join_req("", &["range"])).try_recv().unwrap();
        let (tx, _rx) = oneshot::channel();
        g.sync(now, &a.member_id, 1, vec![], tx);
        a
    }

    #[test]
    fn single_member_joins_syncs_and_heartbeats() {
        let now = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        let r = join(&mut g, now, join_req("", &["range"])).try_recv().unwrap();
        assert_eq!((r.error, r.generation, r.leader == r.member_id), (None, 1, true));
        assert_eq!(r.members.len(), 1);
        let (tx, mut rx) = oneshot::channel();
        g.sync(now, &r.member_id, 1, vec![(r.member_id.clone(), Bytes::from_static(b"A"))], tx);
        assert_eq!(rx.try_recv().unwrap(), Ok(Bytes::from_static(b"A")));
        assert_eq!(g.state, State::Stable);
        assert_eq!(g.heartbeat(now, &r.member_id, 1), Ok(()));
        assert_eq!(g.heartbeat(now, &r.member_id, 0), Err(GroupError::IllegalGeneration));
        assert_eq!(g.heartbeat(now, "nobody", 1), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn second_member_triggers_rebalance_and_both_get_assignments() {
        let now = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        let a = stable_alone(&mut g, now);
        // B joins: A's next heartbeat says rebalance, A rejoins, the join completes for both.
        let mut b_rx = join(&mut g, now, join_req("", &["range"]));
        assert!(b_rx.try_recv().is_err(), "B waits for A to rejoin");
        assert_eq!(g.heartbeat(now, &a.member_id, 1), Err(GroupError::RebalanceInProgress));
        let a2 = join(&mut g, now, join_req(&a.member_id, &["range"])).try_recv().unwrap();
        let b = b_rx.try_recv().unwrap();
        assert_eq!((a2.generation, b.generation), (2, 2));
        assert_eq!(a2.leader, a.member_id, "the leader stays");
        assert_eq!((a2.members.len(), b.members.len()), (2, 0), "only the leader sees the members");
        // Follower syncs first and waits for the leader's assignments.
        let (btx, mut brx) = oneshot::channel();
        g.sync(now, &b.member_id, 2, vec![], btx);
        assert!(brx.try_recv().is_err());
        let (atx, mut arx) = oneshot::channel();
        g.sync(now, &a.member_id, 2, vec![(a.member_id.clone(), "p0".into()), (b.member_id.clone(), "p1".into())], atx);
        assert_eq!(arx.try_recv().unwrap(), Ok(Bytes::from_static(b"p0")));
        assert_eq!(brx.try_recv().unwrap(), Ok(Bytes::from_static(b"p1")));
    }

    /// Kafka's delayed first rebalance: members starting together get one generation; each new
    /// member extends the wait by another delay, up to the rebalance timeout.
    #[test]
    fn first_rebalance_of_an_empty_group_waits_for_more_members() {
        let delay = Duration::from_secs(3);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = Group::new(delay);
        let mut a = join(&mut g, t0, join_req("", &["range"]));
        g.tick(at(2_000));
        assert!(a.try_recv().is_err(), "A waits out the initial delay");
        let mut b = join(&mut g, at(2_500), join_req("", &["range"]));
        g.tick(at(3_000));
        assert!(a.try_recv().is_err() && b.try_recv().is_err(), "B's arrival extended the wait by a delay");
        g.tick(at(5_900));
        assert!(a.try_recv().is_err(), "still within the extension");
        g.tick(at(6_000));
        let (a, b) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert_eq!((a.generation, b.generation), (1, 1), "one generation for both");
        assert_eq!(a.members.len().max(b.members.len()), 2, "the leader sees both members");

        // Members that keep arriving cannot hold the rebalance past the rebalance timeout (30 s).
        let mut g = Group::new(delay);
        let mut first = join(&mut g, t0, join_req("", &["range"]));
        let mut ms = 0;
        while first.try_recv().is_err() {
            ms += 1_000;
            assert!(ms <= 31_000, "the rebalance completed within its timeout");
            drop(join(&mut g, at(ms), join_req("", &["range"])));
            g.tick(at(ms));
        }
        assert!((27_000..=31_000).contains(&ms), "completed at {ms} ms");

        // A group that already rebalanced is not delayed again.
        let mut g = Group::new(delay);
        let mut a = join(&mut g, t0, join_req("", &["range"]));
        g.tick(at(3_000));
        let a = a.try_recv().unwrap();
        let mut b = join(&mut g, at(3_100), join_req("", &["range"]));
        let a2 = join(&mut g, at(3_200), join_req(&a.member_id, &["range"])).try_recv().unwrap();
        assert_eq!((a2.generation, b.try_recv().unwrap().generation), (2, 2), "completes as soon as all rejoin");
    }

    #[test]
    fn member_id_required_then_rejoin() {
        let now = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        let (mut req, first) = ask_for_member_id(&mut g, now);
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        req.member_id = first.member_id.clone();
        let second = join(&mut g, now, req).try_recv().unwrap();
        assert_eq!((second.error, second.member_id), (None, first.member_id));
        // An id never handed out is refused.
        let bogus = join(&mut g, now, join_req("made-up", &["range"])).try_recv().unwrap();
        assert_eq!(bogus.error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn handed_out_member_id_keeps_the_group_until_it_lapses() {
        let now = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        let (mut req, first) = ask_for_member_id(&mut g, now);
        g.tick(now + Duration::from_secs(1));
        assert!(!g.is_empty(), "the client is about to rejoin with its id");
        req.member_id = first.member_id;
        assert_eq!(join(&mut g, now + Duration::from_secs(1), req.clone()).try_recv().unwrap().error, None);
        // An id never used lapses with the session timeout it was asked with.
        let mut other = Group::new(Duration::ZERO);
        ask_for_member_id(&mut other, now);
        other.tick(now + Duration::from_secs(11));
        assert!(other.is_empty());
    }

    #[test]
    fn absent_member_is_dropped_at_the_rebalance_deadline_and_sessions_expire() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        stable_alone(&mut g, t0);
        let mut b_rx = join(&mut g, t0, join_req("", &["range"]));
        g.tick(t0 + Duration::from_secs(31)); // A never rejoins
        let b = b_rx.try_recv().unwrap();
        assert_eq!((b.generation, b.leader == b.member_id, g.members.len()), (2, true, 1));
        let (tx, _rx) = oneshot::channel();
        g.sync(t0, &b.member_id, 2, vec![], tx);
        g.tick(t0 + Duration::from_secs(60)); // B's session lapses
        assert_eq!(g.state, State::Empty);
        assert!(g.members.is_empty());
    }

    #[test]
    fn incompatible_protocols_are_refused() {
        let now = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        join(&mut g, now, join_req("", &["range"]));
        let r = join(&mut g, now, join_req("", &["cooperative-sticky"])).try_recv().unwrap();
        assert_eq!(r.error, Some(GroupError::InconsistentGroupProtocol));
    }

    #[test]
    fn commits_need_the_current_generation_outside_assignment_or_an_empty_group() {
        let now = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        assert_eq!(g.check_commit(now, "", -1), Ok(()));
        let a = join(&mut g, now, join_req("", &["range"])).try_recv().unwrap();
        assert_eq!(
            g.check_commit(now, &a.member_id, 1),
            Err(GroupError::RebalanceInProgress),
            "assignments not handed out yet"
        );
        let (tx, _rx) = oneshot::channel();
        g.sync(now, &a.member_id, 1, vec![], tx);
        assert_eq!(g.check_commit(now, &a.member_id, 1), Ok(()));
        assert_eq!(g.check_commit(now, "", -1), Err(GroupError::UnknownMemberId));
        // B joins: while the rebalance is prepared, A commits what it consumed before rejoining.
        let _b_rx = join(&mut g, now, join_req("", &["range"]));
        assert_eq!(g.state, State::PreparingRebalance);
        assert_eq!(g.check_commit(now, &a.member_id, 1), Ok(()));
        assert_eq!(g.check_commit(now, &a.member_id, 0), Err(GroupError::IllegalGeneration));
    }

    #[test]
    fn dead_member_is_expired_by_its_session_during_a_rebalance() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::ZERO);
        stable_alone(&mut g, t0);
        // A dies; B joins. A's 10 s session ends the wait, not the 30 s rebalance timeout.
        let mut b_rx = join(&mut g, t0, join_req("", &["range"]));
        g.tick(t0 + Duration::from_secs(9));
        assert!(b_rx.try_recv().is_err(), "A's session has not lapsed yet");
        g.tick(t0 + Duration::from_secs(11));
        let b = b_rx.try_recv().expect("the join completed once A's session lapsed");
        assert_eq!((b.generation, g.members.len()), (2, 1));
    }
}
