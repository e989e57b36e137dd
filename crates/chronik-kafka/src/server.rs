//! The Kafka listener: accepts connections and serves each until it closes or the shutdown
//! signal arrives (then in-flight requests finish and their responses are sent).
//!
//! A connection may pipeline requests. Responses always go out in request order. Produce and
//! Fetch requests overlap their waiting (for commit, for data) with the requests after them;
//! every other request first waits for those in flight, so it observes their effects, as on a
//! Kafka broker that serves a connection one request at a time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers::{self, Outcome};

/// Requests in flight on one connection before it stops reading more.
const MAX_IN_FLIGHT: usize = 64;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let broker = broker.clone();
                    let stop = stop_rx.clone();
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
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tracing::warn!("connections still busy after 10 s of shutdown; closing them");
        connections.abort_all();
    }
}

enum Read {
    Frame(Bytes),
    Eof,
}

async fn read_frame(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, max: usize) -> std::io::Result<Read> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Read::Eof),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > max {
        // Logged once per offending connection, which is then closed.
        tracing::warn!("closing connection: request of {len} bytes exceeds max_request_size ({max})");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("request size {len} out of range")));
    }
    // Grow the buffer as bytes arrive rather than trusting the announced size up front.
    let len = len as usize;
    let mut buf = BytesMut::with_capacity(len.min(1 << 20));
    while buf.len() < len {
        buf.reserve((len - buf.len()).min(1 << 20));
        let want = len - buf.len();
        let n = (&mut *r).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed inside a request"));
        }
    }
    Ok(Read::Frame(buf.freeze()))
}

async fn serve_connection(stream: TcpStream, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut in_flight: FuturesOrdered<BoxFuture<'static, Option<Bytes>>> = FuturesOrdered::new();
    let max = broker.config.max_request_size;
    loop {
        tokio::select! {
            biased;
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(bytes) = response {
                    wr.write_all(&bytes).await?;
                }
            }
            _ = stop.changed() => break,
            frame = read_frame(&mut rd, max), if in_flight.len() < MAX_IN_FLIGHT => {
                let frame = match frame? {
                    Read::Frame(f) => f,
                    Read::Eof => break,
                };
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
                        break;
                    }
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
