//! Whole nodes in cluster mode, in process, their messages going through the seeded router
//! (`raft/sim.rs`) instead of TCP: a new cluster forms from a bootstrap node and seeds, the
//! joiners are promoted to metadata voters, a proposal made on a follower is forwarded and
//! applied everywhere, an RF=3 topic gets replicas and leaders on every node; the metadata
//! leader cut off is replaced while a follower's proposal goes through, and it catches up
//! when healed; a node id already in the cluster is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{ClusterOptions, Node, NodeOptions};
use crate::error::ClusterError;
use crate::metadata::MetaCommand;
use crate::raft::NodeId;
use crate::raft::sim::SimRouter;
use crate::tasks::Tasks;

fn options(dir: &std::path::Path, id: NodeId, seeds: &[NodeId]) -> NodeOptions {
    let mut o = NodeOptions::from_config(&chronik_config::Config::default());
    o.data_dir = dir.to_path_buf();
    o.node_id = id;
    o.raft_addr = format!("sim-{id}:9093");
    o.kafka_addr = format!("sim-{id}:9092");
    o.wal.segment_size = 1 << 20;
    o.wal_retention_bytes = 4 << 20;
    (o.raft.heartbeat_interval_ms, o.raft.election_timeout_ms) = (30, 150);
    o.request_timeout = Duration::from_millis(500);
    o.cluster = Some(ClusterOptions {
        listen_addr: "unused in the simulation".into(),
        seeds: seeds.iter().map(|s| (*s, format!("sim-{s}:9093"))).collect(),
        connect_timeout: Duration::from_secs(1),
        max_message_size: 8 << 20,
    });
    o
}

/// Waits until `cond` holds, or fails naming `what`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn create(name: &str, partitions: u32) -> MetaCommand {
    MetaCommand::CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partitions,
        replication_factor: 3,
        configs: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_from_seeds_forwards_proposals_and_survives_its_metadata_leader_cut_off() {
    let router = SimRouter::new(12);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    for (id, seeds) in [(1, &[][..]), (2, &[1][..]), (3, &[1, 2][..])] {
        let opts = options(dirs[id as usize - 1].path(), id, seeds);
        nodes.push(Node::start_in_sim(opts, router.clone(), &tasks).await.unwrap());
    }
    for n in &nodes {
        eventually("three metadata voters", || {
            let mut v = n.metadata_voters();
            v.sort_unstable();
            v == [1, 2, 3]
        })
        .await;
    }
    let ids = |n: &Arc<Node>| n.with_metadata(|m| m.nodes.keys().copied().collect::<Vec<_>>());
    assert!(nodes.iter().all(|n| ids(n) == [1, 2, 3]), "every node knows every node");

    // A proposal on a follower is made by the leader and reaches everyone.
    let leader = nodes[0].metadata_leader().unwrap();
    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap().clone();
    follower.propose_meta(create("t", 2)).await.unwrap();
    for n in &nodes {
        assert!(n.wait_for_topic("t", Duration::from_secs(30)).await, "node {} runs t", n.node_id());
        assert_eq!(n.partitions().len(), 2, "RF=3 on three nodes: every node hosts every partition");
    }

    // The metadata leader cut off: the others elect, and a follower's proposal goes through.
    router.isolate(leader);
    let majority: Vec<Arc<Node>> = nodes.iter().filter(|n| n.node_id() != leader).cloned().collect();
    for n in &majority {
        eventually("a new metadata leader", || n.metadata_leader().is_some_and(|l| l != leader)).await;
    }
    majority[0].propose_meta(create("u", 1)).await.unwrap();
    eventually("the other node of the majority applied u", || majority[1].with_metadata(|m| m.topic("u").is_some()))
        .await;
    assert!(majority[1].wait_for_topic("u", Duration::from_secs(30)).await);
    let cut_off = nodes.iter().find(|n| n.node_id() == leader).unwrap().clone();
    assert!(cut_off.with_metadata(|m| m.topic("u").is_none()), "nothing reaches the node cut off");

    // Healed, it catches up with what was decided without it.
    router.heal();
    let version = majority[0].with_metadata(|m| m.version);
    eventually("the healed node caught up", || cut_off.with_metadata(|m| m.version) >= version).await;
    assert!(cut_off.wait_for_topic("u", Duration::from_secs(30)).await);

    // A node id in use cannot join again (a wiped node comes back under a new id).
    let again = Node::start_in_sim(options(dirs[3].path(), 2, &[1]), router.clone(), &tasks).await;
    match again {
        Err(ClusterError::Join(why)) => assert!(why.contains("node id 2 is already a member"), "{why}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second node 2 was admitted"),
    }

    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}
