//! Raw Kafka requests over a plain socket, for tests that send what no client library would
//! (or must watch a single connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
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

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.into()))
}

/// Creates `name` with `partitions` partitions (CreateTopics v5); returns the error code.
pub fn create_topic(s: &mut TcpStream, name: &str, partitions: i32) -> i16 {
    let req = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1),
    ]);
    let r: CreateTopicsResponse = call(s, ApiKey::CreateTopics, 5, &req);
    r.topics[0].error_code
}

/// Produces `records` to one partition with acks=all (Produce v8). None if the connection
/// ended first (the broker died); else (error code, base offset).
pub fn try_produce(s: &mut TcpStream, topic: &str, partition: i32, records: Bytes) -> Option<(i16, i64)> {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ]);
    s.write_all(&frame(ApiKey::Produce, 8, 1, &req)).ok()?;
    let (_, mut body) = read_response(s)?;
    ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(8)).unwrap();
    let r = ProduceResponse::decode(&mut body, 8).unwrap();
    let p = &r.responses[0].partition_responses[0];
    Some((p.error_code, p.base_offset))
}

/// Fetches one partition from `offset` (Fetch v11, up to 8 MiB); returns (error code, records).
pub fn fetch(s: &mut TcpStream, topic: &str, partition: i32, offset: i64) -> (i16, Bytes) {
    let req =
        FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_max_bytes(8 << 20).with_topics(
            vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(8 << 20),
                ])],
        );
    let r: FetchResponse = call(s, ApiKey::Fetch, 11, &req);
    let p = &r.responses[0].partitions[0];
    (p.error_code, p.records.clone().unwrap_or_default())
}

/// Every batch of a partition from `from` until one reaching `end` (exclusive) has come, as
/// stored (split at batch bounds). Waits out empty answers (after a restart the high
/// watermark catches up as the log is re-applied), for up to 30 s.
pub fn fetch_batches(s: &mut TcpStream, topic: &str, partition: i32, from: i64, end: i64) -> Vec<Bytes> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut batches = Vec::new();
    let mut offset = from;
    while offset < end {
        let (error, mut records) = fetch(s, topic, partition, offset);
        assert_eq!(error, 0, "fetch {topic}-{partition} at {offset}");
        if records.is_empty() {
            assert!(std::time::Instant::now() < deadline, "{topic}-{partition}: nothing readable at {offset}");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        while records.len() >= 61 {
            let len = 12 + i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize;
            if len > records.len() {
                break; // a partial batch at the end of the response
            }
            let b = records.split_to(len);
            let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            offset = base + i64::from(last_delta) + 1;
            batches.push(b);
        }
    }
    batches
}
