//! The bytes between two nodes: a handshake each way, then length-prefixed frames.
//!
//! ```text
//! handshake  magic "CHRAFT02" (01: one connection each way, which a node of this version
//!            would misread), cluster id (16 bytes), sender node u64, receiver node u64
//!            (the receiver answers with its own, or an error frame and closes); a node
//!            joining a cluster whose id it does not know yet sends the nil id, and may
//!            then only send its join request
//! frame      length u32 (of what follows), kind u8, request id u64, body:
//!              request (1): group u64, then the message (postcard)
//!              reply   (2): the reply (postcard)
//!              error   (3): why, UTF-8 (the request could not be handled; the handshake
//!                           was refused)
//!              closing (4): nothing (id 0): the sender retired this connection for the
//!                           pair's other one and closes it next; its end is no loss
//! ```
//! Numbers are big endian. Record batches ride inside append requests as the bytes they are
//! (postcard writes a byte string as its length and the bytes).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::{MetaCommand, MetaResponse, NodeInfo};
use crate::raft::transport::{Lead, Reply, Request};
use crate::raft::{GroupId, NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};

pub const MAGIC: [u8; 8] = *b"CHRAFT02";
pub const HANDSHAKE_LEN: usize = 8 + 16 + 8 + 8;
pub const KIND_REQUEST: u8 = 1;
pub const KIND_REPLY: u8 = 2;
pub const KIND_ERROR: u8 = 3;
pub const KIND_CLOSING: u8 = 4;
/// Kind, request id: what every frame carries after its length.
pub const FRAME_HEAD: usize = 1 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub cluster: Uuid,
    pub from: NodeId,
    pub to: NodeId,
}

impl Handshake {
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..24].copy_from_slice(self.cluster.as_bytes());
        b[24..32].copy_from_slice(&self.from.to_be_bytes());
        b[32..40].copy_from_slice(&self.to.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, String> {
        if b[..8] != MAGIC {
            return Err("not a Chronik Raft connection (bad magic)".into());
        }
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("eight bytes"));
        Ok(Handshake {
            cluster: Uuid::from_bytes(b[8..24].try_into().expect("sixteen bytes")),
            from: u64_at(24),
            to: u64_at(32),
        })
    }
}

/// [`Request`] as it travels.
#[derive(Serialize, Deserialize)]
enum WireRequest {
    Append(openraft::raft::AppendEntriesRequest<TypeConfig>),
    Vote(openraft::raft::VoteRequest<TypeConfig>),
    PreVote(openraft::raft::VoteRequest<TypeConfig>),
    TransferLeader(openraft::raft::TransferLeaderRequest<TypeConfig>),
    Snapshot { vote: Vote, meta: SnapshotMeta, data: Bytes },
    SnapshotStart { session: u64, header: Bytes },
    SnapshotChunk { session: u64, chunk: Bytes },
    SnapshotEnd { session: u64 },
    Join(NodeInfo),
    Propose(MetaCommand),
    Leading { from: NodeId, leads: Vec<Lead> },
    Alive { from: NodeId },
    HandOver { to: NodeId },
    Promote { node: NodeId },
}

/// [`Reply`] as it travels.
#[derive(Serialize, Deserialize)]
enum WireReply {
    Append(openraft::raft::AppendEntriesResponse<TypeConfig>),
    Vote(openraft::raft::VoteResponse<TypeConfig>),
    TransferLeader(openraft::raft::TransferLeaderResponse<TypeConfig>),
    Snapshot(openraft::raft::SnapshotResponse<TypeConfig>),
    Ack,
    Joined { cluster_id: Uuid },
    Proposed { response: MetaResponse, index: u64 },
}

