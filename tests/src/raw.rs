//! Raw Kafka requests over a plain socket, for tests that send what no client library would
//! (or must watch a single connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use crate::Broker;

pub fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(b.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub fn frame<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, corr: i32, body: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("chronik-raw-test")));
    let mut b = BytesMut::new();
    header.encode(&mut b, R::header_version(version)).unwrap();
    body.encode(&mut b, version).unwrap();
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

/// Reads one response frame; returns (correlation id, rest after the header) or None if closed.
pub fn read_response(s: &mut TcpStream) -> Option<(i32, Bytes)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    let corr = i32::from_be_bytes(buf[0..4].try_into().unwrap());
    Some((corr, Bytes::from(buf)))
}

pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Sends `body` as a `key` request at `version` and decodes the response body.
pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    body: &Req,
) -> Resp {
    s.write_all(&frame(key, version, 1, body)).unwrap();
    let (_, mut bytes) = read_response(s).unwrap_or_else(|| panic!("{key:?} v{version}: no response"));
    ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
    Resp::decode(&mut bytes, version).unwrap()
}

/// One uncompressed batch as a client encodes it: a record of `value_len` bytes per timestamp,
/// from `producer_id` (-1: not idempotent; else epoch 0, sequences from 0).
pub fn batch(timestamps: &[i64], value: &[u8], producer_id: i64) -> Bytes {
    let idempotent = producer_id >= 0;
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: if idempotent { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch wherever offset - sequence changes; a batch of no
            // producer has base sequence -1.
            sequence: i as i32 - i32::from(!idempotent),
            timestamp: *ts,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect();
    let mut b = BytesMut::new();
    RecordBatchEncoder::encode(&mut b, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .unwrap();
    b.freeze()
}
