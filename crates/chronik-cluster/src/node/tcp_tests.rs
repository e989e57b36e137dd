//! A partition replicated on three in-process nodes over the real TCP transport on 127.0.0.1
//! (each node with its own WAL, disk, listener and tasks): replication with identical bytes on
//! every replica, a leader whose node stops (its listener and connections go with it) replaced
//! by the others, and a node of another cluster refused at the handshake with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_wal::{SyncMode, Wal, WalOptions};
use openraft::BasicNode;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::batch::tests::batch_of;
use crate::net::{self as tcp, TcpSettings, TcpTransport};
use crate::node::NodeOptions;
use crate::partition::{PartitionReplica, ReplicaSpec};
use crate::raft::transport::{Inbound, Request, Transport, TransportError};
use crate::raft::{GroupId, NetworkFactory, NodeId, Vote};
use crate::tasks::Tasks;

const GROUP: GroupId = 11;

struct TcpNode {
    id: NodeId,
    tasks: Tasks,
    transport: Arc<TcpTransport>,
    replica: Arc<PartitionReplica>,
    _wal: Arc<Wal>,
    _dir: tempfile::TempDir,
}

/// Small, so that an append of many large entries must go in parts.
const MAX_MESSAGE: usize = 1 << 20;

fn settings(cluster: Uuid, me: NodeId) -> TcpSettings {
    TcpSettings {
        cluster,
        me,
        connect_timeout: Duration::from_secs(1),
        max_message_size: MAX_MESSAGE,
        contacts: Default::default(),
        tombstones: Default::default(),
    }
}

/// Three nodes listening on 127.0.0.1, every one an initial voter of group `GROUP`.
async fn three_nodes(cluster: Uuid) -> (Vec<TcpNode>, tcp::Addresses) {
    let mut listeners = Vec::new();
    let mut addrs = HashMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap().to_string());
        listeners.push((id, l));
    }
    let addresses: tcp::Addresses = Arc::new(move |n| addrs.get(&n).cloned());
    let voters: BTreeMap<NodeId, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(addresses(id).unwrap()))).collect();
    let mut o = NodeOptions::from_config(&chronik_config::Config::default());
    (o.raft.heartbeat_interval_ms, o.raft.election_timeout_ms) = (30, 150);
    o.request_timeout = Duration::from_millis(500);
    // Pipelined, as `cluster.network.append_pipeline_depth` allows.
    o.append_pipeline_depth = 8;
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let tasks = Tasks::new();
        let groups: Arc<Mutex<HashMap<GroupId, Arc<dyn Inbound>>>> = Arc::default();
        let lookup = groups.clone();
        let groups_fn: tcp::Groups = Arc::new(move |g| lookup.lock().get(&g).cloned());
        let transport = TcpTransport::new(settings(cluster, id), addresses.clone(), tasks.clone());
        let serving = transport.clone();
        tasks.spawn("raft-transport", move |_| tcp::serve(listener, serving, groups_fn));
        let dir = tempfile::tempdir().unwrap();
        let wal_options = WalOptions { segment_size: 1 << 20, sync_mode: SyncMode::Always, ..WalOptions::default() };
        let wal = Arc::new(Wal::open(&dir.path().join("wal"), wal_options).unwrap().0);
        let spec = ReplicaSpec {
            topic: "t".into(),
            topic_id: Uuid::nil(),
            partition: 0,
            group: GROUP,
            voters: voters.clone(),
            segments_dir: dir.path().join("partitions").join(GROUP.to_string()),
            liveness: None,
        };
        let peer_settings = crate::raft::PeerSettings { max_message_size: MAX_MESSAGE, ..o.peer_settings() };
        let network = NetworkFactory::new(transport.clone(), GROUP, peer_settings);
        let replica =
            PartitionReplica::open(&wal, id, o.partition_raft().unwrap(), network, spec, tasks.child()).await.unwrap();
        groups.lock().insert(GROUP, replica.inbound());
        nodes.push(TcpNode { id, tasks, transport, replica, _wal: wal, _dir: dir });
    }
    (nodes, addresses)
}

