//! What the multi-node tests share: the admin API's views of a node (members, partitions,
//! leaders, metrics), waiting for a cluster to converge, and producing and reading back
//! records with librdkafka.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::raw::{call, connect, topic_name};
use crate::{Broker, http_get};

pub fn get_json(node: &Broker, path: &str) -> Value {
    let (status, body) = http_get(&node.admin_url(path));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Polls `cond` until it holds, or fails the test naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of one series (name with labels) of a node's /metrics.
pub fn metric(node: &Broker, series: &str) -> Option<u64> {
    let (_, text) = http_get(&node.admin_url("/metrics"));
    let prefix = format!("{series} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.parse().ok())
}

/// The metadata voters a node reports.
pub fn voters(node: &Broker) -> Vec<u64> {
    let members = get_json(node, "/admin/cluster/members");
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect()
}

/// (leader, high watermark) of each hosted partition of `topic`, as `node` reports them.
pub fn partitions(node: &Broker, topic: &str) -> BTreeMap<i64, (Option<u64>, u64)> {
    get_json(node, "/admin/cluster/partitions")
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == topic)
        .map(|p| (p["partition"].as_i64().unwrap(), (p["leader"].as_u64(), p["high_watermark"].as_u64().unwrap())))
        .collect()
}

/// (leader, leader epoch, replicas) of each partition of `topic`, as node's Metadata answers.
pub fn leaders(node: &Broker, topic: &str) -> BTreeMap<i32, (i32, i32, Vec<i32>)> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]));
    let answer: MetadataResponse = call(&mut connect(node), ApiKey::Metadata, 9, &request);
    answer.topics[0]
        .partitions
        .iter()
        .filter(|p| p.leader_id.0 >= 0)
        .map(|p| (p.partition_index, (p.leader_id.0, p.leader_epoch, p.replica_nodes.iter().map(|r| r.0).collect())))
        .collect()
}

/// Reads `topic` from the beginning until every offset of `expected` came (or a minute
/// passed): (partition, offset) -> value, failing on an offset read twice.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: &BTreeMap<(i32, i64), String>,
) -> BTreeMap<(i32, i64), String> {
    let reader: BaseConsumer =
        client(bootstrap).set("group.id", "cluster-check").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    reader.assign(&tpl).unwrap();
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.keys().all(|k| got.contains_key(k)) && Instant::now() < deadline {
        // Errors librdkafka reports here are transient (a broker down): it retries itself.
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            assert!(got.insert((m.partition(), m.offset()), value).is_none(), "offset read twice");
        }
    }
    got
}

/// Creates `topic` through `bootstrap` with `partitions` partitions of `replicas` replicas
/// each, failing the test if it is refused.
pub async fn create_replicated(bootstrap: &str, topic: &str, partitions: i32, replicas: i32) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created =
        admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas))], &opts).await;
    assert!(created.unwrap()[0].is_ok(), "creating {topic}");
}

pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Produces `count` records numbered from `first` to `topic` with acks=all and idempotence,
/// returning where each was acknowledged (a record not acknowledged within a minute fails
/// the test).
pub async fn produce_to(bootstrap: &str, topic: &str, first: usize, count: usize) -> BTreeMap<(i32, i64), String> {
    let producer: FutureProducer = client(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let sends = (first..first + count).map(|n| {
        let producer = producer.clone();
        async move {
            let value = format!("record-{n}");
            let record = FutureRecord::to(topic).key(&value).payload(&value);
            let d = producer.send(record, Duration::from_secs(60)).await;
            let d = d.unwrap_or_else(|(e, _)| panic!("record {n} was not acknowledged: {e}"));
            ((d.partition, d.offset), value)
        }
    });
    futures::future::join_all(sends).await.into_iter().collect()
}

/// Waits until every live node hosts every partition of `topic` at the same high watermark,
/// with a leader.
pub fn wait_converged(nodes: &[&Broker], topic: &str, partition_count: usize) {
    wait_until("every replica at the same high watermark", Duration::from_secs(60), || {
        let views: Vec<_> = nodes.iter().map(|n| partitions(n, topic)).collect();
        views[0].len() == partition_count
            && views[0].values().all(|(leader, _)| leader.is_some())
            && views.iter().all(|v| {
                v.len() == views[0].len() && v.iter().all(|(p, (_, hw))| views[0].get(p).map(|x| x.1) == Some(*hw))
            })
    });
}

/// Nodes 1 to `count` of a cluster on this machine (Raft ports `ports`): node 1 bootstraps,
/// the others join through it; returns once each counts them all as metadata voters.
pub fn start_seeded(ports: &[u16], count: u64) -> Vec<Broker> {
    let nodes: Vec<Broker> =
        (1..=count).map(|id| Broker::start_cluster_node(id, ports, if id == 1 { &[] } else { &[1] }, &[])).collect();
    let all: Vec<u64> = (1..=count).collect();
    for n in &nodes {
        wait_until("every node a metadata voter", Duration::from_secs(60), || voters(n) == all);
    }
    nodes
}

/// Every node's Kafka address, for clients.
pub fn bootstrap_of(nodes: &[Broker]) -> String {
    nodes.iter().map(|n| n.bootstrap()).collect::<Vec<_>>().join(",")
}
