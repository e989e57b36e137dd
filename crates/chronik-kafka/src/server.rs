//! The Kafka listener: accepts connections and serves each until it closes or the shutdown
//! signal arrives (then in-flight requests finish and their responses are sent).
//!
//! A connection may pipeline requests. Responses always go out in request order. Produce and
//! Fetch requests overlap their waiting (for commit, for data) with the requests after them;
//! every other request first waits for those in flight, so it observes their effects, as on a
//! Kafka broker that serves a connection one request at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::frame::Frame;
use crate::handlers::{self, Outcome};

/// Requests in flight on one connection before it stops reading more.
const MAX_IN_FLIGHT: usize = 64;

/// What clients may hold of the broker: connections (in all, and per IP address) and bytes of
/// requests read but not yet answered.
struct Admission {
    slots: Arc<Semaphore>,
    max_per_ip: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    request_bytes: Arc<Semaphore>,
}

/// A connection's place: its slot, and its count against its IP, given back when dropped.
struct Admitted {
    _slot: OwnedSemaphorePermit,
    ip: IpAddr,
    admission: Arc<Admission>,
}

impl Admission {
    fn new(c: &crate::BrokerConfig) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(c.max_connections)),
            max_per_ip: c.max_connections_per_ip,
            per_ip: Mutex::default(),
            // Never below one largest request, or a frame could wait for a budget it cannot fit.
            request_bytes: Arc::new(Semaphore::new(c.queued_max_request_bytes.max(c.max_request_size))),
        })
    }

    /// Counts a new connection from `ip`, or refuses it if that IP is at its limit.
    fn admit(self: &Arc<Self>, slot: OwnedSemaphorePermit, ip: IpAddr) -> Option<Admitted> {
        let mut per_ip = self.per_ip.lock();
        let n = per_ip.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Admitted { _slot: slot, ip, admission: self.clone() })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.admission.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves Kafka clients on `listener` until `shutdown` is cancelled; then stops accepting and
/// lets each connection finish the requests it has read (for at most 10 s). At
/// `max_connections` it stops accepting (new clients wait in the listen backlog); a connection
/// beyond `max_connections_per_ip` is closed at once.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let admission = Admission::new(&broker.config);
    let mut connections = JoinSet::new();
    loop {
        // A slot first: while none is free, nothing is accepted.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = admission.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(admitted) = admission.admit(slot, peer.ip()) else {
                        tracing::debug!(%peer, "closing connection: max_connections_per_ip reached");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (broker, stop, budget) = (broker.clone(), shutdown.clone(), admission.request_bytes.clone());
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(stream, broker, budget, stop).await {
                            tracing::debug!(%peer, "connection closed: {e}");
                        }
                        drop(admitted);
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tracing::warn!("connections still busy after 10 s of shutdown; closing them");
        connections.abort_all();
    }
    Ok(())
}

/// The length of the frame at the front of `buf`, once its 4-byte prefix is there.
fn frame_len(buf: &[u8], max: usize) -> std::io::Result<Option<usize>> {
    let Some(prefix) = buf.get(..4) else { return Ok(None) };
    let len = i32::from_be_bytes(prefix.try_into().expect("four bytes"));
    if len < 0 || len as usize > max {
        // Logged once per offending connection, which is then closed.
        tracing::warn!("closing connection: request of {len} bytes exceeds max_request_size ({max})");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("request size {len} out of range")));
    }
    Ok(Some(len as usize))
}

/// Takes one complete frame (without its length prefix) off the front of `buf`, if there is one.
/// Frames are cut from a buffer the connection owns, so a read interrupted by `select!` never
/// loses bytes.
fn next_frame(buf: &mut BytesMut, max: usize) -> std::io::Result<Option<Bytes>> {
    let Some(len) = frame_len(buf, max)? else { return Ok(None) };
    if buf.len() < 4 + len {
        // Make room for the rest as it arrives, 1 MiB at a time (never trusting the size up front).
        buf.reserve((4 + len - buf.len()).min(1 << 20));
        return Ok(None);
    }
    let _ = buf.split_to(4);
    Ok(Some(buf.split_to(len).freeze()))
}

