//! Prometheus metrics, read from the node at scrape time. [`METRICS`] is the one list of what
//! is exported; docs/METRICS.md is generated from it and a test checks both against a scrape.

use chronik_cluster::Node;
use chronik_kafka::request_metrics::RequestMetrics;
use chronik_wal::LatencySnapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// (name, type, help) of every exported metric.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("chronik_wal_bytes_written", "counter", "Bytes written to the WAL since start, record headers included."),
    ("chronik_wal_records_written", "counter", "Records written to the WAL since start."),
    ("chronik_wal_sync_rounds", "counter", "Group-commit fdatasync rounds since start."),
    ("chronik_wal_sync_seconds", "counter", "Time spent in fdatasync rounds since start."),
    ("chronik_wal_segments", "gauge", "WAL segments holding the log, the active one included."),
    ("chronik_wal_spare_segments", "gauge", "Preallocated segments ready for use."),
    ("chronik_wal_segments_retired", "counter", "Segments retired by WAL garbage collection since start."),
    (
        "chronik_wal_page_cache_dropped_bytes",
        "counter",
        "Bytes of full WAL segments the kernel was asked to drop from the page cache (`wal_page_cache_bytes`); a \
            range dropped again counts again.",
    ),
    ("chronik_partitions", "gauge", "Partition replicas on this node."),
    ("chronik_partition_leader", "gauge", "1 when this node leads the partition."),
    ("chronik_partition_leader_epoch", "gauge", "The partition's Raft term (Kafka leader epoch)."),
    ("chronik_partition_high_watermark", "gauge", "Offset after the last committed record."),
    ("chronik_partition_log_start_offset", "gauge", "First offset still readable."),
    ("chronik_partition_size_bytes", "gauge", "Record-batch bytes in the partition's log."),
    (
        "chronik_partition_segment_bytes",
        "gauge",
        "Record-batch bytes of the partition in its segment files (moved out of the WAL).",
    ),
    ("chronik_partition_commit_index", "gauge", "The partition's Raft commit index (0 before the first commit)."),
    (
        "chronik_partition_applied_index",
        "gauge",
        "The Raft index this replica has applied up to (0 before the first); behind the commit index on a follower \
            until the leader's next message tells it the commit.",
    ),
    (
        "chronik_partition_in_sync_replicas",
        "gauge",
        "Voters whose log reaches the commit index; exported by the node that leads the partition.",
    ),
    (
        "chronik_partition_replica_lag_entries",
        "gauge",
        "Entries a replica (label `replica`) is behind the leader's log; exported by the node that leads the partition.",
    ),
    (
        "chronik_partition_replica_lag_bytes",
        "gauge",
        "Record-batch bytes of those entries (counted over the entries still in the WAL).",
    ),
    ("chronik_metadata_version", "gauge", "Number of metadata changes applied."),
    (
        "chronik_raft_groups",
        "gauge",
        "Raft groups on this node (partitions and the metadata group) by this node's role in them (label `role`: \
            leader, follower, candidate, learner).",
    ),
    (
        "chronik_raft_leader_changes",
        "counter",
        "Times a partition group hosted here got a new leader or term, as this node saw it; cluster mode only (the metadata group not \
            included).",
    ),
    (
        "chronik_raft_elections_won",
        "counter",
        "Times this node became the leader of a partition group hosted here (a new term); cluster mode only.",
    ),
    (
        "chronik_raft_leadership_asks",
        "counter",
        "Pre-votes this node started in its turn for a partition group with no live leader (node-level liveness); \
            cluster mode only.",
    ),
    ("chronik_wal_sync_latency_seconds", "histogram", "Duration of each WAL fdatasync round."),
    (
        "chronik_transport_frames",
        "counter",
        "Raft transport frames exchanged with a peer since start (labels `peer`, a node id, and `direction`: in or \
            out); cluster mode only.",
    ),
    ("chronik_transport_bytes", "counter", "Raft transport bytes exchanged with a peer since start, as frames above."),
    (
        "chronik_request_latency_seconds",
        "histogram",
        "Time from reading a Kafka request to its answer being ready, by API (label `api`); Fetch includes its long \
            poll.",
    ),
    (
        "chronik_produce_append_to_commit_seconds",
        "histogram",
        "Time from appending a produce entry to its partition's Raft log to its commit (a quorum has it durably, \
            with `always`).",
    ),
];

