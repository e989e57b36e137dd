//! Offset commits arriving together share Raft entries (and so fdatasync rounds): a thousand
//! consumers committing at once cost a handful of entries of `__consumer_offsets`, not a
//! thousand round trips one after another.

use std::sync::Arc;

use chronik_cluster::Tasks;
use chronik_config::Config;
use chronik_kafka::Broker;
use chronik_kafka::groups::{Committed, OFFSETS_TOPIC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.cluster.storage.wal_segment_size = 8 << 20;
    config.kafka.max_request_size = 4 << 20;
    let b: Arc<Broker> = Broker::start(&config, &Tasks::new()).await.unwrap();
    let offsets = b.node.partition(OFFSETS_TOPIC, 0).unwrap();
    let entries = || b.node.wal().group_info(offsets.group()).map_or(0, |g| g.entries);
    let before = entries();
    let commits = 500;
    let tasks: Vec<_> = (0..commits)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let c = Committed { offset: i, leader_epoch: 0, metadata: String::new() };
                b.groups.commit(&format!("group-{i}"), vec![(("t".to_string(), 0), c)]).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let used = entries() - before;
    assert!(used < commits as u64 / 4, "{commits} concurrent commits took {used} entries");
    for i in [0, 250, 499] {
        let key = (format!("group-{i}"), "t".to_string(), 0);
        assert_eq!(b.groups.committed(&key).unwrap().map(|c| c.offset), Some(i), "commit {i} is visible");
    }
    b.node.shutdown().await.unwrap();
}
