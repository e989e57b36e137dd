//! The Raft transport between nodes over TCP (`cluster.node_addr`, port 9093 by default).
//!
//! Each pair of nodes shares one connection, carrying every group's messages both ways,
//! multiplexed by request id (so a slow group does not hold up the others, up to the 1,024
//! requests a connection may have in hand; more are refused at once, to be retried, because
//! the reader must never wait: this node's replies come the same way). Whichever node
//! needs to send first dials; when both dial at once, both ends keep the connection dialed by
//! the lower node id, and the other is closed by its dialer once nothing is in flight on it.
//! Everything queued for a peer goes out in one write, which is where the messages of many
//! groups get batched. A connection starts with a handshake naming the cluster and both node
//! ids (`wire.rs`); a node of another cluster, or one that is not who the sender meant, is
//! refused with the reason. A lost connection fails what was in flight as unreachable
//! (openraft backs off and retries), and reconnecting backs off too, up to a few seconds.
//! Frames above `cluster.network.max_message_size` are refused. A node that is joining (and
//! so does not know the cluster id yet) connects with the nil id and may only send its join
//! request on that connection, which is never used the other way.

mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::raft::transport::{Inbound, Reply, Request, Transport, TransportError};
use crate::raft::{GroupId, NodeId};
use crate::tasks::Tasks;
use wire::{Handshake, Incoming};

/// Where each node's Raft listener is, as the metadata knows it.
pub(crate) type Addresses = Arc<dyn Fn(NodeId) -> Option<String> + Send + Sync>;
/// This node's groups, by id, for what peers send.
pub(crate) type Groups = Arc<dyn Fn(GroupId) -> Option<Arc<dyn Inbound>> + Send + Sync>;

/// Each peer's traffic: when it was last heard from (a reply to this node, or a request from
/// it), when a connection to it was last lost, and the frames and bytes each way.
pub(crate) type Contacts = Arc<Mutex<HashMap<NodeId, PeerTraffic>>>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    pub last_heard: Option<Instant>,
    /// When this node's connection to it last broke or was refused: a process that died
    /// closes its sockets, so this comes long before the peer's silence is noticed.
    pub lost_at: Option<Instant>,
    /// When a connection with it (either way) last completed its handshake: only this undoes
    /// a loss (frames that were already on their way when the connection broke do not).
    pub connected_at: Option<Instant>,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
}

fn heard(contacts: &Contacts, peer: NodeId, bytes: usize) {
    let mut all = contacts.lock();
    let t = all.entry(peer).or_default();
    t.last_heard = Some(Instant::now());
    t.frames_in += 1;
    t.bytes_in += bytes as u64;
}

fn connected(contacts: &Contacts, peer: NodeId) {
    contacts.lock().entry(peer).or_default().connected_at = Some(Instant::now());
}

fn lost(contacts: &Contacts, peer: NodeId) {
    contacts.lock().entry(peer).or_default().lost_at = Some(Instant::now());
}

fn sent(contacts: &Contacts, peer: NodeId, bytes: usize) {
    let mut all = contacts.lock();
    let t = all.entry(peer).or_default();
    t.frames_out += 1;
    t.bytes_out += bytes as u64;
}

#[derive(Debug, Clone)]
pub(crate) struct TcpSettings {
    pub cluster: Uuid,
    pub me: NodeId,
    pub connect_timeout: Duration,
    pub max_message_size: usize,
    pub contacts: Contacts,
    pub tombstones: Tombstones,
}

/// Refusals that say the connecting node was removed from the cluster start with this.
const REMOVED_REFUSAL: &str = "removed: ";

/// Removed nodes as the transport sees them: which peers it refuses to talk to (a node removed
/// while it was down never heard of its tombstone, and learns it this way), and whether a peer
/// refused this node as removed.
#[derive(Clone)]
pub(crate) struct Tombstones {
    pub is_removed: Arc<dyn Fn(NodeId) -> bool + Send + Sync>,
    pub told: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Tombstones {
    fn default() -> Tombstones {
        Tombstones { is_removed: Arc::new(|_| false), told: Arc::new(tokio::sync::watch::channel(false).0) }
    }
}

impl std::fmt::Debug for Tombstones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tombstones").field("told", &*self.told.borrow()).finish_non_exhaustive()
    }
}

