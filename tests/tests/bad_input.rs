//! Hostile and broken requests over raw sockets. Each gets its documented error or a closed
//! connection; the broker stays up and other connections keep being served; acknowledged data
//! stays readable.

use std::io::Write;
use std::net::TcpStream;

use bytes::{BufMut, Bytes, BytesMut};
use chronik_tests::Broker;
use chronik_tests::raw::{self, closed, connect, frame, read_response};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A healthy request on a fresh connection still works.
fn still_serving(b: &Broker) {
    let mut s = connect(b);
    s.write_all(&frame(ApiKey::Metadata, 9, 7, &MetadataRequest::default().with_topics(None))).unwrap();
    let (corr, mut body) = read_response(&mut s).expect("metadata answered");
    assert_eq!(corr, 7);
    let _ = body.split_to(4);
    let _tagged = body.split_to(1); // response header v1: empty tagged fields
    let meta = MetadataResponse::decode(&mut body, 9).unwrap();
    assert_eq!(meta.brokers.len(), 1);
}

fn batch(value: &[u8]) -> Bytes {
    raw::batch(&[1], value, -1)
}

fn produce(s: &mut TcpStream, topic: &str, records: Bytes, corr: i32) -> ProduceResponse {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]),
    ]);
    s.write_all(&frame(ApiKey::Produce, 8, corr, &req)).unwrap();
    let (got, mut body) = read_response(s).expect("produce answered");
    assert_eq!(got, corr);
    let _ = body.split_to(4);
    ProduceResponse::decode(&mut body, 8).unwrap()
}

#[test]
fn hostile_frames_close_only_their_connection() {
    let b = Broker::start(&[("CHRONIK_MAX_REQUEST_SIZE", "1048576")]);
    // (what, bytes sent) -> the connection must be closed without a response.
    let mut random = vec![0u8; 4096];
    let mut x = 0x2545F4914F6CDD1Du64;
    for byte in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    random[0..4].copy_from_slice(&4092i32.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("2 GB length prefix", [0x7f, 0xff, 0xff, 0xff, 0, 18, 0, 0].to_vec()),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("frame shorter than a header", [0, 0, 0, 3, 0, 18, 0].to_vec()),
        ("unknown api key", [&12i32.to_be_bytes()[..], &[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0]].concat()),
        ("unsupported version of a known api", {
            let mut f = frame(ApiKey::Metadata, 9, 1, &MetadataRequest::default());
            f[6..8].copy_from_slice(&99i16.to_be_bytes());
            f
        }),
        ("body cut short", {
            let mut f =
                frame(ApiKey::Metadata, 9, 1, &MetadataRequest::default().with_topics(Some(vec![Default::default()])));
            let n = f.len() - 3;
            f.truncate(n);
            f[0..4].copy_from_slice(&((n - 4) as i32).to_be_bytes());
            f
        }),
        (
            // Metadata v4 (header v1): client id null, then a topics array claiming 2^31-1
            // entries (over 100 GiB if reserved up front) and 3 bytes of them.
            "array length of 2^31 in 21 bytes",
            [&17i32.to_be_bytes()[..], &[0, 3, 0, 4, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0]].concat(),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = connect(&b);
        s.write_all(&bytes).unwrap();
        assert!(closed(&mut s), "{what}: the connection is closed");
        still_serving(&b);
    }
    // A truncated frame followed by a hang-up.
    let mut s = connect(&b);
    s.write_all(&[0, 0, 1, 0, 0, 18, 0, 3]).unwrap();
    drop(s);
    still_serving(&b);
    assert!(b.log_text().contains("exceeds max_request_size"), "the oversized request is logged with its reason");
}

#[test]
fn unsupported_api_versions_gets_v0_answer() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    // ApiVersions v127: header v2 (flexible), body unknown to us.
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(127)
        .with_correlation_id(42)
        .encode(&mut body, 2)
        .unwrap();
    body.put_slice(&[0, 0, 0]);
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    s.write_all(&f).unwrap();
    let (corr, mut resp) = read_response(&mut s).unwrap();
    assert_eq!(corr, 42);
    let _ = resp.split_to(4);
    let r = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16));
    // The same connection then works at a supported version (KIP-511).
    s.write_all(&frame(ApiKey::ApiVersions, 3, 43, &ApiVersionsRequest::default())).unwrap();
    let (corr, mut resp) = read_response(&mut s).unwrap();
    assert_eq!(corr, 43);
    let _ = resp.split_to(4);
    assert_eq!(ApiVersionsResponse::decode(&mut resp, 3).unwrap().error_code, 0);
}

