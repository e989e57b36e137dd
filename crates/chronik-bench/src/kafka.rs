//! The broker as Kafka clients see it, with librdkafka's `rdkafka_performance` as the load
//! generator (built from the source that ships in the rdkafka-sys crate, see
//! scripts/bench-kafka.sh) and, for the latency runs, a paced producer on the rdkafka crate
//! (`load`); broker and load generators on this machine, raw-disk figures from the same run
//! beside the results.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::ports::free_port;
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct KafkaArgs {
    /// Directory on the disk to measure (the broker's data goes here); removed afterwards.
    #[arg(long, default_value = "chronik-bench-data")]
    dir: PathBuf,
    /// The chronik-server binary (a release build).
    #[arg(long, default_value = "target/release/chronik-server")]
    server: PathBuf,
    /// librdkafka's rdkafka_performance.
    #[arg(long)]
    perf: PathBuf,
    /// 1 KiB messages in the produce throughput run.
    #[arg(long, default_value_t = 3_000_000)]
    produce_messages: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// The producer's linger.ms in the latency runs (peak and half peak).
    #[arg(long, default_value_t = 0.5)]
    latency_linger_ms: f64,
    /// Size of the topic read back in the fetch run.
    #[arg(long, default_value_t = 2048)]
    fetch_mib: u64,
    /// GiB of memory to touch before starting (see machine::prewarm_memory); 0 skips it.
    #[arg(long, default_value_t = 0)]
    prewarm_memory_gib: u64,
    /// Instead of the usual runs: produce throughput with the segment tier idle (the default
    /// WAL window, larger than what is produced) and then active (a broker whose WAL window is
    /// this many MiB, filled past it first, so data moves out while the run produces).
    #[arg(long, default_value_t = 0)]
    tier_window_mib: u64,
}

