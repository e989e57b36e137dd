//! `chronik-server backup` and `restore` between real brokers: a backup of a broker with
//! topics of their own configs, a partition whose head was deleted (its log start moved), a
//! topic deleted to its end, compressed batches with headers, and committed offsets; restored
//! into a new broker, every record is at its offset with its bytes, the log starts and ends
//! match, and so do the configs and committed offsets. A backup never overwrites a file; a
//! damaged archive and a restore over existing topics are refused before anything is written;
//! `--resume` goes on with a restore without writing anything twice.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chronik_tests::copying::{commit, committed, config, create, produce, read_partition, set_configs};
use chronik_tests::{Broker, server_bin};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const PARTS: [(&str, i32); 4] = [("orders", 0), ("orders", 1), ("orders", 2), ("emptied", 0)];

/// `chronik-server args`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(server_bin()).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn restore(archive: &Path, target: &Broker, extra: &[&str]) -> (Option<i32>, String, String) {
    let admin = format!("127.0.0.1:{}", target.admin_port);
    let input = archive.to_str().unwrap();
    let bootstrap = target.bootstrap();
    run(&[&["restore", "--json", "--input", input, "--to", &bootstrap, "--to-admin", &admin][..], extra].concat())
}

fn watermarks(broker: &Broker, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = config(&broker.bootstrap()).create().unwrap();
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap()
}

