//! Cluster mode with real processes on 127.0.0.1, started as the reference quick start says
//! (`chronik-server cluster`, node 1 with no seeds, nodes 2 and 3 naming seeds): every node
//! shows three metadata voters; an RF=3 topic takes acks=all writes from idempotent producers
//! (librdkafka, and kafka-python mid-stream when the first node dies) while the metadata
//! leader and then the group coordinator are killed with SIGKILL and restarted; every
//! acknowledged record is read back exactly once at the offset it was acknowledged with,
//! every replica reaches the same high watermark, a consumer group resumes from its commit
//! after its coordinator died, and a node whose data directory was wiped is refused under its
//! old id; a SIGTERM hands the node's leaderships over first. With RF=2, every node names
//! every partition's leader, including those it does not host. A node's metrics count its
//! Raft traffic with each peer, and its leader changes and elections. Five nodes serve
//! through a hung (SIGSTOP) leader and two losses, and refuse writes without a majority.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chronik_tests::cluster::{
    bootstrap_of, client, create_replicated, get_json, leaders, metric, partitions, produce_to, read_all, start_seeded,
    voters, wait_converged, wait_until,
};
use chronik_tests::raw::{batch, connect, try_produce};
use chronik_tests::{Broker, client_script, now_ms, python, raft_ports, server_bin, write_cluster_toml};
use kafka_protocol::ResponseError;
use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
const PER_PHASE: usize = 200;

/// Produces `PER_PHASE` records numbered from `first` to `TOPIC` with acks=all and
/// idempotence, returning where each was acknowledged.
async fn produce(bootstrap: &str, first: usize) -> BTreeMap<(i32, i64), String> {
    produce_to(bootstrap, TOPIC, first, PER_PHASE).await
}

