//! The metadata group's state machine: applies [`MetaCommand`](crate::metadata::MetaCommand)s to
//! [`MetadataState`] and publishes each new version to the node (which starts and stops partition
//! groups).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use chronik_wal::Wal;
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::{load_snapshot, save_snapshot};
use crate::metadata::{META_GROUP, MetadataState};
use crate::raft::{Command, LogId, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

#[derive(Clone)]
pub struct MetadataStateMachine {
    wal: Arc<Wal>,
    /// The state everyone reads.
    view: Arc<RwLock<MetadataState>>,
    /// Applied position and membership of the metadata group itself.
    applied: Arc<Mutex<(Option<LogId>, StoredMembership)>>,
    version: watch::Sender<u64>,
}

impl MetadataStateMachine {
    pub fn new(wal: Arc<Wal>) -> Self {
        let (version, _) = watch::channel(0);
        MetadataStateMachine {
            wal,
            view: Arc::new(RwLock::new(MetadataState::new())),
            applied: Arc::default(),
            version,
        }
    }

    pub fn view(&self) -> Arc<RwLock<MetadataState>> {
        self.view.clone()
    }

    /// Fires whenever an applied command or snapshot changes the metadata.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn publish(&self) {
        let v = self.view.read().version;
        self.version.send_replace(v);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataStateMachine {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (meta, data) = {
            // Both locks, so the state and its position agree.
            let applied = self.applied.lock();
            let view = self.view.read();
            let meta = SnapshotMeta { last_log_id: applied.0, last_membership: applied.1.clone() };
            (meta, Bytes::from(postcard::to_stdvec(&*view).map_err(io::Error::other)?))
        };
        save_snapshot(&self.wal, META_GROUP, &meta, &data).await?;
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok(self.applied.lock().clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut replies = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut applied = self.applied.lock();
            applied.0 = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    applied.1 = StoredMembership::new(Some(entry.log_id), m);
                    Response::None
                }
                EntryPayload::Normal(Command::Meta(cmd)) => Response::Meta(self.view.write().apply(&cmd)),
                EntryPayload::Normal(other) => Response::Invalid(format!("{other} sent to the metadata group")),
            };
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }
        self.publish();
        for (r, response) in replies {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> io::Result<()> {
        let state = MetadataState::decode(&snapshot).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        save_snapshot(&self.wal, META_GROUP, meta, &snapshot).await?;
        {
            let mut applied = self.applied.lock();
            *applied = (meta.last_log_id, meta.last_membership.clone());
            *self.view.write() = state;
        }
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        load_snapshot(&self.wal, META_GROUP)
    }
}
