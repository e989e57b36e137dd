//! The segment tier: produce throughput through Raft with data moving out of the WAL next to
//! the same load with the tier idle, in one run; resident memory per retained GiB; restart
//! time with many GiB over many partitions; sequential fetch from segment files, cold (dropped
//! from the page cache) and warm.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chronik_cluster::{Node, PartitionReplica};

use crate::raft::{create_topic, create_topic_with, node_options, record_batch, rss_anon_bytes, rss_bytes};

#[derive(clap::Args)]
pub struct TierArgs {
    #[arg(long, default_value = "chronik-bench-data")]
    dir: PathBuf,
    /// GiB produced in each throughput phase (after a fill that puts the WAL over its window);
    /// 0 skips the throughput, fetch and memory phases.
    #[arg(long, default_value_t = 4)]
    gib: u64,
    /// The WAL's window in the active phase, MiB.
    #[arg(long, default_value_t = 1024)]
    window_mib: u64,
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// GiB retained over `restart_partitions` partitions for the restart figure (0 skips it).
    #[arg(long, default_value_t = 20)]
    restart_gib: u64,
    #[arg(long, default_value_t = 1000)]
    restart_partitions: u32,
}

pub fn run(args: TierArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_in(args: &TierArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("{k}={v}");
    }
    println!(
        "tier_config=writers:{} partitions:{} entry:64KiB window:{}MiB wal_segment:{}MiB measured:{}GiB",
        args.writers, args.partitions, args.window_mib, args.segment_mib, args.gib
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        if args.gib > 0 {
            let idle = throughput_phase(args, "idle", u64::MAX).await?;
            let active = throughput_phase(args, "active", args.window_mib << 20).await?;
            println!("tier_active_vs_idle_ratio={:.2}", active / idle);
            fetch_and_memory(args).await?;
        }
        if args.restart_gib > 0 {
            restart_phase(args).await?;
        }
        anyhow::Ok(())
    })
}