/// Stops each node's replica, then its tasks.
async fn stop_all(nodes: impl Iterator<Item = &TcpNode>) {
    for n in nodes {
        n.replica.stop().await;
        n.tasks.shutdown().await;
    }
}

fn tagged(tag: u32) -> Bytes {
    batch_of(&[tag.to_be_bytes().to_vec()], 1, 0, 0, 0).into()
}

/// Appends `tags` through whichever of `nodes` leads, retrying while leadership moves.
async fn produce(nodes: &[&TcpNode], tags: std::ops::Range<u32>) -> Vec<(u32, u64)> {
    let mut acked = Vec::new();
    for tag in tags {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "batch {tag} was never acknowledged");
            let Some(leader) = nodes.iter().find(|n| n.replica.is_leader(n.id)) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            if let Ok(Ok((base, _))) =
                tokio::time::timeout(Duration::from_secs(2), leader.replica.append(tagged(tag))).await
            {
                acked.push((tag, base));
                break;
            }
        }
    }
    acked
}

/// Every batch below the high watermark, by base offset, once it reaches `end`.
async fn log_of(r: &PartitionReplica, end: u64) -> BTreeMap<u64, Bytes> {
    let mut hw = r.log().subscribe_high_watermark();
    tokio::time::timeout(Duration::from_secs(20), hw.wait_for(|h| *h >= end)).await.expect("caught up").unwrap();
    let mut out = BTreeMap::new();
    let mut next = 0;
    while next < end {
        for chunk in r.log().read(next, 1 << 20).unwrap().chunks {
            for span in crate::batch::split_batches(&chunk, true).unwrap() {
                out.insert(span.header.base_offset as u64, chunk.slice(span.range.clone()));
                next = span.header.last_offset() as u64 + 1;
            }
        }
    }
    out
}

