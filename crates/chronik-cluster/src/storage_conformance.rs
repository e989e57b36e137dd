//! openraft's own storage conformance suite, unmodified, against the WAL-backed log store with
//! each of the two state machines.

use std::sync::Arc;
use std::time::Duration;

use crate::metadata::META_GROUP;
use crate::raft::TypeConfig;
use crate::state_machine::{MetadataStateMachine, PartitionStateMachine};
use crate::storage::{LogStore, PartitionLog};
use chronik_wal::{SyncMode, Wal, WalOptions};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

fn open_wal() -> Result<(TempDir, Arc<Wal>), StorageError<TypeConfig>> {
    let dir = tempfile::tempdir().map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
    let opts = WalOptions {
        segment_size: 256 * 1024,
        sync_mode: SyncMode::Always,
        gc_interval: Duration::from_millis(200),
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), opts).map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
    Ok((dir, Arc::new(wal)))
}

struct PartitionStores;

impl StoreBuilder<TypeConfig, LogStore, PartitionStateMachine, TempDir> for PartitionStores {
    async fn build(&self) -> Result<(TempDir, LogStore, PartitionStateMachine), StorageError<TypeConfig>> {
        let (dir, wal) = open_wal()?;
        let log = PartitionLog::recover(wal.clone(), 7, 0, 0, &dir.path().join("segments"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, LogStore::new(wal.clone(), 7, Some(log.clone())), PartitionStateMachine::new(wal, 7, log)))
    }
}

struct MetadataStores;

impl StoreBuilder<TypeConfig, LogStore, MetadataStateMachine, TempDir> for MetadataStores {
    async fn build(&self) -> Result<(TempDir, LogStore, MetadataStateMachine), StorageError<TypeConfig>> {
        let (dir, wal) = open_wal()?;
        Ok((dir, LogStore::new(wal.clone(), META_GROUP, None), MetadataStateMachine::new(wal)))
    }
}

#[test]
fn partition_log_store_passes_openraft_suite() {
    TypeConfig::run(async { Suite::test_all(PartitionStores).await.expect("openraft storage suite") });
}

#[test]
fn metadata_log_store_passes_openraft_suite() {
    TypeConfig::run(async { Suite::test_all(MetadataStores).await.expect("openraft storage suite") });
}