/// The (partition, offset) -> value of each record the kafka-python producer had acknowledged.
fn python_acknowledged(path: &std::path::Path) -> BTreeMap<(i32, i64), String> {
    let text = std::fs::read_to_string(path).expect("the kafka-python producer's acknowledgements");
    text.lines()
        .map(|line| {
            let ack: serde_json::Value = serde_json::from_str(line).unwrap();
            let at = (ack["partition"].as_i64().unwrap() as i32, ack["offset"].as_i64().unwrap());
            (at, ack["value"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Where node `id` is in the list.
fn node_index(id: u64) -> usize {
    id as usize - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_cluster_keeps_every_acknowledged_write_through_kills() {
    let ports = raft_ports(3);
    let mut nodes = vec![
        Broker::start_cluster_node(1, &ports, &[], &[]),
        Broker::start_cluster_node(2, &ports, &[1], &[]),
        Broker::start_cluster_node(3, &ports, &[1, 2], &[]),
    ];
    for n in &nodes {
        wait_until("three metadata voters", Duration::from_secs(30), || voters(n) == [1, 2, 3]);
    }
    let bootstrap = bootstrap_of(&nodes);
    // The Raft transport's traffic per peer is exported.
    for peer in ["2", "3"] {
        for direction in ["in", "out"] {
            let series = format!("chronik_transport_frames_total{{peer=\"{peer}\",direction=\"{direction}\"}}");
            assert!(metric(&nodes[0], &series).is_some_and(|c| c > 0), "{series}");
        }
    }

    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin.create_topics(&[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3))], &opts).await;
    assert!(created.unwrap()[0].is_ok());
    let too_many = admin.create_topics(&[NewTopic::new("rf4", 1, TopicReplication::Fixed(4))], &opts).await;
    let refusal = too_many.unwrap()[0].clone().unwrap_err();
    assert_eq!(refusal.1, rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor, "{refusal:?}");
    let refs: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&refs, TOPIC, PARTITIONS as usize);

    // With RF=2 each node hosts only some partitions; every node still names every leader.
    let created = admin.create_topics(&[NewTopic::new("pairs", 3, TopicReplication::Fixed(2))], &opts).await;
    assert!(created.unwrap()[0].is_ok());
    wait_until("every node naming the same leader of every partition", Duration::from_secs(30), || {
        let views: Vec<_> = nodes.iter().map(|n| leaders(n, "pairs")).collect();
        views.iter().all(|v| v.len() == 3 && v.values().all(|(leader, _, replicas)| replicas.contains(leader)))
            && views.iter().all(|v| *v == views[0])
    });

    let mut acked = produce(&bootstrap, 0).await;

    // A consumer group commits the first phase; its coordinator dies later.
    let group: BaseConsumer = client(&bootstrap)
        .set("group.id", "cluster-readers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    group.subscribe(&[TOPIC]).unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < PER_PHASE {
        assert!(Instant::now() < deadline, "the group read {seen} of {PER_PHASE} records");
        // Errors librdkafka reports here are transient (a broker down): it retries itself.
        if let Some(Ok(_)) = group.poll(Duration::from_millis(200)) {
            seen += 1;
        }
    }
    group.commit_consumer_state(CommitMode::Sync).expect("commit");
    let committed: BTreeMap<i32, i64> = group
        .committed(Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    drop(group);

    // Kill the metadata leader; writes go on through the others, from librdkafka and from
    // kafka-python (whose idempotent producer is mid-stream when the node dies).
    let meta_leader = get_json(&nodes[0], "/admin/cluster/leader")["leader"].as_u64().unwrap();
    let i = node_index(meta_leader);
    let scratch = tempfile::tempdir().unwrap();
    let python_acks = scratch.path().join("kafka-python-acks.jsonl");
    let python_producer = python()
        .arg(client_script("cluster_producer.py"))
        .args(["--bootstrap", &bootstrap, "--topic", TOPIC, "--count", &PER_PHASE.to_string(), "--prefix", "py"])
        .arg("--out")
        .arg(&python_acks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kafka-python");
    std::thread::sleep(Duration::from_millis(1500));
    nodes[i].kill9();
    acked.extend(produce(&bootstrap, PER_PHASE).await);
    let out = python_producer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafka-python producer: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    acked.extend(python_acknowledged(&python_acks));
    nodes[i].start_again();
    let refs: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&refs, TOPIC, PARTITIONS as usize);

    // Kill the group coordinator (the leader of __consumer_offsets).
    let offsets = partitions(&nodes[0], "__consumer_offsets");
    let coordinator = offsets.get(&0).and_then(|p| p.0).expect("__consumer_offsets has a leader");
    let i = node_index(coordinator);
    nodes[i].kill9();
    acked.extend(produce(&bootstrap, 2 * PER_PHASE).await);
    // The survivors saw __consumer_offsets change leader, and one of them asked for it in its
    // turn (node-level liveness) rather than waiting for its election timer.
    let survivors: Vec<&Broker> = nodes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, n)| n).collect();
    for s in &survivors {
        assert!(metric(s, "chronik_raft_leader_changes_total").is_some_and(|c| c > 0));
    }
    let asks: u64 = survivors.iter().filter_map(|s| metric(s, "chronik_raft_leadership_asks_total")).sum();
    assert!(asks > 0, "no survivor asked for the leadership");
    let won: u64 = survivors.iter().filter_map(|s| metric(s, "chronik_raft_elections_won_total")).sum();
    assert!(won > 0, "no survivor counted an election won");

    // The group resumes where it committed, at the new coordinator.
    let resumed: BaseConsumer = client(&bootstrap)
        .set("group.id", "cluster-readers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    resumed.subscribe(&[TOPIC]).unwrap();
    let mut first_read: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while first_read.len() < committed.len() {
        assert!(Instant::now() < deadline, "the group resumed on {first_read:?} of {committed:?}");
        if let Some(Ok(m)) = resumed.poll(Duration::from_millis(200)) {
            first_read.entry(m.partition()).or_insert(m.offset());
        }
    }
    assert_eq!(first_read, committed, "the group resumes at its committed offsets");
    drop(resumed);

    nodes[i].start_again();
    let refs: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&refs, TOPIC, PARTITIONS as usize);

    // Every acknowledged record, once, at its offset.
    assert_eq!(acked.len(), 4 * PER_PHASE, "every record acknowledged once (kafka-python's included)");
    let got = read_all(&bootstrap, TOPIC, PARTITIONS, &acked);
    assert_eq!(got, acked, "every acknowledged record at its offset");
    let stored: u64 = partitions(&nodes[0], TOPIC).values().map(|(_, hw)| hw).sum();
    assert_eq!(stored, acked.len() as u64, "nothing but the acknowledged records (no duplicates)");

    // A graceful stop hands everything the node leads to the others before it exits.
    let meta_leader = get_json(&nodes[0], "/admin/cluster/leader")["leader"].as_u64().unwrap();
    let i = node_index(meta_leader);
    assert_eq!(nodes[i].stop(), Some(0), "SIGTERM exits 0");
    let log = nodes[i].log_text();
    assert!(log.contains("leadership handed over before stopping") && log.contains("stuck=0"), "{log}");
    let other = &nodes[(i + 1) % 3];
    wait_until("new leaders on the other nodes", Duration::from_secs(30), || {
        let led_elsewhere = |l: Option<u64>| l.is_some_and(|l| l != meta_leader);
        led_elsewhere(get_json(other, "/admin/cluster/leader")["leader"].as_u64())
            && partitions(other, TOPIC).values().all(|(leader, _)| led_elsewhere(*leader))
    });
    nodes[i].start_again();

    // A node that lost its data directory cannot come back under its old id.
    nodes[2].kill9();
    let wiped = tempfile::tempdir().unwrap();
    write_cluster_toml(wiped.path(), 3, &ports, &[1, 2]);
    let free = raft_ports(2);
    let out = std::process::Command::new(server_bin())
        .args(["-c", "chronik.toml", "cluster"])
        .current_dir(wiped.path())
        .env("CHRONIK_DATA_DIR", wiped.path().join("data"))
        .env("CHRONIK_KAFKA_ADDR", format!("127.0.0.1:{}", free[0]))
        .env("CHRONIK_ADMIN_ADDR", format!("127.0.0.1:{}", free[1]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("node id 3 is already a member") && stderr.contains("new node_id"), "{stderr}");
}

/// Five nodes, a topic on all five: losing two keeps writes going; losing a third leaves the
/// partition leader without a majority, and it refuses writes with NOT_ENOUGH_REPLICAS
/// instead of acknowledging what cannot commit; with the nodes back, everything acknowledged
/// is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_serve_through_two_losses_and_refuse_writes_without_a_majority() {
    let ports = raft_ports(5);
    let mut nodes = start_seeded(&ports, 5);
    let bootstrap = bootstrap_of(&nodes);
    create_replicated(&bootstrap, "five", 1, 5).await;
    let refs: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&refs, "five", 1);
    let mut acked = produce_to(&bootstrap, "five", 0, PER_PHASE).await;

    // The leader of five-0 hangs (SIGSTOP: its connections stay open, it only goes silent):
    // the others elect a successor and serve; resumed, it learns it was replaced and follows.
    let hung = partitions(&nodes[0], "five")[&0].0.expect("five-0 has a leader");
    let paused = node_index(hung);
    nodes[paused].pause();
    let running: Vec<String> =
        nodes.iter().enumerate().filter(|(i, _)| *i != paused).map(|(_, n)| n.bootstrap()).collect();
    acked.extend(produce_to(&running.join(","), "five", PER_PHASE, PER_PHASE).await);
    nodes[paused].resume();
    wait_until("the resumed node follows its successor", Duration::from_secs(30), || {
        partitions(&nodes[paused], "five")[&0].0.is_some_and(|l| l != hung)
    });
    let refs: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&refs, "five", 1);

    // The leader of five-0 stays; the others go one by one.
    let leader = partitions(&nodes[0], "five")[&0].0.expect("five-0 has a leader");
    let mut others: Vec<usize> = (0..5).filter(|i| *i != node_index(leader)).collect();
    let third = others.pop().unwrap();
    for i in &others[..2] {
        nodes[*i].kill9();
    }
    acked.extend(produce_to(&bootstrap, "five", 2 * PER_PHASE, PER_PHASE).await);

    nodes[third].kill9();
    let mut s = connect(&nodes[node_index(leader)]);
    wait_until("NOT_ENOUGH_REPLICAS from the minority leader", Duration::from_secs(60), || {
        let answer = try_produce(&mut s, "five", 0, batch(&[now_ms()], b"unacknowledged", -1));
        answer.map(|(code, _)| code) == Some(ResponseError::NotEnoughReplicas.code())
    });

    for i in others[..2].iter().chain([&third]) {
        nodes[*i].start_again();
    }
    let refs: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&refs, "five", 1);
    acked.extend(produce_to(&bootstrap, "five", 3 * PER_PHASE, PER_PHASE).await);
    let got = read_all(&bootstrap, "five", 1, &acked);
    for (at, value) in &acked {
        assert_eq!(got.get(at), Some(value), "acknowledged record at {at:?}");
    }
    let values: std::collections::BTreeSet<&String> = got.values().collect();
    assert_eq!(values.len(), got.len(), "no record twice");
}
