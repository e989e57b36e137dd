//! WAL group-commit throughput and latency next to the raw disk, in one run (the disk here is
//! shared and swings by 10x, so only same-run ratios mean anything).
//!
//! Model: `appenders` tasks spread over `logs` logs. As in Raft, each log has one driver that
//! takes whatever its appenders submitted, assigns indexes and appends it as one batch; each
//! appender keeps `window` appends in flight (Raft pipelines log appends the same way) and
//! measures submit-to-durable latency. Logs are purged as they grow, like retention, so
//! segments are recycled as in a long-running broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chronik_wal::{AppendEntry, LogPos, SyncMode, Wal, WalOptions};
use tokio::sync::{mpsc, oneshot};

use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct WalArgs {
    /// Directory on the disk to measure; created, and removed afterwards.
    #[arg(long, default_value = "chronik-bench-data")]
    pub dir: PathBuf,
    /// Measured seconds per WAL run (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 64)]
    pub appenders: usize,
    #[arg(long, default_value_t = 8)]
    pub logs: usize,
    /// Appends each appender keeps in flight.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    #[arg(long, default_value_t = 128)]
    pub segment_mib: u64,
    /// Never purge: every segment is new (fresh ingest) instead of recycled (steady state).
    #[arg(long)]
    pub no_retention: bool,
}

pub struct WalRun {
    pub appends_per_sec: f64,
    pub mbps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sync_rounds_per_sec: f64,
}

pub fn run(args: WalArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_in(args: &WalArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("{k}={v}");
    }
    println!(
        "wal_config=appenders:{} logs:{} window:{} segment_mib:{} sync:always segments:{}",
        args.appenders,
        args.logs,
        args.window,
        args.segment_mib,
        if args.no_retention { "new (fresh ingest, no purge)" } else { "recycled (purged like retention)" }
    );
    let disk = crate::disk::fdatasync_per_mib_mbps(&args.dir, 256, 2)?;
    println!("disk_fdatasync_per_1mib_mbps={disk:.0}");
    let (p50, p99) = crate::disk::small_fdatasync_latency(&args.dir, 2000)?;
    println!("disk_4k_fdatasync_p50_ms={p50:.3}");
    println!("disk_4k_fdatasync_p99_ms={p99:.3}");

    let big = wal_run(args, 16 * 1024)?;
    println!("wal_16k_mbps={:.0}", big.mbps);
    println!("wal_16k_appends_per_sec={:.0}", big.appends_per_sec);
    println!("wal_16k_durable_p50_ms={:.3}", big.p50_ms);
    println!("wal_16k_durable_p99_ms={:.3}", big.p99_ms);
    println!("wal_16k_sync_rounds_per_sec={:.0}", big.sync_rounds_per_sec);
    let small = wal_run(args, 1024)?;
    println!("wal_1k_appends_per_sec={:.0}", small.appends_per_sec);
    println!("wal_1k_mbps={:.0}", small.mbps);
    println!("wal_1k_durable_p50_ms={:.3}", small.p50_ms);
    println!("wal_1k_durable_p99_ms={:.3}", small.p99_ms);
    println!("wal_1k_sync_rounds_per_sec={:.0}", small.sync_rounds_per_sec);
    println!("wal_vs_disk_ratio={:.2}", big.mbps / disk);
    Ok(())
}

struct Submit {
    done: oneshot::Sender<()>,
}

pub fn wal_run(args: &WalArgs, payload_len: usize) -> anyhow::Result<WalRun> {
    let dir = args.dir.join(format!("wal-{payload_len}"));
    let opts = WalOptions {
        segment_size: args.segment_mib << 20,
        sync_mode: SyncMode::Always,
        spare_segments: 2,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&dir, opts)?;
    let wal = Arc::new(wal);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(drive(args, wal.clone(), payload_len));
    let stats = wal.stats();
    drop(rt);
    wal.close()?;
    drop(wal);
    std::fs::remove_dir_all(&dir)?;
    let (completed, secs, mut lat) = result?;
    Ok(WalRun {
        appends_per_sec: completed as f64 / secs,
        mbps: completed as f64 * payload_len as f64 / 1e6 / secs,
        p50_ms: lat.percentile_ms(50.0),
        p99_ms: lat.percentile_ms(99.0),
        sync_rounds_per_sec: stats.sync_rounds as f64 / (secs + 1.0),
    })
}

async fn drive(args: &WalArgs, wal: Arc<Wal>, payload_len: usize) -> anyhow::Result<(u64, f64, Latencies)> {
    let payload: Arc<[u8]> = (0..payload_len).map(|i| (i * 13) as u8).collect::<Vec<u8>>().into();
    // Keep about 32 MiB per log; beyond that, purge like retention would, so that segments are
    // recycled as in a broker that has been running for a while.
    let keep = ((32usize << 20) / payload_len) as u64;
    let mut senders = Vec::new();
    for log in 0..args.logs as u64 {
        let (tx, rx) = mpsc::unbounded_channel::<Submit>();
        senders.push(tx);
        let keep = if args.no_retention { u64::MAX / 4 } else { keep };
        tokio::spawn(log_driver(wal.clone(), log, rx, payload.clone(), keep));
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let mut appenders = Vec::new();
    for a in 0..args.appenders {
        let tx = senders[a % args.logs].clone();
        let (measuring, stop, completed) = (measuring.clone(), stop.clone(), completed.clone());
        let window = args.window;
        appenders.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut inflight = std::collections::VecDeque::with_capacity(window);
            while !stop.load(Ordering::Relaxed) {
                while inflight.len() < window {
                    let (done, rx) = oneshot::channel();
                    if tx.send(Submit { done }).is_err() {
                        return lat;
                    }
                    inflight.push_back((Instant::now(), rx));
                }
                let (sent, rx) = inflight.pop_front().expect("window is not empty");
                if rx.await.is_err() {
                    return lat;
                }
                if measuring.load(Ordering::Relaxed) {
                    lat.push(sent.elapsed().as_micros() as u64);
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let done = completed.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Latencies::default();
    for a in appenders {
        lat.extend(a.await?);
    }
    drop(senders);
    Ok((done, secs, lat))
}

/// One log's driver: batch what was submitted, append it, and complete each submitter once the
/// batch is durable.
async fn log_driver(wal: Arc<Wal>, log: u64, mut rx: mpsc::UnboundedReceiver<Submit>, payload: Arc<[u8]>, keep: u64) {
    let mut next = 1u64;
    let mut purged = 0u64;
    let mut batch = Vec::with_capacity(256);
    let parts: [&[u8]; 1] = [&payload[..]];
    while rx.recv_many(&mut batch, 256).await > 0 {
        let entries: Vec<AppendEntry<'_>> = (0..batch.len() as u64)
            .map(|k| AppendEntry { index: next + k, term: 1, leader_id: 1, entry_kind: 1, payload: &parts })
            .collect();
        let done: Vec<oneshot::Sender<()>> = batch.drain(..).map(|s| s.done).collect();
        next += entries.len() as u64;
        let appended = wal.append(
            log,
            &entries,
            Some(Box::new(move |r| {
                if r.is_ok() {
                    for d in done {
                        let _ = d.send(());
                    }
                }
            })),
        );
        if let Err(e) = appended {
            eprintln!("append to log {log} failed: {e}");
            return;
        }
        if next - purged > 2 * keep {
            purged = next - keep;
            let _ = wal.purge(log, LogPos { index: purged, term: 1, leader_id: 1 });
        }
    }
}
