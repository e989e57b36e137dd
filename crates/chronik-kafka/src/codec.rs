//! Request frames in, response frames out.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use kafka_protocol::records::{Record, TimestampType};

use crate::frame::{Frame, Splices};

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

/// Decodes a request body. Bytes after the fields of this version are ignored, as Kafka does
/// (librdkafka 2.12 sends three after a Metadata v12 request for all topics); a body cut short
/// is an error.
pub fn decode<T: Decodable>(body: &Bytes, version: i16) -> anyhow::Result<T> {
    T::decode(&mut body.clone(), version)
}

/// A record of no producer (not idempotent, no transaction), for batches the broker writes
/// itself. kafka-protocol starts a new batch wherever `offset - sequence` changes, so the
/// sequence follows the offset (one behind it: the batch's base sequence is -1, none).
pub(crate) fn plain_record(offset: i64, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32 - 1,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// Encodes a response frame: length prefix, response header, body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> anyhow::Result<Bytes> {
    encode_with_header_version(correlation_id, R::header_version(version), version, body)
}

/// Encodes a response frame whose record fields may be placeholders from `splices` (see
/// [`crate::frame`]): the stored batches they stand for go out by reference, not copied.
pub fn encode_response_gather<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    splices: Splices,
) -> anyhow::Result<Frame> {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let size = i32::try_from(size).map_err(|_| anyhow::anyhow!("a response of {size} bytes does not fit a frame"))?;
    let mut out = splices.into_buf();
    out.put_i32(size);
    header.encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    Ok(out.into_frame())
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
