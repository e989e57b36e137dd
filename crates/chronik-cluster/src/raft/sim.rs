//! The in-process router of the multi-node tests: each node's groups are registered by (node,
//! group) and messages are delivered by direct calls, through faults the test controls:
//! isolate a node, cut a link (both ways), lose a share of messages (requests or replies) and
//! delay them. Which message is lost and how long each waits comes from a seeded generator,
//! so a failing seed can be run again (task scheduling still varies between runs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::transport::{Inbound, Reply, Request, SharedTransport, Transport, TransportError};
use super::{GroupId, NodeId};

/// A node's own lookup of its groups (as a node hands its listener).
pub(crate) type NodeGroups = Arc<dyn Fn(GroupId) -> Option<Arc<dyn Inbound>> + Send + Sync>;

#[derive(Default)]
struct State {
    groups: HashMap<(NodeId, GroupId), Arc<dyn Inbound>>,
    /// Nodes that find their groups themselves (a whole `Node`).
    nodes: HashMap<NodeId, NodeGroups>,
    isolated: HashSet<NodeId>,
    /// Cut links, each stored as (lower id, higher id).
    cut: HashSet<(NodeId, NodeId)>,
    /// Messages lost, per thousand (each request and each reply rolls on its own).
    loss_per_mille: u64,
    /// Each delivery waits between these (ms).
    delay_ms: (u64, u64),
    rng: u64,
    /// Requests delivered, per group.
    delivered: HashMap<GroupId, u64>,
}

impl State {
    /// splitmix64: small, seeded, good enough to pick losses and delays.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn blocked(&self, a: NodeId, b: NodeId) -> bool {
        self.isolated.contains(&a) || self.isolated.contains(&b) || self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn lost(&mut self) -> bool {
        self.loss_per_mille > 0 && self.next() % 1000 < self.loss_per_mille
    }

    fn delay(&mut self) -> Duration {
        let (min, max) = self.delay_ms;
        Duration::from_millis(if max > min { min + self.next() % (max - min + 1) } else { min })
    }
}

pub(crate) struct SimRouter {
    state: Mutex<State>,
}

impl SimRouter {
    pub fn new(seed: u64) -> Arc<SimRouter> {
        Arc::new(SimRouter { state: Mutex::new(State { rng: seed, ..State::default() }) })
    }

    /// Node `node`'s transport: what its groups send goes through this router.
    pub fn transport(self: &Arc<Self>, node: NodeId) -> SharedTransport {
        Arc::new(SimTransport { from: node, router: self.clone() })
    }

    pub fn register(&self, node: NodeId, group: GroupId, inbound: Arc<dyn Inbound>) {
        self.state.lock().groups.insert((node, group), inbound);
    }

    /// Messages to `node` go to whatever group `groups` finds there.
    pub fn register_node(&self, node: NodeId, groups: NodeGroups) {
        self.state.lock().nodes.insert(node, groups);
    }

    pub fn unregister(&self, node: NodeId, group: GroupId) {
        self.state.lock().groups.remove(&(node, group));
    }

    /// No message reaches `node` or leaves it.
    pub fn isolate(&self, node: NodeId) {
        self.state.lock().isolated.insert(node);
    }

    /// No message passes between `a` and `b`, either way.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.state.lock().cut.insert((a.min(b), a.max(b)));
    }

    /// Every node reachable again, every link up.
    pub fn heal(&self) {
        let mut s = self.state.lock();
        s.isolated.clear();
        s.cut.clear();
    }

    pub fn set_loss(&self, per_mille: u64) {
        self.state.lock().loss_per_mille = per_mille;
    }

    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.state.lock().delay_ms = (min.as_millis() as u64, max.as_millis() as u64);
    }

    /// Requests delivered to group `group` (on any node) so far.
    pub fn delivered(&self, group: GroupId) -> u64 {
        self.state.lock().delivered.get(&group).copied().unwrap_or(0)
    }
}

struct SimTransport {
    from: NodeId,
    router: Arc<SimRouter>,
}

impl Transport for SimTransport {
    fn send(
        &self,
        to: NodeId,
        group: GroupId,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Reply, TransportError>> {
        let (from, router) = (self.from, self.router.clone());
        Box::pin(async move {
            let unreachable = |reason: &str| TransportError::Unreachable { node: to, reason: reason.into() };
            let (target, delay, request_lost) = {
                let mut s = router.state.lock();
                if s.blocked(from, to) {
                    return Err(unreachable("the link is cut"));
                }
                let target =
                    s.groups.get(&(to, group)).cloned().or_else(|| s.nodes.get(&to).and_then(|find| find(group)));
                if target.is_some() {
                    *s.delivered.entry(group).or_default() += 1;
                }
                (target, s.delay(), s.lost())
            };
            let Some(target) = target else {
                return Err(TransportError::Refused { node: to, group, reason: "no such group there".into() });
            };
            let delivery = async {
                tokio::time::sleep(delay).await;
                if request_lost {
                    // A lost message looks like silence to the sender.
                    std::future::pending::<()>().await;
                }
                target.handle(request).await
            };
            let reply = tokio::time::timeout(timeout, delivery)
                .await
                .map_err(|_| TransportError::Timeout { node: to, after: timeout })?
                .map_err(|reason| TransportError::Refused { node: to, group, reason })?;
            let mut s = router.state.lock();
            if s.blocked(from, to) {
                return Err(unreachable("the link was cut before the reply came back"));
            }
            if s.lost() {
                return Err(unreachable("the reply was lost"));
            }
            Ok(reply)
        })
    }
}