fn frame(kind: u8, id: u64, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32(0);
    b.put_u8(kind);
    b.put_u64(id);
    body(&mut b);
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

pub fn request_frame(id: u64, group: GroupId, request: Request) -> Result<Bytes, String> {
    let wire = match request {
        Request::Append(r) => WireRequest::Append(r),
        Request::Vote(r) => WireRequest::Vote(r),
        Request::PreVote(r) => WireRequest::PreVote(r),
        Request::TransferLeader(r) => WireRequest::TransferLeader(r),
        Request::Snapshot { vote, snapshot } => {
            WireRequest::Snapshot { vote, meta: snapshot.meta, data: snapshot.snapshot }
        }
        Request::SnapshotStart { session, header } => WireRequest::SnapshotStart { session, header },
        Request::SnapshotChunk { session, chunk } => WireRequest::SnapshotChunk { session, chunk },
        Request::SnapshotEnd { session } => WireRequest::SnapshotEnd { session },
        Request::Join(n) => WireRequest::Join(n),
        Request::Propose(c) => WireRequest::Propose(c),
        Request::Leading { from, leads } => WireRequest::Leading { from, leads },
        Request::Alive { from } => WireRequest::Alive { from },
        Request::HandOver { to } => WireRequest::HandOver { to },
        Request::Promote { node } => WireRequest::Promote { node },
    };
    let body = postcard::to_stdvec(&wire).map_err(|e| format!("encoding a Raft request: {e}"))?;
    Ok(frame(KIND_REQUEST, id, |b| {
        b.put_u64(group);
        b.put_slice(&body);
    }))
}

pub fn reply_frame(id: u64, reply: Reply) -> Result<Bytes, String> {
    let wire = match reply {
        Reply::Append(r) => WireReply::Append(r),
        Reply::Vote(r) => WireReply::Vote(r),
        Reply::TransferLeader(r) => WireReply::TransferLeader(r),
        Reply::Snapshot(r) => WireReply::Snapshot(r),
        Reply::Ack => WireReply::Ack,
        Reply::Joined { cluster_id } => WireReply::Joined { cluster_id },
        Reply::Proposed { response, index } => WireReply::Proposed { response, index },
    };
    let body = postcard::to_stdvec(&wire).map_err(|e| format!("encoding a Raft reply: {e}"))?;
    Ok(frame(KIND_REPLY, id, |b| b.put_slice(&body)))
}

pub fn error_frame(id: u64, why: &str) -> Bytes {
    frame(KIND_ERROR, id, |b| b.put_slice(why.as_bytes()))
}

pub fn closing_frame() -> Bytes {
    frame(KIND_CLOSING, 0, |_| {})
}

/// A frame's body after its kind and request id, decoded.
pub enum Incoming {
    Request { id: u64, group: GroupId, request: Request },
    Reply { id: u64, reply: Reply },
    Error { id: u64, why: String },
    Closing,
}

/// Decodes one frame (its bytes after the length).
pub fn decode(frame: &[u8]) -> Result<Incoming, String> {
    let head = frame.get(..FRAME_HEAD).ok_or("a frame shorter than its head")?;
    let id = u64::from_be_bytes(head[1..9].try_into().expect("eight bytes"));
    let body = &frame[FRAME_HEAD..];
    match head[0] {
        KIND_REQUEST => {
            let group = u64::from_be_bytes(body.get(..8).ok_or("a request without its group")?.try_into().expect("8"));
            let wire: WireRequest = postcard::from_bytes(&body[8..]).map_err(|e| format!("a Raft request: {e}"))?;
            let request = match wire {
                WireRequest::Append(r) => Request::Append(r),
                WireRequest::Vote(r) => Request::Vote(r),
                WireRequest::PreVote(r) => Request::PreVote(r),
                WireRequest::TransferLeader(r) => Request::TransferLeader(r),
                WireRequest::Snapshot { vote, meta, data } => {
                    Request::Snapshot { vote, snapshot: Snapshot { meta, snapshot: data } }
                }
                WireRequest::SnapshotStart { session, header } => Request::SnapshotStart { session, header },
                WireRequest::SnapshotChunk { session, chunk } => Request::SnapshotChunk { session, chunk },
                WireRequest::SnapshotEnd { session } => Request::SnapshotEnd { session },
                WireRequest::Join(n) => Request::Join(n),
                WireRequest::Propose(c) => Request::Propose(c),
                WireRequest::Leading { from, leads } => Request::Leading { from, leads },
                WireRequest::Alive { from } => Request::Alive { from },
                WireRequest::HandOver { to } => Request::HandOver { to },
                WireRequest::Promote { node } => Request::Promote { node },
            };
            Ok(Incoming::Request { id, group, request })
        }
        KIND_REPLY => {
            let wire: WireReply = postcard::from_bytes(body).map_err(|e| format!("a Raft reply: {e}"))?;
            let reply = match wire {
                WireReply::Append(r) => Reply::Append(r),
                WireReply::Vote(r) => Reply::Vote(r),
                WireReply::TransferLeader(r) => Reply::TransferLeader(r),
                WireReply::Snapshot(r) => Reply::Snapshot(r),
                WireReply::Ack => Reply::Ack,
                WireReply::Joined { cluster_id } => Reply::Joined { cluster_id },
                WireReply::Proposed { response, index } => Reply::Proposed { response, index },
            };
            Ok(Incoming::Reply { id, reply })
        }
        KIND_ERROR => Ok(Incoming::Error { id, why: String::from_utf8_lossy(body).into_owned() }),
        KIND_CLOSING => Ok(Incoming::Closing),
        other => Err(format!("unknown frame kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::VoteRequest;

    use super::*;

    #[test]
    fn handshakes_and_frames_round_trip() {
        let h = Handshake { cluster: Uuid::from_u128(7), from: 1, to: 2 };
        assert_eq!(Handshake::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(Handshake::decode(&bad).is_err());

        let vote = VoteRequest::<TypeConfig>::new(Vote::new(3, 1), Some(crate::raft::log_id(2, 10)));
        let f = request_frame(42, 9, Request::Vote(vote.clone())).unwrap();
        assert_eq!(u32::from_be_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
        match decode(&f[4..]).unwrap() {
            Incoming::Request { id: 42, group: 9, request: Request::Vote(v) } => assert_eq!(v, vote),
            _ => panic!("a vote request"),
        }
        let chunk = Bytes::from_static(b"segment file bytes, as they are");
        let f = request_frame(7, 9, Request::SnapshotChunk { session: 3, chunk: chunk.clone() }).unwrap();
        match decode(&f[4..]).unwrap() {
            Incoming::Request { id: 7, group: 9, request: Request::SnapshotChunk { session: 3, chunk: c } } => {
                assert_eq!(c, chunk)
            }
            _ => panic!("a snapshot chunk"),
        }
        let f = reply_frame(8, Reply::Ack).unwrap();
        assert!(matches!(decode(&f[4..]).unwrap(), Incoming::Reply { id: 8, reply: Reply::Ack }));
        let e = error_frame(5, "no such group");
        assert!(matches!(decode(&e[4..]).unwrap(), Incoming::Error { id: 5, why } if why == "no such group"));
        assert!(matches!(decode(&closing_frame()[4..]).unwrap(), Incoming::Closing));
        assert!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 1]).is_err(), "unknown kind");
        assert!(decode(&[1, 0]).is_err(), "short");
    }
}
