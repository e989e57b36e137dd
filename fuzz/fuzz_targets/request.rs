//! Request decoding and dispatch: any bytes as a request frame (after the length prefix),
//! against a real standalone node. Nothing may panic, abort or hang.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chronik_cluster::Tasks;
use chronik_config::Config;
use chronik_kafka::Broker;
use chronik_kafka::handlers::{self, Outcome};
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
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.cluster.storage.wal_segment_size = 4 << 20;
        config.kafka.max_request_size = 1 << 20;
        config.kafka.max_partitions = 64;
        config.kafka.message_max_bytes = 1 << 20;
        config.kafka.log_retention_ms = -1;
        let broker = rt.block_on(Broker::start(&config, &Tasks::new())).unwrap();
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