/// Frames queued for one connection's writer.
const QUEUED_FRAMES: usize = 1024;
/// Requests one connection may have in hand at once (from its far end).
const IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// A writer sends at most this much in one write.
const WRITE_BATCH: usize = 1 << 20;
/// How long a closing connection's writer may take to send what was already queued.
const FLUSH_ON_CLOSE: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

pub(crate) struct TcpTransport {
    shared: Arc<Shared>,
}

/// What the transport's connections share: who this node is, where peers are, the scope of
/// the connections' tasks, and each peer's connection.
struct Shared {
    settings: TcpSettings,
    addresses: Addresses,
    tasks: Tasks,
    /// This node's groups, once it serves peers ([`serve`]); a joining node's transport never
    /// does, and a request reaching it before then is refused.
    groups: OnceLock<Groups>,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    /// The most appends one group's lane has had in its Raft's hands at once (pipelining at
    /// work where above one).
    most_appends_in_hand: AtomicUsize,
}

impl TcpTransport {
    /// Connections are made on demand; their tasks live in `tasks`.
    pub fn new(settings: TcpSettings, addresses: Addresses, tasks: Tasks) -> Arc<TcpTransport> {
        let shared = Shared {
            settings,
            addresses,
            tasks,
            groups: OnceLock::new(),
            peers: Mutex::default(),
            most_appends_in_hand: AtomicUsize::new(0),
        };
        Arc::new(TcpTransport { shared: Arc::new(shared) })
    }

    pub fn settings(&self) -> &TcpSettings {
        &self.shared.settings
    }

    #[cfg(test)]
    pub fn most_appends_in_hand(&self) -> usize {
        self.shared.most_appends_in_hand.load(Ordering::Relaxed)
    }

    /// How many connections with `peer` are open (including one being retired).
    #[cfg(test)]
    pub fn connections_with(&self, peer: NodeId) -> usize {
        self.shared.peers.lock().get(&peer).map_or(0, |p| p.open.load(Ordering::Relaxed))
    }
}

impl Shared {
    fn peer(&self, node: NodeId) -> Arc<Peer> {
        self.peers
            .lock()
            .entry(node)
            .or_insert_with(|| {
                Arc::new(Peer {
                    node,
                    current: Mutex::new(None),
                    dialing: tokio::sync::Mutex::new(()),
                    backoff: Mutex::new((Instant::now(), FIRST_BACKOFF)),
                    next_id: AtomicU64::new(1),
                    open: AtomicUsize::new(0),
                })
            })
            .clone()
    }
}