async fn check(nodes: &[&TcpNode], acked: &[(u32, u64)]) {
    let end = acked.iter().map(|(_, b)| b + 1).max().unwrap();
    let mut logs = Vec::new();
    for n in nodes {
        let log = log_of(&n.replica, end).await;
        for (tag, base) in acked {
            assert_eq!(log.get(base).map(|b| u32::from_be_bytes(b[61..65].try_into().unwrap())), Some(*tag));
        }
        logs.push(log);
    }
    assert!(logs.windows(2).all(|w| w[0] == w[1]), "identical bytes on every replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_over_tcp_and_survive_a_stopped_leader() {
    let (nodes, _) = three_nodes(Uuid::new_v4()).await;
    let all: Vec<&TcpNode> = nodes.iter().collect();
    let mut acked = produce(&all, 0..100).await;
    check(&all, &acked).await;

    let leader = nodes.iter().find(|n| n.replica.is_leader(n.id)).expect("a leader");
    leader.replica.stop().await;
    leader.tasks.shutdown().await;
    let rest: Vec<&TcpNode> = nodes.iter().filter(|n| n.id != leader.id).collect();
    acked.extend(produce(&rest, 100..150).await);
    check(&rest, &acked).await;
    stop_all(rest.into_iter()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_keep_every_replica_identical() {
    let (nodes, _) = three_nodes(Uuid::new_v4()).await;
    let all: Vec<&TcpNode> = nodes.iter().collect();
    let mut acked = produce(&all, 0..1).await;
    let leader = nodes.iter().find(|n| n.replica.is_leader(n.id)).expect("a leader");
    // Appends arriving one by one faster than a follower's durable write answers: the leader
    // sends each without waiting for the answers to those before it, so each follower has
    // several in its Raft's hands.
    let mut appends = Vec::new();
    for tag in 1..=400u32 {
        let replica = leader.replica.clone();
        appends.push((tag, tokio::spawn(async move { replica.append(tagged(tag)).await })));
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    for (tag, append) in appends {
        let (base, _) = append.await.unwrap().unwrap_or_else(|e| panic!("batch {tag}: {e}"));
        acked.push((tag, base));
    }
    let mut offsets: Vec<u64> = acked.iter().map(|(_, b)| *b).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), acked.len(), "every batch at an offset of its own");
    check(&all, &acked).await;
    let followers = nodes.iter().filter(|n| n.id != leader.id);
    let most = followers.map(|n| n.transport.most_appends_in_hand()).max().unwrap();
    assert!(most >= 3, "appends were pipelined (at most {most} in a follower's hands at once)");
    stop_all(nodes.iter()).await;
}

/// Entries written together go to a follower in one append, unless they do not fit one
/// message (`cluster.network.max_message_size`): then in parts. Refused whole, the followers
/// would never get them and nothing would commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_larger_than_a_message_goes_in_parts() {
    let (nodes, _) = three_nodes(Uuid::new_v4()).await;
    let all: Vec<&TcpNode> = nodes.iter().collect();
    produce(&all, 0..1).await;
    let leader = nodes.iter().find(|n| n.replica.is_leader(n.id)).expect("a leader");
    // 40 entries of 200 KiB at once: about 8 MiB for appends of at most 1 MiB.
    let appends = (0..40u8).map(|i| leader.replica.append(batch_of(&[vec![i; 200 << 10]], 1, 0, 0, 0).into()));
    let acked =
        tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(appends)).await.expect("committed");
    let end = acked.into_iter().map(|r| r.expect("appended").0 + 1).max().unwrap();
    let mut logs = Vec::new();
    for n in &all {
        logs.push(log_of(&n.replica, end).await);
    }
    assert_eq!(logs[0].len(), 41);
    assert!(logs.windows(2).all(|w| w[0] == w[1]), "identical bytes on every replica");
    stop_all(nodes.iter()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_with_the_reason() {
    let (nodes, addresses) = three_nodes(Uuid::new_v4()).await;
    let stranger_tasks = Tasks::new();
    let stranger = TcpTransport::new(settings(Uuid::new_v4(), 9), addresses, stranger_tasks.clone());
    let vote = openraft::raft::VoteRequest::new(Vote::new(1, 9), None);
    let err = stranger.send(1, GROUP, Request::Vote(vote), Duration::from_secs(2)).await.err().expect("refused");
    match err {
        TransportError::Unreachable { node: 1, reason } => assert!(reason.contains("belongs to cluster"), "{reason}"),
        other => panic!("{other}"),
    }
    stranger_tasks.shutdown().await;
    stop_all(nodes.iter()).await;
}

/// Answers every request with an acknowledgement, counting them.
#[derive(Default)]
struct Counting(std::sync::atomic::AtomicUsize);

impl Inbound for Counting {
    fn handle(&self, _: Request) -> futures::future::BoxFuture<'static, Result<crate::raft::transport::Reply, String>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Ok(crate::raft::transport::Reply::Ack) })
    }
}

/// Answers nothing until its gate closes.
struct Hanging(Arc<tokio::sync::Semaphore>);

impl Inbound for Hanging {
    fn handle(&self, _: Request) -> futures::future::BoxFuture<'static, Result<crate::raft::transport::Reply, String>> {
        let gate = self.0.clone();
        Box::pin(async move {
            let _ = gate.acquire().await;
            Err("the gate closed".into())
        })
    }
}

/// Two bare transports on 127.0.0.1 (nodes 1 and 2), each serving a group that acknowledges
/// everything.
async fn pair() -> [(Arc<TcpTransport>, Arc<Counting>, Tasks); 2] {
    pair_with(None).await
}

/// As [`pair`]; node 2's group hangs on `GATE` (answers nothing until it closes) if given.
const GATE: GroupId = 12;

