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

pub(super) fn options(dir: &std::path::Path, id: NodeId, seeds: &[NodeId]) -> NodeOptions {
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
pub(super) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nodes 1-3 in `dirs`, node `i + 1` naming `seeds[i]`, started in order; returns once every
/// node counts three metadata voters.
pub(super) async fn start_three(
    router: &Arc<SimRouter>,
    tasks: &Tasks,
    dirs: &[tempfile::TempDir],
    seeds: [&[NodeId]; 3],
) -> Vec<Arc<Node>> {
    let mut nodes = Vec::new();
    for (id, seeds) in (1..=3).zip(seeds) {
        let opts = options(dirs[id as usize - 1].path(), id, seeds);
        nodes.push(Node::start_in_sim(opts, router.clone(), tasks).await.unwrap());
    }
    for n in &nodes {
        eventually("three metadata voters", || {
            let mut v = n.metadata_voters();
            v.sort_unstable();
            v == [1, 2, 3]
        })
        .await;
    }
    nodes
}

/// Node `id` starting in `dir` (joining through node 1) is refused, the refusal saying `why`.
pub(super) async fn refused_join(router: &Arc<SimRouter>, tasks: &Tasks, dir: &std::path::Path, id: NodeId, why: &str) {
    match Node::start_in_sim(options(dir, id, &[1]), router.clone(), tasks).await {
        Err(ClusterError::Join(said)) => assert!(said.contains(why), "{said}"),
        Err(other) => panic!("node {id} refused for another reason: {other}"),
        Ok(_) => panic!("node {id} was admitted"),
    }
}

pub(super) fn create(name: &str, partitions: u32) -> MetaCommand {
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
    let nodes = start_three(&router, &tasks, &dirs, [&[], &[1], &[1, 2]]).await;
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
    refused_join(&router, &tasks, dirs[3].path(), 2, "node id 2 is already a member").await;

    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// Appends a batch (stamped `ts`) to every partition led by one of `leaders`; a refusal
/// fails the test with every replica's view of that group.
pub(super) async fn append_to_every_leader(leaders: &[Arc<Node>], all: &[Arc<Node>], ts: i64) {
    for n in leaders {
        for r in n.partitions().into_iter().filter(|r| r.is_leader(n.node_id())) {
            if let Err(e) = r.append(bytes::Bytes::from(crate::batch::tests::batch(1, ts))).await {
                let views: Vec<String> = all
                    .iter()
                    .filter_map(|m| {
                        Some(format!("node {}: {:?}", m.node_id(), m.registry.by_group(r.group())?.glance()))
                    })
                    .collect();
                panic!("append to group {} led by {}: {e}\n{}", r.group(), n.node_id(), views.join("\n"));
            }
        }
    }
}

/// The groups `node` leads and may serve.
fn led_by(nodes: &[Arc<Node>], node: NodeId) -> Vec<u64> {
    let n = nodes.iter().find(|n| n.node_id() == node).unwrap();
    n.partitions().iter().filter(|r| r.is_leader(node)).map(|r| r.group()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_go_quiet_and_a_dead_leaders_groups_get_successors_at_once() {
    let router = SimRouter::new(34);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_three(&router, &tasks, &dirs, [&[], &[1], &[1]]).await;
    nodes[0].propose_meta(create("q", 6)).await.unwrap();
    for n in &nodes {
        assert!(n.wait_for_topic("q", Duration::from_secs(30)).await);
    }
    let groups: Vec<u64> = nodes[0].partitions().iter().map(|r| r.group()).collect();
    eventually("every partition led", || {
        groups.iter().all(|g| nodes.iter().any(|n| led_by(&nodes, n.node_id()).contains(g)))
    })
    .await;
    // Leaders are spread: the first to ask for each new group rotates over the nodes.
    let leaders: Vec<usize> = nodes.iter().map(|n| led_by(&nodes, n.node_id()).len()).collect();
    assert!(leaders.iter().filter(|l| **l > 0).count() >= 2, "leaders {leaders:?}");
    append_to_every_leader(&nodes, &nodes, 1).await;

    // Idle: once settled, no group sends anything (the nodes' own reports go on).
    let partition_messages = || groups.iter().map(|g| router.delivered(*g)).sum::<u64>();
    let mut quiet = false;
    for _ in 0..50 {
        let before = partition_messages();
        tokio::time::sleep(Duration::from_millis(300)).await; // ten heartbeat intervals
        if partition_messages() == before {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "idle partition groups kept sending (six groups would send ~120 heartbeats in 300 ms)");
    // Quiet is not cut off: an idle leader's followers are heard at node level, so it takes writes.
    for n in &nodes {
        for r in n.partitions().into_iter().filter(|r| r.is_leader(n.node_id())) {
            assert_eq!(r.quorum_silence(), None, "an idle leader of live followers refuses nothing");
        }
    }
    append_to_every_leader(&nodes, &nodes, 2).await;

    // The leader of most groups dies (cut off from everyone): each of its groups gets a new
    // leader, asked for by a designated survivor rather than by election timers.
    let victim = nodes.iter().map(|n| n.node_id()).max_by_key(|id| led_by(&nodes, *id).len()).unwrap();
    let orphaned = led_by(&nodes, victim);
    let asks_before: u64 = nodes.iter().filter(|n| n.node_id() != victim).map(|n| n.leadership_asks()).sum();
    router.isolate(victim);
    let survivors: Vec<Arc<Node>> = nodes.iter().filter(|n| n.node_id() != victim).cloned().collect();
    eventually("every orphaned group led by a survivor", || {
        orphaned.iter().all(|g| survivors.iter().any(|n| led_by(&nodes, n.node_id()).contains(g)))
    })
    .await;
    let asks: u64 = survivors.iter().map(|n| n.leadership_asks()).sum();
    assert!(asks > asks_before, "the survivors asked for the leadership in turn");
    eventually("the survivors counted the leader changes and elections", || {
        let won: u64 = survivors.iter().map(|n| n.elections_won()).sum();
        won >= orphaned.len() as u64 && survivors.iter().all(|n| n.leader_changes() >= orphaned.len() as u64)
    })
    .await;
    // Metadata names no dead leader, and the new leaders take writes.
    for s in &survivors {
        for p in 0..6 {
            let led = s.partition_leader("q", p);
            assert!(led.leader.is_some_and(|l| l != victim), "partition {p}: {led:?}");
        }
    }
    append_to_every_leader(&survivors, &nodes, 3).await;

    // Back, the old leader follows and catches up; every replica holds the same offsets.
    router.heal();
    let back = nodes.iter().find(|n| n.node_id() == victim).unwrap().clone();
    eventually("the old leader caught up", || {
        back.partitions().iter().all(|r| {
            let leader =
                survivors.iter().find_map(|s| s.partition("q", r.partition()).filter(|l| l.is_leader(s.node_id())));
            leader.is_some_and(|l| l.log().high_watermark() == r.log().next_offset())
        })
    })
    .await;

    // Idle again, a graceful stop's hand-over moves every group a node leads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = survivors[0].clone();
    assert_eq!(leader.hand_over_leadership().await, 0, "no group stuck");
    assert!(led_by(&nodes, leader.node_id()).is_empty());
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}