impl Transport for TcpTransport {
    fn send(
        &self,
        to: NodeId,
        group: GroupId,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Reply, TransportError>> {
        let shared = self.shared.clone();
        let peer = shared.peer(to);
        let (id, frame) = match peer.frame(&shared, group, request) {
            Ok(framed) => framed,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        // Queued now where the connection is up and has room, so that requests sent one after
        // another leave in that order (a follower's pipelined appends rely on it).
        match peer.try_queue(&shared, id, frame) {
            Ok(waiting) => Box::pin(waiting.reply(group, timeout)),
            Err(frame) => Box::pin(async move { peer.queue(&shared, id, frame).await?.reply(group, timeout).await }),
        }
    }
}

/// A request on its way: its answer, when it comes on `conn`. Dropped unanswered (timed out,
/// or its sender gave up on it), it stops waiting.
struct Waiting {
    node: NodeId,
    conn: Arc<Conn>,
    id: u64,
    answer: Option<oneshot::Receiver<Result<Reply, String>>>,
}

impl Waiting {
    async fn reply(mut self, group: GroupId, timeout: Duration) -> Result<Reply, TransportError> {
        let node = self.node;
        let answer = self.answer.take().expect("a request is awaited once");
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(reason))) => Err(TransportError::Refused { node, group, reason }),
            Ok(Err(_)) => Err(TransportError::Unreachable { node, reason: "the connection was lost".into() }),
            Err(_) => Err(TransportError::Timeout { node, after: timeout }),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.conn.pending.lock().remove(&self.id).is_some() {
            self.conn.close_if_drained();
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, String>>>>>;

/// One connection between this node and a peer: its writer's queue, this node's requests
/// awaiting replies, the peer's requests in hand, and whether it is still up.
struct Conn {
    me: NodeId,
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    in_flight: Arc<Semaphore>,
    closed: CancellationToken,
    /// The node that dialed it: where a pair ends up with two, the lower id's is kept.
    dialer: NodeId,
    /// No longer used for new requests: the pair settled on another connection.
    retired: AtomicBool,
    /// Closed on purpose (drained after retiring, replaced, or the node stopping), so its end
    /// says nothing about the peer. A failed write closes it too, and that is a loss.
    deliberate: AtomicBool,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.closed.is_cancelled() && !self.retired.load(Ordering::Acquire)
    }

    /// Whether `self` is the one to keep over `other` (the newer of two dialed by one node:
    /// that node only dials again once it stopped using the first).
    fn preferred_to(&self, other: &Conn) -> bool {
        self.dialer <= other.dialer
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.close_if_drained();
    }

    /// A retired connection this node dialed is closed once nothing is in flight on it either
    /// way. It says so first: the peer may not have seen the pair's other connection yet,
    /// and must not take this one's end for a loss.
    fn close_if_drained(&self) {
        if self.retired.load(Ordering::Acquire)
            && self.dialer == self.me
            && self.pending.lock().is_empty()
            && self.in_flight.available_permits() == IN_FLIGHT_PER_CONNECTION
            && !self.closed.is_cancelled()
        {
            // The writer sends what is queued before it closes.
            let _ = self.out.try_send(wire::closing_frame());
            self.close_on_purpose();
        }
    }

    fn close_on_purpose(&self) {
        self.deliberate.store(true, Ordering::Release);
        self.closed.cancel();
    }
}

struct Peer {
    node: NodeId,
    /// The connection new requests go on.
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while dialing, so that this node makes one dial to the peer at a time.
    dialing: tokio::sync::Mutex<()>,
    /// Not before this instant, and the wait after the next failure.
    backoff: Mutex<(Instant, Duration)>,
    next_id: AtomicU64,
    /// Connections with the peer that are open, either way.
    open: AtomicUsize,
}

impl Peer {
    fn unreachable(&self, reason: impl Into<String>) -> TransportError {
        TransportError::Unreachable { node: self.node, reason: reason.into() }
    }

    /// The request as it travels, with its id; refused if larger than a frame may be.
    fn frame(&self, shared: &Shared, group: GroupId, request: Request) -> Result<(u64, Bytes), TransportError> {
        let refused = |reason: String| TransportError::Refused { node: self.node, group, reason };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::request_frame(id, group, request).map_err(refused)?;
        let max = shared.settings.max_message_size;
        if frame.len() > max {
            return Err(refused(format!(
                "a {}-byte message exceeds cluster.network.max_message_size ({max})",
                frame.len()
            )));
        }
        Ok((id, frame))
    }

    /// Queues `frame` on the connection in use without waiting; hands it back where that would
    /// wait (no connection yet, or a full queue).
    fn try_queue(&self, shared: &Shared, id: u64, frame: Bytes) -> Result<Waiting, Bytes> {
        let Some(conn) = self.usable() else { return Err(frame) };
        let Some(waiting) = self.expect_answer(&conn, id) else { return Err(frame) };
        let len = frame.len();
        match conn.out.try_send(frame) {
            Ok(()) => {
                sent(&shared.settings.contacts, self.node, len);
                Ok(waiting)
            }
            Err(mpsc::error::TrySendError::Full(frame) | mpsc::error::TrySendError::Closed(frame)) => Err(frame),
        }
    }

    /// Queues `frame`, connecting first if need be.
    async fn queue(&self, shared: &Arc<Shared>, id: u64, frame: Bytes) -> Result<Waiting, TransportError> {
        let conn = self.connection(shared).await?;
        let waiting = self.expect_answer(&conn, id).ok_or_else(|| self.unreachable("the connection closed"))?;
        let len = frame.len();
        if conn.out.send(frame).await.is_err() {
            return Err(self.unreachable("the connection closed"));
        }
        sent(&shared.settings.contacts, self.node, len);
        Ok(waiting)
    }

    /// Registers the answer to wait for; `None` if the connection closed meanwhile (its
    /// reader fails what is registered once, as it stops, and would miss this).
    fn expect_answer(&self, conn: &Arc<Conn>, id: u64) -> Option<Waiting> {
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(id, tx);
        let waiting = Waiting { node: self.node, conn: conn.clone(), id, answer: Some(rx) };
        (!conn.closed.is_cancelled()).then_some(waiting)
    }

    fn usable(&self) -> Option<Arc<Conn>> {
        self.current.lock().as_ref().filter(|c| c.usable()).cloned()
    }

    /// The connection to use, dialed if there is none (not sooner than the backoff allows).
    async fn connection(&self, shared: &Arc<Shared>) -> Result<Arc<Conn>, TransportError> {
        if let Some(c) = self.usable() {
            return Ok(c);
        }
        let _dialing = self.dialing.lock().await;
        // The peer may have connected meanwhile.
        if let Some(c) = self.usable() {
            return Ok(c);
        }
        let not_before = self.backoff.lock().0;
        if Instant::now() < not_before {
            return Err(self.unreachable("reconnecting after a failure (backing off)"));
        }
        match self.dial(shared).await {
            Ok(conn) => {
                *self.backoff.lock() = (Instant::now(), FIRST_BACKOFF);
                Ok(self.adopt(conn))
            }
            Err(e) => {
                let mut b = self.backoff.lock();
                *b = (Instant::now() + b.1, (b.1 * 2).min(MAX_BACKOFF));
                Err(e)
            }
        }
    }

    /// Takes a new connection with the peer (dialed or accepted) and answers the one to use:
    /// of it and the current one, the one dialed by the lower node id; the other is retired.
    fn adopt(&self, conn: Arc<Conn>) -> Arc<Conn> {
        let mut current = self.current.lock();
        let kept = current.as_ref().filter(|c| !c.closed.is_cancelled() && !conn.preferred_to(c)).cloned();
        match kept {
            Some(old) => {
                drop(current);
                conn.retire();
                old
            }
            None => {
                let previous = current.replace(conn.clone());
                drop(current);
                if let Some(previous) = previous {
                    previous.retire();
                    // Its dialer made this one instead, so it is done with it (a process that
                    // restarted, or a half-open connection after a crash): close it here too.
                    if previous.dialer == conn.dialer {
                        previous.close_on_purpose();
                    }
                }
                conn
            }
        }
    }

    async fn dial(&self, shared: &Arc<Shared>) -> Result<Arc<Conn>, TransportError> {
        let settings = &shared.settings;
        let addr = (shared.addresses)(self.node).ok_or_else(|| self.unreachable("its address is not known"))?;
        let limit = settings.connect_timeout;
        let attempt = async {
            let mut stream = TcpStream::connect(&addr).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    lost(&settings.contacts, self.node);
                }
                format!("connecting to {addr}: {e}")
            })?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let mine = Handshake { cluster: settings.cluster, from: settings.me, to: self.node };
            stream.write_all(&mine.encode()).await.map_err(|e| e.to_string())?;
            let theirs = read_handshake(&mut stream).await.inspect_err(|why| {
                if why.contains(REMOVED_REFUSAL) {
                    settings.tombstones.told.send_replace(true);
                }
            })?;
            // A joining node (nil cluster id) learns the cluster's id from its join's answer.
            let cluster = if settings.cluster.is_nil() { theirs.cluster } else { settings.cluster };
            if theirs != (Handshake { cluster, from: self.node, to: settings.me }) {
                return Err(format!("{addr} answered as node {} of cluster {}", theirs.from, theirs.cluster));
            }
            Ok(stream)
        };
        let stream = tokio::time::timeout(limit, attempt)
            .await
            .map_err(|_| self.unreachable(format!("no connection to {addr} within {limit:?}")))?
            .map_err(|e| self.unreachable(e))?;
        connected(&settings.contacts, self.node);
        Ok(start(shared, stream, Some(self), settings.me))
    }
}

