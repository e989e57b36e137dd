//! Who leads which partition, cluster-wide. A node knows the leader of the partitions it hosts
//! from their Raft groups; for the others, every node tells every other, twice a second, the
//! groups it leads with their term and in-sync replicas (one message per pair of nodes, not
//! one per group), and a node answers Metadata for partitions it does not host from these
//! reports.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::error::ClusterError;
use crate::raft::transport::{Lead, NODE_GROUP, Request};
use crate::raft::{GroupId, NodeId};

/// How often a node reports the groups it leads (heartbeats go out in between).
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// A report older than this is not trusted (its sender stopped reporting).
const REPORT_FRESH_FOR: Duration = Duration::from_secs(3);

/// A partition's leader as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    pub leader: Option<NodeId>,
    /// The leader's term (the Kafka leader epoch); 0 when no leader is known.
    pub epoch: u64,
    /// Replicas whose log reaches the commit index, as the leader last reported (the whole
    /// replica set where that is not known).
    pub isr: Vec<NodeId>,
}

/// The latest leadership reports from other nodes, by group.
pub(super) struct LeaderReports {
    by_group: RwLock<HashMap<GroupId, (NodeId, Lead, Instant)>>,
    /// Bumped by every report taken, so waiters need not poll.
    changed: watch::Sender<u64>,
    /// Bumped only when some group's reported leader or term changes (or is forgotten).
    leaders_changed: AtomicU64,
}

impl Default for LeaderReports {
    fn default() -> Self {
        LeaderReports { by_group: RwLock::default(), changed: watch::channel(0).0, leaders_changed: AtomicU64::new(0) }
    }
}

