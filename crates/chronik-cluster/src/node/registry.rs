//! The partition replicas this node hosts: one lock over both ways of finding a replica (by
//! Raft group, by topic and partition), and the one place replicas are started and stopped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chronik_wal::Wal;
use openraft::Config as RaftConfig;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::partition::{PartitionReplica, ReplicaSpec};
use crate::raft::{GroupId, NetworkFactory, NodeId, PeerSettings, SharedTransport};
use crate::tasks::Tasks;

#[derive(Default)]
struct Replicas {
    by_group: HashMap<GroupId, Arc<PartitionReplica>>,
    by_name: HashMap<(String, i32), GroupId>,
}

pub(crate) struct Registry {
    wal: Arc<Wal>,
    /// `<data_dir>/partitions`: a directory of segment files per partition.
    partitions_dir: PathBuf,
    node_id: NodeId,
    config: Arc<RaftConfig>,
    /// How the replicas' Raft messages reach other nodes.
    transport: SharedTransport,
    peer_settings: PeerSettings,
    /// Each replica gets a child of this scope.
    tasks: Tasks,
    replicas: RwLock<Replicas>,
    /// Bumped whenever a replica starts or stops, so waiters need not poll.
    changed: watch::Sender<u64>,
}

impl Registry {
    pub fn new(
        wal: Arc<Wal>,
        data_dir: &Path,
        node_id: NodeId,
        config: Arc<RaftConfig>,
        (transport, peer_settings): (SharedTransport, PeerSettings),
        tasks: Tasks,
    ) -> Registry {
        Registry {
            wal,
            partitions_dir: data_dir.join("partitions"),
            node_id,
            config,
            transport,
            peer_settings,
            tasks,
            replicas: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }

    /// Where the segment files of partition group `group` live.
    pub fn segments_dir(&self, group: GroupId) -> PathBuf {
        self.partitions_dir.join(group.to_string())
    }

    /// The groups that have a segment directory here.
    pub fn groups_on_disk(&self) -> Vec<GroupId> {
        std::fs::read_dir(&self.partitions_dir)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default()
    }

    pub fn by_group(&self, group: GroupId) -> Option<Arc<PartitionReplica>> {
        self.replicas.read().by_group.get(&group).cloned()
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionReplica>> {
        let replicas = self.replicas.read();
        let group = replicas.by_name.get(&(topic.to_string(), partition))?;
        replicas.by_group.get(group).cloned()
    }

    pub fn all(&self) -> Vec<Arc<PartitionReplica>> {
        self.replicas.read().by_group.values().cloned().collect()
    }

    pub fn groups(&self) -> HashSet<GroupId> {
        self.replicas.read().by_group.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.replicas.read().by_group.len()
    }

    /// Bumped whenever a replica starts or stops.
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Fires when a replica starts or stops.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn peer_settings(&self) -> PeerSettings {
        self.peer_settings
    }

    /// Opens and registers a replica (nothing is registered if it fails to open).
    pub async fn start(&self, spec: ReplicaSpec) -> Result<(), ClusterError> {
        let name = (spec.topic.clone(), spec.partition);
        let network = NetworkFactory::new(self.transport.clone(), spec.group, self.peer_settings);
        let replica =
            PartitionReplica::open(&self.wal, self.node_id, self.config.clone(), network, spec, self.tasks.child())
                .await?;
        {
            let mut replicas = self.replicas.write();
            replicas.by_name.insert(name, replica.group());
            replicas.by_group.insert(replica.group(), replica);
        }
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Unregisters and stops a replica; with `drop_data` its WAL data goes too (the partition
    /// was deleted: group ids are never reused).
    pub async fn stop(&self, group: GroupId, drop_data: bool) {
        let removed = {
            let mut replicas = self.replicas.write();
            let removed = replicas.by_group.remove(&group);
            if let Some(r) = &removed {
                replicas.by_name.remove(&(r.topic().to_string(), r.partition()));
            }
            removed
        };
        let Some(replica) = removed else { return };
        self.changed.send_modify(|v| *v += 1);
        replica.stop().await;
        if drop_data {
            self.drop_data(group);
        }
    }

    /// Drops a deleted partition's data: its WAL group and its segment files.
    pub fn drop_data(&self, group: GroupId) {
        if let Err(e) = self.wal.drop_group(group) {
            tracing::error!(group, "dropping the WAL group of a deleted partition: {e}");
        }
        let dir = self.segments_dir(group);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(group, "removing {}: {e}", dir.display());
        }
    }

    /// Stops every replica, keeping their data.
    pub async fn stop_all(&self) {
        let groups: Vec<GroupId> = self.groups().into_iter().collect();
        for group in groups {
            self.stop(group, false).await;
        }
    }
}