/// Produces `gib` GiB through Raft into `partitions` partitions (64 KiB entries) after a fill
/// of window + 512 MiB; returns the measured MB/s. `window` u64::MAX keeps the tier idle; then
/// retention (64 MiB a partition, every 250 ms) keeps the WAL recycling its segments, as the
/// moves do in the active phase, so both phases write into reused files.
async fn throughput_phase(args: &TierArgs, name: &str, window: u64) -> anyhow::Result<f64> {
    let dir = args.dir.join(name);
    let idle = window == u64::MAX;
    let mut opts = node_options(&dir, args.segment_mib, Duration::from_millis(if idle { 250 } else { 3_600_000 }));
    opts.wal_retention_bytes = window;
    let node = Node::start(opts, &chronik_cluster::Tasks::new()).await?;
    let configs =
        if idle { [("retention.bytes".to_string(), (64u64 << 20).to_string())].into() } else { Default::default() };
    create_topic_with(&node, "bench", args.partitions, configs).await?;
    let replicas: Vec<Arc<PartitionReplica>> =
        (0..args.partitions).map(|p| node.partition("bench", p as i32).expect("local")).collect();
    let fill = (args.window_mib << 20) + (512 << 20);
    produce(&replicas, args.writers, fill).await;
    let moved_before: u64 = replicas.iter().map(|r| r.log().segment_bytes()).sum();
    let started = Instant::now();
    produce(&replicas, args.writers, args.gib << 30).await;
    let secs = started.elapsed().as_secs_f64();
    let mbps = (args.gib << 30) as f64 / 1e6 / secs;
    let moved: u64 = replicas.iter().map(|r| r.log().segment_bytes()).sum::<u64>() - moved_before;
    println!("{name}_produce_mbps={mbps:.0}");
    println!("{name}_moved_to_segment_files_mib_while_measuring={}", moved >> 20);
    node.shutdown().await?;
    if name == "idle" {
        drop(node);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(mbps)
}

/// `writers` tasks append 64 KiB entries round robin over `replicas` until `bytes` are
/// committed, 8 in flight each.
async fn produce(replicas: &[Arc<PartitionReplica>], writers: usize, bytes: u64) {
    let batch = record_batch(64 * 1024 - 61);
    let target = bytes / batch.len() as u64;
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (replicas, batch, issued) = (replicas.to_vec(), batch.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut inflight = std::collections::VecDeque::new();
            let mut i = w;
            loop {
                let more = issued.fetch_add(1, Ordering::Relaxed) < target;
                if more {
                    let r = &replicas[i % replicas.len()];
                    i += writers;
                    inflight.push_back(r.submit(batch.clone()).await.expect("submit"));
                }
                if inflight.len() >= 8 || (!more && !inflight.is_empty()) {
                    inflight.pop_front().expect("not empty").committed().await.expect("commit");
                }
                if !more && inflight.is_empty() {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

/// On the active phase's data: restart time and resident memory, then every partition read
/// from its log start to the WAL (the segment files) cold and warm.
async fn fetch_and_memory(args: &TierArgs) -> anyhow::Result<()> {
    let dir = args.dir.join("active");
    let mut opts = node_options(&dir, args.segment_mib, Duration::from_secs(3600));
    opts.wal_retention_bytes = args.window_mib << 20;
    let (rss0, anon0) = (rss_bytes(), rss_anon_bytes());
    let started = Instant::now();
    let node = Node::start(opts, &chronik_cluster::Tasks::new()).await?;
    anyhow::ensure!(node.wait_for_topic("bench", Duration::from_secs(120)).await, "bench has no leaders");
    println!("active_restart_seconds={:.2}", started.elapsed().as_secs_f64());
    let replicas: Vec<Arc<PartitionReplica>> =
        (0..args.partitions).map(|p| node.partition("bench", p as i32).expect("local")).collect();
    let retained: u64 = replicas.iter().map(|r| r.log().size_bytes()).sum();
    let in_files: u64 = replicas.iter().map(|r| r.log().segment_bytes()).sum();
    println!("retained_gib={:.2} in_segment_files_gib={:.2}", gib(retained), gib(in_files));
    memory_per_gib("active", rss0, anon0, retained);
    drop_from_page_cache(&dir.join("partitions"))?;
    for pass in ["cold", "warm"] {
        let started = Instant::now();
        let mut bytes = 0u64;
        for r in &replicas {
            bytes += read_segment_tier(r)?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("fetch_segment_files_{pass}_gbps={:.2} ({} MiB)", bytes as f64 / 1e9 / secs, bytes >> 20);
    }
    memory_per_gib("active_after_reading_everything", rss0, anon0, retained);
    node.shutdown().await?;
    Ok(())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn memory_per_gib(name: &str, rss0: u64, anon0: u64, retained: u64) {
    let per = |now: u64, before: u64| now.saturating_sub(before) as f64 / 1048576.0 / gib(retained).max(1e-9);
    println!("{name}_rss_mib_per_retained_gib={:.2}", per(rss_bytes(), rss0));
    println!("{name}_anon_rss_mib_per_retained_gib={:.2}", per(rss_anon_bytes(), anon0));
}

/// Reads a partition from its log start up to the WAL's first offset, 1 MiB at a time, as a
/// consumer does; returns the bytes read.
fn read_segment_tier(r: &PartitionReplica) -> anyhow::Result<u64> {
    let (mut next, end) = (r.log().log_start_offset(), r.log().wal_front_offset());
    let mut bytes = 0u64;
    while next < end {
        let read = r.log().read(next, 1 << 20)?;
        let Some(last) = read.chunks.last() else { break };
        let spans = chronik_cluster::split_batches(last, false)?;
        next = spans.last().map_or(next + 1, |s| s.header.last_offset() as u64 + 1);
        bytes += read.bytes as u64;
    }
    Ok(bytes)
}

/// Drops the segment files' pages from the page cache (they are clean: nothing to write back).
#[allow(unsafe_code)]
fn drop_from_page_cache(dir: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    for group in std::fs::read_dir(dir)? {
        for f in std::fs::read_dir(group?.path())? {
            let file = std::fs::File::open(f?.path())?;
            // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
    Ok(())
}

/// `restart_gib` GiB over `restart_partitions` partitions, most of it moved into segment
/// files; then the time a restart takes until every partition has a leader, and the resident
/// memory the data adds (a restart with the same partitions empty is the baseline).
async fn restart_phase(args: &TierArgs) -> anyhow::Result<()> {
    let dir = args.dir.join("restart");
    let free = crate::disk::free_bytes(&args.dir);
    if free < (args.restart_gib + 8) << 30 {
        println!("restart_skipped=only {} GiB free", free >> 30);
        return Ok(());
    }
    let options = || {
        let mut o = node_options(&dir, args.segment_mib, Duration::from_secs(3600));
        o.wal_retention_bytes = args.window_mib << 20;
        o
    };
    let topics = args.restart_partitions.div_ceil(100);
    let node = Node::start(options(), &chronik_cluster::Tasks::new()).await?;
    for t in 0..topics {
        create_topic(&node, &format!("r{t}"), 100.min(args.restart_partitions - t * 100)).await?;
    }
    node.shutdown().await?;
    drop(node);
    // Time and memory come from a fresh process each: in this one, the allocator would reuse
    // what producing freed and hide what the data costs.
    let open = OpenArgs { dir: dir.clone(), segment_mib: args.segment_mib, window_mib: args.window_mib, topics };
    let empty = open_in_child(&open)?;
    println!("restart_empty_seconds={:.2} ({} partitions)", empty.seconds, args.restart_partitions);
    let node = Node::start(options(), &chronik_cluster::Tasks::new()).await?;
    let replicas = node.partitions();
    let started = Instant::now();
    produce(&replicas, args.writers, args.restart_gib << 30).await;
    println!(
        "restart_fill_seconds={:.1} ({} GiB over {} partitions)",
        started.elapsed().as_secs_f64(),
        args.restart_gib,
        replicas.len()
    );
    let settled = Instant::now();
    let defaults = node_options(&dir, args.segment_mib, Duration::from_secs(3600)).topic_defaults;
    node.move_out_of_wal(args.window_mib << 20, &defaults).await;
    println!("restart_final_move_seconds={:.1}", settled.elapsed().as_secs_f64());
    let retained: u64 = replicas.iter().map(|r| r.log().size_bytes()).sum();
    let in_files: u64 = replicas.iter().map(|r| r.log().segment_bytes()).sum();
    drop(replicas);
    node.shutdown().await?;
    drop(node);
    let full = open_in_child(&open)?;
    println!("restart_seconds={:.2}", full.seconds);
    let files = count_files(&dir.join("partitions"));
    println!(
        "restart_retained_gib={:.2} in_segment_files_gib={:.2} segment_files={files}",
        gib(retained),
        gib(in_files)
    );
    println!(
        "restart_rss_mib empty={:.1} full={:.1} anon_empty={:.1} anon_full={:.1}",
        mib(empty.rss),
        mib(full.rss),
        mib(empty.anon),
        mib(full.anon)
    );
    let per = |full: u64, empty: u64| mib(full.saturating_sub(empty)) / gib(retained).max(1e-9);
    println!("restart_rss_mib_per_retained_gib={:.2}", per(full.rss, empty.rss));
    println!("restart_anon_rss_mib_per_retained_gib={:.2}", per(full.anon, empty.anon));
    Ok(())
}

#[derive(clap::Args)]
pub struct OpenArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    segment_mib: u64,
    #[arg(long)]
    window_mib: u64,
    /// Topics r0..r{topics-1} to wait for.
    #[arg(long)]
    topics: u32,
}

/// A restart as measured in its own process.
struct Opened {
    seconds: f64,
    rss: u64,
    anon: u64,
}

fn open_in_child(open: &OpenArgs) -> anyhow::Result<Opened> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("tier-open")
        .args(["--dir", &open.dir.display().to_string()])
        .args(["--segment-mib", &open.segment_mib.to_string()])
        .args(["--window-mib", &open.window_mib.to_string()])
        .args(["--topics", &open.topics.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "tier-open failed: {}", out.status);
    let text = String::from_utf8(out.stdout)?;
    let value = |key: &str| -> anyhow::Result<f64> {
        let line = text.lines().find_map(|l| l.strip_prefix(key)).ok_or_else(|| anyhow::anyhow!("{key} missing"))?;
        Ok(line.trim().parse()?)
    };
    Ok(Opened { seconds: value("seconds=")?, rss: value("rss=")? as u64, anon: value("anon=")? as u64 })
}

/// The child side of [`open_in_child`]: start, wait for every topic's leaders, report.
pub fn open_and_report(args: OpenArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut options = node_options(&args.dir, args.segment_mib, Duration::from_secs(3600));
        options.wal_retention_bytes = args.window_mib << 20;
        let started = Instant::now();
        let node = Node::start(options, &chronik_cluster::Tasks::new()).await?;
        for t in 0..args.topics {
            anyhow::ensure!(node.wait_for_topic(&format!("r{t}"), Duration::from_secs(300)).await, "r{t}: no leaders");
        }
        let seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!("seconds={seconds}\nrss={}\nanon={}", rss_bytes(), rss_anon_bytes());
        node.shutdown().await?;
        Ok(())
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |d| d.flatten().map(|g| std::fs::read_dir(g.path()).map_or(0, |f| f.count())).sum())
}
