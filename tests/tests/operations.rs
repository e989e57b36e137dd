//! Operating the binary: its command line (validate-config, debug wal-*, version, modes), the
//! admin API, graceful and hard stops, and a full disk.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use chronik_tests::{Broker, http, http_get, server_bin};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(server_bin()).args(args).env_clear().output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn validate_config_reports_every_problem_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "data_dir = \"/tmp/x\"\n[cluster]\nenabled = true\nnode_id = 2\nseed_nodes = [\"1@node1:9093\"]\n",
    )
    .unwrap();
    let (code, out, _) = cli(&["validate-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "kafka_addr = \"nowhere\"\nbogus = 1\n[cluster]\nnode_id = 0\nseed_nodes = \
        [\"node1:9093\"]\n[cluster.raft]\nheartbeat_interval_ms = 900\nelection_timeout_ms = 500\n",
    )
    .unwrap();
    let (code, _, err) = cli(&["validate-config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    {
        let expected = "bad.toml:2: bogus: unknown key";
        assert!(err.contains(expected), "{expected} in:\n{err}");
    }
    // Unknown keys stop before value checks; fix it and every remaining problem is listed.
    std::fs::write(
        &bad,
        "kafka_addr = \"nowhere\"\n[cluster]\nnode_id = 0\nseed_nodes = [\"node1:9093\"]\n\
        [cluster.raft]\nheartbeat_interval_ms = 900\nelection_timeout_ms = 500\n",
    )
    .unwrap();
    let (code, _, err) = cli(&["validate-config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    for expected in [
        "bad.toml:1: kafka_addr",
        "bad.toml:3: cluster.node_id: must be between 1 and 65535",
        "bad.toml:4: cluster.seed_nodes",
        "bad.toml:6: cluster.raft.heartbeat_interval_ms: must be below election_timeout_ms",
        "4 problem(s)",
    ] {
        assert!(err.contains(expected), "{expected} in:\n{err}");
    }
    let (code, out, _) = cli(&["version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("chronik-server "), "{out}");
}

#[test]
fn modes_refuse_the_wrong_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n[cluster]\nenabled = true\n", dir.path().join("d").display()))
        .unwrap();
    let (code, _, err) = cli(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("chronik-server cluster"), "{err}");
    let standalone_cfg = dir.path().join("s.toml");
    std::fs::write(&standalone_cfg, format!("data_dir = \"{}\"\n", dir.path().join("d").display())).unwrap();
    let (code, _, err) = cli(&["cluster", "-c", standalone_cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("needs `[cluster] enabled = true`"), "{err}");
    let (code, _, err) = cli(&["-c", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn admin_api_and_wal_tools_on_a_real_node() {
    let mut b = Broker::start(&[]);
    let (status, body) = http_get(&b.admin_url("/admin/cluster/members"));
    assert_eq!(status, 200, "{body}");
    let members: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(members["mode"], "standalone");
    assert_eq!(members["members"][0]["node_id"], 1);
    assert_eq!(members["members"][0]["role"], "voter");
    assert_eq!(members["members"][0]["metadata_leader"], true);
    let (status, body) = http_get(&b.admin_url("/metrics"));
    assert_eq!(status, 200);
    assert!(body.contains("chronik_wal_sync_rounds_total"), "{body}");
    let (status, body) = http("POST", &b.admin_url("/admin/cluster/add-learner"));
    assert_eq!(status, 501, "cluster operations are reported as not supported: {body}");

    // Produce something, stop cleanly, and inspect the WAL offline.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for i in 0..20 {
            producer
                .send(FutureRecord::<(), _>::to("walcheck").payload(&format!("v{i}")), Duration::from_secs(10))
                .await
                .unwrap();
        }
    });
    drop(producer);
    assert_eq!(b.stop(), Some(0), "SIGTERM: drain and exit 0");
    let data = b.data.path().join("data");
    let (code, out, err) = cli(&["debug", "wal-verify", data.to_str().unwrap()]);
    assert_eq!(code, 0, "a cleanly stopped WAL verifies clean: {out}{err}");
    let (code, out, _) = cli(&["debug", "wal-stats", data.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(stats["records_by_type"]["entry"].as_u64().unwrap() > 20, "{out}");
    let (code, out, _) = cli(&["debug", "wal-dump", data.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    assert!(out.lines().filter(|l| l.contains("\"type\":\"entry\"")).count() > 20);

    // Damage a sealed segment: wal-verify names file and offset and exits 1; the broker refuses
    // to start rather than serve a silently shortened log.
    let wal = data.join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let first = &segs[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[64 + 60] ^= 0x01; // inside the first record
    std::fs::write(first, &bytes).unwrap();
    let (code, out, _) = cli(&["debug", "wal-verify", data.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("CORRUPT: {} at byte 64", first.display())), "{out}");
    let start = Command::new(server_bin())
        .env_clear()
        .env("CHRONIK_DATA_DIR", &data)
        .env("CHRONIK_KAFKA_ADDR", "127.0.0.1:0")
        .env("CHRONIK_ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(start.status.code(), Some(1));
    let err = String::from_utf8_lossy(&start.stderr);
    assert!(err.contains("corrupt WAL segment") && err.contains("at byte 64"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_record() {
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    let mut b = Broker::start(&[("CHRONIK_NUM_PARTITIONS", "8")]);
    let acked: Arc<Mutex<BTreeMap<(i32, i64), String>>> = Arc::default();
    for round in 0..3usize {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "5000")
            .create()
            .unwrap();
        let (p, a) = (producer.clone(), acked.clone());
        // A steady stream with 64 sends in flight, recording what is acknowledged.
        let stream = tokio::spawn(async move {
            futures::stream::iter(0..u32::MAX)
                .map(|i| {
                    let p = p.clone();
                    let value = format!("round{round}-msg{i}");
                    async move {
                        let r = p
                            .send(
                                FutureRecord::<(), _>::to("crashy").partition((i % 8) as i32).payload(&value),
                                Duration::from_secs(5),
                            )
                            .await;
                        (r.ok().map(|d| (d.partition, d.offset)), value)
                    }
                })
                .buffer_unordered(64)
                .take_while(|(r, _)| futures::future::ready(r.is_some()))
                .for_each(|(r, value)| {
                    a.lock().unwrap().insert(r.unwrap(), value);
                    futures::future::ready(())
                })
                .await
        });
        let target = 1000 * (round + 1) + round * 300;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < target {
            assert!(Instant::now() < deadline, "stream too slow: {} acknowledged", acked.lock().unwrap().len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.kill9(); // mid-stream: requests are in flight
        let _ = tokio::time::timeout(Duration::from_secs(30), stream).await;
        drop(producer);
        b.start_again();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 3000, "only {} acknowledged", acked.len());
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("group.id", "crash-check").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..8 {
        tpl.add_partition_offset("crashy", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut ends = BTreeMap::new();
    for p in 0..8 {
        ends.insert(p, consumer.fetch_watermarks("crashy", p, Duration::from_secs(10)).unwrap().1);
    }
    let total: i64 = ends.values().sum();
    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.insert((m.partition(), m.offset()), String::from_utf8_lossy(m.payload().unwrap_or_default()).into());
        }
    }
    for (po, value) in &acked {
        assert_eq!(seen.get(po), Some(value), "acknowledged record at {po:?}");
    }
    for p in 0..8 {
        let offsets: Vec<i64> = seen.keys().filter(|(q, _)| *q == p).map(|(_, o)| *o).collect();
        assert_eq!(offsets, (0..ends[&p]).collect::<Vec<_>>(), "partition {p}: contiguous up to the high watermark");
    }
}

#[test]
fn full_disk_refuses_produce_then_recovers() {
    let mnt = tempfile::tempdir().unwrap();
    let status =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"]).arg(mnt.path()).status().unwrap();
    assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let data = mnt.path().join("data");
    let b = Broker::start(&[
        ("CHRONIK_DATA_DIR", data.to_str().unwrap()),
        ("CHRONIK_WAL_SEGMENT_SIZE", "4194304"),
        ("CHRONIK_MAX_REQUEST_SIZE", "4190208"),
    ]);
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![0u8; 20 << 20]).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .set("retries", "0")
        .create()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let value = vec![7u8; 64 * 1024];
    let mut acked = 0i64;
    let error = rt.block_on(async {
        for _ in 0..2000 {
            match producer.send(FutureRecord::<(), _>::to("full").payload(&value), Duration::from_secs(5)).await {
                Ok(_) => acked += 1,
                Err((e, _)) => return e.to_string(),
            }
        }
        "disk never filled".to_string()
    });
    assert!(error.contains("KafkaStorageError") || error.contains("storage"), "{error}");
    assert!(acked > 10, "{acked}");
    std::fs::remove_file(&filler).unwrap();
    // After space is freed, produce works again and everything acknowledged is readable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = rt.block_on(producer.send(FutureRecord::<(), _>::to("full").payload(&value), Duration::from_secs(5)));
        if r.is_ok() {
            acked += 1;
            break;
        }
        assert!(Instant::now() < deadline, "produce did not recover: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("group.id", "full-check").create().unwrap();
    let (low, high) = consumer.fetch_watermarks("full", 0, Duration::from_secs(10)).unwrap();
    assert_eq!((low, high), (0, acked), "every acknowledged record is there");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("full", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < acked && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            assert_eq!(m.payload().unwrap().len(), value.len());
            read += 1;
        }
    }
    assert_eq!(read, acked);
    drop(b);
}

/// A log written to a file (or a pipe) is plain text: colour codes only on a terminal.
#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let b = Broker::start(&[]);
    let log = b.log_text();
    assert!(log.contains("chronik-server ready"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI escape in a log file:\n{log}");
}