impl LeaderReports {
    /// Takes `from`'s report: it leads exactly `leads` (a group it no longer lists is
    /// forgotten, unless another node claims it); a report of an older term than one already
    /// held does not replace it.
    pub fn record(&self, from: NodeId, leads: Vec<Lead>) {
        let now = Instant::now();
        let claimed: HashSet<GroupId> = leads.iter().map(|l| l.group).collect();
        let mut by_group = self.by_group.write();
        let before = by_group.len();
        by_group.retain(|g, (node, ..)| *node != from || claimed.contains(g));
        let mut moved = by_group.len() != before;
        for lead in leads {
            let held = by_group.get(&lead.group);
            if held.is_none_or(|(_, held, _)| held.term <= lead.term) {
                moved |= held.is_none_or(|(node, held, _)| *node != from || held.term != lead.term);
                by_group.insert(lead.group, (from, lead, now));
            }
        }
        drop(by_group);
        if moved {
            self.leaders_changed.fetch_add(1, Ordering::Relaxed);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Changes whenever some group's reported leader or term does.
    pub fn leaders_version(&self) -> u64 {
        self.leaders_changed.load(Ordering::Relaxed)
    }

    /// Fires when a report is taken.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The fresh report of `group`'s leader, if any.
    pub fn get(&self, group: GroupId) -> Option<(NodeId, Lead)> {
        let by_group = self.by_group.read();
        let (node, lead, at) = by_group.get(&group)?;
        (at.elapsed() < REPORT_FRESH_FOR).then(|| (*node, lead.clone()))
    }

    /// How many groups each node reports leading (fresh reports only).
    pub fn counts(&self) -> HashMap<NodeId, usize> {
        let mut counts = HashMap::new();
        for (node, _, at) in self.by_group.read().values() {
            if at.elapsed() < REPORT_FRESH_FOR {
                *counts.entry(*node).or_default() += 1;
            }
        }
        counts
    }
}

impl Node {
    /// The groups this node leads now, as it reports them.
    fn leads(&self) -> Vec<Lead> {
        self.registry
            .all()
            .iter()
            .filter(|r| r.is_leader(self.node_id))
            .filter_map(|r| {
                let (term, isr) = r.led_isr()?;
                Some(Lead { group: r.group(), term, isr })
            })
            .collect()
    }

    /// A partition's leader, epoch and in-sync replicas, from its local replica where this
    /// node hosts it (and knows the leader), else from the leader's report. A leader whose
    /// node is presumed dead is not named: clients then ask again until a successor leads.
    pub fn partition_leader(&self, topic: &str, partition: i32) -> PartitionLeader {
        let known = self.with_metadata(|m| {
            let p = m.topic(topic)?.partitions.iter().find(|p| p.partition == partition)?;
            Some((p.group, p.replicas.clone()))
        });
        let Some((group, replicas)) = known else {
            return PartitionLeader { leader: None, epoch: 0, isr: Vec::new() };
        };
        let reported = self.reports.get(group);
        let mut led = match (self.registry.get(topic, partition), reported) {
            // An idle group's follower that restarted has not heard from its leader: the
            // leader's report names it.
            (Some(r), Some((node, lead))) if r.leadership().1.is_none() => {
                PartitionLeader { leader: Some(node), epoch: lead.term, isr: lead.isr }
            }
            // Read in place, per partition of every Metadata request: not `replication()`,
            // which also counts each replica's lag in bytes.
            (Some(r), reported) => {
                let g = r.glance();
                let isr = match (r.led_isr(), reported) {
                    (Some((_, isr)), _) => isr,
                    (None, Some((_, lead))) if lead.term == g.term => lead.isr,
                    (None, _) => g.voters,
                };
                PartitionLeader { leader: g.leader, epoch: g.term, isr }
            }
            (None, Some((node, lead))) => PartitionLeader { leader: Some(node), epoch: lead.term, isr: lead.isr },
            (None, None) => PartitionLeader { leader: None, epoch: 0, isr: replicas },
        };
        if led.leader.is_some_and(|l| self.presumed_dead(l)) {
            led.leader = None;
        }
        led
    }

    /// Whether a majority of the partition's replicas are alive as far as this node knows, so
    /// that a leaderless partition should soon have a leader again (an election among them).
    pub fn can_elect(&self, topic: &str, partition: i32) -> bool {
        let replicas = self.with_metadata(|m| {
            m.topic(topic)?.partitions.iter().find(|p| p.partition == partition).map(|p| p.replicas.clone())
        });
        let Some(replicas) = replicas else { return false };
        let alive = replicas.iter().filter(|r| **r == self.node_id || !self.presumed_dead(**r)).count();
        2 * alive > replicas.len()
    }

    /// Cluster mode: `node` has been silent for an election timeout (and this node is past
    /// its first one, when peers may simply not have been heard yet).
    pub(super) fn presumed_dead(&self, node: NodeId) -> bool {
        self.liveness.as_ref().is_some_and(|l| l.presumed_dead(node, Instant::now()))
    }
}

/// Sends every other node a heartbeat every `period` (the Raft heartbeat interval), and this
/// node's leadership report in place of one every [`REPORT_EVERY`], until cancelled. A node
/// that does not answer is skipped until the next round.
pub(super) async fn report_loop(
    node: Weak<Node>,
    period: Duration,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let report_every = (REPORT_EVERY.as_millis() / period.as_millis().max(1)).max(1) as u64;
    let mut round = 0u64;
    super::lifecycle::every(node, period, cancel, move |node| {
        let report = round.is_multiple_of(report_every);
        round += 1;
        async move { node.report_leadership(period, report).await }
    })
    .await
}

impl Node {
    /// One round of [`report_loop`]: the report, or a bare heartbeat.
    async fn report_leadership(&self, period: Duration, report: bool) {
        let me = self.node_id;
        let leads = report.then(|| self.leads());
        let peers: Vec<NodeId> = self.with_metadata(|m| m.nodes.keys().copied().filter(|id| *id != me).collect());
        let sends = peers.into_iter().map(|peer| {
            let request = match &leads {
                Some(leads) => Request::Leading { from: me, leads: leads.clone() },
                None => Request::Alive { from: me },
            };
            let sent = self.transport.send(peer, NODE_GROUP, request, period);
            async move {
                if let Err(e) = sent.await {
                    tracing::debug!(peer, "leadership report not delivered: {e}");
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}
