//! This node's side of the `__meta` group: its Raft, the applied metadata everyone reads, the
//! first-start bootstrap, proposals, and the block of producer ids the node hands out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chronik_wal::Wal;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Raft, ServerState};
use parking_lot::RwLock;
use tokio::sync::watch;

use super::options::NodeOptions;
use crate::error::ClusterError;
use crate::identity::NodeIdentity;
use crate::metadata::{META_GROUP, MetaCommand, MetaResponse, MetadataState, NodeInfo};
use crate::raft::{self, Command, NodeId, Response, SharedTransport, TypeConfig};
use crate::state_machine::MetadataStateMachine;
use crate::storage::LogStore;

/// Producer ids reserved through the metadata at a time.
const PRODUCER_ID_BLOCK: u32 = 1000;

pub(super) struct MetaGroup {
    raft: Raft<TypeConfig, MetadataStateMachine>,
    view: Arc<RwLock<MetadataState>>,
    version: watch::Receiver<u64>,
    /// The reserved block of producer ids: (next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl MetaGroup {
    pub async fn open(
        wal: &Arc<Wal>,
        opts: &NodeOptions,
        transport: SharedTransport,
    ) -> Result<MetaGroup, ClusterError> {
        let sm = MetadataStateMachine::new(wal.clone());
        let view = sm.view();
        let version = sm.subscribe();
        let store = LogStore::new(wal.clone(), META_GROUP, None);
        let network = raft::NetworkFactory::new(transport, META_GROUP, opts.request_timeout);
        let raft = Raft::new(opts.node_id, opts.metadata_raft()?, network, store, sm)
            .await
            .map_err(|e| ClusterError::stopped(META_GROUP, e))?;
        Ok(MetaGroup { raft, view, version, producer_ids: tokio::sync::Mutex::new((0, 0)) })
    }

    /// Makes sure the group has a leader, belongs to this node's cluster, and knows this node's
    /// current addresses. A brand-new data directory bootstraps a cluster of one.
    pub async fn bootstrap(&self, identity: &NodeIdentity, me: NodeInfo) -> Result<(), ClusterError> {
        let stopped = |e| ClusterError::stopped(META_GROUP, e);
        if !self.raft.is_initialized().await.map_err(stopped)? {
            let members = BTreeMap::from([(me.id, BasicNode::new(&me.raft_addr))]);
            if let Err(e) = self.raft.initialize(members).await {
                tracing::debug!("metadata group already initialized: {e}");
            }
        }
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "metadata group leader")
            .await
            .map_err(|e| ClusterError::Timeout(format!("the metadata group's election: {e}")))?;
        // A leader applies its log after it is elected: what this node reads next (and what
        // the reconciler starts) must be the whole metadata, not a prefix of it.
        let last = self.raft.metrics().borrow_watched().last_log_index;
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(last, "the metadata log applied")
            .await
            .map_err(|e| ClusterError::Timeout(format!("applying the metadata log: {e}")))?;
        let (cluster_id, registered) = self.read(|m| (m.cluster_id, m.nodes.get(&me.id) == Some(&me)));
        match cluster_id {
            Some(id) if id != identity.cluster_id => {
                return Err(ClusterError::DataDir(format!(
                    "metadata belongs to cluster {id} but the node identity says cluster {}",
                    identity.cluster_id
                )));
            }
            Some(_) => {}
            None => self.propose(MetaCommand::InitCluster { cluster_id: identity.cluster_id }).await.map(drop)?,
        }
        if !registered {
            self.propose(MetaCommand::RegisterNode(me)).await?;
        }
        raft::quiet_if_alone(&self.raft, identity.node_id).await;
        Ok(())
    }

    /// Runs `f` on the applied metadata without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        f(&self.view.read())
    }

    /// Fires whenever the applied metadata changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }

    /// Proposes a change and waits until it is applied; a rejected change is an error.
    pub async fn propose(&self, cmd: MetaCommand) -> Result<MetaResponse, ClusterError> {
        let written = self.raft.client_write(Command::Meta(cmd)).await;
        match written.map_err(|e| ClusterError::from_write(META_GROUP, e))?.data {
            Response::Meta(MetaResponse::Rejected(e)) => Err(ClusterError::Rejected(e)),
            Response::Meta(ok) => Ok(ok),
            other => Err(ClusterError::unexpected(META_GROUP, other)),
        }
    }

    /// A producer id never handed out before (ids are reserved in blocks through the metadata).
    pub async fn allocate_producer_id(&self) -> Result<i64, ClusterError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            match self.propose(MetaCommand::AllocateProducerIds { count: PRODUCER_ID_BLOCK }).await? {
                MetaResponse::ProducerIds { start } => *ids = (start, start + PRODUCER_ID_BLOCK as i64),
                other => return Err(ClusterError::Internal(format!("producer ids answered with {other:?}"))),
            }
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    /// The group's leader (the "controller" in Kafka terms).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.raft.voter_ids().collect()
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("stopping the metadata group: {e}");
        }
    }
}