type Pending = BoxFuture<'static, Option<Frame>>;
type Reservation = BoxFuture<'static, OwnedSemaphorePermit>;

async fn serve_connection(
    stream: TcpStream,
    broker: Arc<Broker>,
    budget: Arc<Semaphore>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let max = broker.config.max_request_size;
    // The request bytes reserved for the frame at the front of `buf`: a frame is read whole only
    // once the broker-wide budget has room for it, so when it is spent, sockets stop being read.
    let mut reserved: Option<OwnedSemaphorePermit> = None;
    let mut reserving: Option<Reservation> = None;
    'serve: loop {
        while in_flight.len() < MAX_IN_FLIGHT {
            if reserved.is_none() {
                let Some(len) = frame_len(&buf, max)? else { break };
                match budget.clone().try_acquire_many_owned(len as u32) {
                    Ok(permit) => reserved = Some(permit),
                    Err(_) => {
                        if reserving.is_none() {
                            let budget = budget.clone();
                            reserving = Some(Box::pin(async move {
                                budget.acquire_many_owned(len as u32).await.expect("the semaphore is never closed")
                            }));
                        }
                        break;
                    }
                }
            }
            let Some(frame) = next_frame(&mut buf, max)? else { break };
            let permit = reserved.take();
            let api_key = frame.get(0..2).and_then(|b| ApiKey::try_from(i16::from_be_bytes([b[0], b[1]])).ok());
            if !matches!(api_key, Some(ApiKey::Produce | ApiKey::Fetch)) {
                // Ordinary requests see the effects of everything before them.
                while let Some(response) = in_flight.next().await {
                    if let Some(mut frame) = response {
                        wr.write_all_buf(&mut frame).await?;
                    }
                }
            }
            let read_at = std::time::Instant::now();
            let response: Pending = match handlers::dispatch(&broker, frame).await {
                Outcome::Response(b) => Box::pin(async move { Some(b.into()) }),
                Outcome::Later(f) => f,
                Outcome::NoResponse => Box::pin(async { None }),
                Outcome::Close(reason) => {
                    tracing::debug!("closing connection: {reason}");
                    break 'serve;
                }
            };
            // The request's bytes count against the budget until its answer is ready.
            let metrics = broker.metrics.clone();
            in_flight.push_back(Box::pin(async move {
                let frame = response.await;
                drop(permit);
                if let Some(api) = api_key {
                    metrics.record_request(api as i16, read_at.elapsed());
                }
                frame
            }));
        }
        let waiting_for_budget = reserving.is_some();
        tokio::select! {
            biased;
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(mut frame) = response {
                    wr.write_all_buf(&mut frame).await?;
                }
            }
            _ = stop.cancelled() => break,
            permit = async { reserving.as_mut().expect("guarded").await }, if waiting_for_budget => {
                reserved = Some(permit);
                reserving = None;
            }
            // `read_buf` is cancel-safe: the bytes are either in `buf` or still in the socket.
            n = rd.read_buf(&mut buf), if in_flight.len() < MAX_IN_FLIGHT && !waiting_for_budget => {
                if n? == 0 {
                    break;
                }
            }
        }
    }
    // Finish what was accepted before closing.
    while let Some(response) = in_flight.next().await {
        if let Some(mut frame) = response {
            wr.write_all_buf(&mut frame).await?;
        }
    }
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_are_cut_only_when_complete() {
        let two = [framed(b"first"), framed(b"second!")].concat();
        // Bytes arriving one at a time: each frame comes out exactly once, whole, in order.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in &two {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = next_frame(&mut buf, 100).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![Bytes::from_static(b"first"), Bytes::from_static(b"second!")]);
        assert!(buf.is_empty());
        // Oversized and negative lengths are refused before any body is read.
        for bad in [framed(&[0u8; 101]), (-1i32).to_be_bytes().to_vec()] {
            let mut buf = BytesMut::from(&bad[..4]);
            assert!(next_frame(&mut buf, 100).is_err());
        }
    }
}
