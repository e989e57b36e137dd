//! Checks that need more than a value's kind: ranges, addresses, combinations of keys.

use std::net::SocketAddr;

use crate::{Config, SeedNode};

/// A follower keeps a few more in hand than this per group (the transport's lanes).
const MAX_APPEND_PIPELINE_DEPTH: u64 = 64;
/// What a Raft message carries besides one entry's records (`MESSAGE_ENVELOPE` in
/// chronik-cluster's network).
const MESSAGE_ENVELOPE: u64 = 64 << 10;

/// Bytes a WAL segment needs beyond its largest record: the segment header and footer, the
/// record header and the entry framing (chronik-wal's layout, rounded up).
const SEGMENT_OVERHEAD: u64 = 4096;

/// `host:port` with a non-empty host and a numeric port (hosts are resolved later).
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("`{s}` is not host:port"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    port.parse::<u16>().map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
    Ok(())
}

fn check_listen(s: &str) -> Result<(), String> {
    s.parse::<SocketAddr>().map(|_| ()).map_err(|_| format!("`{s}` is not an ip:port address to listen on"))
}

pub(crate) fn validate(c: &Config, report: &mut dyn FnMut(&str, String)) {
    for (key, value) in
        [("kafka_addr", &c.kafka_addr), ("admin_addr", &c.admin_addr), ("cluster.node_addr", &c.cluster.node_addr)]
    {
        if let Err(e) = check_listen(value) {
            report(key, e);
        }
    }
    match &c.advertised_kafka_addr {
        Some(a) => {
            if let Err(e) = check_host_port(a) {
                report("advertised_kafka_addr", e);
            }
        }
        // Clients are told to connect where the broker listens; "all interfaces" is no address.
        None if c.kafka_addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_unspecified()) => report(
            "kafka_addr",
            format!(
                "`{}` listens on all interfaces, which clients cannot connect to: set advertised_kafka_addr",
                c.kafka_addr
            ),
        ),
        None => {}
    }
    if let Some(a) = &c.cluster.advertised_node_addr
        && let Err(e) = check_host_port(a)
    {
        report("cluster.advertised_node_addr", e);
    }
    if c.data_dir.as_os_str().is_empty() {
        report("data_dir", "must not be empty".into());
    }
    if !(1..=65535).contains(&c.cluster.node_id) {
        report("cluster.node_id", format!("must be between 1 and 65535 (got {})", c.cluster.node_id));
    }
    for seed in &c.cluster.seed_nodes {
        if let Err(e) = SeedNode::parse(seed) {
            report("cluster.seed_nodes", e);
        }
    }
    if c.cluster.network.append_pipeline_depth > MAX_APPEND_PIPELINE_DEPTH {
        let depth = c.cluster.network.append_pipeline_depth;
        report(
            "cluster.network.append_pipeline_depth",
            format!("must be at most {MAX_APPEND_PIPELINE_DEPTH} ({depth})"),
        );
    }
    let raft = &c.cluster.raft;
    if raft.heartbeat_interval_ms == 0 {
        report("cluster.raft.heartbeat_interval_ms", "must be above zero".into());
    }
    // A follower's election timers fire between two heartbeats and the election timeout.
    if raft.heartbeat_interval_ms.saturating_mul(2) > raft.election_timeout_ms {
        report(
            "cluster.raft.heartbeat_interval_ms",
            format!(
                "must be below election_timeout_ms, at most half of it ({} > {} / 2)",
                raft.heartbeat_interval_ms, raft.election_timeout_ms
            ),
        );
    }
    for (key, v) in [
        ("cluster.raft.max_payload_entries", raft.max_payload_entries),
        ("cluster.raft.snapshot_threshold", raft.snapshot_threshold),
        ("cluster.network.max_message_size", c.cluster.network.max_message_size),
        ("cluster.network.connect_timeout_ms", c.cluster.network.connect_timeout_ms),
        ("cluster.network.request_timeout_ms", c.cluster.network.request_timeout_ms),
        ("cluster.network.append_pipeline_depth", c.cluster.network.append_pipeline_depth),
        ("cluster.storage.wal_sync_interval_ms", c.cluster.storage.wal_sync_interval_ms),
        ("kafka.num_partitions", c.kafka.num_partitions as u64),
        ("kafka.default_replication_factor", c.kafka.default_replication_factor as u64),
        ("kafka.max_partitions", c.kafka.max_partitions as u64),
        ("kafka.retention_check_interval_ms", c.kafka.retention_check_interval_ms),
        ("kafka.fetch_max_bytes", c.kafka.fetch_max_bytes),
        ("kafka.max_connections", c.kafka.max_connections),
        ("kafka.max_connections_per_ip", c.kafka.max_connections_per_ip),
    ] {
        if v == 0 {
            report(key, "must be above zero".into());
        }
    }
    if c.kafka.num_partitions > c.kafka.max_partitions {
        report("kafka.num_partitions", format!("must not exceed kafka.max_partitions ({})", c.kafka.max_partitions));
    }
    let seg = c.cluster.storage.wal_segment_size;
    if !(64 * 1024..=1 << 31).contains(&seg) {
        report("cluster.storage.wal_segment_size", format!("must be between 65536 and 2147483648 bytes (got {seg})"));
    }
    // At most 1 GiB, like fetch_max_bytes: a Fetch response (one stored entry, which is at
    // most one request, or fetch_max_bytes of them) then always stays below 2 GiB.
    if !(1024..=1 << 30).contains(&c.kafka.max_request_size) {
        report("kafka.max_request_size", "must be between 1024 and 1073741824 bytes".into());
    }
    // A request's records for one partition become one WAL record: a segment must hold the largest
    // request the broker accepts (with room for the record and segment framing).
    if c.kafka.max_request_size.saturating_add(SEGMENT_OVERHEAD) > seg {
        report(
            "cluster.storage.wal_segment_size",
            format!(
                "must hold the largest request: at least kafka.max_request_size ({}) + {SEGMENT_OVERHEAD} bytes",
                c.kafka.max_request_size
            ),
        );
    }
    if c.cluster.storage.wal_retention_bytes < 2 * seg {
        report("cluster.storage.wal_retention_bytes", format!("must be at least two WAL segments ({})", 2 * seg));
    }
    // A request's records for one partition are one Raft entry, which must fit one message to
    // a follower (what else an append carries goes in other messages).
    let message = c.cluster.network.max_message_size;
    if c.cluster.enabled && c.kafka.max_request_size.saturating_add(MESSAGE_ENVELOPE) > message {
        report(
            "cluster.network.max_message_size",
            format!(
                "must hold the largest request as one Raft entry: at least kafka.max_request_size ({}) + {MESSAGE_ENVELOPE} bytes",
                c.kafka.max_request_size
            ),
        );
    }
    if c.kafka.queued_max_request_bytes < c.kafka.max_request_size {
        report(
            "kafka.queued_max_request_bytes",
            format!("must be at least kafka.max_request_size ({})", c.kafka.max_request_size),
        );
    }
    if c.kafka.fetch_max_bytes > 1 << 30 {
        report("kafka.fetch_max_bytes", "must be at most 1073741824 (a response frame stays below 2 GiB)".into());
    }
    if !(0..=1 << 20).contains(&(c.kafka.offset_metadata_max_bytes as i64)) {
        report("kafka.offset_metadata_max_bytes", "must be between 0 and 1048576".into());
    }
    for (key, v) in [
        ("kafka.log_message_timestamp_before_max_ms", c.kafka.log_message_timestamp_before_max_ms),
        ("kafka.log_message_timestamp_after_max_ms", c.kafka.log_message_timestamp_after_max_ms),
    ] {
        if v < 0 {
            report(key, format!("must be zero or above (got {v})"));
        }
    }
    if c.kafka.message_max_bytes == 0 || c.kafka.message_max_bytes > seg / 2 {
        report(
            "kafka.message_max_bytes",
            format!("must be above zero and at most half of wal_segment_size ({})", seg / 2),
        );
    }
    for (key, v) in [
        ("kafka.log_retention_ms", c.kafka.log_retention_ms),
        ("kafka.log_retention_bytes", c.kafka.log_retention_bytes),
    ] {
        if v < -1 || v == 0 {
            report(key, format!("must be -1 (unlimited) or above zero (got {v})"));
        }
    }
    if let Err(e) = c.log_level.parse::<LogFilterSyntax>() {
        report("log_level", e);
    }
}

/// A light syntax check of a tracing filter (`info`, `chronik=debug,warn`).
struct LogFilterSyntax;

impl std::str::FromStr for LogFilterSyntax {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let level = part.rsplit_once('=').map_or(part, |(_, l)| l);
            let is_target_only = !part.contains('=') && !LEVELS.contains(&part);
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) && !is_target_only {
                return Err(format!("`{part}`: `{level}` is not a log level ({})", LEVELS.join(", ")));
            }
        }
        Ok(LogFilterSyntax)
    }
}
