//! Network partitions between real processes: three `chronik-server cluster` nodes, each in
//! its own network namespace, joined by veth pairs on a bridge (`chronik_tests::netns`; needs
//! root, as CI runs). While acks=all producers write, the leader of a partition is cut off
//! from the other two: it stops acknowledging (a produce sent to it gets an error, never an
//! offset), the majority elects a new leader and serves, and after the link heals every
//! replica converges with every acknowledged record present exactly once at its offset.
//! (Loss and delay are the in-process harness's: this machine's kernel has no `netem`.)

use std::collections::BTreeMap;
use std::time::Duration;

use chronik_tests::Broker;
use chronik_tests::cluster::{
    bootstrap_of, create_replicated, partitions, produce_to, read_all, voters, wait_converged, wait_until,
};
use chronik_tests::netns::NetNamespaces;
use chronik_tests::raw;

const TOPIC: &str = "split";
const PARTITIONS: i32 = 3;
const PER_PHASE: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_acknowledging_and_the_majority_serves_on() {
    let net = NetNamespaces::new(3);
    let hosts = net.hosts();
    let nodes = vec![
        Broker::start_cluster_node_in(&net.nodes[0].0, 1, &hosts, &[]),
        Broker::start_cluster_node_in(&net.nodes[1].0, 2, &hosts, &[1]),
        Broker::start_cluster_node_in(&net.nodes[2].0, 3, &hosts, &[1, 2]),
    ];
    for n in &nodes {
        wait_until("three metadata voters", Duration::from_secs(30), || voters(n) == [1, 2, 3]);
    }
    let bootstrap = bootstrap_of(&nodes);
    create_replicated(&bootstrap, TOPIC, PARTITIONS, 3).await;
    let all: Vec<&Broker> = nodes.iter().collect();
    wait_converged(&all, TOPIC, PARTITIONS as usize);

    let mut acked = produce_to(&bootstrap, TOPIC, 0, PER_PHASE).await;

    // Cut off the leader of partition 0 from the other two nodes.
    let led = partitions(&nodes[0], TOPIC);
    let leader = led[&0].0.expect("partition 0 has a leader");
    let cut = leader as usize - 1;
    net.cut_off(cut);

    // The majority elects new leaders for what the cut-off node led, and serves.
    let majority: Vec<&Broker> = nodes.iter().enumerate().filter(|(i, _)| *i != cut).map(|(_, n)| n).collect();
    wait_until("the majority leads every partition", Duration::from_secs(30), || {
        partitions(majority[0], TOPIC).values().all(|(l, _)| l.is_some_and(|l| l != leader))
    });
    let majority_bootstrap = majority.iter().map(|n| n.bootstrap()).collect::<Vec<_>>().join(",");
    acked.extend(produce_to(&majority_bootstrap, TOPIC, PER_PHASE, PER_PHASE).await);

    // The cut-off node acknowledges nothing. Asked directly (a client library would learn the
    // new leader from the other nodes, which this process still reaches, and go there), an
    // acks=all produce gets an error or no answer, never an offset.
    let mut refused = Vec::new();
    let mut conn = raw::connect(&nodes[cut]);
    for n in 0..2 {
        let value = format!("isolated-{n}");
        let answer =
            raw::try_produce(&mut conn, TOPIC, 0, raw::batch(&[chronik_tests::now_ms()], value.as_bytes(), -1));
        assert!(answer.is_none_or(|(code, _)| code != 0), "the cut-off node acknowledged {value}: {answer:?}");
        refused.push(value);
        if answer.is_none() {
            conn = raw::connect(&nodes[cut]);
        }
    }

    // Healed, the cut-off node follows the new leaders and every replica converges.
    net.heal(cut);
    wait_converged(&all, TOPIC, PARTITIONS as usize);
    acked.extend(produce_to(&bootstrap, TOPIC, 2 * PER_PHASE, PER_PHASE).await);
    wait_converged(&all, TOPIC, PARTITIONS as usize);

    // Every acknowledged record once at its offset; nothing the cut-off node was sent.
    let got = read_all(&bootstrap, TOPIC, PARTITIONS, &acked);
    assert_eq!(got, acked, "every acknowledged record at its offset");
    let stored: u64 = partitions(&nodes[0], TOPIC).values().map(|(_, hw)| hw).sum();
    assert_eq!(stored, acked.len() as u64, "nothing but the acknowledged records");
    let values: BTreeMap<&String, ()> = got.values().map(|v| (v, ())).collect();
    assert!(refused.iter().all(|r| !values.contains_key(r)));
}
