//! A partition replicated on several in-process nodes (each with its own WAL and disk) whose
//! Raft messages go through the simulated router (`raft/sim.rs`): elections, a leader cut off,
//! a minority that cannot commit, message loss and delay, a replica restarted. After every
//! scenario: one leader per term, every acknowledged entry on every replica at the offset it
//! was acknowledged with, the same bytes at every offset, and a vote that never went back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronik_wal::{SyncMode, Wal, WalOptions};
use openraft::BasicNode;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::batch::tests::batch_of;
use crate::node::NodeOptions;
use crate::partition::{PartitionReplica, ReplicaSpec};
use crate::raft::sim::SimRouter;
use crate::raft::{GroupId, NetworkFactory, NodeId};
use crate::tasks::Tasks;

const GROUP: GroupId = 7;

struct Member {
    id: NodeId,
    wal: Arc<Wal>,
    dir: tempfile::TempDir,
    replica: Arc<PartitionReplica>,
}

struct Cluster {
    router: Arc<SimRouter>,
    members: Vec<Member>,
    /// Every (term, leader) any replica reported: a term must never have two leaders.
    seen: Arc<Mutex<BTreeMap<u64, NodeId>>>,
    /// Terms seen with a second leader (checked at the end of every scenario).
    violations: Arc<Mutex<Vec<String>>>,
    watcher: tokio::task::JoinHandle<()>,
    voters: BTreeMap<NodeId, BasicNode>,
}

fn options() -> NodeOptions {
    let mut o = NodeOptions::from_config(&chronik_config::Config::default());
    (o.raft.heartbeat_interval_ms, o.raft.election_timeout_ms) = (30, 150);
    o.request_timeout = Duration::from_millis(500);
    // Pipelined appends through a router that delays each message at random, so they arrive
    // out of order: what the stream must take for reordering rather than a lost log.
    o.append_pipeline_depth = 8;
    o
}

async fn open(id: NodeId, wal: &Arc<Wal>, dir: &std::path::Path, c: &Cluster) -> Arc<PartitionReplica> {
    let o = options();
    let spec = ReplicaSpec {
        topic: "t".into(),
        topic_id: Uuid::nil(),
        partition: 0,
        group: GROUP,
        voters: c.voters.clone(),
        segments_dir: dir.join("partitions").join(GROUP.to_string()),
        liveness: None,
    };
    let network = NetworkFactory::new(c.router.transport(id), GROUP, o.peer_settings());
    let replica =
        PartitionReplica::open(wal, id, o.partition_raft().unwrap(), network, spec, Tasks::new()).await.unwrap();
    c.router.register(id, GROUP, replica.inbound());
    replica
}

