//! The admin HTTP API (axum): health and readiness, cluster members, the metadata leader, the
//! partitions this node hosts, topics, Prometheus metrics (docs/ADMIN_API.md, checked by a
//! test against a running node).
//! Cluster operations: removing a node and moving a partition's replicas (both carried out
//! in the background; `GET /admin/cluster/moves` follows them), promoting a metadata learner,
//! handing a group's leadership to a chosen voter, and snapshotting this node's groups now.
//! Any other operation answers 501 Not Implemented, naming where the rest are: backup, restore
//! and quorum-loss recovery are commands of `chronik-server`, not of a running node.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chronik_cluster::{ClusterError, GroupSnapshot, LeadershipTarget, MetaError, Node, PlannedMove};
use chronik_config::Config;
use chronik_kafka::request_metrics::RequestMetrics;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;

#[derive(Clone)]
pub struct AdminState {
    node: Arc<Node>,
    /// The Kafka front end's request latencies, for /metrics.
    requests: Arc<RequestMetrics>,
    clustered: bool,
}

impl AdminState {
    pub fn new(node: Arc<Node>, requests: Arc<RequestMetrics>, config: &Config) -> AdminState {
        AdminState { node, requests, clustered: config.cluster.enabled }
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/admin/cluster/members", get(members))
        .route("/admin/cluster/leader", get(leader))
        .route("/admin/cluster/partitions", get(partitions))
        .route("/admin/topics", get(topics))
        .route("/metrics", get(prometheus))
        .route("/admin/cluster/moves", get(moves))
        .route("/admin/cluster/remove-node", post(remove_node))
        .route("/admin/cluster/move-partition", post(move_partition))
        .route("/admin/cluster/transfer-leader", post(transfer_leader))
        .route("/admin/cluster/promote", post(promote))
        .route("/admin/cluster/snapshot", post(snapshot))
        .route("/admin/cluster/snapshots", get(snapshots))
        .route("/admin/cluster/{operation}", post(not_supported))
        .route(
            "/admin/import/{topic}/{partition}",
            post(import).layer(axum::extract::DefaultBodyLimit::max(state.node.max_entry_bytes())),
        )
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    node_id: u64,
    cluster_id: String,
}

async fn health(State(s): State<AdminState>) -> Json<Health> {
    Json(Health { status: "ok", node_id: s.node.node_id(), cluster_id: s.node.identity().cluster_id.to_string() })
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
    metadata_leader: Option<u64>,
}

/// Ready once the metadata group has a leader (the node applied its metadata log before it
/// started serving); 503 otherwise.
async fn ready(State(s): State<AdminState>) -> Response {
    let metadata_leader = s.node.metadata_leader();
    let ready = metadata_leader.is_some();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { ready, metadata_leader })).into_response()
}

#[derive(Serialize)]
struct Leader {
    leader: Option<u64>,
    voters: Vec<u64>,
}

async fn leader(State(s): State<AdminState>) -> Json<Leader> {
    Json(Leader { leader: s.node.metadata_leader(), voters: s.node.metadata_voters() })
}

#[derive(Serialize)]
struct ReplicaStatus {
    topic: String,
    partition: i32,
    raft_group: u64,
    leader: Option<u64>,
    leader_epoch: u64,
    replicas: Vec<u64>,
    /// Known on the node that leads the partition; null elsewhere.
    isr: Option<Vec<u64>>,
    high_watermark: u64,
    commit_index: Option<u64>,
    /// Entries each replica is behind the leader's log (on the leading node).
    lag_entries: Option<std::collections::BTreeMap<u64, u64>>,
    /// Record-batch bytes of those entries.
    lag_bytes: Option<std::collections::BTreeMap<u64, u64>>,
}

