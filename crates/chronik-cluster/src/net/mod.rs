//! The Raft transport between nodes over TCP (`cluster.node_addr`, port 9093 by default).
//!
//! Each node keeps one outgoing connection to each peer it sends to, carrying every group's
//! messages, multiplexed by request id (so a slow group does not hold up the others); the
//! peer answers on the same connection. Everything queued for a peer goes out in one write,
//! which is where the messages of many groups get batched. A connection starts with a
//! handshake naming the cluster and both node ids (`wire.rs`); a node of another cluster, or
//! one that is not who the sender meant, is refused with the reason. A lost connection fails
//! what was in flight as unreachable (openraft backs off and retries), and reconnecting backs
//! off too, up to a few seconds. Frames above `cluster.network.max_message_size` are refused.
//! A node that is joining (and so does not know the cluster id yet) connects with the nil id
//! and may only send its join request on that connection.

mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
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
/// Requests one incoming connection may have in hand at once.
const IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// A writer sends at most this much in one write.
const WRITE_BATCH: usize = 1 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

pub(crate) struct TcpTransport {
    settings: TcpSettings,
    addresses: Addresses,
    tasks: Tasks,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
}

impl TcpTransport {
    /// Connections are made on demand; their tasks live in `tasks`.
    pub fn new(settings: TcpSettings, addresses: Addresses, tasks: Tasks) -> Arc<TcpTransport> {
        Arc::new(TcpTransport { settings, addresses, tasks, peers: Mutex::new(HashMap::new()) })
    }

