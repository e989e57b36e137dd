//! The operator's cluster operations, in process through the seeded router. Removing a node:
//! its replicas move to the other nodes (joining as learners, catching up, then the voters
//! change), the moved partitions keep every acknowledged entry at its offset on every new
//! replica, the node is tombstoned and taken out of the metadata group, it notices its own
//! removal, and its id is refused; a dead node is replaced; two nodes shrink to one; the
//! metadata leader's own node hands the group over when it is removed.
//! An operator's move of one partition to other nodes (its leader among the replicas left).
//! Leadership transfer: asked of any node, the chosen voter leads.

use std::sync::Arc;
use std::time::Duration;

use super::cluster_tests::{append_to_every_leader, create, eventually, options, refused_join, start_three};
use super::replication_tests::read_all;
use super::{LeadershipTarget, Node};
use crate::error::ClusterError;
use crate::raft::sim::SimRouter;
use crate::tasks::Tasks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_nodes_replicas_move_with_their_data_and_its_id_is_refused() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let router = SimRouter::new(56);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = start_three(&router, &tasks, &dirs, [&[], &[1], &[1]]).await;
    nodes.push(Node::start_in_sim(options(dirs[3].path(), 4, &[1]), router.clone(), &tasks).await.unwrap());
    for n in &nodes {
        eventually("four registered nodes", || n.with_metadata(|m| m.nodes.len() == 4)).await;
    }
    nodes[0].propose_meta(create("m", 4)).await.unwrap();
    for n in &nodes {
        assert!(n.wait_for_topic("m", Duration::from_secs(30)).await, "node {}", n.node_id());
    }
    for ts in 1..=3 {
        wait_for_serving_leaders(&nodes, "m", 4).await;
        append_to_every_leader(&nodes, &nodes, ts).await;
    }
    let victim = nodes[1].clone();
    let hosted = victim.partitions().len();
    assert!(hosted > 0, "RF=3 over four nodes puts replicas on node 2");

    // Refused while it cannot be done: nothing else to take a replica set of four.
    let moves = nodes[2].remove_node(2).await.unwrap();
    assert_eq!(moves.len(), hosted, "one move per replica on node 2: {moves:?}");
    assert!(moves.iter().all(|m| m.from.contains(&2) && !m.to.contains(&2) && m.to.len() == 3), "{moves:?}");
    match nodes[0].remove_node(2).await {
        Err(ClusterError::Rejected(e)) => assert!(e.to_string().contains("already being removed"), "{e}"),
        other => panic!("a second removal: {other:?}"),
    }

    // Writes go on while the replicas move.
    let survivors: Vec<Arc<Node>> = nodes.iter().filter(|n| n.node_id() != 2).cloned().collect();
    wait_for_serving_leaders(&nodes, "m", 4).await;
    append_to_every_leader(&nodes, &nodes, 4).await;
    for n in &nodes {
        let what = format!("node 2 removed everywhere (itself included): node {}", n.node_id());
        eventually(&what, || n.with_metadata(|m| m.removed_nodes.contains(&2))).await;
    }
    // It stops itself then (chronik-server does on `removed_from_cluster`); until it has, it
    // stays a learner of the metadata group, which is how it heard of its removal.
    tokio::time::timeout(Duration::from_secs(1), victim.removed_from_cluster()).await.unwrap();
    assert!(victim.is_removed() && !survivors.iter().any(|n| n.is_removed()));
    assert!(!survivors[0].metadata_voters().contains(&2), "no longer a voter by then");
    let learner = survivors[0].meta.members().contains(&(2, false));
    assert!(learner || victim.meta.members().contains(&(2, false)), "but still a learner");
    victim.shutdown().await.unwrap();
    for n in &survivors {
        eventually("node 2 out of the metadata group", || !n.metadata_voters().contains(&2)).await;
        eventually("no moves left", || n.moves_in_progress().is_empty()).await;
    }
    eventually("node 2's replicas stopped", || victim.partitions().is_empty()).await;
    eventually("three metadata voters again (node 4 promoted)", || survivors[0].metadata_voters().len() == 3).await;
    wait_for_serving_leaders(&survivors, "m", 4).await;
    append_to_every_leader(&survivors, &nodes, 5).await;

    // Every partition is on three survivors, each replica holding the same entries at the
    // same offsets as the leader, up to what the leader acknowledged.
    for p in 0..4 {
        let replicas = survivors[0].with_metadata(|m| m.topic("m").unwrap().partitions[p as usize].replicas.clone());
        assert!(!replicas.contains(&2) && replicas.len() == 3, "partition {p}: {replicas:?}");
        let leader = survivors.iter().find_map(|n| n.partition("m", p).filter(|r| r.is_leader(n.node_id()))).unwrap();
        let expected = read_all(&leader);
        assert_eq!(expected.len(), 5, "partition {p}: five batches acknowledged");
        for n in survivors.iter().filter(|n| replicas.contains(&n.node_id())) {
            let r = n.partition("m", p).unwrap();
            eventually("the replica caught up", || r.log().high_watermark() == leader.log().high_watermark()).await;
            assert_eq!(read_all(&r), expected, "partition {p} on node {}", n.node_id());
        }
    }

    // The id is gone for good: a node that comes back as 2 (here with a fresh data dir) is
    // refused, naming why.
    refused_join(&router, &tasks, dirs[4].path(), 2, "removed").await;
    for n in &survivors {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// Replacing a failed node: it is dead (cut off from everyone) when it is removed; its
/// replicas move to the node added in its place, which catches up from the survivors, and
/// the dead node is taken out of the metadata group without ever answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_a_new_one() {
    let (router, tasks, dirs, nodes) = three_with_topic(78, "r", 3, 3).await;
    append_to_every_leader(&nodes, &nodes, 1).await;

    // Node 3 dies; node 4 joins in its place, then node 3 is removed.
    let dead = 3;
    router.isolate(dead);
    let mut survivors: Vec<Arc<Node>> = nodes.iter().filter(|n| n.node_id() != dead).cloned().collect();
    for n in &survivors {
        eventually("every partition led by a survivor", || {
            (0..3).all(|p| n.partition_leader("r", p).leader.is_some_and(|l| l != dead))
        })
        .await;
    }
    wait_for_serving_leaders(&survivors, "r", 3).await;
    append_to_every_leader(&survivors, &nodes, 2).await;
    survivors.push(Node::start_in_sim(options(dirs[3].path(), 4, &[1]), router.clone(), &tasks).await.unwrap());
    let moves = survivors[0].remove_node(dead).await.unwrap();
    assert_eq!(moves.len(), 3, "RF=3 on three nodes: node 3 held every partition: {moves:?}");
    assert!(moves.iter().all(|m| m.to.contains(&4) && !m.to.contains(&dead)), "all go to node 4: {moves:?}");
    for n in &survivors {
        eventually("node 3 removed", || n.with_metadata(|m| m.removed_nodes.contains(&dead))).await;
        eventually("node 3 out of the metadata group", || !n.metadata_voters().contains(&dead)).await;
    }
    wait_for_serving_leaders(&survivors, "r", 3).await;
    append_to_every_leader(&survivors, &nodes, 3).await;
    for p in 0..3 {
        let leader = survivors.iter().find_map(|n| n.partition("r", p).filter(|r| r.is_leader(n.node_id()))).unwrap();
        let expected = read_all(&leader);
        assert_eq!(expected.len(), 3, "partition {p}: three batches acknowledged");
        for n in &survivors {
            let r = n.partition("r", p).unwrap();
            eventually("the replica caught up", || r.log().high_watermark() == leader.log().high_watermark()).await;
            assert_eq!(read_all(&r), expected, "partition {p} on node {}", n.node_id());
        }
    }
    for n in nodes.iter().chain(&survivors[2..]) {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// Waits until each of `topic`'s partitions has a leader among `nodes` that may serve.
pub(super) async fn wait_for_serving_leaders(nodes: &[Arc<Node>], topic: &str, partitions: i32) {
    eventually("a serving leader for every partition", || {
        (0..partitions).all(|p| nodes.iter().any(|n| n.partition(topic, p).is_some_and(|r| r.is_leader(n.node_id()))))
    })
    .await;
}

/// A cluster of two shrinks to one: the leaving node gives up its metadata vote while it
/// still answers (two voters need both for that), and its partitions move to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_shrink_to_one() {
    let router = SimRouter::new(90);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = Node::start_in_sim(options(dirs[0].path(), 1, &[]), router.clone(), &tasks).await.unwrap();
    let second = Node::start_in_sim(options(dirs[1].path(), 2, &[1]), router.clone(), &tasks).await.unwrap();
    eventually("two metadata voters", || first.metadata_voters().len() == 2).await;
    first.propose_meta(create_with_rf("s", 2, 1)).await.unwrap();
    let both = [first.clone(), second.clone()];
    eventually("node 2 applied the topic", || second.with_metadata(|m| m.topic("s").is_some())).await;
    assert!(second.wait_for_topic("s", Duration::from_secs(30)).await);
    wait_for_serving_leaders(&both, "s", 2).await;
    append_to_every_leader(&both, &both, 1).await;
    assert_eq!(second.partitions().len(), 1, "one partition on each node");

    assert_eq!(first.remove_node(2).await.unwrap().len(), 1);
    tokio::time::timeout(Duration::from_secs(30), second.removed_from_cluster()).await.unwrap();
    second.shutdown().await.unwrap();
    eventually("node 1 alone in the metadata group", || first.meta.members() == [(1, true)]).await;
    wait_for_serving_leaders(&both[..1], "s", 2).await;
    append_to_every_leader(&both[..1], &both, 2).await;
    for p in 0..2 {
        assert_eq!(read_all(&first.partition("s", p).unwrap()).len(), 2, "partition {p} kept what it had");
    }
    first.shutdown().await.unwrap();
    tasks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_voter_named_from_any_node() {
    let (_router, tasks, _dirs, nodes) = three_with_topic(91, "l", 1, 3).await;
    let partition = LeadershipTarget::Partition { topic: "l".into(), partition: 0 };
    let cases = [(LeadershipTarget::Metadata, "the metadata group"), (partition, "partition l-0")];
    for (target, what) in cases {
        let leader = match &target {
            LeadershipTarget::Metadata => nodes[0].metadata_leader().unwrap(),
            LeadershipTarget::Partition { .. } => nodes[0].partition_leader("l", 0).leader.unwrap(),
        };
        // Asked of a node that does not lead, for the third one.
        let asked = nodes.iter().find(|n| n.node_id() != leader).unwrap();
        let to = (1..=3).find(|id| *id != leader && *id != asked.node_id()).unwrap();
        asked.transfer_leadership(&target, to).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let now = match &target {
            LeadershipTarget::Metadata => nodes[(to - 1) as usize].metadata_leader(),
            LeadershipTarget::Partition { .. } => nodes[(to - 1) as usize].partition_leader("l", 0).leader,
        };
        assert_eq!(now, Some(to), "{what}: node {to} leads");
        match asked.transfer_leadership(&target, 9).await {
            Err(ClusterError::NotVoter { node: 9 }) => {}
            other => panic!("{what}: a transfer to a node that does not vote: {other:?}"),
        }
    }
    wait_for_serving_leaders(&nodes, "l", 1).await;
    append_to_every_leader(&nodes, &nodes, 1).await;
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// Nodes are promoted to metadata voters on their own up to five; an operator promotes a sixth
/// by hand, asked of a node that does not lead, once it has caught up (refused before, and
/// for a node that is not a member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_past_five_voters_is_promoted_by_hand_once_caught_up() {
    let router = SimRouter::new(94);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = start_three(&router, &tasks, &dirs, [&[], &[1], &[1]]).await;
    for id in 4..=6u64 {
        let opts = options(dirs[id as usize - 1].path(), id, &[1]);
        nodes.push(Node::start_in_sim(opts, router.clone(), &tasks).await.unwrap());
        // One at a time, so the sixth is the one left a learner.
        eventually("promoted on its own", || id == 6 || nodes[0].metadata_voters().contains(&id)).await;
    }
    eventually("node 6 a learner", || nodes[0].meta.members().contains(&(6, false))).await;
    assert_eq!(nodes[0].metadata_voters().len(), 5, "five voters at most on their own");
    let leader = nodes[0].metadata_leader().unwrap();
    let asked = nodes.iter().find(|n| n.node_id() != leader && n.node_id() != 6).unwrap().clone();

    // Behind: cut off while the metadata moves on.
    router.isolate(6);
    for _ in 0..20 {
        asked.propose_meta(crate::metadata::MetaCommand::AllocateProducerIds { count: 1 }).await.unwrap();
    }
    match asked.promote(6).await {
        Err(ClusterError::Rejected(e)) => assert!(e.to_string().contains("has not caught up"), "{e}"),
        other => panic!("a learner behind was promoted: {other:?}"),
    }
    // The lag an operator sees before promoting: the leader knows it, the others do not.
    let lag_of_6 = |n: &Arc<Node>| n.members().into_iter().find(|m| m.id == 6).unwrap().metadata_lag;
    let at_leader = lag_of_6(&nodes[(leader - 1) as usize]);
    assert!(at_leader.is_some_and(|l| l >= 20), "node 6 is 20 entries behind: {at_leader:?}");
    assert_eq!(lag_of_6(&asked), None);
    match asked.promote(9).await {
        Err(ClusterError::Rejected(crate::metadata::MetaError::UnknownNode(9))) => {}
        other => panic!("an unknown node: {other:?}"),
    }
    router.heal();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = asked.promote(6).await {
        assert!(std::time::Instant::now() < deadline, "node 6 never promoted: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &nodes {
        eventually("six metadata voters", || n.metadata_voters().len() == 6).await;
    }
    asked.promote(6).await.expect("a voter already: answered at once");
    asked.propose_meta(create_with_rf("six", 1, 3)).await.unwrap();
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// Removing the node that leads the metadata group: it hands the group over before it gives
/// up its vote, and the others go on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_leaders_node_hands_over_when_removed() {
    let router = SimRouter::new(92);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_three(&router, &tasks, &dirs, [&[], &[1], &[1]]).await;
    let leader = nodes[0].metadata_leader().unwrap();
    let leaving = nodes[(leader - 1) as usize].clone();
    let others: Vec<Arc<Node>> = nodes.iter().filter(|n| n.node_id() != leader).cloned().collect();
    assert!(others[0].remove_node(leader).await.unwrap().is_empty(), "it hosts no partition");
    tokio::time::timeout(Duration::from_secs(30), leaving.removed_from_cluster()).await.unwrap();
    leaving.shutdown().await.unwrap();
    for n in &others {
        eventually("a new metadata leader", || n.metadata_leader().is_some_and(|l| l != leader)).await;
        eventually("the old leader out of the group", || n.meta.members().iter().all(|(id, _)| *id != leader)).await;
    }
    // The two left take changes.
    others[1].propose_meta(create_with_rf("after", 1, 2)).await.unwrap();
    for n in &others {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// `create` with another replication factor.
fn create_with_rf(name: &str, partitions: u32, rf: u32) -> crate::metadata::MetaCommand {
    let mut topic = create(name, partitions);
    if let crate::metadata::MetaCommand::CreateTopic { replication_factor, .. } = &mut topic {
        *replication_factor = rf;
    }
    topic
}

/// An operator's move: a partition of one replica goes to two other nodes (its replication
/// factor changes with it), keeping every entry, and takes writes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_the_replicas_named() {
    let (_router, tasks, _dirs, nodes) = three_with_topic(93, "p", 1, 1).await;
    append_to_every_leader(&nodes, &nodes, 1).await;
    append_to_every_leader(&nodes, &nodes, 2).await;
    let from = nodes[0].with_metadata(|m| m.topic("p").unwrap().partitions[0].replicas.clone());
    let to: Vec<u64> = (1..=3).filter(|n| !from.contains(n)).collect();
    let planned = nodes[2].move_partition("p", 0, to.clone()).await.unwrap().expect("a move");
    assert_eq!((planned.from.clone(), planned.to.clone()), (from.clone(), to.clone()));
    for n in &nodes {
        eventually("the move finished", || n.moves_in_progress().is_empty()).await;
        eventually("the replicas are where they were sent", || {
            n.with_metadata(|m| m.topic("p").unwrap().partitions[0].replicas == to)
                && (n.partition("p", 0).is_some() == to.contains(&n.node_id()))
        })
        .await;
    }
    wait_for_serving_leaders(&nodes, "p", 1).await;
    append_to_every_leader(&nodes, &nodes, 3).await;
    let leader = nodes.iter().find_map(|n| n.partition("p", 0).filter(|r| r.is_leader(n.node_id()))).unwrap();
    let expected = read_all(&leader);
    assert_eq!(expected.len(), 3, "what the old replica had, and the write after the move");
    for n in nodes.iter().filter(|n| to.contains(&n.node_id())) {
        let r = n.partition("p", 0).unwrap();
        eventually("the replica caught up", || r.log().high_watermark() == leader.log().high_watermark()).await;
        assert_eq!(read_all(&r), expected, "node {}", n.node_id());
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    tasks.stop().await;
}

/// Nodes 1-3 (1 bootstraps, 2 and 3 join through it) on a router seeded with `seed`, each
/// with its data dir (plus a spare one), and topic `topic` (`partitions`, replication factor
/// `rf`) created and led.
pub(super) async fn three_with_topic(
    seed: u64,
    topic: &str,
    partitions: u32,
    rf: u32,
) -> (Arc<SimRouter>, Tasks, Vec<tempfile::TempDir>, Vec<Arc<Node>>) {
    let router = SimRouter::new(seed);
    let tasks = Tasks::new();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_three(&router, &tasks, &dirs, [&[], &[1], &[1]]).await;
    nodes[0].propose_meta(create_with_rf(topic, partitions, rf)).await.unwrap();
    for n in &nodes {
        eventually("the topic applied", || n.with_metadata(|m| m.topic(topic).is_some())).await;
        assert!(n.wait_for_topic(topic, Duration::from_secs(30)).await);
    }
    wait_for_serving_leaders(&nodes, topic, partitions as i32).await;
    (router, tasks, dirs, nodes)
}