/// Starts a connection whose handshake is done: a writer, and a reader that hands the peer's
/// requests to this node's groups and the peer's replies to whoever waits for them. `peer` is
/// `None` for a joining node, which may only ask to join.
fn start(shared: &Arc<Shared>, stream: TcpStream, peer: Option<&Peer>, dialer: NodeId) -> Arc<Conn> {
    let (read, write) = stream.into_split();
    let (out, queue) = mpsc::channel(QUEUED_FRAMES);
    let conn = Arc::new(Conn {
        me: shared.settings.me,
        out,
        pending: Pending::default(),
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION)),
        closed: shared.tasks.token().child_token(),
        dialer,
        retired: AtomicBool::new(false),
        deliberate: AtomicBool::new(false),
    });
    shared.tasks.spawn_transient("raft-peer-writer", write_frames(write, queue, conn.closed.clone()));
    let peer = peer.map(|p| {
        p.open.fetch_add(1, Ordering::Relaxed);
        p.node
    });
    let (shared, reading) = (shared.clone(), conn.clone());
    let scope = shared.tasks.clone();
    scope.spawn_transient("raft-peer-reader", async move {
        let why = read_frames(&shared, read, &reading, peer).await;
        tracing::debug!(?peer, "raft connection closed: {why}");
        let deliberate = reading.deliberate.load(Ordering::Acquire)
            || reading.retired.load(Ordering::Acquire)
            || shared.tasks.token().is_cancelled();
        reading.closed.cancel();
        // Whoever still waits learns the connection is gone.
        reading.pending.lock().clear();
        if let Some(peer) = peer {
            if !deliberate {
                lost(&shared.settings.contacts, peer);
            }
            shared.peer(peer).open.fetch_sub(1, Ordering::Relaxed);
        }
    });
    conn
}

