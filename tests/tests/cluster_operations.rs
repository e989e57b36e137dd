//! Operating a cluster of real processes on 127.0.0.1 through the admin API: four nodes, an
//! RF=3 topic spread over them. The metadata group's and a partition's leadership are handed
//! to chosen nodes (the latter with `chronik-server admin`, the CLI). A node is removed while
//! acks=all producers write and its replicas move to the others: it stops itself (exit 0) and
//! leaves the metadata group, every acknowledged record is read back exactly once at its
//! offset, every new replica reaches its partition's high watermark, and its data directory
//! is refused if started again. A fifth node removed while it is down learns of its removal
//! from its peers when started again, and refuses to serve.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use chronik_tests::cluster::{
    bootstrap_of, create_replicated, get_json, leaders, produce_to, read_all, start_seeded, voters, wait_until,
};
use chronik_tests::{Broker, http_post_json, raft_ports, server_bin};
use serde_json::Value;

const TOPIC: &str = "moving";
const PARTITIONS: i32 = 4;

/// (high watermark, raft group) of each partition of `TOPIC` that `node` hosts.
fn hosted(node: &Broker) -> BTreeMap<i64, u64> {
    get_json(node, "/admin/cluster/partitions")
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == TOPIC)
        .map(|p| (p["partition"].as_i64().unwrap(), p["high_watermark"].as_u64().unwrap()))
        .collect()
}

