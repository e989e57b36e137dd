//! Test harness: runs the real `chronik-server` binary on free ports in a temporary data
//! directory, and runs client programs (Python, Node.js, kcat) against it.

pub mod cluster;
pub mod copying;
pub mod netns;
pub mod raw;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The server binary: `$CHRONIK_SERVER_BIN`, else the workspace's debug build.
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CHRONIK_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/chronik-server");
    assert!(p.exists(), "{} is missing: run `cargo build -p chronik-server` (scripts/test-all.sh does)", p.display());
    p
}

pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Shared with the benchmarks: ports picked below the range outgoing connections take their
/// source ports from, so the nodes' own connections cannot take one before its server binds it.
#[path = "../../crates/chronik-bench/src/ports.rs"]
mod ports;
use ports::free_port;

/// A running broker. Killed (SIGKILL) when dropped.
pub struct Broker {
    child: Option<Child>,
    pub kafka_port: u16,
    pub admin_port: u16,
    pub data: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// Arguments of `chronik-server` (none: standalone on the environment's settings).
    pub args: Vec<String>,
    /// The address its listeners bind (127.0.0.1, or its network namespace's address).
    pub host: String,
    /// A command the server runs under (`ip netns exec NAME`), if any.
    pub prefix: Vec<String>,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker with small WAL segments plus `env` (CHRONIK_* overrides).
    pub fn start(env: &[(&str, &str)]) -> Broker {
        Broker::start_in(tempfile::tempdir().unwrap(), env, &[])
    }

    /// Starts node `id` of a cluster on this machine the way the reference quick start does:
    /// `chronik-server cluster` with a chronik.toml naming the node, its Raft address
    /// (127.0.0.1 on `raft_ports[id - 1]`) and its seeds (the nodes `seeds`, as `id@host:port`).
    pub fn start_cluster_node(id: u64, raft_ports: &[u16], seeds: &[u64], env: &[(&str, &str)]) -> Broker {
        let data = tempfile::tempdir().unwrap();
        write_cluster_toml(data.path(), id, raft_ports, seeds);
        Broker::start_in(data, env, &["-c", "chronik.toml", "cluster"])
    }

    /// Starts `chronik-server args` in `data` with `env`.
    pub fn start_in(data: tempfile::TempDir, env: &[(&str, &str)], args: &[&str]) -> Broker {
        let mut b = Broker {
            child: None,
            kafka_port: 0,
            admin_port: 0,
            log: data.path().join("server.log"),
            data,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            host: "127.0.0.1".into(),
            prefix: Vec::new(),
        };
        b.spawn();
        b
    }