/// Reads frames until the connection closes; answers why it did.
async fn read_frames(shared: &Arc<Shared>, mut read: OwnedReadHalf, conn: &Arc<Conn>, peer: Option<NodeId>) -> String {
    let (settings, max) = (&shared.settings, shared.settings.max_message_size);
    let mut lanes = AppendLanes::default();
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut read, max) => f,
            _ = conn.closed.cancelled() => return "closed".into(),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return e,
        };
        if let Some(peer) = peer {
            heard(&settings.contacts, peer, frame.len() + 4);
        }
        match wire::decode(&frame) {
            Ok(Incoming::Request { id, group, request }) => {
                // The reader never waits: the replies to this node's own requests come this way
                // too, and a peer whose reader waited on this one's would wait for ever.
                if peer.is_none() && !matches!(request, Request::Join(_)) {
                    let why = "a node that has not joined the cluster may only ask to join";
                    let _ = conn.out.try_send(wire::error_frame(id, why));
                    continue;
                }
                let Ok(permit) = conn.in_flight.clone().try_acquire_owned() else {
                    let why = format!(
                        "node {} has {IN_FLIGHT_PER_CONNECTION} requests from this node in hand; try again",
                        settings.me
                    );
                    let _ = conn.out.try_send(wire::error_frame(id, &why));
                    continue;
                };
                if let (Request::Append(_), Some(peer)) = (&request, peer) {
                    lanes.hand_over(shared, conn, peer, group, (id, request, permit));
                    continue;
                }
                let (shared, conn) = (shared.clone(), conn.clone());
                // Each request is handled on its own, so one slow group does not hold up the rest.
                shared.tasks.clone().spawn_transient("raft-request", async move {
                    let answer = answer(&shared, id, group, request).await;
                    let len = answer.len();
                    if conn.out.send(answer).await.is_ok()
                        && let Some(peer) = peer
                    {
                        sent(&shared.settings.contacts, peer, len);
                    }
                    drop(permit);
                    conn.close_if_drained();
                });
            }
            Ok(Incoming::Reply { id, reply }) => {
                if let Some(tx) = conn.pending.lock().remove(&id) {
                    let _ = tx.send(Ok(reply)); // a caller that timed out is fine
                }
                conn.close_if_drained();
            }
            Ok(Incoming::Error { id, why }) => {
                if let Some(tx) = conn.pending.lock().remove(&id) {
                    let _ = tx.send(Err(why));
                }
                conn.close_if_drained();
            }
            // Its end, which follows, is no loss; nothing new goes on it.
            Ok(Incoming::Closing) => conn.retired.store(true, Ordering::Release),
            Err(e) => return e,
        }
    }
}

/// A peer's request in hand: its id, the request, and its place among those in hand.
type InHand = (u64, Request, OwnedSemaphorePermit);

/// Appends to one group in its Raft's hands at once.
const LANE_DEPTH: usize = 16;

