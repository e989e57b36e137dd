//! Cluster mode on this machine: three `chronik-server cluster` processes on 127.0.0.1 (the
//! reference quick start), measured as clients see them.
//!
//! - Produce throughput with RF=3 and acks=all against one standalone node, same load, same
//!   run (`cluster_vs_standalone_ratio=`).
//! - Failover: an acks=all producer sends every few milliseconds; the leader of its partition
//!   is killed (SIGKILL); the time from the kill to the first acknowledgement of a message sent
//!   after it, over `--trials` trials (the killed node is restarted and caught up in between).
//! - Optionally (`--partitions N`): N partitions with RF=3; idle CPU and resident memory per
//!   node, and the time for every group to have a leader after all three restart.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ports::free_port;
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Directory on the disk to measure (the nodes' data goes here); removed afterwards.
    #[arg(long, default_value = "chronik-bench-data")]
    dir: PathBuf,
    /// The chronik-server binary (a release build).
    #[arg(long, default_value = "target/release/chronik-server")]
    server: PathBuf,
    /// 1 KiB messages in each throughput run.
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Failover trials.
    #[arg(long, default_value_t = 20)]
    trials: u32,
    /// Partitions of the many-partitions run (0 skips it).
    #[arg(long, default_value_t = 0)]
    partitions: u32,
    /// `wal_page_cache_bytes` of every node, the standalone one included, in MiB (0: the
    /// default, 4 GiB). On this VM a write into page-cache memory the guest has not touched
    /// lately costs a trap to the host, and three nodes fill three windows.
    #[arg(long, default_value_t = 0)]
    wal_page_cache_mib: u64,
}

/// One chronik-server process.
struct Node {
    id: u64,
    dir: PathBuf,
    kafka: String,
    admin: String,
    server: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn new(bench: &ClusterArgs, dir: PathBuf, id: u64, args: &[&str], env: &[(&str, &str)]) -> Node {
        let server = bench.server.as_path();
        let (kafka, admin) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.extend([
            ("CHRONIK_DATA_DIR".to_string(), dir.join("data").display().to_string()),
            ("CHRONIK_KAFKA_ADDR".to_string(), kafka.clone()),
            ("CHRONIK_ADMIN_ADDR".to_string(), admin.clone()),
            ("CHRONIK_WAL_SYNC_MODE".to_string(), "always".to_string()),
            ("CHRONIK_LOG_LEVEL".to_string(), "warn".to_string()),
        ]);
        if bench.wal_page_cache_mib > 0 {
            env.push(("CHRONIK_WAL_PAGE_CACHE_BYTES".to_string(), (bench.wal_page_cache_mib << 20).to_string()));
        }
        let args = args.iter().map(|a| a.to_string()).collect();
        Node { id, dir, kafka, admin, server: server.into(), args, env, child: None }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log"))?;
        let child = Command::new(&self.server)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.server.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_get(&self.admin, "/ready").map(|(status, _)| status) != Some(200) {
            anyhow::ensure!(Instant::now() < deadline, "node {} did not become ready", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The node's partitions of `topic`: partition -> (leader, high watermark).
    fn partitions(&self, topic: &str) -> BTreeMap<u64, (Option<u64>, u64)> {
        let Some((200, body)) = http_get(&self.admin, "/admin/cluster/partitions") else { return BTreeMap::new() };
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&body) else { return BTreeMap::new() };
        items
            .iter()
            .filter(|p| p["topic"] == topic)
            .filter_map(|p| Some((p["partition"].as_u64()?, (p["leader"].as_u64(), p["high_watermark"].as_u64()?))))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET over HTTP/1.1 (the admin API answers small JSON documents): (status, body).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp.split_once("\r\n\r\n")?.1.to_string()))
}

/// Three nodes as the quick start starts them; topics auto-created with 8 partitions, RF=3.
fn start_cluster(args: &ClusterArgs, name: &str) -> anyhow::Result<Vec<Node>> {
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let dir = args.dir.join(format!("{name}-{id}"));
        std::fs::create_dir_all(&dir)?;
        let seeds: Vec<String> = (1..id).map(|s| format!("\"{s}@127.0.0.1:{}\"", raft[s as usize - 1])).collect();
        let port = raft[id as usize - 1];
        std::fs::write(
            dir.join("chronik.toml"),
            format!(
                "[cluster]\nenabled = true\nnode_id = {id}\nnode_addr = \"127.0.0.1:{port}\"\nseed_nodes = [{}]\n",
                seeds.join(", ")
            ),
        )?;
        let env = [("CHRONIK_NUM_PARTITIONS", "8"), ("CHRONIK_DEFAULT_REPLICATION_FACTOR", "3")];
        let mut node = Node::new(args, dir, id, &["-c", "chronik.toml", "cluster"], &env);
        node.start()?;
        nodes.push(node);
    }
    Ok(nodes)
}