/// Histograms copied at scrape time, one series per label set.
#[derive(Debug)]
struct Histograms(Vec<(Labels, LatencySnapshot)>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            if labels.is_empty() {
                encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
            } else {
                let mut series = encoder.encode_family(labels)?;
                series.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Labels = Vec<(String, String)>;

pub fn render(node: &Node, requests: &RequestMetrics) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let w = node.wal_stats();
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let gauge = |v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        g
    };
    // prometheus-client ends every help text with a full stop of its own.
    let help = |name: &str| METRICS.iter().find(|(n, ..)| *n == name).map_or("", |(_, _, h)| h.trim_end_matches('.'));
    registry.register("chronik_wal_bytes_written", help("chronik_wal_bytes_written"), counter(w.bytes_written));
    registry.register("chronik_wal_records_written", help("chronik_wal_records_written"), counter(w.records_written));
    registry.register("chronik_wal_sync_rounds", help("chronik_wal_sync_rounds"), counter(w.sync_rounds));
    let secs: Counter<f64> = Counter::default();
    secs.inc_by(w.sync_seconds);
    registry.register("chronik_wal_sync_seconds", help("chronik_wal_sync_seconds"), secs);
    registry.register("chronik_wal_segments", help("chronik_wal_segments"), gauge(w.live_segments as i64));
    registry.register("chronik_wal_spare_segments", help("chronik_wal_spare_segments"), gauge(w.spare_segments as i64));
    registry.register(
        "chronik_wal_segments_retired",
        help("chronik_wal_segments_retired"),
        counter(w.segments_retired),
    );
    registry.register(
        "chronik_wal_page_cache_dropped_bytes",
        help("chronik_wal_page_cache_dropped_bytes"),
        counter(w.cache_bytes_dropped),
    );

    let groups = node.partitions();
    registry.register("chronik_partitions", help("chronik_partitions"), gauge(groups.len() as i64));
    let leader = Family::<Labels, Gauge>::default();
    let epoch = Family::<Labels, Gauge>::default();
    let hw = Family::<Labels, Gauge>::default();
    let start = Family::<Labels, Gauge>::default();
    let size = Family::<Labels, Gauge>::default();
    let in_files = Family::<Labels, Gauge>::default();
    let commit = Family::<Labels, Gauge>::default();
    let applied = Family::<Labels, Gauge>::default();
    let isr = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge>::default();
    let lag_bytes = Family::<Labels, Gauge>::default();
    for g in &groups {
        let labels =
            vec![("topic".to_string(), g.topic().to_string()), ("partition".to_string(), g.partition().to_string())];
        let (term, _) = g.leadership();
        leader.get_or_create(&labels).set(g.is_leader(node.node_id()) as i64);
        epoch.get_or_create(&labels).set(term as i64);
        hw.get_or_create(&labels).set(g.log().high_watermark() as i64);
        start.get_or_create(&labels).set(g.log().log_start_offset() as i64);
        size.get_or_create(&labels).set(g.log().size_bytes() as i64);
        in_files.get_or_create(&labels).set(g.log().segment_bytes() as i64);
        let v = g.replication();
        commit.get_or_create(&labels).set(v.commit_index.unwrap_or(0) as i64);
        applied.get_or_create(&labels).set(v.applied_index.unwrap_or(0) as i64);
        if let Some(in_sync) = &v.isr {
            isr.get_or_create(&labels).set(in_sync.len() as i64);
        }
        let with_replica = |replica: &u64| {
            let mut l = labels.clone();
            l.push(("replica".to_string(), replica.to_string()));
            l
        };
        for (replica, behind) in v.lag_entries.iter().flatten() {
            lag.get_or_create(&with_replica(replica)).set(*behind as i64);
        }
        for (replica, behind) in v.lag_bytes.iter().flatten() {
            lag_bytes.get_or_create(&with_replica(replica)).set(*behind as i64);
        }
    }
    registry.register("chronik_partition_leader", help("chronik_partition_leader"), leader);
    registry.register("chronik_partition_leader_epoch", help("chronik_partition_leader_epoch"), epoch);
    registry.register("chronik_partition_high_watermark", help("chronik_partition_high_watermark"), hw);
    registry.register("chronik_partition_log_start_offset", help("chronik_partition_log_start_offset"), start);
    registry.register("chronik_partition_size_bytes", help("chronik_partition_size_bytes"), size);
    registry.register("chronik_partition_segment_bytes", help("chronik_partition_segment_bytes"), in_files);
    registry.register("chronik_partition_commit_index", help("chronik_partition_commit_index"), commit);
    registry.register("chronik_partition_applied_index", help("chronik_partition_applied_index"), applied);
    registry.register("chronik_partition_in_sync_replicas", help("chronik_partition_in_sync_replicas"), isr);
    registry.register("chronik_partition_replica_lag_entries", help("chronik_partition_replica_lag_entries"), lag);
    registry.register("chronik_partition_replica_lag_bytes", help("chronik_partition_replica_lag_bytes"), lag_bytes);
    let version = node.with_metadata(|m| m.version);
    registry.register("chronik_metadata_version", help("chronik_metadata_version"), gauge(version as i64));
    let roles = Family::<Labels, Gauge>::default();
    for role in groups.iter().map(|g| g.raft_role()).chain([node.metadata_role()]) {
        roles.get_or_create(&vec![("role".to_string(), role.to_string())]).inc();
    }
    registry.register("chronik_raft_groups", help("chronik_raft_groups"), roles);
    registry.register(
        "chronik_raft_leader_changes",
        help("chronik_raft_leader_changes"),
        counter(node.leader_changes()),
    );
    registry.register("chronik_raft_elections_won", help("chronik_raft_elections_won"), counter(node.elections_won()));
    registry.register(
        "chronik_raft_leadership_asks",
        help("chronik_raft_leadership_asks"),
        counter(node.leadership_asks()),
    );
    let frames = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for (peer, t) in node.peer_traffic() {
        for (direction, f, b) in [("in", t.frames_in, t.bytes_in), ("out", t.frames_out, t.bytes_out)] {
            let labels = vec![("peer".to_string(), peer.to_string()), ("direction".to_string(), direction.to_string())];
            frames.get_or_create(&labels).inc_by(f);
            bytes.get_or_create(&labels).inc_by(b);
        }
    }
    registry.register("chronik_transport_frames", help("chronik_transport_frames"), frames);
    registry.register("chronik_transport_bytes", help("chronik_transport_bytes"), bytes);
    let unlabelled = |h: LatencySnapshot| Histograms(vec![(Vec::new(), h)]);
    registry.register(
        "chronik_wal_sync_latency_seconds",
        help("chronik_wal_sync_latency_seconds"),
        unlabelled(node.wal_sync_latency()),
    );
    let by_api = requests.requests().into_iter().map(|(api, h)| (vec![("api".to_string(), api)], h)).collect();
    registry.register("chronik_request_latency_seconds", help("chronik_request_latency_seconds"), Histograms(by_api));
    registry.register(
        "chronik_produce_append_to_commit_seconds",
        help("chronik_produce_append_to_commit_seconds"),
        unlabelled(requests.append_to_commit()),
    );

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The metrics table of docs/METRICS.md (generated and checked by the test below).
#[cfg(test)]
fn reference_markdown() -> String {
    use std::fmt::Write;
    let mut out = String::from("| metric | type | meaning |\n|---|---|---|\n");
    for (name, kind, help) in METRICS {
        let shown = if *kind == "counter" { format!("{name}_total") } else { name.to_string() };
        let _ = writeln!(out, "| `{shown}` | {kind} | {help} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_doc_matches_the_list() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/METRICS.md");
        let doc = std::fs::read_to_string(&path).expect("docs/METRICS.md exists");
        let (begin, end) = ("<!-- BEGIN GENERATED: chronik-server metrics -->\n", "<!-- END GENERATED -->");
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc[start..].find(end).expect("end marker") + start;
        if std::env::var("CHRONIK_UPDATE_DOCS").is_ok() {
            std::fs::write(&path, format!("{}{}{}", &doc[..start], reference_markdown(), &doc[stop..])).unwrap();
            return;
        }
        assert_eq!(
            &doc[start..stop],
            reference_markdown(),
            "docs/METRICS.md is stale; regenerate with CHRONIK_UPDATE_DOCS=1"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_exports_exactly_the_listed_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = chronik_config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.cluster.storage.wal_segment_size = 1 << 20;
        let tasks = chronik_cluster::Tasks::new();
        let node = Node::start(chronik_cluster::NodeOptions::from_config(&config), &tasks).await.unwrap();
        node.propose_meta(chronik_cluster::MetaCommand::CreateTopic {
            name: "m".into(),
            topic_id: uuid_nil(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
        })
        .await
        .unwrap();
        assert!(node.wait_for_topic("m", std::time::Duration::from_secs(10)).await);
        let requests = RequestMetrics::default();
        requests.record_request(0, std::time::Duration::from_micros(700)); // Produce
        requests.record_append_to_commit(std::time::Duration::from_millis(3));
        let text = render(&node, &requests).unwrap();
        let exported: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        // A standalone node has no peers, so no transport series (tests/tests/cluster.rs
        // scrapes those from a cluster).
        let listed: std::collections::BTreeSet<String> =
            METRICS.iter().map(|(n, ..)| n.to_string()).filter(|n| !n.starts_with("chronik_transport_")).collect();
        assert_eq!(exported, listed);
        assert!(text.contains("chronik_partition_high_watermark{topic=\"m\",partition=\"0\"} 0"), "{text}");
        assert!(text.contains("chronik_partition_in_sync_replicas{topic=\"m\",partition=\"0\"} 1"), "{text}");
        assert!(
            text.contains("chronik_partition_replica_lag_entries{topic=\"m\",partition=\"0\",replica=\"1\"} 0"),
            "{text}"
        );
        assert!(text.contains("chronik_raft_groups{role=\"leader\"} 2"), "the partition and the metadata:\n{text}");
        assert!(text.contains("chronik_request_latency_seconds_bucket{le=\"0.001\",api=\"Produce\"} 1"), "{text}");
        assert!(text.contains("chronik_request_latency_seconds_count{api=\"Produce\"} 1"), "{text}");
        assert!(text.contains("chronik_produce_append_to_commit_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("chronik_produce_append_to_commit_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        let syncs = text.lines().find_map(|l| l.strip_prefix("chronik_wal_sync_latency_seconds_count "));
        assert!(syncs.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0), "the WAL synced: {text}");
        node.shutdown().await.unwrap();
    }

    fn uuid_nil() -> uuid::Uuid {
        uuid::Uuid::nil()
    }
}
