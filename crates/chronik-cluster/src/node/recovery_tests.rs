//! Quorum-loss recovery in process, through the seeded router: of three nodes two are gone for
//! good, so nothing commits; the survivor, stopped, is made the only voter of what it holds,
//! and on its next start it serves every entry it held at the same offsets, takes writes
//! alone, and has tombstoned the lost nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use super::cluster_tests::{append_to_every_leader, eventually, options, refused_join};
use super::operations_tests::{three_with_topic, wait_for_serving_leaders};
use super::replication_tests::read_all;
use super::{LeadershipTarget, Node, recover_from_quorum_loss};
use crate::error::ClusterError;
use crate::metadata::META_GROUP;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_survivor_is_made_the_only_voter_and_serves_what_it_held() {
    let (router, tasks, dirs, nodes) = three_with_topic(93, "q", 2, 3).await;
    append_to_every_leader(&nodes, &nodes, 1).await;
    append_to_every_leader(&nodes, &nodes, 2).await;
    let survivor = nodes[0].clone();
    for p in 0..2 {
        let r = survivor.partition("q", p).unwrap();
        eventually("the survivor holds both batches", || r.log().high_watermark() == 2).await;
    }
    let held: Vec<_> = (0..2).map(|p| read_all(&survivor.partition("q", p).unwrap())).collect();
    let groups: BTreeSet<u64> = survivor.partitions().iter().map(|r| r.group()).collect();
    // The survivor leads q-0, so the write below may reach its log before it steps down.
    survivor.transfer_leadership(&LeadershipTarget::Partition { topic: "q".into(), partition: 0 }, 1).await.unwrap();

    // Nodes 2 and 3 are lost: the survivor alone commits nothing.
    for lost in [2, 3] {
        router.isolate(lost);
    }
    for n in &nodes[1..] {
        n.shutdown().await.unwrap();
    }
    let stuck = survivor.partition("q", 0).unwrap();
    let refused =
        tokio::time::timeout(Duration::from_secs(2), stuck.append(crate::batch::tests::batch(1, 3).into())).await;
    assert!(!matches!(refused, Ok(Ok(_))), "a lone node of three committed a write");
    // Where each log ends, committed or not: recovery commits it whole.
    let written: Vec<u64> = (0..2).map(|p| survivor.partition("q", p).unwrap().log().next_offset()).collect();
    assert_eq!(written[1], 2, "q-1 took nothing more");
    survivor.shutdown().await.unwrap();
    // Its data directory is free once nothing holds the node.
    drop((survivor, stuck, nodes));

    let opts = options(dirs[0].path(), 1, &[]);
    let report = recover_from_quorum_loss(&opts).await.unwrap();
    let mut expected = groups.clone();
    expected.insert(META_GROUP);
    assert_eq!(report.groups.keys().copied().collect::<BTreeSet<_>>(), expected, "{report:?}");

    let node = Node::start_in_sim(opts.clone(), router.clone(), &tasks).await.unwrap();
    let alone = [node.clone()];
    eventually("the lost nodes removed", || {
        node.with_metadata(|m| m.removed_nodes == BTreeSet::from([2, 3]) && m.nodes.len() == 1)
    })
    .await;
    assert_eq!(node.metadata_voters(), vec![1]);
    wait_for_serving_leaders(&alone, "q", 2).await;
    let mut recovered = Vec::new();
    for p in 0..2 {
        let r = node.partition("q", p).unwrap();
        // What it held, at the same offsets, and in q-0 the write no quorum took if it
        // reached the log: recovery commits the survivor's whole log.
        let now = read_all(&r);
        assert_eq!((r.log().high_watermark(), now.len()), (written[p as usize], written[p as usize] as usize));
        assert!(held[p as usize].iter().all(|(offset, batch)| now.get(offset) == Some(batch)), "partition {p}");
        recovered.push(now.len());
        assert_eq!(r.replication().voters, vec![1], "partition {p}");
        assert_eq!(node.with_metadata(|m| m.partition("q", p).unwrap().replicas.clone()), vec![1]);
    }
    append_to_every_leader(&alone, &alone, 3).await;
    for p in 0..2 {
        let now = read_all(&node.partition("q", p).unwrap()).len();
        assert_eq!(now, recovered[p as usize] + 1, "partition {p} takes writes alone");
    }
    // Not while the node runs; and a lost node's id is refused for good.
    assert!(matches!(recover_from_quorum_loss(&opts).await, Err(ClusterError::Locked(_))));
    router.heal();
    refused_join(&router, &tasks, dirs[3].path(), 2, "removed").await;
    node.shutdown().await.unwrap();
    tasks.stop().await;
}
