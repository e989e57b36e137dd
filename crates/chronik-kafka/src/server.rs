//! The Kafka listener: accepts connections and serves each until it closes or the shutdown
//! signal arrives (then in-flight requests finish and their responses are sent).
//!
//! A connection may pipeline requests. Responses always go out in request order. Produce and
//! Fetch requests overlap their waiting (for commit, for data) with the requests after them;
//! every other request first waits for those in flight, so it observes their effects, as on a
//! Kafka broker that serves a connection one request at a time.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::handlers::{self, Outcome};

/// Requests in flight on one connection before it stops reading more.
const MAX_IN_FLIGHT: usize = 64;

/// Serves Kafka clients on `listener` until `shutdown` is cancelled; then stops accepting and
/// lets each connection finish the requests it has read (for at most 10 s).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let broker = broker.clone();
                    let stop = shutdown.clone();
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(stream, broker, stop).await {
                            tracing::debug!(%peer, "connection closed: {e}");
                        }
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

/// Takes one complete frame (without its length prefix) off the front of `buf`, if there is one.
/// Frames are cut from a buffer the connection owns, so a read interrupted by `select!` never
/// loses bytes.
fn next_frame(buf: &mut BytesMut, max: usize) -> std::io::Result<Option<Bytes>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes(buf[..4].try_into().unwrap());
    if len < 0 || len as usize > max {
        // Logged once per offending connection, which is then closed.
        tracing::warn!("closing connection: request of {len} bytes exceeds max_request_size ({max})");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("request size {len} out of range")));
    }
    let len = len as usize;
    if buf.len() < 4 + len {
        // Make room for the rest as it arrives, 1 MiB at a time (never trusting the size up front).
        buf.reserve((4 + len - buf.len()).min(1 << 20));
        return Ok(None);
    }
    let _ = buf.split_to(4);
    Ok(Some(buf.split_to(len).freeze()))
}

async fn serve_connection(stream: TcpStream, broker: Arc<Broker>, stop: CancellationToken) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut in_flight: FuturesOrdered<BoxFuture<'static, Option<Bytes>>> = FuturesOrdered::new();
    let max = broker.config.max_request_size;
    'serve: loop {
        while in_flight.len() < MAX_IN_FLIGHT {
            let Some(frame) = next_frame(&mut buf, max)? else { break };
            let api_key = frame.get(0..2).and_then(|b| ApiKey::try_from(i16::from_be_bytes([b[0], b[1]])).ok());
            if !matches!(api_key, Some(ApiKey::Produce | ApiKey::Fetch)) {
                // Ordinary requests see the effects of everything before them.
                while let Some(response) = in_flight.next().await {
                    if let Some(bytes) = response {
                        wr.write_all(&bytes).await?;
                    }
                }
            }
            match handlers::dispatch(&broker, frame).await {
                Outcome::Response(b) => in_flight.push_back(Box::pin(async move { Some(b) })),
                Outcome::Later(f) => in_flight.push_back(f),
                Outcome::NoResponse => in_flight.push_back(Box::pin(async { None })),
                Outcome::Close(reason) => {
                    tracing::debug!("closing connection: {reason}");
                    break 'serve;
                }
            }
        }
        tokio::select! {
            biased;
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(bytes) = response {
                    wr.write_all(&bytes).await?;
                }
            }
            _ = stop.cancelled() => break,
            // `read_buf` is cancel-safe: the bytes are either in `buf` or still in the socket.
            n = rd.read_buf(&mut buf), if in_flight.len() < MAX_IN_FLIGHT => {
                if n? == 0 {
                    break;
                }
            }
        }
    }
    // Finish what was accepted before closing.
    while let Some(response) = in_flight.next().await {
        if let Some(bytes) = response {
            wr.write_all(&bytes).await?;
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
