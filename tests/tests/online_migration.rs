//! `chronik-server migrate --from` (the blue-green path) between two real standalone brokers:
//! the source has a compacted topic (offset gaps), committed offsets, and producers writing
//! while the copy runs; the copier is killed (SIGKILL) once mid-way and started again. In the
//! end the target holds every source record at its source offset exactly once, the same
//! gaps, the source's topic configs and committed offsets. Both brokers are also killed and
//! restarted under the running copier.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chronik_tests::copying::{commit, committed, config, create, high_watermark, produce, read_partition, set_configs};
use chronik_tests::{Broker, server_bin};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn start_copier(source: &Broker, target: &Broker) -> Child {
    Command::new(server_bin())
        .args(["migrate", "--json", "--poll-ms", "100", "--from", &source.bootstrap(), "--to", &target.bootstrap()])
        .args(["--to-admin", &format!("127.0.0.1:{}", target.admin_port)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_caught_up(source: &Broker, target: &Broker, parts: &[(&str, i32)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while parts.iter().any(|(t, p)| high_watermark(target, t, *p) != high_watermark(source, t, *p)) {
        assert!(Instant::now() < deadline, "the copy did not catch up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_copy_keeps_offsets_gaps_configs_and_commits_while_producers_write() {
    let mut source = Broker::start(&[("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "200")]);
    let mut target = Broker::start(&[("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "86400000")]);
    // A compacted topic, compacted on the source before the copy: its offsets have gaps.
    let compact = [
        ("cleanup.policy", "compact"),
        ("segment.ms", "100"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "3600000"),
    ];
    create(&source, "changelog", 1, &compact).await;
    for round in 0..10 {
        produce(&source, "changelog", 1, round * 30, 30, 15).await;
    }
    // k5..k9 once more (at offsets 300..304): their writes at 290..294 become a gap.
    produce(&source, "changelog", 1, 305, 5, 15).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let compacted = loop {
        let read = read_partition(&source, "changelog", 0);
        if read.windows(2).any(|w| w[1].0 > w[0].0 + 1) {
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "the source never compacted into offsets with gaps ({} records)",
            read.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    // A topic whose records were all deleted (DeleteRecords to its end): nothing to copy,
    // but the target must end at the same offset.
    create(&source, "emptied", 1, &[]).await;
    produce(&source, "emptied", 1, 0, 20, 20).await;
    let admin: AdminClient<DefaultClientContext> = config(&source.bootstrap()).create().unwrap();
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset("emptied", 0, Offset::Offset(20)).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    assert_eq!(admin.delete_records(&cut, &opts).await.unwrap().elements()[0].error(), Ok(()));

    create(&source, "orders", 3, &[("retention.bytes", "123456789"), ("retention.ms", "-1")]).await;
    produce(&source, "orders", 3, 0, 600, 1000).await;
    commit(&source, "billing", &[("orders", 0, 5, "m0"), ("orders", 1, 7, "")]);

    // The copy runs while producers write; it is killed once and started again.
    let mut copier = start_copier(&source, &target);
    produce(&source, "orders", 3, 600, 600, 1000).await;
    copier.kill().unwrap();
    copier.wait().unwrap();
    let copier = start_copier(&source, &target);
    produce(&source, "orders", 3, 1200, 600, 1000).await;
    // Both brokers crash (SIGKILL) and come back while the copier runs: it carries on.
    target.kill9();
    target.start_again();
    produce(&source, "orders", 3, 1800, 300, 1000).await;
    source.kill9();
    source.start_again();
    commit(&source, "billing", &[("orders", 0, 50, "later"), ("orders", 1, 7, ""), ("orders", 2, 9, "p2")]);
    let parts = [("orders", 0), ("orders", 1), ("orders", 2), ("changelog", 0), ("emptied", 0)];
    wait_caught_up(&source, &target, &parts);
    // Committed offsets follow too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&target, "billing", &[("orders", 0)]) != vec![(50, "later".to_string())] {
        assert!(Instant::now() < deadline, "commits not copied");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Told to stop: one last pass, a report, exit 0.
    assert!(Command::new("kill").args(["-TERM", &copier.id().to_string()]).status().unwrap().success());
    let out = copier.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["passes"].as_u64().unwrap() >= 1, "{report}");

    let consumer: BaseConsumer = config(&target.bootstrap()).create().unwrap();
    assert_eq!(
        consumer.fetch_watermarks("emptied", 0, Duration::from_secs(10)).unwrap(),
        (20, 20),
        "ends where the source does"
    );
    for (topic, partition) in &parts[..4] {
        let (topic, partition) = (*topic, *partition);
        let (src, tgt) = (read_partition(&source, topic, partition), read_partition(&target, topic, partition));
        assert!(!src.is_empty());
        assert_eq!(tgt, src, "{topic}-{partition}: every record at its source offset, exactly once");
    }
    assert_eq!(read_partition(&target, "changelog", 0), compacted, "the compacted topic's gaps kept");
    assert_eq!(
        committed(&target, "billing", &[("orders", 0), ("orders", 1), ("orders", 2)]),
        vec![(50, "later".to_string()), (7, String::new()), (9, "p2".to_string())]
    );
    for topic in ["orders", "changelog"] {
        assert_eq!(set_configs(&target, topic).await, set_configs(&source, topic).await, "{topic} configs");
    }
    // After the switch, new idempotent producers on the target get producer ids of their
    // own: the copied producers' sequence state does not refuse or swallow their writes.
    let before: i64 = (0..3).map(|p| high_watermark(&target, "orders", p)).sum();
    produce(&target, "orders", 3, 5000, 30, 1000).await;
    let after: i64 = (0..3).map(|p| high_watermark(&target, "orders", p)).sum();
    assert_eq!(after - before, 30, "every new write stored once");
}
