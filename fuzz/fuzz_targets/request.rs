//! Request decoding and dispatch: any bytes as a request frame (after the length prefix),
//! against a real standalone node. Nothing may panic, abort or hang.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chronik_cluster::raft_node::{NodeOptions, RaftNode, RaftSettings};
use chronik_cluster::topic_config::TopicDefaults;
use chronik_kafka::groups::GroupCoordinator;
use chronik_kafka::handlers::{self, Outcome};
use chronik_kafka::{Broker, BrokerConfig};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: chronik_kafka::alloc::GuardedAllocator = chronik_kafka::alloc::GuardedAllocator;

struct Harness {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let broker = rt.block_on(async {
            let node = RaftNode::start(NodeOptions {
                data_dir: dir.path().to_path_buf(),
                node_id: 1,
                raft_addr: "127.0.0.1:9093".into(),
                kafka_addr: "127.0.0.1:9092".into(),
                wal: chronik_wal::WalOptions { segment_size: 4 << 20, ..Default::default() },
                raft: RaftSettings {
                    heartbeat_interval_ms: 100,
                    election_timeout_ms: 500,
                    max_payload_entries: 300,
                    snapshot_threshold: 1000,
                    compaction_retain_entries: 100,
                },
            })
            .await
            .unwrap();
            let groups = GroupCoordinator::start(&node).await.unwrap();
            Arc::new(Broker {
                node,
                groups,
                config: BrokerConfig {
                    auto_create_topics: true,
                    num_partitions: 1,
                    default_replication_factor: 1,
                    max_request_size: 1 << 20,
                    max_partitions: 64,
                    topic_defaults: TopicDefaults { retention_ms: -1, retention_bytes: -1, max_message_bytes: 1 << 20 },
                },
            })
        });
        Harness { rt, broker, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        let out = handlers::dispatch(&h.broker, Bytes::copy_from_slice(data)).await;
        if let Outcome::Later(f) = out {
            let _ = tokio::time::timeout(Duration::from_millis(200), f).await;
        }
    });
});
