//! `chronik-server migrate --from` (the blue-green path) between two real standalone brokers:
//! the source has a compacted topic (offset gaps), committed offsets, and producers writing
//! while the copy runs; the copier is killed (SIGKILL) once mid-way and started again. In the
//! end the target holds every source record at its source offset exactly once, the same
//! gaps, the source's topic configs and committed offsets. Both brokers are also killed and
//! restarted under the running copier.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chronik_tests::{Broker, server_bin};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

async fn create(broker: &Broker, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin.create_topics(&[t], &opts).await.unwrap();
    assert!(created[0].is_ok(), "{topic}: {created:?}");
}

async fn produce(broker: &Broker, topic: &str, partitions: i32, from: usize, count: usize, keys: usize) {
    let producer: FutureProducer = config(&broker.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("enable.idempotence", "true")
        .set("compression.type", ["none", "zstd", "gzip"][from % 3])
        .create()
        .unwrap();
    let sends = (from..from + count).map(|i| {
        let producer = producer.clone();
        let key = format!("k{}", i % keys);
        let value = format!("v{i}-{}", "x".repeat(i % 50));
        async move {
            let headers = rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "n", value: Some(&i.to_string()) });
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .partition((i % partitions as usize) as i32)
                .headers(headers);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)
        }
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
}

/// (offset, key, value, headers, timestamp) of everything in a partition.
type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>, i64);

fn read_partition(broker: &Broker, topic: &str, partition: i32) -> Vec<Rec> {
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", "online-check").create().unwrap();
    let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out: Vec<Rec> = Vec::new();
    let mut quiet = Instant::now();
    while out.last().is_none_or(|r| r.0 < high - 1) && quiet.elapsed() < Duration::from_secs(3) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
            out.push((
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
                m.timestamp().to_millis().unwrap_or(-1),
            ));
            quiet = Instant::now();
        }
    }
    out
}

fn high_watermark(broker: &Broker, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = config(&broker.bootstrap()).create().unwrap();
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).map(|w| w.1).unwrap_or(-1)
}

fn commit(broker: &Broker, group: &str, offsets: &[(&str, i32, i64, &str)]) {
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p, o, meta) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
        tpl.find_partition(t, *p).unwrap().set_metadata(meta);
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

fn committed(broker: &Broker, group: &str, parts: &[(&str, i32)]) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| (e.offset().to_raw().unwrap_or(-1), e.metadata().to_string())).collect()
}

async fn set_configs(broker: &Broker, topic: &str) -> BTreeMap<String, String> {
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts).await.unwrap();
    let r = res.into_iter().next().unwrap().unwrap();
    r.entries.into_iter().filter(|e| !e.is_default).map(|e| (e.name, e.value.unwrap_or_default())).collect()
}

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
