//! Quorum-loss recovery with real processes on 127.0.0.1: of three nodes, two are killed for
//! good, so an RF=3 topic takes no writes. The survivor is killed too, recovered offline with
//! `chronik-server recover-quorum-loss` (which refuses without `--confirm`), and started
//! again: it is the only voter and member, serves every record acknowledged before at its
//! offset, and takes writes alone. A lost node started again on its old data is refused as
//! removed. A new node joins through the survivor (promoted to voter with `chronik-server
//! admin promote`) and a partition is moved onto it, which is how replication comes back.
//! A backup taken through one node before the loss restores into a new standalone node.

use std::collections::BTreeMap;
use std::time::Duration;

use chronik_tests::cluster::{
    bootstrap_of, client, create_replicated, get_json, leaders, produce_to, read_all, start_seeded, voters, wait_until,
};
use chronik_tests::{Broker, http_post_json, raft_ports};
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "survivor";
const PARTITIONS: i32 = 2;

fn member_ids(node: &Broker) -> Vec<u64> {
    let members = get_json(node, "/admin/cluster/members");
    members["members"].as_array().unwrap().iter().map(|m| m["node_id"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_recovered_offline_serves_what_was_acknowledged_and_takes_writes_alone() {
    let ports = raft_ports(4);
    let mut nodes = start_seeded(&ports, 3);
    let bootstrap = bootstrap_of(&nodes);
    create_replicated(&bootstrap, TOPIC, PARTITIONS, 3).await;
    wait_until("every partition led", Duration::from_secs(60), || leaders(&nodes[0], TOPIC).len() == 2);
    let mut acked = produce_to(&bootstrap, TOPIC, 0, 200).await;
    let before_loss: std::collections::BTreeSet<String> = acked.values().cloned().collect();
    // acks=all: node 1 may still be applying the last entries; it holds them all once every
    // replica reports the same high watermark.
    chronik_tests::cluster::wait_converged(&nodes.iter().collect::<Vec<_>>(), TOPIC, PARTITIONS as usize);
    // A backup taken through one node reads each partition from its leader, wherever it is.
    let backup = tempfile::tempdir().unwrap();
    let archive = backup.path().join("before-the-loss.backup");
    let (code, out, err) =
        nodes[0].run_tool(&["backup", "--from", &nodes[1].bootstrap(), "--out", archive.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");

    // Nodes 2 and 3 are lost; node 1 alone takes no acks=all write.
    nodes[1].kill9();
    nodes[2].kill9();
    let lone: FutureProducer =
        client(&nodes[0].bootstrap()).set("acks", "all").set("message.timeout.ms", "3000").create().unwrap();
    let refused = lone.send(FutureRecord::to(TOPIC).key("k").payload("unacknowledged"), Duration::from_secs(5)).await;
    assert!(refused.is_err(), "a lone node of three acknowledged a write: {refused:?}");
    drop(lone);
    nodes[0].kill9();

    // Recovery says what it gives up and changes nothing unless confirmed.
    let (code, _, err) = nodes[0].run_tool(&["-c", "chronik.toml", "recover-quorum-loss"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Nothing was changed") && err.contains("ONE surviving node"), "{err}");
    let (code, out, err) = nodes[0].run_tool(&["-c", "chronik.toml", "recover-quorum-loss", "--confirm"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("is now the only voter of 3 group(s)") && out.contains("metadata: new membership"), "{out}");

    nodes[0].start_again();
    let survivor = &nodes[0];
    wait_until("node 1 alone", Duration::from_secs(30), || member_ids(survivor) == [1] && voters(survivor) == [1]);
    wait_until("every partition led by node 1", Duration::from_secs(30), || {
        let l = leaders(survivor, TOPIC);
        l.len() == 2 && l.values().all(|(leader, _, replicas)| *leader == 1 && replicas == &[1])
    });
    let got = read_all(&survivor.bootstrap(), TOPIC, PARTITIONS, &acked);
    for (at, value) in &acked {
        assert_eq!(got.get(at), Some(value), "acknowledged record at {at:?}");
    }
    // The write no quorum took may have been kept where node 1 led (its log is committed
    // whole); nothing else is there.
    let extra: Vec<&String> = got.iter().filter(|(at, _)| !acked.contains_key(at)).map(|(_, v)| v).collect();
    assert!(extra.iter().all(|v| *v == "unacknowledged") && extra.len() <= 1, "{extra:?}");
    acked.extend(produce_to(&survivor.bootstrap(), TOPIC, 200, 50).await);

    // A lost node back on its old data is refused: its id was removed.
    let code = nodes[1].start_expecting_refusal();
    assert_ne!(code, Some(0));
    assert!(nodes[1].log_text().contains("was removed from cluster"), "{}", nodes[1].log_text());

    // Replication comes back the usual way: a new node joins, a partition moves onto it.
    let fresh = Broker::start_cluster_node(4, &ports, &[1], &[]);
    // Promoted by hand through the CLI, asked of node 4 itself (the leader, node 1, makes
    // it): refused while it has not caught up, or done already by the automatic promotion.
    wait_until("node 4 promoted", Duration::from_secs(60), || {
        let addr = format!("{}:{}", fresh.host, fresh.admin_port);
        let (code, out, err) = fresh.run_tool(&["admin", "--addr", &addr, "promote", "4"]);
        assert!(code == Some(0) || err.contains("HTTP 409") && err.contains("has not caught up"), "{out}{err}");
        code == Some(0) && out.contains(r#""role": "voter""#)
    });
    assert_eq!(voters(&nodes[0]), [1, 4]);
    let body = format!(r#"{{"topic":"{TOPIC}","partition":0,"replicas":[1,4]}}"#);
    let (status, answer) = http_post_json(&nodes[0].admin_url("/admin/cluster/move-partition"), &body);
    assert_eq!(status, 202, "{answer}");
    wait_until("partition 0 on nodes 1 and 4", Duration::from_secs(60), || {
        leaders(&nodes[0], TOPIC).get(&0).is_some_and(|(_, _, replicas)| replicas == &[1, 4])
    });
    let on_fresh: BTreeMap<(i32, i64), String> =
        acked.iter().filter(|(at, _)| at.0 == 0).map(|(k, v)| (*k, v.clone())).collect();
    wait_until("node 4 holds partition 0", Duration::from_secs(60), || {
        get_json(&fresh, "/admin/cluster/partitions").as_array().unwrap().iter().any(|p| {
            p["topic"] == TOPIC
                && p["partition"] == 0
                && p["high_watermark"].as_u64() >= on_fresh.keys().map(|k| k.1 as u64 + 1).max()
        })
    });
    let got = read_all(&fresh.bootstrap(), TOPIC, 1, &on_fresh);
    for (at, value) in &on_fresh {
        assert_eq!(got.get(at), Some(value), "partition 0 on node 4 at {at:?}");
    }

    // The backup taken before the loss restores into a new standalone node: every record
    // acknowledged before it, at its offset.
    let standalone = Broker::start(&[]);
    let admin_addr = format!("127.0.0.1:{}", standalone.admin_port);
    let restore =
        ["restore", "--input", archive.to_str().unwrap(), "--to", &standalone.bootstrap(), "--to-admin", &admin_addr];
    let (code, out, err) = standalone.run_tool(&restore);
    assert_eq!(code, Some(0), "{out}{err}");
    let before: BTreeMap<(i32, i64), String> =
        acked.iter().filter(|(_, v)| before_loss.contains(*v)).map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(read_all(&standalone.bootstrap(), TOPIC, PARTITIONS, &before), before);
}
