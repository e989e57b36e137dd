//! Cluster mode's edges: joining through the seed nodes, where each node's Raft listener is
//! (the address book), and who was heard from when (for the members view).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use uuid::Uuid;

use super::options::ClusterOptions;
use crate::error::ClusterError;
use crate::metadata::{META_GROUP, MetadataState, NodeInfo};
use crate::net::{Contacts, TcpSettings, TcpTransport};
use crate::raft::NodeId;
use crate::raft::transport::{Reply, Request, Transport, TransportError};
use crate::tasks::Tasks;

/// How long a new node keeps asking its seeds before it gives up (a seed may still be
/// starting, or electing).
const JOIN_DEADLINE: Duration = Duration::from_secs(120);
/// The wait for one seed's answer: a join may wait for a metadata write.
const JOIN_ANSWER: Duration = Duration::from_secs(15);
const JOIN_RETRY: Duration = Duration::from_millis(500);
/// Refusals that asking again (or asking another seed) cannot change start with this.
pub(super) const FINAL_REFUSAL: &str = "join refused: ";

/// Where each node's Raft listener is: what the metadata says, else the seed list (a new
/// node reaches its seeds before it has any metadata).
pub(super) struct AddressBook {
    seeds: HashMap<NodeId, String>,
    metadata: OnceLock<Arc<RwLock<MetadataState>>>,
}

impl AddressBook {
    pub fn new(seeds: &[(NodeId, String)]) -> Arc<AddressBook> {
        Arc::new(AddressBook { seeds: seeds.iter().cloned().collect(), metadata: OnceLock::new() })
    }

    /// From now on, addresses come from this metadata first.
    pub fn follow(&self, metadata: Arc<RwLock<MetadataState>>) {
        let _ = self.metadata.set(metadata);
    }

    /// Whether `node` was removed from the cluster (its id tombstoned).
    pub fn is_removed(&self, node: NodeId) -> bool {
        self.metadata.get().is_some_and(|m| m.read().removed_nodes.contains(&node))
    }

    pub fn lookup(&self, node: NodeId) -> Option<String> {
        let registered = self.metadata.get().and_then(|m| m.read().nodes.get(&node).map(|n| n.raft_addr.clone()));
        registered.or_else(|| self.seeds.get(&node).cloned())
    }
}

/// The transport settings of a node of `cluster` (the nil id while joining).
pub(super) fn settings(opts: &ClusterOptions, cluster: Uuid, me: NodeId, contacts: &Contacts) -> TcpSettings {
    TcpSettings {
        cluster,
        me,
        connect_timeout: opts.connect_timeout,
        max_message_size: opts.max_message_size,
        contacts: contacts.clone(),
        tombstones: Default::default(),
    }
}

/// Asks the seeds, in turn, to admit `me` over TCP (a connection with the nil cluster id, on
/// which only the join is served); answers the cluster's id.
pub(super) async fn join(opts: &ClusterOptions, me: &NodeInfo, tasks: &Tasks) -> Result<Uuid, ClusterError> {
    let book = AddressBook::new(&opts.seeds);
    let lookup = book.clone();
    let scope = tasks.child();
    let settings = settings(opts, Uuid::nil(), me.id, &Contacts::default());
    let transport = TcpTransport::new(settings, Arc::new(move |n| lookup.lookup(n)), scope.clone());
    let outcome = join_through(transport.as_ref(), &opts.seeds, me).await;
    scope.stop().await;
    outcome
}

/// Asks the seeds, in turn, to admit `me`, until one does; answers the cluster's id. A seed
/// that is down, or a cluster in an election, is asked again; a refusal that names the node
/// id (in use, or removed) ends it at once.
pub(super) async fn join_through(
    transport: &dyn Transport,
    seeds: &[(NodeId, String)],
    me: &NodeInfo,
) -> Result<Uuid, ClusterError> {
    let deadline = Instant::now() + JOIN_DEADLINE;
    loop {
        let mut failures = Vec::new();
        for (seed, addr) in seeds {
            match transport.send(*seed, META_GROUP, Request::Join(me.clone()), JOIN_ANSWER).await {
                Ok(Reply::Joined { cluster_id }) => {
                    tracing::info!(seed, %addr, cluster = %cluster_id, "joined the cluster");
                    return Ok(cluster_id);
                }
                Ok(_) => failures.push(format!("seed {seed} at {addr}: answered with another kind of reply")),
                Err(TransportError::Refused { reason, .. }) if reason.starts_with(FINAL_REFUSAL) => {
                    return Err(ClusterError::Join(reason));
                }
                Err(e) => failures.push(format!("seed {seed} at {addr}: {e}")),
            }
        }
        if Instant::now() >= deadline {
            let failures = failures.join("; ");
            return Err(ClusterError::Join(format!("no seed admitted this node within {JOIN_DEADLINE:?}: {failures}")));
        }
        tracing::info!("waiting for a seed to admit this node: {}", failures.join("; "));
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

/// Seconds since `node` was last heard from, if ever.
pub(super) fn since_contact(contacts: &Contacts, node: NodeId) -> Option<Duration> {
    contacts.lock().get(&node).and_then(|t| t.last_heard).map(|t| t.elapsed())
}

/// The transport every group of a clustered node uses (its listener serves through it too).
pub(super) fn transport(
    opts: &ClusterOptions,
    cluster: Uuid,
    me: NodeId,
    book: &Arc<AddressBook>,
    contacts: &Contacts,
    tasks: &Tasks,
) -> Arc<TcpTransport> {
    let mut s = settings(opts, cluster, me, contacts);
    let book_of_the_removed = book.clone();
    s.tombstones.is_removed = Arc::new(move |n| book_of_the_removed.is_removed(n));
    let lookup = book.clone();
    TcpTransport::new(s, Arc::new(move |n| lookup.lookup(n)), tasks.clone())
}