struct Server {
    child: Child,
    bootstrap: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(args: &KafkaArgs) -> anyhow::Result<Server> {
    start_server_with(args, "server", &[])
}

fn start_server_with(args: &KafkaArgs, data: &str, env: &[(&str, String)]) -> anyhow::Result<Server> {
    let port = free_port();
    let child = Command::new(&args.server)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CHRONIK_DATA_DIR", args.dir.join(data))
        .env("CHRONIK_KAFKA_ADDR", format!("127.0.0.1:{port}"))
        .env("CHRONIK_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("CHRONIK_NUM_PARTITIONS", "8")
        .env("CHRONIK_WAL_SYNC_MODE", "always")
        .env("CHRONIK_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.server.display()))?;
    let server = Server { child, bootstrap: format!("127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&server.bootstrap).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the broker did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

fn perf(args: &KafkaArgs, server: &Server, extra: &[&str]) -> anyhow::Result<String> {
    run_perf(Command::new(&args.perf), args, server, extra)
}

fn run_perf(mut cmd: Command, args: &KafkaArgs, server: &Server, extra: &[&str]) -> anyhow::Result<String> {
    let out = cmd
        .args(["-b", &server.bootstrap, "-q"])
        .args(extra)
        .output()
        .with_context(|| format!("running {}", args.perf.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "rdkafka_performance {extra:?} failed:\n{text}");
    Ok(text)
}

/// The number before `unit` on rdkafka_performance's summary line.
fn figure(text: &str, unit: &str) -> Option<f64> {
    let line = text.lines().rev().find(|l| l.starts_with('%') && l.contains(unit))?;
    let before = &line[..line.find(unit)?];
    before.split([' ', '(']).rfind(|s| !s.is_empty())?.parse().ok()
}

pub fn run(args: KafkaArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_in(args: &KafkaArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("{k}={v}");
    }
    if args.prewarm_memory_gib > 0 {
        let secs = crate::machine::prewarm_memory(args.prewarm_memory_gib);
        println!("memory_prewarmed_gib={}", args.prewarm_memory_gib);
        println!("memory_prewarm_seconds={secs:.1}");
    }
    let disk = crate::disk::fdatasync_per_mib_mbps(&args.dir, 256, 2)?;
    println!("disk_fdatasync_per_1mib_mbps={disk:.0}");
    let (p50, p99) = crate::disk::small_fdatasync_latency(&args.dir, 2000)?;
    println!("disk_4k_fdatasync_p50_ms={p50:.3}");
    println!("disk_4k_fdatasync_p99_ms={p99:.3}");

    if args.tier_window_mib > 0 {
        return tier_produce(args, disk);
    }
    let server = start_server(args)?;
    // Produce: one producer, 1 KiB records, acks=all, linger 5 ms, a topic of 8 partitions.
    let n = args.produce_messages.to_string();
    let out = perf(args, &server, &["-P", "-t", "produce8", "-s", "1024", "-a", "-1", "-X", "linger.ms=5", "-c", &n])?;
    let produce_mbps = figure(&out, "MB/s").context(out.clone())?;
    let produce_msgs = figure(&out, "msgs/s").context(out)?;
    println!("produce_1k_acks_all_mbps={produce_mbps:.0}");
    println!("produce_1k_acks_all_msgs_per_sec={produce_msgs:.0}");
    println!("produce_vs_disk_ratio={:.2}", produce_mbps / disk);

    // End-to-end latency at half the peak rate. Broker, producer and consumer share this
    // machine's two cores, so the peak is that of the whole pipeline: one producer and one
    // consumer running together (the consumer's rate, counted from its first message), the
    // producer stamping every message and the consumer recording each message's latency, as in
    // the measured run. The producer is the paced one from `load`, unpaced for the peak.
    perf(args, &server, &["-P", "-t", "latency", "-s", "1024", "-a", "-1", "-c", "1"])?; // creates the topic
    // As many messages as the throughput run: a short burst (under a second) measures buffers
    // more than a rate the pipeline can keep up.
    let peak_count = args.produce_messages.max(100_000);
    let load = |count, rate| crate::load::Load {
        bootstrap: &server.bootstrap,
        topic: "latency",
        message_size: 1024,
        linger_ms: args.latency_linger_ms,
        count,
        rate,
    };
    let consumer = spawn_consumer(args, &server, &peak_count.to_string(), &args.dir.join("peak-latency.txt"))?;
    let producer_peak = crate::load::produce(&load(peak_count, None))?.rate;
    let out = wait_consumer(consumer)?;
    let pipeline_peak = figure(&out, "msgs/s").context(out)?.min(producer_peak);
    println!("latency_producer_linger_ms={}", args.latency_linger_ms);
    println!("produce_1k_latency_mode_msgs_per_sec={producer_peak:.0}");
    println!("pipeline_1k_latency_mode_msgs_per_sec={pipeline_peak:.0}");
    let rate = ((pipeline_peak / 2.0) as u64).max(1000);
    let count = rate * args.latency_seconds;
    let lat_file = args.dir.join("latency.txt");
    let consumer = spawn_consumer(args, &server, &count.to_string(), &lat_file)?;
    let mut paced = crate::load::produce(&load(count, Some(rate as f64)))?;
    println!("e2e_latency_producer_achieved_msgs_per_sec={:.0}", paced.rate);
    // Produce to acknowledgement, beside produce to consume: tells a slow broker or producer
    // from a slow fetch path.
    println!("e2e_latency_acked_p50_ms={:.3}", paced.acked.percentile_ms(50.0));
    println!("e2e_latency_acked_p99_ms={:.3}", paced.acked.percentile_ms(99.0));
    wait_consumer(consumer)?;
    let mut lat = Latencies::default();
    for line in std::fs::read_to_string(&lat_file).unwrap_or_default().lines() {
        if let Ok(us) = line.trim().parse::<u64>() {
            lat.push(us);
        }
    }
    println!("e2e_latency_rate_msgs_per_sec={rate}");
    println!("e2e_latency_samples={}", lat_len(&lat_file));
    println!("e2e_latency_p50_ms={:.3}", lat.percentile_ms(50.0));
    println!("e2e_latency_p99_ms={:.3}", lat.percentile_ms(99.0));

    // Fetch: fill one partition with about fetch_mib of 1 KiB records, then read it all back
    // from the beginning with one consumer.
    let fetch_count = (args.fetch_mib << 20) / 1024;
    perf(
        args,
        &server,
        &[
            "-P",
            "-t",
            "fetch",
            "-p",
            "0",
            "-s",
            "1024",
            "-a",
            "1",
            "-X",
            "linger.ms=20",
            "-X",
            "batch.size=1000000",
            "-c",
            &fetch_count.to_string(),
        ],
    )?;
    for (label, extra) in [
        ("default", vec![]),
        ("max_fetch_16mib", vec!["-X", "fetch.message.max.bytes=16777216", "-X", "fetch.max.bytes=67108864"]),
    ] {
        let mut a = vec!["-C", "-t", "fetch", "-p", "0", "-o", "beginning"];
        let c = fetch_count.to_string();
        a.extend(["-c", &c]);
        a.extend(extra);
        let out = perf(args, &server, &a)?;
        let mbps = figure(&out, "MB/s)").context(out)?;
        println!("fetch_{}mib_{label}_mbps={mbps:.0}", args.fetch_mib);
    }
    Ok(())
}

/// Starts a consumer of all 8 partitions of `latency` from the end, for `count` messages, in
/// latency mode (one line per message in `latency_file`), and waits until it has joined.
/// Produce throughput (as in the usual run) with the segment tier idle, then active. Both
/// brokers are first filled past the window, so both write into recycled WAL segments: the
/// idle one because retention (`window / 8` a partition, checked every 250 ms) frees them, the
/// active one because its moves do.
fn tier_produce(args: &KafkaArgs, disk: f64) -> anyhow::Result<()> {
    let n = args.produce_messages.to_string();
    let window = args.tier_window_mib << 20;
    let fill = ((window + window / 2) >> 10).to_string();
    let run = |data: &str, env: &[(&str, String)]| -> anyhow::Result<f64> {
        let server = start_server_with(args, data, env)?;
        let produce = |count: &str| -> anyhow::Result<f64> {
            let out = perf(
                args,
                &server,
                &["-P", "-t", "produce8", "-s", "1024", "-a", "-1", "-X", "linger.ms=5", "-c", count],
            )?;
            figure(&out, "MB/s").context(out)
        };
        produce(&fill)?;
        produce(&n)
    };
    let segment = ("CHRONIK_WAL_SEGMENT_SIZE", (window / 4).to_string());
    let idle = run(
        "tier-idle",
        &[
            segment.clone(),
            ("CHRONIK_LOG_RETENTION_BYTES", (window / 8).to_string()),
            ("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "250".into()),
        ],
    )?;
    let _ = std::fs::remove_dir_all(args.dir.join("tier-idle"));
    let active = run("tier-active", &[segment, ("CHRONIK_WAL_RETENTION_BYTES", window.to_string())])?;
    let moved = dir_bytes(&args.dir.join("tier-active").join("partitions"));
    println!("kafka_tier_window_mib={}", args.tier_window_mib);
    println!("kafka_tier_idle_produce_mbps={idle:.0}");
    println!("kafka_tier_active_produce_mbps={active:.0}");
    println!("kafka_tier_active_vs_idle_ratio={:.2}", active / idle);
    println!("kafka_tier_segment_files_mib_after={}", moved >> 20);
    println!("produce_vs_disk_ratio_idle={:.2}", idle / disk);
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn spawn_consumer(args: &KafkaArgs, server: &Server, count: &str, latency_file: &Path) -> anyhow::Result<Consumer> {
    let mut cmd = Command::new(&args.perf);
    cmd.args(["-C", "-t", "latency", "-o", "end", "-c", count, "-b", &server.bootstrap, "-q"]);
    for p in 0..8 {
        cmd.args(["-p", &p.to_string()]);
    }
    cmd.arg("-l").arg("-A").arg(latency_file);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", args.perf.display()))?;
    let consumer = Consumer(child);
    std::thread::sleep(Duration::from_secs(2));
    Ok(consumer)
}

/// A consumer process, killed if the run fails before it is waited for.
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most a minute) for a consumer to finish; returns its output.
fn wait_consumer(mut consumer: Consumer) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = consumer.0.kill();
    let mut out = String::new();
    if let Some(mut p) = consumer.0.stdout.take() {
        p.read_to_string(&mut out)?;
    }
    if let Some(mut p) = consumer.0.stderr.take() {
        p.read_to_string(&mut out)?;
    }
    Ok(out)
}

fn lat_len(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::figure;

    #[test]
    fn parses_rdkafka_performance_summaries() {
        let produced = "% 3000000 messages produced (3072000000 bytes), 3000000 delivered (offset 0, 0 failed) in \
            9000ms: 333333 msgs/s and 341.33 MB/s, 0 produce failures, 0 in queue, no compression";
        assert_eq!(figure(produced, "MB/s"), Some(341.33));
        assert_eq!(figure(produced, "msgs/s"), Some(333333.0));
        let consumed = "% 2097152 messages (2147483648 bytes) consumed in 1500ms: 1398101 msgs/s (1431.66 MB/s)";
        assert_eq!(figure(consumed, "MB/s)"), Some(1431.66));
    }
}