async fn pair_with(gate: Option<Arc<tokio::sync::Semaphore>>) -> [(Arc<TcpTransport>, Arc<Counting>, Tasks); 2] {
    let (cluster, mut addrs) = (Uuid::new_v4(), HashMap::new());
    let mut listeners = Vec::new();
    for id in 1..=2u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap().to_string());
        listeners.push((id, l));
    }
    let addresses: tcp::Addresses = Arc::new(move |n| addrs.get(&n).cloned());
    let mut pair = Vec::new();
    for (id, listener) in listeners {
        let tasks = Tasks::new();
        let counting = Arc::new(Counting::default());
        let group: Arc<dyn Inbound> = counting.clone();
        let hanging: Option<Arc<dyn Inbound>> =
            gate.clone().filter(|_| id == 2).map(|gate| Arc::new(Hanging(gate)) as Arc<dyn Inbound>);
        let groups: tcp::Groups = Arc::new(move |g| match g {
            GROUP => Some(group.clone()),
            GATE => hanging.clone(),
            _ => None,
        });
        let transport = TcpTransport::new(settings(cluster, id), addresses.clone(), tasks.clone());
        let serving = transport.clone();
        tasks.spawn("raft-transport", move |_| tcp::serve(listener, serving, groups));
        pair.push((transport, counting, tasks));
    }
    pair.try_into().ok().expect("two nodes")
}

/// Sends `n` heartbeats from `from` to node `to`, each retried (a request caught on the
/// connection being closed after both nodes dialed at once is lost, as Raft allows).
async fn heartbeats(from: &TcpTransport, me: NodeId, to: NodeId, n: usize) {
    for _ in 0..n {
        let deadline = Instant::now() + Duration::from_secs(5);
        while from.send(to, GROUP, Request::Alive { from: me }, Duration::from_secs(1)).await.is_err() {
            assert!(Instant::now() < deadline, "node {to} never answered node {me}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pair_of_nodes_shares_one_connection_even_when_both_dial_at_once() {
    for round in 0..50 {
        let [(a, a_got, a_tasks), (b, b_got, b_tasks)] = pair().await;
        // Both send at once, so both usually dial before either connection is up.
        tokio::join!(heartbeats(&a, 1, 2, 50), heartbeats(&b, 2, 1, 50));
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.connections_with(2) != 1 || b.connections_with(1) != 1 {
            assert!(
                Instant::now() < deadline,
                "round {round}: node 1 has {} connections with node 2, node 2 has {} with node 1",
                a.connections_with(2),
                b.connections_with(1)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The connection left carries both ways, and neither node took the closing of the
        // other for the peer's death.
        heartbeats(&a, 1, 2, 10).await;
        heartbeats(&b, 2, 1, 10).await;
        assert_eq!((a.connections_with(2), b.connections_with(1)), (1, 1), "round {round}");
        assert!(a_got.0.load(std::sync::atomic::Ordering::Relaxed) >= 60);
        assert!(b_got.0.load(std::sync::atomic::Ordering::Relaxed) >= 60);
        for (t, peer) in [(&a, 2), (&b, 1)] {
            let traffic = t.settings().contacts.lock().get(&peer).copied().unwrap_or_default();
            assert_eq!(traffic.lost_at, None, "round {round}: a connection's closing counted as a loss");
        }
        a_tasks.shutdown().await;
        b_tasks.shutdown().await;
    }
}

/// A node with all the requests it may hold in hand from a peer refuses more at once, and
/// still reads the peer's answers to its own requests on the connection they share (a reader
/// that waited for room would wait for the peer, whose reader could be waiting likewise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_its_hands_full_refuses_more_and_still_hears_answers() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let [(a, _, a_tasks), (b, _, b_tasks)] = pair_with(Some(gate.clone())).await;
    heartbeats(&a, 1, 2, 1).await;
    let hung: Vec<_> = (0..1024)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.send(2, GATE, Request::Alive { from: 1 }, Duration::from_secs(60)).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        assert!(Instant::now() < deadline, "node 2 never refused a request over its limit");
        match a.send(2, GATE, Request::Alive { from: 1 }, Duration::from_millis(200)).await {
            Err(TransportError::Refused { reason, .. }) => break reason,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(refusal.contains("in hand"), "{refusal}");
    // Node 2's answers from node 1 come on the connection whose requests fill its hands.
    let started = Instant::now();
    heartbeats(&b, 2, 1, 20).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((a.connections_with(2), b.connections_with(1)), (1, 1));
    gate.close();
    for h in hung {
        assert!(h.await.unwrap().is_err(), "answered only by the gate's closing");
    }
    a_tasks.shutdown().await;
    b_tasks.shutdown().await;
}