    fn peer(&self, node: NodeId) -> Arc<Peer> {
        self.peers
            .lock()
            .entry(node)
            .or_insert_with(|| {
                Arc::new(Peer {
                    node,
                    settings: self.settings.clone(),
                    addresses: self.addresses.clone(),
                    tasks: self.tasks.clone(),
                    conn: tokio::sync::Mutex::new(None),
                    backoff: Mutex::new((Instant::now(), FIRST_BACKOFF)),
                    next_id: AtomicU64::new(1),
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
        let peer = self.peer(to);
        Box::pin(async move { peer.call(group, request, timeout).await })
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, String>>>>>;

/// One live connection: its writer's queue, the requests awaiting replies, and whether it
/// is still up.
struct Conn {
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    closed: CancellationToken,
}

struct Peer {
    node: NodeId,
    settings: TcpSettings,
    addresses: Addresses,
    tasks: Tasks,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Not before this instant, and the wait after the next failure.
    backoff: Mutex<(Instant, Duration)>,
    next_id: AtomicU64,
}

impl Peer {
    fn unreachable(&self, reason: impl Into<String>) -> TransportError {
        TransportError::Unreachable { node: self.node, reason: reason.into() }
    }

    async fn call(&self, group: GroupId, request: Request, timeout: Duration) -> Result<Reply, TransportError> {
        let refused = |reason: String| TransportError::Refused { node: self.node, group, reason };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::request_frame(id, group, request).map_err(refused)?;
        if frame.len() > self.settings.max_message_size {
            return Err(refused(format!(
                "a {}-byte message exceeds cluster.network.max_message_size ({})",
                frame.len(),
                self.settings.max_message_size
            )));
        }
        let conn = self.connection().await?;
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(id, tx);
        let len = frame.len();
        if conn.out.send(frame).await.is_err() {
            conn.pending.lock().remove(&id);
            return Err(self.unreachable("the connection closed"));
        }
        sent(&self.settings.contacts, self.node, len);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(why))) => Err(refused(why)),
            Ok(Err(_)) => Err(self.unreachable("the connection was lost")),
            Err(_) => {
                conn.pending.lock().remove(&id);
                Err(TransportError::Timeout { node: self.node, after: timeout })
            }
        }
    }

    /// The live connection, made if need be (not sooner than the backoff allows).
    async fn connection(&self) -> Result<Arc<Conn>, TransportError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.closed.is_cancelled()) {
            return Ok(c.clone());
        }
        let not_before = self.backoff.lock().0;
        if Instant::now() < not_before {
            return Err(self.unreachable("reconnecting after a failure (backing off)"));
        }
        match self.connect().await {
            Ok(conn) => {
                *self.backoff.lock() = (Instant::now(), FIRST_BACKOFF);
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let mut b = self.backoff.lock();
                *b = (Instant::now() + b.1, (b.1 * 2).min(MAX_BACKOFF));
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Arc<Conn>, TransportError> {
        let addr = (self.addresses)(self.node).ok_or_else(|| self.unreachable("its address is not known"))?;
        let limit = self.settings.connect_timeout;
        let attempt = async {
            let mut stream = TcpStream::connect(&addr).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    lost(&self.settings.contacts, self.node);
                }
                format!("connecting to {addr}: {e}")
            })?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let mine = Handshake { cluster: self.settings.cluster, from: self.settings.me, to: self.node };
            stream.write_all(&mine.encode()).await.map_err(|e| e.to_string())?;
            let theirs = read_handshake(&mut stream).await.inspect_err(|why| {
                if why.contains(REMOVED_REFUSAL) {
                    self.settings.tombstones.told.send_replace(true);
                }
            })?;
            // A joining node (nil cluster id) learns the cluster's id from its join's answer.
            let cluster = if self.settings.cluster.is_nil() { theirs.cluster } else { self.settings.cluster };
            if theirs != (Handshake { cluster, from: self.node, to: self.settings.me }) {
                return Err(format!("{addr} answered as node {} of cluster {}", theirs.from, theirs.cluster));
            }
            Ok(stream)
        };
        let stream = tokio::time::timeout(limit, attempt)
            .await
            .map_err(|_| self.unreachable(format!("no connection to {addr} within {limit:?}")))?
            .map_err(|e| self.unreachable(e))?;
        connected(&self.settings.contacts, self.node);
        let (read, write) = stream.into_split();
        let (out, queue) = mpsc::channel(QUEUED_FRAMES);
        let conn = Arc::new(Conn { out, pending: Pending::default(), closed: self.tasks.token().child_token() });
        let (closed, max) = (conn.closed.clone(), self.settings.max_message_size);
        self.tasks.spawn_transient("raft-peer-writer", write_frames(write, queue, closed.clone()));
        let pending = conn.pending.clone();
        let heard = (self.settings.contacts.clone(), self.node);
        self.tasks.spawn_transient("raft-peer-reader", async move {
            let why = read_replies(read, &pending, max, &closed, heard.clone()).await;
            tracing::debug!("raft connection closed: {why}");
            if !closed.is_cancelled() {
                lost(&heard.0, heard.1);
            }
            closed.cancel();
            // Whoever still waits learns the connection is gone.
            pending.lock().clear();
        });
        Ok(conn)
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
/// connection closes.
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
        if write.write_all(&batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    closed.cancel();
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

async fn read_replies(
    mut read: OwnedReadHalf,
    pending: &Pending,
    max: usize,
    closed: &CancellationToken,
    (contacts, peer): (Contacts, NodeId),
) -> String {
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut read, max) => f,
            _ = closed.cancelled() => return "closed".into(),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return e,
        };
        heard(&contacts, peer, frame.len() + 4);
        match wire::decode(&frame) {
            Ok(Incoming::Reply { id, reply }) => {
                if let Some(tx) = pending.lock().remove(&id) {
                    let _ = tx.send(Ok(reply)); // a caller that timed out is fine
                }
            }
            Ok(Incoming::Error { id, why }) => {
                if let Some(tx) = pending.lock().remove(&id) {
                    let _ = tx.send(Err(why));
                }
            }
            Ok(Incoming::Request { .. }) => return "a request came on an outgoing connection".into(),
            Err(e) => return e,
        }
    }
}

/// Accepts peers' connections on `listener` and hands their requests to this node's groups,
/// until `tasks` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: TcpSettings,
    groups: Groups,
    tasks: Tasks,
) -> Result<(), std::io::Error> {
    loop {
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tasks.cancelled() => return Ok(()),
        };
        let (settings, groups, scope) = (settings.clone(), groups.clone(), tasks.clone());
        tasks.spawn_transient("raft-connection", async move {
            if let Err(why) = serve_connection(stream, settings, groups, scope).await {
                tracing::debug!(%from, "raft connection closed: {why}");
            }
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    settings: TcpSettings,
    groups: Groups,
    tasks: Tasks,
) -> Result<(), String> {
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
    if !joining {
        connected(&settings.contacts, hello.from);
    }
    let (mut read, write) = stream.into_split();
    let (out, queue) = mpsc::channel(QUEUED_FRAMES);
    let closed = tasks.token().child_token();
    tasks.spawn_transient("raft-connection-writer", write_frames(write, queue, closed.clone()));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    let result = loop {
        let frame = tokio::select! {
            f = read_frame(&mut read, settings.max_message_size) => f,
            _ = closed.cancelled() => break Ok(()),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        if !joining {
            heard(&settings.contacts, hello.from, frame.len() + 4);
        }
        let (id, group, request) = match wire::decode(&frame) {
            Ok(Incoming::Request { id, group, request }) => (id, group, request),
            Ok(_) => break Err("a reply came on an incoming connection".into()),
            Err(e) => break Err(e),
        };
        if joining && !matches!(request, Request::Join(_)) {
            let _ =
                out.send(wire::error_frame(id, "a node that has not joined the cluster may only ask to join")).await;
            continue;
        }
        let permit = in_flight.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (groups, out, me) = (groups.clone(), out.clone(), settings.me);
        let (contacts, peer) = (settings.contacts.clone(), (!joining).then_some(hello.from));
        // Each request is handled on its own, so one slow group does not hold up the rest.
        tasks.spawn_transient("raft-request", async move {
            let answer = match groups(group) {
                None => wire::error_frame(id, &format!("group {group} is not on node {me}")),
                Some(inbound) => match inbound.handle(request).await {
                    Ok(reply) => wire::reply_frame(id, reply).unwrap_or_else(|e| wire::error_frame(id, &e)),
                    Err(e) => wire::error_frame(id, &e),
                },
            };
            let len = answer.len();
            if out.send(answer).await.is_ok()
                && let Some(peer) = peer
            {
                sent(&contacts, peer, len);
            }
            drop(permit);
        });
    };
    closed.cancel();
    result
}