/// Every partition this node hosts, as its Raft group stands.
async fn partitions(State(s): State<AdminState>) -> Json<Vec<ReplicaStatus>> {
    let mut out: Vec<ReplicaStatus> = s
        .node
        .partitions()
        .iter()
        .map(|r| {
            let v = r.replication();
            ReplicaStatus {
                topic: r.topic().to_string(),
                partition: r.partition(),
                raft_group: r.group(),
                leader: v.leader,
                leader_epoch: v.leader_epoch,
                replicas: v.voters,
                isr: v.isr,
                high_watermark: r.log().high_watermark(),
                commit_index: v.commit_index,
                lag_entries: v.lag_entries,
                lag_bytes: v.lag_bytes,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Json(out)
}

#[derive(Serialize)]
struct Member {
    node_id: u64,
    raft_addr: String,
    kafka_addr: String,
    /// In the metadata group: voter, learner, or none (registered, not yet added).
    role: &'static str,
    metadata_leader: bool,
    reachable: bool,
    last_contact_ms: Option<u64>,
    partitions_hosted: usize,
    partitions_led: usize,
    /// `active`, or `leaving` while its replicas move away before it is removed.
    state: &'static str,
    /// Entries behind the metadata leader's log; null unless the node asked leads it.
    metadata_lag_entries: Option<u64>,
}

#[derive(Serialize)]
struct Members {
    cluster_id: String,
    mode: &'static str,
    members: Vec<Member>,
}

async fn members(State(s): State<AdminState>) -> Json<Members> {
    let leader = s.node.metadata_leader();
    let members = s
        .node
        .members()
        .into_iter()
        .map(|m| Member {
            node_id: m.id,
            raft_addr: m.raft_addr,
            kafka_addr: m.kafka_addr,
            role: m.metadata_role,
            metadata_leader: leader == Some(m.id),
            reachable: m.reachable,
            last_contact_ms: m.last_contact_ms,
            partitions_hosted: m.partitions_hosted,
            partitions_led: m.partitions_led,
            state: if m.leaving { "leaving" } else { "active" },
            metadata_lag_entries: m.metadata_lag,
        })
        .collect();
    Json(Members {
        cluster_id: s.node.identity().cluster_id.to_string(),
        mode: if s.clustered { "cluster" } else { "standalone" },
        members,
    })
}

#[derive(Serialize)]
struct PartitionView {
    partition: i32,
    raft_group: u64,
    leader: Option<u64>,
    leader_epoch: u64,
    replicas: Vec<u64>,
    log_start_offset: Option<u64>,
    high_watermark: Option<u64>,
    size_bytes: Option<u64>,
}

#[derive(Serialize)]
struct TopicView {
    name: String,
    id: String,
    configs: std::collections::BTreeMap<String, String>,
    partitions: Vec<PartitionView>,
}

async fn topics(State(s): State<AdminState>) -> Json<Vec<TopicView>> {
    let topics = s.node.metadata().topics;
    Json(
        topics
            .into_values()
            .map(|t| TopicView {
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let local = s.node.partition(&t.name, p.partition);
                        let (epoch, leader) = local.as_ref().map(|g| g.leadership()).unwrap_or((0, None));
                        PartitionView {
                            partition: p.partition,
                            raft_group: p.group,
                            leader,
                            leader_epoch: epoch,
                            replicas: p.replicas.clone(),
                            log_start_offset: local.as_ref().map(|g| g.log().log_start_offset()),
                            high_watermark: local.as_ref().map(|g| g.log().high_watermark()),
                            size_bytes: local.as_ref().map(|g| g.log().size_bytes()),
                        }
                    })
                    .collect(),
                name: t.name,
                id: t.id.to_string(),
                configs: t.configs,
            })
            .collect(),
    )
}

async fn prometheus(State(s): State<AdminState>) -> Response {
    match metrics::render(&s.node, &s.requests) {
        Ok(text) => {
            ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Serialize)]
struct MoveView {
    topic: String,
    partition: i32,
    from: Vec<u64>,
    to: Vec<u64>,
}

impl From<PlannedMove> for MoveView {
    fn from(m: PlannedMove) -> MoveView {
        MoveView { topic: m.topic, partition: m.partition, from: m.from, to: m.to }
    }
}

#[derive(Serialize)]
struct Moves {
    leaving: Vec<u64>,
    moves: Vec<MoveView>,
}

/// Nodes being removed and partition moves under way.
async fn moves(State(s): State<AdminState>) -> Json<Moves> {
    Json(Moves {
        leaving: s.node.leaving_nodes().into_iter().collect(),
        moves: s.node.moves_in_progress().into_iter().map(MoveView::from).collect(),
    })
}

/// The body naming the node an operation is about: `{ "node_id": 4 }`.
#[derive(Deserialize)]
struct NodeBody {
    node_id: u64,
}

#[derive(Serialize)]
struct RemovalStarted {
    node_id: u64,
    moves: Vec<MoveView>,
}

/// Starts removing a node: 202 with the replica moves that takes; the node is removed (and
/// stops itself) once they are done.
async fn remove_node(State(s): State<AdminState>, Json(req): Json<NodeBody>) -> Response {
    match s.node.remove_node(req.node_id).await {
        Ok(moves) => (
            StatusCode::ACCEPTED,
            Json(RemovalStarted { node_id: req.node_id, moves: moves.into_iter().map(MoveView::from).collect() }),
        )
            .into_response(),
        Err(e) => operation_error(e),
    }
}

#[derive(Serialize)]
struct Promoted {
    node_id: u64,
    role: &'static str,
}

/// Makes a caught-up learner of the metadata group a voter now: 200 once it votes (also when
/// it already did); 409 when it cannot be now (not caught up, still joining, being removed).
async fn promote(State(s): State<AdminState>, Json(req): Json<NodeBody>) -> Response {
    match s.node.promote(req.node_id).await {
        Ok(()) => Json(Promoted { node_id: req.node_id, role: "voter" }).into_response(),
        Err(e) => operation_error(e),
    }
}

#[derive(Deserialize)]
struct MovePartition {
    topic: String,
    partition: i32,
    replicas: Vec<u64>,
}

#[derive(Serialize)]
struct MoveStarted {
    /// Null when the partition already had these replicas.
    r#move: Option<MoveView>,
}

/// Starts moving a partition to other replicas: 202; its leader carries the move out.
async fn move_partition(State(s): State<AdminState>, Json(req): Json<MovePartition>) -> Response {
    match s.node.move_partition(&req.topic, req.partition, req.replicas).await {
        Ok(m) => (StatusCode::ACCEPTED, Json(MoveStarted { r#move: m.map(MoveView::from) })).into_response(),
        Err(e) => operation_error(e),
    }
}

#[derive(Deserialize)]
struct TransferLeader {
    /// With `partition`, a partition's group; without, the metadata group.
    topic: Option<String>,
    partition: Option<i32>,
    to: u64,
}

#[derive(Serialize)]
struct Transferred {
    /// `metadata`, or the partition as `topic-partition`.
    group: String,
    leader: u64,
}

/// Hands a group's leadership to one of its voters; 200 once it leads.
async fn transfer_leader(State(s): State<AdminState>, Json(req): Json<TransferLeader>) -> Response {
    let target = match (req.topic, req.partition) {
        (None, None) => LeadershipTarget::Metadata,
        (Some(topic), Some(partition)) => LeadershipTarget::Partition { topic, partition },
        _ => {
            let why = "name both topic and partition (a partition's leader), or neither (the metadata leader)";
            return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": why }))).into_response();
        }
    };
    match s.node.transfer_leadership(&target, req.to).await {
        Ok(()) => {
            let group = match target {
                LeadershipTarget::Metadata => "metadata".to_string(),
                LeadershipTarget::Partition { topic, partition } => format!("{topic}-{partition}"),
            };
            Json(Transferred { group, leader: req.to }).into_response()
        }
        Err(e) => operation_error(e),
    }
}

#[derive(Deserialize)]
struct ImportParams {
    /// Move the log start offset here after the import (the source's log start).
    log_start: Option<u64>,
}

#[derive(Serialize)]
struct Imported {
    next_offset: u64,
    log_start_offset: u64,
}

/// Appends record batches copied from another broker with their offsets kept (the body: v2
/// batches, each at or after the partition's next offset, in order; `chronik-server
/// migrate`). 200 once committed; 400 for batches that are malformed or out of place, 404 for
/// an unknown partition, 409 where this node does not lead it.
async fn import(
    State(s): State<AdminState>,
    axum::extract::Path((topic, partition)): axum::extract::Path<(String, i32)>,
    axum::extract::Query(params): axum::extract::Query<ImportParams>,
    body: axum::body::Bytes,
) -> Response {
    let refuse = |status: StatusCode, why: String| (status, Json(serde_json::json!({ "error": why }))).into_response();
    if topic == chronik_kafka::groups::OFFSETS_TOPIC {
        return refuse(StatusCode::BAD_REQUEST, format!("{topic} is kept by the broker; it is not imported into"));
    }
    let Some(replica) = s.node.partition(&topic, partition) else {
        return refuse(StatusCode::NOT_FOUND, format!("no partition {topic}-{partition} on this node"));
    };
    if !replica.is_leader(s.node.node_id()) {
        let leader = replica.leadership().1;
        return refuse(
            StatusCode::CONFLICT,
            format!("this node does not lead {topic}-{partition} (leader: {leader:?})"),
        );
    }
    if !body.is_empty() {
        let spans = match chronik_cluster::split_batches(&body, true) {
            Ok(spans) => spans,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("the body is not valid record batches: {e}")),
        };
        if let Err(e) = s.node.check_space(body.len()) {
            return refuse(StatusCode::INSUFFICIENT_STORAGE, e.to_string());
        }
        // Refused before it takes a place in the log (the state machine would refuse it too).
        let next = replica.log().next_offset();
        if chronik_cluster::import_last_offset(&spans, next).is_none() {
            let why = format!(
                "batches start at offset {}, before the partition's next offset {next} or out of order",
                spans[0].header.base_offset
            );
            return refuse(StatusCode::BAD_REQUEST, why);
        }
        let committed = match replica.submit_import(body).await {
            Ok(pending) => pending.committed().await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(_) => {}
            Err(e @ ClusterError::EntryRefused { .. }) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
            Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
        // The source's producer ids came with their sequence state: new producers here must
        // get others.
        if let Some(max) = spans.iter().map(|s| s.header.producer_id).max().filter(|m| *m >= 0)
            && let Err(e) = s.node.reserve_producer_ids_through(max).await
        {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, format!("reserving producer ids: {e}"));
        }
    }
    if let Some(start) = params.log_start.filter(|s| *s > replica.log().log_start_offset())
        && let Err(e) = replica.advance_log_start(start).await
    {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let log = replica.log();
    Json(Imported { next_offset: log.next_offset(), log_start_offset: log.log_start_offset() }).into_response()
}

/// A refused operation names why: 404 for what does not exist, 400 for a malformed request,
/// 409 for one the cluster's state does not allow now, 503 when the metadata group could not
/// be reached.
fn operation_error(e: ClusterError) -> Response {
    let status = match &e {
        ClusterError::Rejected(MetaError::UnknownNode(_) | MetaError::UnknownTopic(_))
        | ClusterError::Rejected(MetaError::UnknownPartition { .. }) => StatusCode::NOT_FOUND,
        ClusterError::Rejected(MetaError::InvalidReplicas(_)) | ClusterError::NotVoter { .. } => {
            StatusCode::BAD_REQUEST
        }
        ClusterError::Rejected(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

#[derive(Serialize)]
struct SnapshotView {
    group: u64,
    topic: Option<String>,
    partition: Option<i32>,
    index: Option<u64>,
    term: Option<u64>,
    purged_through: Option<u64>,
}

impl From<GroupSnapshot> for SnapshotView {
    fn from(g: GroupSnapshot) -> SnapshotView {
        let GroupSnapshot { group, topic, partition, index, term, purged_through } = g;
        SnapshotView { group, topic, partition, index, term, purged_through }
    }
}

#[derive(Serialize)]
struct Snapshots {
    groups: Vec<SnapshotView>,
}

/// Each group this node hosts: its last snapshot and how far its WAL entries are dropped.
async fn snapshots(State(s): State<AdminState>) -> Json<Snapshots> {
    Json(Snapshots { groups: s.node.snapshots().into_iter().map(SnapshotView::from).collect() })
}

#[derive(Serialize)]
struct FailedSnapshot {
    group: u64,
    error: String,
}

#[derive(Serialize)]
struct SnapshotTaken {
    groups: Vec<SnapshotView>,
    failed: Vec<FailedSnapshot>,
    wal_segments_before: u64,
    wal_segments_after: u64,
}

/// Snapshots every group on this node now (partitions move their committed entries to their
/// segment files first) and lets the WAL drop what they cover.
async fn snapshot(State(s): State<AdminState>) -> Response {
    match s.node.snapshot_now().await {
        Ok(round) => {
            let status = if round.failed.is_empty() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
            let failed = round.failed.into_iter().map(|(group, error)| FailedSnapshot { group, error }).collect();
            let taken = SnapshotTaken {
                groups: round.groups.into_iter().map(SnapshotView::from).collect(),
                failed,
                wal_segments_before: round.wal_segments_before,
                wal_segments_after: round.wal_segments_after,
            };
            (status, Json(taken)).into_response()
        }
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}

async fn not_supported(axum::extract::Path(operation): axum::extract::Path<String>) -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(serde_json::json!({
            "error": format!(
                "cluster operation '{operation}' is not supported: the cluster operations are remove-node, \
                 move-partition, promote, transfer-leader and snapshot; backup, restore and quorum-loss recovery are \
                 commands of chronik-server (`backup`, `restore`, `recover-quorum-loss`; docs/ADMIN_API.md)"
            ),
        })),
    )
        .into_response()
}