impl Cluster {
    /// `n` nodes, every one an initial voter of the group (each initializes it with the same
    /// membership, as the initial replicas of a new partition do).
    async fn start(n: u64, seed: u64) -> Cluster {
        let voters = (1..=n).map(|id| (id, BasicNode::new(format!("sim-{id}")))).collect();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let mut c = Cluster {
            router: SimRouter::new(seed),
            members: Vec::new(),
            seen: seen.clone(),
            violations: violations.clone(),
            watcher: tokio::spawn(async {}),
            voters,
        };
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let wal_options =
                WalOptions { segment_size: 1 << 20, sync_mode: SyncMode::Always, ..WalOptions::default() };
            let wal = Arc::new(Wal::open(&dir.path().join("wal"), wal_options).unwrap().0);
            let replica = open(id, &wal, dir.path(), &c).await;
            c.members.push(Member { id, wal, dir, replica });
        }
        let replicas: Vec<Arc<PartitionReplica>> = c.members.iter().map(|m| m.replica.clone()).collect();
        c.watcher = tokio::spawn(async move {
            loop {
                for r in &replicas {
                    if let (term, Some(leader)) = r.leadership() {
                        let previous = *seen.lock().entry(term).or_insert(leader);
                        if previous != leader {
                            violations.lock().push(format!("term {term}: leaders {previous} and {leader}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        c
    }

    fn member(&self, id: NodeId) -> &Member {
        self.members.iter().find(|m| m.id == id).expect("a member")
    }

    /// The leader all of `among` agree on, once they do (and it leads).
    async fn leader(&self, among: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let views: Vec<(u64, Option<NodeId>)> =
                among.iter().map(|id| self.member(*id).replica.leadership()).collect();
            if let Some((term, Some(leader))) = views.first().copied()
                && views.iter().all(|v| *v == (term, Some(leader)))
                && among.contains(&leader)
                && self.member(leader).replica.is_leader(leader)
            {
                return leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader among {among:?}: {views:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Appends `count` tagged batches through whoever leads `among`, retrying on errors (the
    /// leader may change); returns (tag, base offset) of each acknowledged one.
    async fn produce(&self, among: &[NodeId], tags: std::ops::Range<u32>) -> Vec<(u32, u64)> {
        let mut acked = Vec::new();
        for tag in tags {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let leader = self.leader(among).await;
                let attempt = self.member(leader).replica.append(tagged(tag));
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok((base, _))) => {
                        acked.push((tag, base));
                        break;
                    }
                    _ => assert!(Instant::now() < deadline, "batch {tag} was never acknowledged"),
                }
            }
        }
        acked
    }

    /// Waits until every member in `ids` has applied up to `end`, then checks each holds the
    /// acknowledged batches at their offsets and all hold the same bytes.
    async fn converged(&self, ids: &[NodeId], acked: &[(u32, u64)]) {
        let end = acked.iter().map(|(_, base)| base + 1).max().unwrap_or(0);
        for id in ids {
            let mut hw = self.member(*id).replica.log().subscribe_high_watermark();
            let reached = tokio::time::timeout(Duration::from_secs(20), hw.wait_for(|h| *h >= end)).await;
            assert!(
                reached.is_ok(),
                "node {id} stopped at {} of {end}",
                self.member(*id).replica.log().high_watermark()
            );
        }
        let logs: Vec<BTreeMap<u64, Bytes>> = ids.iter().map(|id| read_all(&self.member(*id).replica)).collect();
        for (id, log) in ids.iter().zip(&logs) {
            for (tag, base) in acked {
                let batch =
                    log.get(base).unwrap_or_else(|| panic!("node {id}: acknowledged batch {tag} at {base} is gone"));
                assert_eq!(tag_of(batch), *tag, "node {id}: offset {base} holds another batch");
            }
            assert_eq!(log, &logs[0], "node {id} and node {} differ", ids[0]);
        }
    }

    async fn stop(self) {
        self.watcher.abort();
        assert!(self.violations.lock().is_empty(), "two leaders in one term: {:?}", self.violations.lock());
        assert!(!self.seen.lock().is_empty(), "leaders were watched");
        for m in self.members {
            m.replica.stop().await;
        }
    }
}

/// A one-record batch whose value is its tag.
fn tagged(tag: u32) -> Bytes {
    batch_of(&[tag.to_be_bytes().to_vec()], 1, 0, 0, 0).into()
}

fn tag_of(batch: &Bytes) -> u32 {
    u32::from_be_bytes(batch[61..65].try_into().unwrap())
}

/// Every batch a replica holds below its high watermark, by base offset.
pub(super) fn read_all(r: &PartitionReplica) -> BTreeMap<u64, Bytes> {
    let mut out = BTreeMap::new();
    let (mut next, end) = (r.log().log_start_offset(), r.log().high_watermark());
    while next < end {
        let read = r.log().read(next, 1 << 20).unwrap();
        assert!(!read.chunks.is_empty(), "offset {next} reads");
        for chunk in read.chunks {
            for span in crate::batch::split_batches(&chunk, true).unwrap() {
                out.insert(span.header.base_offset as u64, chunk.slice(span.range.clone()));
                next = span.header.last_offset() as u64 + 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_one_leader_and_hold_the_same_log() {
    let c = Cluster::start(3, 1).await;
    let all = [1, 2, 3];
    let acked = c.produce(&all, 0..50).await;
    assert_eq!(acked.iter().map(|(_, b)| *b).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>());
    c.converged(&all, &acked).await;
    // A follower refuses to append: only the leader does.
    let leader = c.leader(&all).await;
    let follower = all.iter().copied().find(|id| *id != leader).unwrap();
    assert!(c.member(follower).replica.append(tagged(999)).await.is_err());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_is_replaced_and_catches_up_when_healed() {
    let c = Cluster::start(3, 2).await;
    let all = [1, 2, 3];
    let mut acked = c.produce(&all, 0..20).await;
    let old = c.leader(&all).await;
    let (old_term, _) = c.member(old).replica.leadership();
    c.router.isolate(old);
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != old).collect();
    // The old leader cannot commit alone: its append is never acknowledged.
    let alone = tokio::time::timeout(Duration::from_secs(1), c.member(old).replica.append(tagged(500))).await;
    assert!(!matches!(alone, Ok(Ok(_))), "a leader without a quorum acknowledged a write");
    // The others elect a successor in a later term and go on.
    let new = c.leader(&rest).await;
    assert_ne!(new, old);
    assert!(c.member(new).replica.leadership().0 > old_term);
    acked.extend(c.produce(&rest, 20..40).await);
    c.router.heal();
    c.converged(&all, &acked).await;
    assert!(!read_all(&c.member(old).replica).values().any(|b| tag_of(b) == 500), "the unacknowledged write is gone");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_serves_across_a_partition_and_everyone_converges() {
    let c = Cluster::start(5, 3).await;
    let all = [1, 2, 3, 4, 5];
    let mut acked = c.produce(&all, 0..10).await;
    // Split {1, 2} from {3, 4, 5}.
    for a in [1, 2] {
        for b in [3, 4, 5] {
            c.router.cut(a, b);
        }
    }
    acked.extend(c.produce(&[3, 4, 5], 10..30).await);
    for minority in [1, 2] {
        let r = &c.member(minority).replica;
        if r.is_leader(minority) {
            let alone = tokio::time::timeout(Duration::from_millis(500), r.append(tagged(600))).await;
            assert!(!matches!(alone, Ok(Ok(_))), "the minority side acknowledged a write");
        }
    }
    c.router.heal();
    acked.extend(c.produce(&all, 30..40).await);
    c.converged(&all, &acked).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_delayed_messages_lose_nothing_acknowledged() {
    for seed in [11, 12] {
        let c = Cluster::start(3, seed).await;
        let all = [1, 2, 3];
        c.router.set_loss(100);
        c.router.set_delay(Duration::ZERO, Duration::from_millis(15));
        let mut acked = c.produce(&all, 0..60).await;
        c.router.set_loss(0);
        acked.extend(c.produce(&all, 60..65).await);
        c.converged(&all, &acked).await;
        c.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_keeps_its_vote_and_catches_up_by_log() {
    let mut c = Cluster::start(3, 4).await;
    let all = [1, 2, 3];
    let mut acked = c.produce(&all, 0..20).await;
    let leader = c.leader(&all).await;
    let restarted = all.iter().copied().find(|id| *id != leader).unwrap();
    let i = c.members.iter().position(|m| m.id == restarted).unwrap();
    let (term_before, _) = c.members[i].replica.leadership();
    c.router.unregister(restarted, GROUP);
    c.members[i].replica.stop().await;
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != restarted).collect();
    acked.extend(c.produce(&rest, 20..40).await);
    let (wal, dir) = (c.members[i].wal.clone(), c.members[i].dir.path().to_path_buf());
    let replica = open(restarted, &wal, &dir, &c).await;
    let (term_after, _) = replica.leadership();
    assert!(term_after >= term_before, "the vote went back from term {term_before} to {term_after}");
    c.members[i].replica = replica;
    c.converged(&all, &acked).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_and_back_does_not_unseat_the_leader() {
    let c = Cluster::start(3, 5).await;
    let all = [1, 2, 3];
    let acked = c.produce(&all, 0..10).await;
    let leader = c.leader(&all).await;
    let (term, _) = c.member(leader).replica.leadership();
    let follower = all.iter().copied().find(|id| *id != leader).unwrap();
    c.router.isolate(follower);
    // The majority goes on; the leader sees the follower fall behind, in entries and bytes.
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != follower).collect();
    let mut acked = acked;
    acked.extend(c.produce(&rest, 10..15).await);
    let view = c.member(leader).replica.replication();
    assert!(view.lag_entries.unwrap()[&follower] >= 5, "five entries behind at least");
    assert!(view.lag_bytes.unwrap()[&follower] >= 5 * tagged(0).len() as u64, "and their bytes");
    // Several election timeouts pass: without pre-vote it would raise its term each time and
    // force an election when it comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.router.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.leader(&all).await, leader, "the leader stayed");
    assert_eq!(c.member(leader).replica.leadership().0, term, "and so did its term");
    c.converged(&all, &acked).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_purged_log_gets_a_snapshot_that_carries_it() {
    let c = Cluster::start(3, 6).await;
    let all = [1, 2, 3];
    let mut acked = c.produce(&all, 0..30).await;
    let leader = c.leader(&all).await;
    let behind = all.iter().copied().find(|id| *id != leader).unwrap();
    c.router.isolate(behind);
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != behind).collect();
    acked.extend(c.produce(&rest, 30..80).await);
    // The leader moves its log into segment files and purges it from the WAL: what the cut
    // off follower lacks can only come as a snapshot, and a snapshot must bring the records.
    let leader = c.leader(&rest).await;
    let l = &c.member(leader).replica;
    let upto = l.log().last_committed_raft_index().expect("committed entries");
    l.move_to_segments(upto).await.unwrap();
    assert!(l.log().wal_front_offset() >= 80, "the leader's WAL no longer holds the log");
    c.router.heal();
    c.converged(&all, &acked).await;
    let b = &c.member(behind).replica;
    assert!(b.log().segment_bytes() > 0, "the follower got the log as segment files");
    assert_eq!(b.log().log_start_offset(), 0, "from the log start");
    c.stop().await;
}