#[test]
fn bad_batches_get_errors_and_data_stays_readable() {
    let b = Broker::start(&[("CHRONIK_AUTO_CREATE_TOPICS", "false"), ("CHRONIK_MESSAGE_MAX_BYTES", "100000")]);
    let mut s = connect(&b);
    // Auto-creation is off: a produce to a missing topic is UNKNOWN_TOPIC_OR_PARTITION.
    let r = produce(&mut s, "nope", batch(b"x"), 1);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
    // The broker's own offsets topic takes no client records and cannot be deleted: a batch
    // whose records do not decode there would stop committed offsets from being replayed.
    let r = produce(&mut s, "__consumer_offsets", batch(b"not an offset commit"), 12);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    let delete = kafka_protocol::messages::DeleteTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topic_names(vec![TopicName(StrBytes::from_static_str("__consumer_offsets"))]);
    s.write_all(&frame(ApiKey::DeleteTopics, 4, 13, &delete)).unwrap();
    let (got, mut body) = read_response(&mut s).expect("delete topics answered");
    assert_eq!(got, 13);
    let _ = body.split_to(5); // correlation id, empty tagged fields (response header v1)
    let r = kafka_protocol::messages::DeleteTopicsResponse::decode(&mut body, 4).unwrap();
    assert_eq!(r.responses[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let alter = kafka_protocol::messages::AlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("__consumer_offsets"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1"))),
            ]),
    ]);
    s.write_all(&frame(ApiKey::AlterConfigs, 1, 14, &alter)).unwrap();
    let (got, mut body) = read_response(&mut s).expect("alter configs answered");
    assert_eq!(got, 14);
    let _ = body.split_to(4);
    let r = kafka_protocol::messages::AlterConfigsResponse::decode(&mut body, 1).unwrap();
    assert_eq!(r.responses[0].error_code, 17, "the offsets topic keeps its retention");
    // Produce v13 names topics by id: an unknown id is UNKNOWN_TOPIC_ID.
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default()
            .with_topic_id(uuid::Uuid::from_u128(0x1234))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch(b"x")))]),
    ]);
    s.write_all(&frame(ApiKey::Produce, 13, 11, &req)).unwrap();
    let (got, mut body) = read_response(&mut s).expect("produce v13 answered");
    assert_eq!(got, 11);
    let _ = body.split_to(5); // correlation id, empty tagged fields (response header v1)
    let r = ProduceResponse::decode(&mut body, 13).unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 100, "UNKNOWN_TOPIC_ID");
    // Create the topic through CreateTopics.
    let create = kafka_protocol::messages::CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("bad")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    s.write_all(&frame(ApiKey::CreateTopics, 5, 2, &create)).unwrap();
    read_response(&mut s).unwrap();
    let good = produce(&mut s, "bad", batch(b"kept"), 3);
    assert_eq!(good.responses[0].partition_responses[0].error_code, 0);
    // A flipped byte inside the batch: CORRUPT_MESSAGE.
    let mut corrupt = batch(b"corrupt").to_vec();
    let n = corrupt.len();
    corrupt[n - 2] ^= 0xff;
    let r = produce(&mut s, "bad", corrupt.into(), 4);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 2, "CORRUPT_MESSAGE");
    // Too large for max.message.bytes: MESSAGE_TOO_LARGE.
    let r = produce(&mut s, "bad", batch(&vec![1u8; 200_000]), 5);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 10, "MESSAGE_TOO_LARGE");
    // Not a record batch at all.
    let r = produce(
        &mut s,
        "bad",
        Bytes::from_static(b"definitely not a batch, but long enough to have a header......."),
        6,
    );
    assert_ne!(r.responses[0].partition_responses[0].error_code, 0);
    // What was acknowledged is still there, and only that.
    let mut c = connect(&b);
    let fetch = kafka_protocol::messages::FetchRequest::default()
        .with_max_wait_ms(100)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            kafka_protocol::messages::fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("bad")))
                .with_partitions(vec![
                    kafka_protocol::messages::fetch_request::FetchPartition::default()
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    c.write_all(&frame(ApiKey::Fetch, 11, 9, &fetch)).unwrap();
    let (_, mut resp) = read_response(&mut c).unwrap();
    let _ = resp.split_to(4);
    let f = kafka_protocol::messages::FetchResponse::decode(&mut resp, 11).unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 1));
    let mut records = p.records.clone().unwrap();
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap();
    let values: Vec<Bytes> = sets.iter().flat_map(|s| s.records.iter().filter_map(|r| r.value.clone())).collect();
    assert_eq!(values, vec![Bytes::from_static(b"kept")]);
}

/// A topic may allow batches larger than a WAL segment can hold; such a produce is refused
/// with MESSAGE_TOO_LARGE instead of reaching the WAL (whose refusal would stop the
/// partition's Raft group), and the partition keeps taking produces.
#[test]
fn a_batch_larger_than_a_wal_segment_is_refused_and_the_partition_lives_on() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let b = Broker::start(&[
        ("CHRONIK_WAL_SEGMENT_SIZE", "262144"),
        ("CHRONIK_MAX_REQUEST_SIZE", "258048"),
        ("CHRONIK_MESSAGE_MAX_BYTES", "100000"),
    ]);
    let mut s = connect(&b);
    let create = kafka_protocol::messages::CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("big")))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("max.message.bytes"))
                    .with_value(Some(StrBytes::from_static_str("10000000"))),
            ]),
    ]);
    s.write_all(&frame(ApiKey::CreateTopics, 5, 1, &create)).unwrap();
    read_response(&mut s).unwrap();
    // Config validation keeps max_request_size within a segment, so a batch the WAL could not
    // hold never reaches the partition: its request is refused at the frame.
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default().with_name(TopicName(StrBytes::from_static_str("big"))).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch(&vec![3u8; 300_000]))),
        ]),
    ]);
    s.write_all(&frame(ApiKey::Produce, 8, 2, &req)).unwrap();
    assert!(closed(&mut s), "a request above max_request_size closes its connection");
    let mut s = connect(&b);
    let r = produce(&mut s, "big", batch(b"small"), 3);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "the partition still takes produces");
}

/// An idempotent batch must come from a producer id InitProducerId handed out.
#[test]
fn a_producer_id_never_allocated_is_refused() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    let create = kafka_protocol::messages::CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("pids")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    s.write_all(&frame(ApiKey::CreateTopics, 5, 1, &create)).unwrap();
    read_response(&mut s).unwrap();
    let r = produce(&mut s, "pids", raw::batch(&[1], b"forged", 4242), 2);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 59, "UNKNOWN_PRODUCER_ID");
    let r = produce(&mut s, "pids", batch(b"plain"), 3);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "a non-idempotent batch is fine");
}
