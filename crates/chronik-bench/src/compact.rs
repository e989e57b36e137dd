//! Log compaction: throughput of a pass in MB/s of input, and the produce latency of another
//! topic on the same node while it runs, against the same load with no pass running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_cluster::{IoBudget, Node, PartitionReplica};

use crate::raft::{create_topic, create_topic_with, node_options, record_batch};
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct CompactArgs {
    #[arg(long, default_value = "chronik-bench-data")]
    dir: PathBuf,
    /// MiB of keyed records produced into the compacted topic before the pass.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Distinct keys (each record's key is drawn from them).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 1000)]
    value_bytes: usize,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Compaction's I/O budget, MiB/s (0: none, the pass runs as fast as it can).
    #[arg(long, default_value_t = 0)]
    io_mib_per_second: u64,
    /// Produce rate of the latency probe, batches of 1 KiB per second.
    #[arg(long, default_value_t = 500)]
    probe_rate: u64,
}

pub fn run(args: CompactArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_in(args: &CompactArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("machine_{k}={v}");
    }
    println!(
        "compact_config=mib:{} keys:{} value:{}B partitions:{} io_budget:{}MiB/s",
        args.mib, args.keys, args.value_bytes, args.partitions, args.io_mib_per_second
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut opts = node_options(&args.dir.join("node"), 64, Duration::from_secs(3600));
        opts.wal_retention_bytes = u64::MAX;
        let defaults = opts.topic_defaults.clone();
        let node = Node::start(opts, &chronik_cluster::Tasks::new()).await?;
        let configs: BTreeMap<String, String> = [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "67108864"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        create_topic_with(&node, "compacted", args.partitions, configs).await?;
        create_topic(&node, "probe", 1).await?;
        let replicas: Vec<Arc<PartitionReplica>> =
            (0..args.partitions).map(|p| node.partition("compacted", p as i32).expect("local")).collect();
        let probe = node.partition("probe", 0).expect("local");

        let started = Instant::now();
        fill(&replicas, args).await?;
        println!("compact_fill_seconds={:.1}", started.elapsed().as_secs_f64());
        // Roll every partition's WAL tail into segment files, as segment.ms would.
        for r in &replicas {
            if let Some(upto) = r.log().last_committed_raft_index() {
                r.move_to_segments(upto).await?;
            }
        }
        let idle = probe_latency(&probe, args.probe_rate, Duration::from_secs(5), None).await;
        report("compact_probe_idle", idle);

        let budget = Arc::new(IoBudget::new(args.io_mib_per_second << 20));
        let running = Arc::new(AtomicBool::new(true));
        let probing = tokio::spawn({
            let (probe, running, rate) = (probe.clone(), running.clone(), args.probe_rate);
            async move { probe_latency(&probe, rate, Duration::from_secs(3600), Some(running)).await }
        });
        let started = Instant::now();
        let outcomes = node.compact_topics(&defaults, chronik_cluster::now_ms(), &budget).await;
        let secs = started.elapsed().as_secs_f64();
        running.store(false, Ordering::Release);
        let during = probing.await?;
        let bytes_in: u64 = outcomes.iter().map(|o| o.bytes_in).sum();
        let bytes_out: u64 = outcomes.iter().map(|o| o.bytes_out).sum();
        println!(
            "compact_pass seconds={secs:.2} input_mib={:.0} output_mib={:.1} passes={}",
            bytes_in as f64 / 1048576.0,
            bytes_out as f64 / 1048576.0,
            outcomes.len()
        );
        println!("compact_input_mb_per_second={:.0}", bytes_in as f64 / 1e6 / secs);
        report("compact_probe_during", during);
        drop((replicas, probe));
        node.shutdown().await?;
        Ok(())
    })
}

fn report(name: &str, (mut lat, count): (Latencies, usize)) {
    println!("{name} batches={count} p50_ms={:.2} p99_ms={:.2}", lat.percentile_ms(50.0), lat.percentile_ms(99.0));
}

/// Keyed batches (64 records each) round robin over the partitions until `mib` MiB.
async fn fill(replicas: &[Arc<PartitionReplica>], args: &CompactArgs) -> anyhow::Result<()> {
    let per_batch = 64u64;
    let batch_bytes = per_batch * (args.value_bytes as u64 + 20);
    let batches = (args.mib << 20) / batch_bytes;
    let mut seed = 7u64;
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..batches {
        let keys: Vec<u64> = (0..per_batch)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) % args.keys
            })
            .collect();
        let batch = keyed_batch(&keys, args.value_bytes);
        let r = &replicas[i as usize % replicas.len()];
        inflight.push_back(r.submit(batch).await?);
        if inflight.len() >= 32 {
            inflight.pop_front().expect("not empty").committed().await?;
        }
    }
    for p in inflight {
        p.committed().await?;
    }
    Ok(())
}

/// 1 KiB batches into `probe` at `rate` per second, one at a time, until `duration` passes or
/// `running` turns false; each one's time to commit.
async fn probe_latency(
    probe: &PartitionReplica,
    rate: u64,
    duration: Duration,
    running: Option<Arc<AtomicBool>>,
) -> (Latencies, usize) {
    let batch = record_batch(1024);
    let mut lat = Latencies::default();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let (started, mut count) = (Instant::now(), 0);
    while started.elapsed() < duration && running.as_ref().is_none_or(|r| r.load(Ordering::Acquire)) {
        tick.tick().await;
        let sent = Instant::now();
        let Ok(pending) = probe.submit(batch.clone()).await else { continue };
        if pending.committed().await.is_ok() {
            lat.push(sent.elapsed().as_micros() as u64);
            count += 1;
        }
    }
    (lat, count)
}

/// An uncompressed v2 batch: one record per key (`key-NNNNNNNN`), each with `value_bytes`.
fn keyed_batch(keys: &[u64], value_bytes: usize) -> Bytes {
    fn varint(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut b = vec![0u8; 61];
    let value = vec![b'v'; value_bytes];
    for (i, k) in keys.iter().enumerate() {
        let key = format!("key-{k:08}");
        let mut body = vec![0u8];
        varint(0, &mut body);
        varint(i as i64, &mut body);
        varint(key.len() as i64, &mut body);
        body.extend_from_slice(key.as_bytes());
        varint(value.len() as i64, &mut body);
        body.extend_from_slice(&value);
        varint(0, &mut body);
        varint(body.len() as i64, &mut b);
        b.extend(body);
    }
    let n = keys.len() as i32;
    let now = chronik_cluster::now_ms();
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[16] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[27..35].copy_from_slice(&now.to_be_bytes());
    b[35..43].copy_from_slice(&now.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}
