//! Request frames in, response frames out.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

/// A request with its fixed header fields parsed; the body is decoded by its handler.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
}

/// Why a frame cannot be served. Each closes the connection (what Kafka does), except
/// an ApiVersions request at an unknown version, which the dispatcher answers.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("bad request header: {0}")]
    BadHeader(String),
}

/// Parses the request header at the front of `frame` (the bytes after the length prefix).
pub fn parse_request(mut frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Short(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    Ok(Request {
        api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
        body: frame,
    })
}

/// The correlation id of a frame whose header could not be parsed, if it has one.
pub fn correlation_id(frame: &[u8]) -> Option<i32> {
    frame.get(4..8).map(|b| i32::from_be_bytes(b.try_into().unwrap()))
}

/// Decodes a request body and checks that nothing is left over.
pub fn decode<T: Decodable>(body: &Bytes, version: i16) -> anyhow::Result<T> {
    let mut b = body.clone();
    let req = T::decode(&mut b, version)?;
    if b.has_remaining() {
        anyhow::bail!("{} bytes left after the request body", b.remaining());
    }
    Ok(req)
}

/// Encodes a response frame: length prefix, response header, body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> anyhow::Result<Bytes> {
    encode_with_header_version(correlation_id, R::header_version(version), version, body)
}

pub fn encode_with_header_version<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    body: &R,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    debug_assert_eq!(out.len(), 4 + size);
    Ok(out.freeze())
}
