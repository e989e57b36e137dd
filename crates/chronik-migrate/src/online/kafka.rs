//! A minimal Kafka client over kafka-protocol's message types: one connection, one request at
//! a time, for the online copy. It speaks only versions every Kafka-compatible broker of the
//! last years accepts, and bounds every response and wait.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::MigrateError;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted (a fetch is asked for far less).
const MAX_RESPONSE: usize = 256 << 20;

pub struct KafkaConn {
    addr: String,
    stream: TcpStream,
    correlation: i32,
}

impl KafkaConn {
    pub async fn connect(addr: &str) -> Result<KafkaConn, MigrateError> {
        let stream = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| kafka_err(addr, "connect timed out"))?
            .map_err(|e| kafka_err(addr, format!("connect: {e}")))?;
        stream.set_nodelay(true).ok();
        Ok(KafkaConn { addr: addr.to_string(), stream, correlation: 0 })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `body` as a `key` request at `version`; the decoded response.
    pub async fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, body: &Req) -> Result<Resp, MigrateError>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable,
    {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("chronik-migrate")));
        let mut buf = BytesMut::new();
        let encode_err = |e: anyhow::Error| kafka_err(&self.addr, format!("encoding {key:?}: {e}"));
        header.encode(&mut buf, Req::header_version(version)).map_err(encode_err)?;
        body.encode(&mut buf, version).map_err(encode_err)?;
        let mut frame = (buf.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_u32().await? as usize;
            if len > MAX_RESPONSE {
                return Err(std::io::Error::other(format!("response of {len} bytes")));
            }
            let mut resp = vec![0u8; len];
            self.stream.read_exact(&mut resp).await?;
            Ok(Bytes::from(resp))
        };
        let mut resp = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| kafka_err(&self.addr, format!("{key:?} timed out")))?
            .map_err(|e| kafka_err(&self.addr, format!("{key:?}: {e}")))?;
        let decode_err = |e: anyhow::Error| kafka_err(&self.addr, format!("decoding {key:?} v{version}: {e}"));
        let h = ResponseHeader::decode(&mut resp, key.response_header_version(version)).map_err(decode_err)?;
        if h.correlation_id != self.correlation {
            return Err(kafka_err(&self.addr, format!("{key:?}: response to another request")));
        }
        let out = Resp::decode(&mut resp, version).map_err(decode_err)?;
        if resp.has_remaining() {
            tracing::debug!(addr = self.addr, ?key, left = resp.remaining(), "response longer than decoded");
        }
        Ok(out)
    }
}

pub fn kafka_err(addr: &str, what: impl Into<String>) -> MigrateError {
    MigrateError::Kafka { addr: addr.to_string(), what: what.into() }
}