fn bootstrap(nodes: &[Node]) -> String {
    nodes.iter().map(|n| n.kafka.as_str()).collect::<Vec<_>>().join(",")
}

fn throughput(bootstrap: &str, topic: &str, count: u64) -> anyhow::Result<f64> {
    let load = crate::load::Load { bootstrap, topic, message_size: 1024, linger_ms: 5.0, count, rate: None };
    Ok(crate::load::produce(&load)?.rate)
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(300)));
    let created = admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(3))], &opts).await?;
    created[0].clone().map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    Ok(())
}

/// Waits until every running node hosts `partitions` partitions of `topic`, each with a
/// leader, at the same high watermarks.
fn wait_converged(nodes: &[Node], topic: &str, partitions: usize, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let views: Vec<_> = nodes.iter().filter(|n| n.child.is_some()).map(|n| n.partitions(topic)).collect();
        let done = views[0].len() == partitions
            && views[0].values().all(|(l, _)| l.is_some())
            && views.iter().all(|v| v.iter().all(|(p, (_, hw))| views[0].get(p).map(|x| x.1) == Some(*hw)));
        if done {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "{topic} did not converge within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(mut args: ClusterArgs) -> anyhow::Result<()> {
    // The nodes run in their own directories.
    args.server = std::fs::canonicalize(&args.server).with_context(|| args.server.display().to_string())?;
    std::fs::create_dir_all(&args.dir)?;
    let result = run_in(&args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_in(args: &ClusterArgs) -> anyhow::Result<()> {
    for (k, v) in crate::machine::describe(&args.dir) {
        println!("{k}={v}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // Throughput: standalone, then the cluster, same load.
    let standalone_rate = {
        let mut node = Node::new(args, args.dir.join("standalone"), 1, &[], &[("CHRONIK_NUM_PARTITIONS", "8")]);
        node.start()?;
        throughput(&node.kafka, "produce8", args.messages)?
    };
    let nodes = start_cluster(args, "node")?;
    let servers = bootstrap(&nodes);
    let cluster_rate = throughput(&servers, "produce8", args.messages)?;
    println!("produce_1k_acks_all_standalone_msgs_per_sec={standalone_rate:.0}");
    println!("produce_1k_acks_all_rf3_msgs_per_sec={cluster_rate:.0}");
    println!("cluster_vs_standalone_ratio={:.2}", cluster_rate / standalone_rate);

    let mut nodes = nodes;
    let mut failover = runtime.block_on(failover_trials(args, &mut nodes, &servers))?;
    println!("failover_trials={}", args.trials);
    println!("failover_p50_ms={:.0}", failover.percentile_ms(50.0));
    println!("failover_p99_ms={:.0}", failover.percentile_ms(99.0));
    println!("failover_max_ms={:.0}", failover.percentile_ms(100.0));
    drop(nodes);

    if args.partitions > 0 {
        many_partitions(args, &runtime)?;
    }
    Ok(())
}

/// (sent, acknowledged) instants of the failover producer's messages.
type Acks = Arc<Mutex<Vec<(Instant, Instant)>>>;

async fn failover_trials(args: &ClusterArgs, nodes: &mut [Node], servers: &str) -> anyhow::Result<Latencies> {
    create_topic(servers, "failover", 1).await?;
    wait_converged(nodes, "failover", 1, Duration::from_secs(60))?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("retry.backoff.ms", "10")
        .set("topic.metadata.refresh.fast.interval.ms", "20")
        .set("retry.backoff.max.ms", "50")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "100")
        .set("message.timeout.ms", "30000")
        .create()?;
    let acks: Acks = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (acks, stop) = (acks.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (producer, acks) = (producer.clone(), acks.clone());
                let sent = Instant::now();
                tokio::spawn(async move {
                    let record = FutureRecord::<(), _>::to("failover").payload(&[0u8; 1024][..]);
                    if producer.send(record, Duration::from_secs(30)).await.is_ok() {
                        acks.lock().unwrap().push((sent, Instant::now()));
                    }
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Under load before the first kill: a producer that has not yet reached the leader when
    // it dies measures librdkafka's start-up, not the failover.
    let warm = Instant::now();
    while acks.lock().unwrap().is_empty() {
        anyhow::ensure!(warm.elapsed() < Duration::from_secs(30), "no write succeeded before the first trial");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut failovers = Latencies::default();
    for trial in 0..args.trials {
        let leader = nodes[0].partitions("failover").get(&0).and_then(|p| p.0).context("failover-0 has no leader")?;
        let victim = nodes.iter_mut().find(|n| n.id == leader).context("the leader is not a node of the run")?;
        let killed = Instant::now();
        victim.kill9();
        let survivor = nodes.iter().find(|n| n.child.is_some()).context("a surviving node")?;
        let mut elected = None;
        let took = loop {
            if elected.is_none()
                && survivor.partitions("failover").get(&0).and_then(|p| p.0).is_some_and(|l| l != leader)
            {
                elected = Some(killed.elapsed());
            }
            let first = acks.lock().unwrap().iter().filter(|(sent, _)| *sent > killed).map(|(_, at)| *at).min();
            if let Some(at) = first {
                break at - killed;
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "trial {trial}: no write succeeded in 60 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        failovers.push(took.as_micros() as u64);
        // When a surviving node first named another leader (the election, as the admin API
        // shows it), against when the client got its first acknowledgement.
        let elected_ms = elected.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        println!("failover_trial_{trial}_ms={:.0} elected_ms={elected_ms:.0}", took.as_secs_f64() * 1000.0);
        let victim = nodes.iter_mut().find(|n| n.id == leader).expect("found above");
        victim.start()?;
        wait_converged(nodes, "failover", 1, Duration::from_secs(60))?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    Ok(failovers)
}

fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): utime and stime are 14th and 15th.
    let rest: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    // After the command: state, ppid, ..., utime (the 12th), stime (the 13th), in clock ticks.
    let field = |i: usize| rest.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}

fn rss_mib_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn many_partitions(args: &ClusterArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let n = args.partitions;
    let mut nodes = start_cluster(args, "many")?;
    let servers = bootstrap(&nodes);
    let started = Instant::now();
    runtime.block_on(create_topic(&servers, "many", n as i32))?;
    wait_converged(&nodes, "many", n as usize, Duration::from_secs(1800))?;
    println!("many_partitions={n}");
    println!("many_replicas={}", 3 * n);
    println!("many_create_seconds={:.1}", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(5));
    let pids: Vec<u32> = nodes.iter().filter_map(|n| n.pid()).collect();
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds_of(*p)).collect();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    for (i, pid) in pids.iter().enumerate() {
        let busy = (cpu_seconds_of(*pid) - before[i]) / window.as_secs_f64();
        println!("many_idle_cpu_node{}_percent={:.1}", i + 1, busy * 100.0);
        let rss = rss_mib_of(*pid);
        println!("many_rss_node{}_mib={rss:.0}", i + 1);
        println!("many_rss_per_replica_node{}_kib={:.1}", i + 1, rss * 1024.0 / n as f64);
    }
    for node in nodes.iter_mut() {
        node.kill9();
    }
    let restarted = Instant::now();
    for node in nodes.iter_mut() {
        node.args = vec!["-c".into(), "chronik.toml".into(), "cluster".into()];
        // Each start returns once its metadata is caught up; all three are needed for that.
        let child = Command::new(&node.server)
            .args(&node.args)
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&node.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        node.child = Some(child);
    }
    wait_converged(&nodes, "many", n as usize, Duration::from_secs(1800))?;
    println!("many_restart_all_led_seconds={:.1}", restarted.elapsed().as_secs_f64());
    Ok(())
}