/// `chronik-server admin --addr <node's admin address> args`: exit code, stdout, stderr.
fn admin_cli(node: &Broker, args: &[&str]) -> (Option<i32>, String, String) {
    let addr = format!("{}:{}", node.host, node.admin_port);
    let out = Command::new(server_bin()).args(["admin", "--addr", &addr]).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_and_a_removed_node_hands_its_replicas_over_and_stops() {
    let ports = raft_ports(5);
    let mut nodes = start_seeded(&ports, 4);
    let bootstrap = bootstrap_of(&nodes);
    create_replicated(&bootstrap, TOPIC, PARTITIONS, 3).await;
    wait_until("every partition led", Duration::from_secs(60), || leaders(&nodes[0], TOPIC).len() == 4);
    let mut acked = produce_to(&bootstrap, TOPIC, 0, 300).await;

    // Leadership handed to chosen voters, asked of nodes that do not lead: the metadata
    // group's to node 4, partition 0's to a replica that does not lead it.
    let (status, body) = http_post_json(&nodes[1].admin_url("/admin/cluster/transfer-leader"), r#"{"to":4}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"group":"metadata","leader":4}"#));
    for n in &nodes {
        wait_until("node 4 leads the metadata group", Duration::from_secs(30), || {
            get_json(n, "/admin/cluster/leader")["leader"] == 4
        });
    }
    let (leader, _, replicas) = leaders(&nodes[0], TOPIC)[&0].clone();
    let to = *replicas.iter().find(|r| **r != leader).unwrap();
    let asked = (1..=4).find(|id| *id != leader && *id != to).unwrap() as usize;
    // This one through the CLI.
    let (code, out, err) =
        admin_cli(&nodes[asked - 1], &["transfer-leader", &to.to_string(), "--topic", TOPIC, "--partition", "0"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), serde_json::json!({ "group": "moving-0", "leader": to }));
    wait_until("the new leader of partition 0 named", Duration::from_secs(30), || {
        leaders(&nodes[0], TOPIC).get(&0).is_some_and(|l| l.0 == to)
    });

    // Node 3 goes; producers keep writing meanwhile.
    let victim = 3usize;
    let hosted_before = hosted(&nodes[victim - 1]).len();
    assert!(hosted_before >= 2, "RF=3 over four nodes puts replicas on node 3");
    let writing = tokio::spawn({
        let bootstrap = bootstrap.clone();
        async move { produce_to(&bootstrap, TOPIC, 300, 600).await }
    });
    let (status, body) = http_post_json(&nodes[0].admin_url("/admin/cluster/remove-node"), r#"{"node_id":3}"#);
    assert_eq!(status, 202, "{body}");
    let started: Value = serde_json::from_str(&body).unwrap();
    let moves = started["moves"].as_array().unwrap();
    assert_eq!(moves.len(), hosted_before, "a move per replica of node 3: {body}");
    for m in moves {
        let to: BTreeSet<u64> = m["to"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
        assert!(to.len() == 3 && !to.contains(&3), "{m}");
    }
    let (code, _, err) = admin_cli(&nodes[1], &["remove-node", "3"]);
    assert_eq!(code, Some(1), "asked twice, through the CLI: {err}");
    assert!(err.contains("HTTP 409") && err.contains("already being removed"), "{err}");

    // It stops itself once its replicas have moved.
    let code = nodes[victim - 1].wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "the removed node exits cleanly:\n{}", nodes[victim - 1].log_text());
    assert!(nodes[victim - 1].log_text().contains("this node was removed from the cluster"));
    acked.extend(writing.await.unwrap());

    let survivors: Vec<&Broker> = nodes.iter().enumerate().filter(|(i, _)| *i != victim - 1).map(|(_, n)| n).collect();
    for n in &survivors {
        wait_until("node 3 out of the metadata group", Duration::from_secs(30), || voters(n) == [1, 2, 4]);
        let members = get_json(n, "/admin/cluster/members");
        let ids: Vec<u64> =
            members["members"].as_array().unwrap().iter().map(|m| m["node_id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 4], "{members}");
        let (code, out, err) = admin_cli(n, &["moves"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), serde_json::json!({ "leaving": [], "moves": [] }));
    }
    for (p, (_, _, replicas)) in leaders(survivors[0], TOPIC) {
        assert!(replicas.len() == 3 && !replicas.contains(&3), "partition {p}: {replicas:?}");
    }

    // Everything acknowledged is there once at its offset, and every replica of a partition
    // (the new ones included) reaches the same high watermark.
    let survivor_bootstrap = survivors.iter().map(|n| n.bootstrap()).collect::<Vec<_>>().join(",");
    let got = read_all(&survivor_bootstrap, TOPIC, PARTITIONS, &acked);
    for (at, value) in &acked {
        assert_eq!(got.get(at), Some(value), "acknowledged record at {at:?}");
    }
    assert_eq!(got.values().collect::<BTreeSet<_>>().len(), got.len(), "no record twice");
    wait_until("every replica at its partition's high watermark", Duration::from_secs(30), || {
        let views: Vec<BTreeMap<i64, u64>> = survivors.iter().map(|n| hosted(n)).collect();
        let mut per_partition: BTreeMap<i64, BTreeSet<u64>> = BTreeMap::new();
        let mut copies = 0;
        for view in &views {
            for (p, hw) in view {
                per_partition.entry(*p).or_default().insert(*hw);
                copies += 1;
            }
        }
        copies == 3 * PARTITIONS as usize && per_partition.values().all(|hws| hws.len() == 1)
    });

    // Its data directory cannot serve again.
    let code = nodes[victim - 1].start_expecting_refusal();
    assert_ne!(code, Some(0));
    let log = nodes[victim - 1].log_text();
    assert!(log.contains("node 3 was removed from cluster"), "{log}");

    // A node removed while it is down never applies its tombstone; started again, it learns
    // of its removal from the first peer it reaches, and refuses to serve.
    let mut fifth = Broker::start_cluster_node(5, &ports, &[1], &[]);
    wait_until("node 5 a metadata voter", Duration::from_secs(60), || voters(&nodes[0]).contains(&5));
    fifth.kill9();
    let (status, body) = http_post_json(&nodes[0].admin_url("/admin/cluster/remove-node"), r#"{"node_id":5}"#);
    assert_eq!(status, 202, "{body}");
    wait_until("node 5 out of the metadata group", Duration::from_secs(60), || {
        nodes.iter().any(|n| n.log_text().contains("removed from the metadata group node=5"))
    });
    let code = fifth.start_expecting_refusal();
    assert_ne!(code, Some(0));
    let log = fifth.log_text();
    assert!(log.contains("node 5 was removed from cluster"), "{log}");
}
