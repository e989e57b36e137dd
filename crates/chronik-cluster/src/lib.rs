//! chronik-cluster: every topic partition is its own Raft group (openraft) whose log is the
//! partition's log, stored in the shared chronik-wal; a `__meta` group holds the cluster
//! metadata. The consensus and storage logic here has no sockets; the Kafka front end and the
//! admin API live in chronik-server.

pub mod batch;
pub mod codec;
pub mod idempotence;
pub mod identity;
pub mod metadata;
pub mod network;
pub mod offsets;
pub mod partition_log;
pub mod producers;
pub mod raft_node;
pub mod raft_storage;
pub mod retention;
pub mod state_machine;
pub mod topic_config;
pub mod types;