async fn delete_records(broker: &Broker, topic: &str, partition: i32, before: i64) {
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset(topic, partition, Offset::Offset(before)).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    assert_eq!(admin.delete_records(&cut, &opts).await.unwrap().elements()[0].error(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_record_at_its_offset_with_configs_and_commits() {
    let source = Broker::start(&[]);
    create(&source, "orders", 3, &[("retention.bytes", "123456789"), ("retention.ms", "-1")]).await;
    produce(&source, "orders", 3, 0, 900, 1000).await;
    delete_records(&source, "orders", 0, 10).await;
    create(&source, "emptied", 1, &[]).await;
    produce(&source, "emptied", 1, 0, 20, 20).await;
    delete_records(&source, "emptied", 0, 20).await;
    commit(&source, "billing", &[("orders", 0, 50, "m0"), ("orders", 2, 9, "")]);

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("chronik.backup");
    let out = archive.to_str().unwrap();
    let (code, stdout, err) = run(&["backup", "--json", "--from", &source.bootstrap(), "--out", out]);
    assert_eq!(code, Some(0), "{stdout}{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let summary = &report["summary"];
    assert_eq!((summary["topics"].as_u64(), summary["partitions"].as_u64()), (Some(2), Some(4)), "{report}");
    assert_eq!(summary["commits"], 2, "{report}");
    assert_eq!(report["partitions"]["orders-0"], serde_json::json!([10, 300]), "{report}");
    let (code, _, err) = run(&["backup", "--from", &source.bootstrap(), "--out", out]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already exists"), "{err}");
    // One interrupted (or running) leaves FILE.partial: named, not taken over.
    let other = dir.path().join("other.backup");
    std::fs::write(dir.path().join("other.backup.partial"), b"half").unwrap();
    let (code, _, err) = run(&["backup", "--from", &source.bootstrap(), "--out", other.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("other.backup.partial exists") && !other.exists(), "{err}");

    // A damaged archive is refused before the target is touched.
    let target = Broker::start(&[]);
    let cut = dir.path().join("cut.backup");
    let whole = std::fs::read(&archive).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let (code, _, err) = restore(&cut, &target, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("incomplete"), "{err}");
    let consumer: BaseConsumer = config(&target.bootstrap()).create().unwrap();
    let topics = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    assert!(topics.topics().iter().all(|t| t.name().starts_with("__")), "nothing created");

    let (code, stdout, err) = restore(&archive, &target, &[]);
    assert_eq!(code, Some(0), "{stdout}{err}");
    for (topic, partition) in PARTS {
        assert_eq!(watermarks(&target, topic, partition), watermarks(&source, topic, partition), "{topic}-{partition}");
        let records = read_partition(&target, topic, partition);
        assert_eq!(records, read_partition(&source, topic, partition), "{topic}-{partition}: every record, exactly");
    }
    assert_eq!(watermarks(&target, "orders", 0).0, 10, "the log start kept");
    assert_eq!(watermarks(&target, "emptied", 0), (20, 20), "ends where the source does");
    for topic in ["orders", "emptied"] {
        assert_eq!(set_configs(&target, topic).await, set_configs(&source, topic).await, "{topic} configs");
    }
    let parts = [("orders", 0), ("orders", 1), ("orders", 2)];
    assert_eq!(committed(&target, "billing", &parts), committed(&source, "billing", &parts));

    // Over topics that exist: refused, unless resuming, which writes nothing twice.
    let (code, _, err) = restore(&archive, &target, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already has topic(s)") && err.contains("--resume"), "{err}");
    let (code, stdout, err) = restore(&archive, &target, &["--resume"]);
    assert_eq!(code, Some(0), "{stdout}{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["batches"], 0, "nothing written again: {report}");
    for (topic, partition) in PARTS {
        assert_eq!(watermarks(&target, topic, partition), watermarks(&source, topic, partition), "{topic}-{partition}");
    }
    // The restored broker takes new writes.
    produce(&target, "orders", 3, 5000, 30, 1000).await;
}

/// A restore into a three-node cluster. `spread`, created on the target beforehand with three
/// replicas (and restored into with `--resume`), goes in through the two admin APIs given:
/// through each partition's leader, or through the first node given, made the leader first.
/// `single` is created by the restore with the target's default of one replica: its
/// partitions on the node not given fail naming the fix, and go in once every node's admin API
/// is given. Every replica ends up with every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_cluster_through_the_partition_leaders() {
    let source = Broker::start(&[]);
    for topic in ["spread", "single"] {
        create(&source, topic, 6, &[("retention.ms", "-1")]).await;
        produce(&source, topic, 6, 0, 600, 1000).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("spread.backup");
    let (code, out, err) = run(&["backup", "--from", &source.bootstrap(), "--out", archive.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");

    let ports = chronik_tests::raft_ports(3);
    let nodes = chronik_tests::cluster::start_seeded(&ports, 3);
    chronik_tests::cluster::create_replicated(&nodes[0].bootstrap(), "spread", 6, 3).await;
    let all: Vec<&Broker> = nodes.iter().collect();
    chronik_tests::cluster::wait_converged(&all, "spread", 6);
    let admin_of = |n: &Broker| format!("127.0.0.1:{}", n.admin_port);
    let restore = |admins: String| {
        let to = nodes[0].bootstrap();
        let input = archive.to_str().unwrap().to_string();
        run(&["restore", "--json", "--resume", "--input", &input, "--to", &to, "--to-admin", &admins])
    };
    let (code, out, err) = restore(format!("{},{}", admin_of(&nodes[0]), admin_of(&nodes[1])));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let failed: Vec<&String> = report["errors"].as_object().unwrap().keys().collect();
    assert!(failed.iter().all(|p| p.starts_with("single-")), "{report}");
    for why in report["errors"].as_object().unwrap().values() {
        assert!(why.as_str().unwrap().contains("give every node's admin API"), "{why}");
    }
    assert_eq!(code, Some(u8::from(!failed.is_empty()) as i32), "{err}");
    let every = nodes.iter().map(admin_of).collect::<Vec<_>>().join(",");
    let (code, out, err) = restore(every);
    assert_eq!(code, Some(0), "{out}{err}");

    chronik_tests::cluster::wait_converged(&all, "spread", 6);
    for topic in ["spread", "single"] {
        for partition in 0..6 {
            let expected = read_partition(&source, topic, partition);
            assert_eq!(read_partition(&nodes[2], topic, partition), expected, "{topic}-{partition}");
        }
    }
}