/// Each group's appends from one peer, handed to the group's Raft in the order they came and
/// answered in that order. The group's leader pipelines them (`raft/network.rs`): handled each
/// on its own, as other requests are, a later one could reach Raft first and be refused as a
/// conflict.
///
/// A lane's queue is unbounded: what is in it holds the connection's in-hand permits, which
/// bound it, and the reader must never wait.
#[derive(Default)]
struct AppendLanes {
    lanes: HashMap<GroupId, mpsc::UnboundedSender<InHand>>,
}

impl AppendLanes {
    fn hand_over(&mut self, shared: &Arc<Shared>, conn: &Arc<Conn>, peer: NodeId, group: GroupId, append: InHand) {
        let append = match self.lanes.get(&group) {
            Some(lane) => match lane.send(append) {
                Ok(()) => return,
                Err(mpsc::error::SendError(append)) => append, // its task ended: start another
            },
            None => append,
        };
        let (lane, queue) = mpsc::unbounded_channel();
        let (shared_, conn_) = (shared.clone(), conn.clone());
        shared.tasks.spawn_transient("raft-append-lane", append_lane(shared_, conn_, peer, group, queue));
        let _ = lane.send(append);
        self.lanes.insert(group, lane);
    }
}

/// Hands one group's appends to its Raft in order, several at once, and sends each answer as
/// it comes, in that order; until the connection's reader stops (or the connection closes).
async fn append_lane(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    peer: NodeId,
    group: GroupId,
    mut queue: mpsc::UnboundedReceiver<InHand>,
) {
    let mut in_hand = futures::stream::FuturesOrdered::new();
    let mut open = true;
    while open || !in_hand.is_empty() {
        tokio::select! {
            next = queue.recv(), if open && in_hand.len() < LANE_DEPTH => match next {
                Some((id, request, permit)) => {
                    let handing = shared.clone();
                    // Polled first in the order pushed: that is when the append reaches Raft.
                    in_hand.push_back(async move { (answer(&handing, id, group, request).await, permit) });
                    shared.most_appends_in_hand.fetch_max(in_hand.len(), Ordering::Relaxed);
                }
                None => open = false,
            },
            Some((frame, permit)) = futures::StreamExt::next(&mut in_hand), if !in_hand.is_empty() => {
                let len = frame.len();
                if conn.out.send(frame).await.is_ok() {
                    sent(&shared.settings.contacts, peer, len);
                }
                drop(permit);
                conn.close_if_drained();
            }
            _ = conn.closed.cancelled() => return,
        }
    }
}

/// This node's answer to a peer's request, as a frame.
async fn answer(shared: &Shared, id: u64, group: GroupId, request: Request) -> Bytes {
    let me = shared.settings.me;
    let Some(groups) = shared.groups.get() else {
        return wire::error_frame(id, &format!("node {me} does not serve Raft groups yet"));
    };
    match groups(group) {
        None => wire::error_frame(id, &format!("group {group} is not on node {me}")),
        Some(inbound) => match inbound.handle(request).await {
            Ok(reply) => wire::reply_frame(id, reply).unwrap_or_else(|e| wire::error_frame(id, &e)),
            Err(e) => wire::error_frame(id, &e),
        },
    }
}

/// Reads the other side's handshake: its 40 bytes, or an error frame saying why it refused.
async fn read_handshake(stream: &mut TcpStream) -> Result<Handshake, String> {
    let mut b = [0u8; wire::HANDSHAKE_LEN];
    stream.read_exact(&mut b[..8]).await.map_err(|e| e.to_string())?;
    if b[..8] != wire::MAGIC {
        // An error frame: length, kind, id, reason.
        let len = u32::from_be_bytes(b[..4].try_into().expect("four bytes")) as usize;
        let mut rest = vec![0u8; len.saturating_sub(4).min(4096)];
        stream.read_exact(&mut rest).await.map_err(|e| e.to_string())?;
        return Err(format!("refused: {}", String::from_utf8_lossy(&rest[wire::FRAME_HEAD - 4..])));
    }
    stream.read_exact(&mut b[8..]).await.map_err(|e| e.to_string())?;
    Handshake::decode(&b)
}