    /// Starts node `id` of a cluster inside network namespace `ns`, where it has address
    /// `hosts[id - 1]` (every node's Raft port is 9093 there, Kafka 9092, admin 8080).
    pub fn start_cluster_node_in(ns: &str, id: u64, hosts: &[String], seeds: &[u64]) -> Broker {
        let data = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = hosts.iter().map(|h| format!("{h}:9093")).collect();
        write_cluster_toml_at(data.path(), id, &addrs, seeds);
        let mut b = Broker {
            child: None,
            kafka_port: 9092,
            admin_port: 8080,
            log: data.path().join("server.log"),
            data,
            env: Vec::new(),
            args: ["-c", "chronik.toml", "cluster"].iter().map(|a| a.to_string()).collect(),
            host: hosts[id as usize - 1].clone(),
            prefix: ["ip", "netns", "exec", ns].iter().map(|a| a.to_string()).collect(),
        };
        b.spawn();
        b
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.kafka_port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.admin_port)
    }

    fn spawn(&mut self) {
        for attempt in 0..5 {
            if self.prefix.is_empty() && (self.kafka_port == 0 || attempt > 0) {
                self.kafka_port = free_port();
                self.admin_port = free_port();
            }
            let child = self.command().spawn().expect("spawn chronik-server");
            self.child = Some(child);
            if self.wait_ready(Duration::from_secs(60)) {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            self.kill9();
            let log = self.log_text();
            if exited.is_some() && log.contains("Address already in use") {
                continue; // a port raced with another test: pick new ones
            }
            if exited.is_none() && attempt == 0 && self.args.is_empty() && self.fresh_data_dir() {
                // A fresh node that stalled before becoming ready (seen rarely under the load
                // of a full CI run, not yet explained: docs/ARCHITECTURE.md "Known defects").
                // Shown here so it stays visible, then tried once more on a new data dir.
                eprintln!("chronik-server stalled before becoming ready; retrying once:\n{log}");
                let _ = std::fs::remove_dir_all(self.data.path().join("data"));
                continue;
            }
            panic!("chronik-server did not become ready:\n{log}");
        }
        panic!("could not find free ports");
    }

    /// The server's command line, environment and log files.
    fn command(&self) -> Command {
        self.command_with(&self.args)
    }

    /// `chronik-server args` with the server's environment and log files.
    fn command_with(&self, args: &[String]) -> Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(server_bin());
                c
            }
            None => Command::new(server_bin()),
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CHRONIK_DATA_DIR", self.data.path().join("data"))
            .env("CHRONIK_KAFKA_ADDR", format!("{}:{}", self.host, self.kafka_port))
            .env("CHRONIK_ADMIN_ADDR", format!("{}:{}", self.host, self.admin_port))
            .env("CHRONIK_WAL_SEGMENT_SIZE", "8388608")
            // A segment must hold the largest request (config validation).
            .env("CHRONIK_MAX_REQUEST_SIZE", "4194304")
            .env("CHRONIK_LOG_LEVEL", "info")
            // A test run may ask the servers for more (RUST_LOG overrides the level).
            .envs(std::env::var("CHRONIK_TEST_RUST_LOG").ok().map(|v| ("RUST_LOG", v)))
            .current_dir(self.data.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `chronik-server args` (a tool, not the server: the node should be stopped) with
    /// this node's directory and environment, and waits for it: exit code, stdout, stderr.
    pub fn run_tool(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut cmd = self.command_with(&args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = cmd.output().expect("run chronik-server");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    /// Runs the server again on this data directory and ports, expecting it to refuse to
    /// start: its exit code once it exits (failing the test if it runs for a minute).
    pub fn start_expecting_refusal(&mut self) -> Option<i32> {
        self.kill9();
        self.child = Some(self.command().spawn().expect("spawn chronik-server"));
        self.wait_exit(Duration::from_secs(60))
    }

    /// Waits for the server to exit on its own; its exit code (fails the test after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("a running broker");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            assert!(Instant::now() < deadline, "chronik-server still runs after {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether this broker's data directory was new at this start (nothing was acknowledged).
    fn fresh_data_dir(&self) -> bool {
        self.log_text().matches("WAL opened").count() == 1 && self.log_text().contains("(new node)")
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("chronik-server exited early: {status}");
                return false;
            }
            if self.log_text().contains("chronik-server ready")
                && TcpStream::connect((self.host.as_str(), self.kafka_port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Graceful stop (SIGTERM); returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        send_sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chronik-server ignored SIGTERM for 30 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stops where it is, its sockets stay open (a hung node).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        send_signal(self.child.as_ref().expect("a running broker").id(), signal);
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop and start again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert_eq!(self.stop(), Some(0), "clean shutdown exits 0:\n{}", self.log_text());
        self.spawn();
    }

    /// Starts the broker again (after `kill9`) on the same data directory and ports.
    pub fn start_again(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- chronik-server log ---\n{}", self.log_text());
        }
    }
}

/// Free ports for the Raft listeners of `n` nodes.
pub fn raft_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// The `[cluster]` section of the reference quick start, for node `id` on 127.0.0.1.
pub fn write_cluster_toml(dir: &Path, id: u64, raft_ports: &[u16], seeds: &[u64]) {
    let addrs: Vec<String> = raft_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    write_cluster_toml_at(dir, id, &addrs, seeds);
}

/// The `[cluster]` section for node `id`, the nodes' Raft addresses being `raft_addrs`.
pub fn write_cluster_toml_at(dir: &Path, id: u64, raft_addrs: &[String], seeds: &[u64]) {
    let addr = &raft_addrs[id as usize - 1];
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}@{}\"", raft_addrs[*s as usize - 1])).collect();
    let toml = format!(
        "[cluster]\nenabled = true\nnode_id = {id}\nnode_addr = \"{addr}\"\n\
         advertised_node_addr = \"{addr}\"\nseed_nodes = [{}]\n",
        seeds.join(", ")
    );
    std::fs::write(dir.join("chronik.toml"), toml).unwrap();
}

/// Runs a client program, failing the test (with its output) if it fails.
pub fn run_client(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The Python interpreter of the test virtualenv (made by scripts/test-all.sh).
pub fn python() -> Command {
    let venv = repo_dir().join("tests/.venv/bin/python");
    Command::new(if venv.exists() { venv } else { PathBuf::from("python3") })
}

pub fn client_script(name: &str) -> PathBuf {
    repo_dir().join("tests/clients").join(name)
}

/// GET over HTTP/1.1 without a client library (the admin API is plain JSON).
pub fn http_get(url: &str) -> (u16, String) {
    http("GET", url)
}

pub fn http(method: &str, url: &str) -> (u16, String) {
    http_with_body(method, url, "")
}

/// POST of a JSON body.
pub fn http_post_json(url: &str, body: &str) -> (u16, String) {
    http_with_body("POST", url, body)
}

fn http_with_body(method: &str, url: &str, body: &str) -> (u16, String) {
    let content_type = if body.is_empty() { "" } else { "application/json" };
    http_send(method, url, content_type, body.as_bytes())
}

/// POST of raw bytes (the import endpoint's record batches).
pub fn http_post_bytes(url: &str, body: &[u8]) -> (u16, String) {
    http_send("POST", url, "application/octet-stream", body)
}

fn http_send(method: &str, url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    let content_type =
        if content_type.is_empty() { String::new() } else { format!("Content-Type: {content_type}\r\n") };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// SIGTERM to a child process (std's `Child::kill` sends SIGKILL).
fn send_sigterm(pid: u32) {
    send_signal(pid, libc::SIGTERM);
}

#[allow(unsafe_code)] // kill(2) has no std wrapper
fn send_signal(pid: u32, signal: i32) {
    // SAFETY: a plain syscall on a pid this process spawned and has not yet reaped.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Now, in Kafka's millisecond clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
