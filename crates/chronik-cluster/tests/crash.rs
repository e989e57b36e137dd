//! kill -9 of a node under a sustained stream of writes to many partitions: after restart every
//! acknowledged write reads back byte for byte at its offset, offsets are contiguous, and only
//! committed data is served. Repeated with several kill points.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chronik_cluster::MetaCommand;
use common::*;

const PARTITIONS: i32 = 8;

/// Child: appends to every partition concurrently, printing `ack <partition> <base> <seq>`.
#[test]
#[ignore = "helper process for kill_9_keeps_every_acknowledged_write"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("CHRONIK_CRASH_DIR") else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let node = start(Path::new(&dir)).await;
        if node.metadata().topic("t").is_none() {
            node.propose_meta(MetaCommand::CreateTopic {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: PARTITIONS as u32,
                replication_factor: 1,
                configs: BTreeMap::new(),
            })
            .await
            .unwrap();
        }
        assert!(node.wait_for_topic("t", Duration::from_secs(10)).await);
        let run: u64 = std::env::var("CHRONIK_CRASH_RUN").unwrap().parse().unwrap();
        let mut tasks = Vec::new();
        for p in 0..PARTITIONS {
            let g = node.partition("t", p).unwrap();
            tasks.push(tokio::spawn(async move {
                for seq in 0u64.. {
                    let records = 1 + (seq % 5) as i32;
                    let b = batch(
                        records,
                        seq as i64,
                        format!("run{run}-p{p}-seq{seq}-{}", "x".repeat((seq % 300) as usize)).as_bytes(),
                    );
                    let (base, _) = g.append(b).await.unwrap();
                    println!("ack {p} {base} {run} {seq}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // (partition, base offset) -> the batch that was acknowledged there
    let mut acked: BTreeMap<(i32, u64), bytes::Bytes> = BTreeMap::new();
    for (run, kill_after) in [(0u64, 200usize), (1, 1500), (2, 50), (3, 3000)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child_writer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CHRONIK_CRASH_DIR", dir.path())
            .env("CHRONIK_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        for line in lines {
            let line = line.unwrap();
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.first() != Some(&"ack") {
                continue;
            }
            let (p, base, r, seq): (i32, u64, u64, u64) =
                (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap());
            let records = 1 + (seq % 5) as i32;
            let b = batch(
                records,
                seq as i64,
                format!("run{r}-p{p}-seq{seq}-{}", "x".repeat((seq % 300) as usize)).as_bytes(),
            );
            acked.insert((p, base), b);
            seen += 1;
            if seen >= kill_after {
                break;
            }
            assert!(Instant::now() < deadline, "child too slow");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let node = start(dir.path()).await;
        assert!(node.wait_for_topic("t", Duration::from_secs(20)).await);
        for p in 0..PARTITIONS {
            let g = node.partition("t", p).unwrap();
            let max_acked = acked.range((p, 0)..(p + 1, 0)).next_back().map(|((_, base), b)| {
                base + chronik_cluster::BatchHeader::parse(b).unwrap().last_offset_delta as u64 + 1
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            while g.log().high_watermark() < max_acked.unwrap_or(0) {
                assert!(
                    Instant::now() < deadline,
                    "run {run} partition {p}: high watermark {} below acknowledged {max_acked:?}",
                    g.log().high_watermark()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Everything up to the high watermark: contiguous, valid batches.
            let read = g.log().read(0, usize::MAX).unwrap();
            let mut next = 0u64;
            let mut stored = BTreeMap::new();
            for chunk in &read.chunks {
                for span in chronik_cluster::split_batches(chunk, true).expect("stored batches are valid") {
                    assert_eq!(span.header.base_offset as u64, next, "run {run} partition {p}: offsets contiguous");
                    stored.insert(next, chunk.slice(span.range.clone()));
                    next = span.header.last_offset() as u64 + 1;
                }
            }
            assert_eq!(next, g.log().high_watermark(), "nothing above the high watermark is served");
            for ((_, base), sent) in acked.range((p, 0)..(p + 1, 0)) {
                let got = stored
                    .get(base)
                    .unwrap_or_else(|| panic!("run {run}: acknowledged batch at {p}/{base} is missing"));
                assert!(same_batch(got, sent, *base), "run {run}: batch at {p}/{base} differs");
            }
        }
        node.shutdown().await.unwrap();
    }
    assert!(acked.len() > 4000, "only {} acknowledged writes", acked.len());
}