/// Sends what is queued, as much as is there in one write, until the queue or the
/// connection closes; on closing, sends what was already queued (a last reply), briefly.
async fn write_frames(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<Bytes>, closed: CancellationToken) {
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            f = queue.recv() => f,
            _ = closed.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if !write_unless_closed(&mut write, &batch, &closed).await {
            break;
        }
        batch.clear();
    }
    closed.cancel();
    while let Ok(f) = queue.try_recv() {
        batch.extend_from_slice(&f);
    }
    let _ = tokio::time::timeout(FLUSH_ON_CLOSE, async {
        write.write_all(&batch).await?;
        write.shutdown().await
    })
    .await;
}

/// Writes `bytes`; false if the connection failed. Once it is closing, the rest gets
/// [`FLUSH_ON_CLOSE`] at most: a peer that stopped reading (hung, or cut off) must not hold
/// the task, and a frame cut in the middle would read as garbage on the other side.
async fn write_unless_closed(write: &mut OwnedWriteHalf, bytes: &[u8], closed: &CancellationToken) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let wrote = tokio::select! {
            n = write.write(&bytes[at..]) => n,
            _ = closed.cancelled() => {
                let rest = tokio::time::timeout(FLUSH_ON_CLOSE, write.write_all(&bytes[at..])).await;
                return matches!(rest, Ok(Ok(())));
            }
        };
        match wrote {
            Ok(0) | Err(_) => return false,
            Ok(n) => at += n,
        }
    }
    true
}

/// One frame's bytes (after its length), or why the connection must close.
async fn read_frame(read: &mut OwnedReadHalf, max: usize) -> Result<BytesMut, String> {
    let len = read.read_u32().await.map_err(|e| e.to_string())? as usize;
    if len < wire::FRAME_HEAD || len > max {
        return Err(format!("a frame of {len} bytes (most allowed: {max})"));
    }
    let mut frame = BytesMut::zeroed(len);
    read.read_exact(&mut frame).await.map_err(|e| e.to_string())?;
    Ok(frame)
}

/// Accepts peers' connections on `listener` and hands their requests to this node's groups,
/// until the transport's tasks are cancelled. Connections this node dials carry the peers'
/// requests from then on too.
pub(crate) async fn serve(
    listener: TcpListener,
    transport: Arc<TcpTransport>,
    groups: Groups,
) -> Result<(), std::io::Error> {
    let shared = transport.shared.clone();
    let _ = shared.groups.set(groups);
    loop {
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shared.tasks.cancelled() => return Ok(()),
        };
        let shared = shared.clone();
        shared.tasks.clone().spawn_transient("raft-connection", async move {
            if let Err(why) = accept(&shared, stream).await {
                tracing::debug!(%from, "raft connection refused: {why}");
            }
        });
    }
}

/// Checks a connecting node's handshake, answers it, and starts the connection.
async fn accept(shared: &Arc<Shared>, mut stream: TcpStream) -> Result<(), String> {
    let settings = &shared.settings;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(settings.connect_timeout, read_handshake(&mut stream))
        .await
        .map_err(|_| "no handshake in time".to_string())??;
    // A node joining the cluster does not know its id yet: it may ask to join, nothing else.
    let joining = hello.cluster.is_nil();
    let refusal = if hello.cluster != settings.cluster && !joining {
        Some(format!("node {} belongs to cluster {}, not {}", settings.me, settings.cluster, hello.cluster))
    } else if hello.to != settings.me {
        Some(format!("this is node {}, not node {}", settings.me, hello.to))
    } else if hello.from == settings.me && !joining {
        Some(format!("node {} connected to itself", settings.me))
    } else if (settings.tombstones.is_removed)(hello.from) {
        Some(format!("{REMOVED_REFUSAL}node {} was removed from cluster {}", hello.from, settings.cluster))
    } else {
        None
    };
    if let Some(why) = refusal {
        let _ = stream.write_all(&wire::error_frame(0, &why)).await;
        return Err(why);
    }
    let mine = Handshake { cluster: settings.cluster, from: settings.me, to: hello.from };
    stream.write_all(&mine.encode()).await.map_err(|e| e.to_string())?;
    if joining {
        // Served for the join alone, and never used to send to that node.
        start(shared, stream, None, hello.from);
        return Ok(());
    }
    connected(&settings.contacts, hello.from);
    let peer = shared.peer(hello.from);
    let conn = start(shared, stream, Some(&peer), hello.from);
    peer.adopt(conn);
    Ok(())
}
