//! Consensus cost: throughput through Raft (client writes into partition groups) next to the
//! bare WAL, in one run; and what 1,000 partitions cost a standalone node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_cluster::{MetaCommand, Node, NodeOptions, Tasks, TopicDefaults};
use chronik_config::RaftConfig;
use chronik_wal::{SyncMode, WalOptions};

use crate::stats::Latencies;
use crate::wal::WalArgs;

#[derive(clap::Args)]
pub struct RaftArgs {
    #[command(flatten)]
    wal: WalArgs,
    #[arg(long, default_value_t = 8)]
    partitions: u32,
}

#[derive(clap::Args)]
pub struct PartitionsArgs {
    #[arg(long, default_value = "chronik-bench-data")]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 1000)]
    count: u32,
    /// Seconds of idle CPU measurement.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
}

/// A node for the benchmarks; its retention loop runs every `retention_every`.
pub(crate) fn node_options(dir: &std::path::Path, segment_mib: u64, retention_every: Duration) -> NodeOptions {
    NodeOptions {
        data_dir: dir.to_path_buf(),
        node_id: 1,
        raft_addr: "127.0.0.1:9093".into(),
        kafka_addr: "127.0.0.1:9092".into(),
        wal: WalOptions {
            segment_size: segment_mib << 20,
            sync_mode: SyncMode::Always,
            spare_segments: 2,
            ..WalOptions::default()
        },
        raft: RaftConfig::default(),
        topic_defaults: TopicDefaults {
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: 1 << 20,
            ..TopicDefaults::default()
        },
        retention_check_interval: retention_every,
        producer_id_expiration: Duration::from_secs(86_400),
        wal_retention_bytes: 4 << 30,
        compaction_io_bytes_per_second: 0,
        request_timeout: Duration::from_secs(5),
        append_pipeline_depth: 1,
        cluster: None,
    }
}

/// A valid Kafka record batch header claiming one record, followed by `body_len` bytes.
pub fn record_batch(body_len: usize) -> Bytes {
    let mut b = vec![0u8; 61 + body_len];
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[16] = 2;
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    for (i, x) in b[61..].iter_mut().enumerate() {
        *x = (i * 31) as u8;
    }
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

pub(crate) async fn create_topic(node: &Node, name: &str, partitions: u32) -> anyhow::Result<()> {
    create_topic_with(node, name, partitions, Default::default()).await
}

pub(crate) async fn create_topic_with(
    node: &Node,
    name: &str,
    partitions: u32,
    configs: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    node.propose_meta(MetaCommand::CreateTopic {
        name: name.into(),
        topic_id: uuid::Uuid::new_v4(),
        partitions,
        replication_factor: 1,
        configs,
    })
    .await?;
    anyhow::ensure!(node.wait_for_topic(name, Duration::from_secs(120)).await, "{name} did not get leaders");
    Ok(())
}

pub fn run(args: RaftArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.wal.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.wal.dir);
    result
}

fn run_in(args: &RaftArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.wal.dir) {
        println!("{k}={v}");
    }
    let w = &args.wal;
    println!(
        "raft_config=writers:{} partitions:{} window:{} entry:16KiB sync:always",
        w.appenders, args.partitions, w.window
    );
    let bare = crate::wal::wal_run(w, 16 * 1024)?;
    println!("wal_16k_mbps={:.0}", bare.mbps);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (mbps, mut lat) = rt.block_on(raft_throughput(args))?;
    println!("raft_16k_mbps={mbps:.0}");
    println!("raft_16k_commit_p50_ms={:.3}", lat.percentile_ms(50.0));
    println!("raft_16k_commit_p99_ms={:.3}", lat.percentile_ms(99.0));
    println!("raft_vs_wal_ratio={:.2}", mbps / bare.mbps);
    Ok(())
}

async fn raft_throughput(args: &RaftArgs) -> anyhow::Result<(f64, Latencies)> {
    let dir = args.wal.dir.join("raft");
    // The node applies retention every 250 ms (the topic keeps about 32 MiB a partition).
    let node = Node::start(node_options(&dir, args.wal.segment_mib, Duration::from_millis(250)), &Tasks::new()).await?;
    // Retention keeps about 32 MiB per partition, so WAL segments are recycled as in a broker
    // that has been running for a while (the WAL figure is measured the same way).
    let retention = if args.wal.no_retention {
        Default::default()
    } else {
        [("retention.bytes".to_string(), (32u64 << 20).to_string())].into()
    };
    create_topic_with(&node, "bench", args.partitions, retention).await?;
    let batch = record_batch(16 * 1024 - 61);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..args.wal.appenders {
        let g = node.partition("bench", (w as u32 % args.partitions) as i32).expect("partition is local");
        let (batch, measuring, stop, done, window) =
            (batch.clone(), measuring.clone(), stop.clone(), done.clone(), args.wal.window);
        writers.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut inflight = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                while inflight.len() < window {
                    let pending = g.submit(batch.clone()).await.expect("submit");
                    inflight.push_back((Instant::now(), pending));
                }
                let (sent, pending) = inflight.pop_front().unwrap();
                pending.committed().await.expect("commit");
                if measuring.load(Ordering::Relaxed) {
                    lat.push(sent.elapsed().as_micros() as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            for (_, p) in inflight {
                let _ = p.committed().await;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.wal.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Latencies::default();
    for w in writers {
        lat.extend(w.await?);
    }
    node.shutdown().await?;
    Ok((n as f64 * batch.len() as f64 / 1e6 / secs, lat))
}

/// Anonymous resident memory (heap and the like, not mapped files), from /proc/self/status.
pub(crate) fn rss_anon_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("RssAnon:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

// Unsafe: getrusage has no std wrapper.
#[allow(unsafe_code)]
fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers, for which all-zero bytes are a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn partitions(args: PartitionsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let result = partitions_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn partitions_in(args: &PartitionsArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("{k}={v}");
    }
    let dir = args.dir.join("node");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let node = Node::start(node_options(&dir, 64, Duration::from_secs(3600)), &Tasks::new()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = rss_bytes();
        let created = Instant::now();
        let topics = args.count.div_ceil(100);
        for t in 0..topics {
            create_topic(&node, &format!("t{t}"), 100.min(args.count - t * 100)).await?;
        }
        println!("partitions={}", args.count);
        println!("create_seconds={:.2}", created.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = rss_bytes();
        println!("rss_mib_before={:.1}", rss_before as f64 / 1048576.0);
        println!("rss_mib_after={:.1}", rss_after as f64 / 1048576.0);
        println!(
            "rss_kib_per_partition={:.0}",
            (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 / args.count as f64
        );
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
        println!("idle_cpu_percent_of_one_core={:.1}", (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0);
        node.shutdown().await?;
        drop(node);
        let started = Instant::now();
        let node = Node::start(node_options(&dir, 64, Duration::from_secs(3600)), &Tasks::new()).await?;
        for t in 0..topics {
            anyhow::ensure!(
                node.wait_for_topic(&format!("t{t}"), Duration::from_secs(120)).await,
                "restart: t{t} has no leaders"
            );
        }
        println!("restart_seconds={:.2}", started.elapsed().as_secs_f64());
        node.shutdown().await?;
        anyhow::Ok(())
    })
}
