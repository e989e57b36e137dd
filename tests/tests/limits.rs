//! What one client may hold of the broker is bounded: connections (in all and per IP), bytes of
//! requests read but not answered, the size of a Fetch response, the metadata of an offset
//! commit. Raw sockets, so each limit is seen exactly where it applies.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes};
use chronik_tests::Broker;
use chronik_tests::raw::{self, call, closed, connect, frame, read_response};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, FetchResponse, MetadataRequest, OffsetCommitRequest,
    OffsetCommitResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

fn api_versions(s: &mut TcpStream, corr: i32) {
    s.write_all(&frame(ApiKey::ApiVersions, 0, corr, &ApiVersionsRequest::default())).unwrap();
}

/// Whether a response arrives on `s` within `wait`.
fn answered_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let got = read_response(s).is_some();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    got
}

#[test]
fn connections_beyond_the_limits_wait_or_are_closed() {
    let b = Broker::start(&[("CHRONIK_MAX_CONNECTIONS", "3"), ("CHRONIK_MAX_CONNECTIONS_PER_IP", "2")]);
    std::thread::sleep(Duration::from_millis(500)); // the harness's readiness probe has closed
    // Two from this IP are served; a third from it is closed at once.
    let (mut first, mut second) = (connect(&b), connect(&b));
    for (s, corr) in [(&mut first, 1), (&mut second, 2)] {
        api_versions(s, corr);
        assert_eq!(read_response(s).map(|(c, _)| c), Some(corr));
    }
    let mut third = connect(&b);
    api_versions(&mut third, 3);
    assert!(closed(&mut third), "a third connection from one IP is closed");
    drop((first, third));
    // Once one closes, the IP may connect again.
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect(&b);
    api_versions(&mut again, 4);
    assert!(answered_within(&mut again, Duration::from_secs(10)), "a freed place is given again");
    drop((second, again));
}

#[test]
fn the_broker_wide_connection_limit_holds_new_clients_back() {
    let b = Broker::start(&[("CHRONIK_MAX_CONNECTIONS", "2")]);
    std::thread::sleep(Duration::from_millis(500)); // the harness's readiness probe has closed
    let mut held = vec![connect(&b), connect(&b)];
    for (i, s) in held.iter_mut().enumerate() {
        api_versions(s, i as i32);
        assert!(read_response(s).is_some());
    }
    let mut waiting = connect(&b); // accepted by the kernel's backlog, not by the broker
    api_versions(&mut waiting, 9);
    assert!(!answered_within(&mut waiting, Duration::from_secs(1)), "not served while two are open");
    held.pop();
    assert!(answered_within(&mut waiting, Duration::from_secs(10)), "served once a connection closes");
}

#[test]
fn request_bytes_in_flight_are_bounded_by_a_budget() {
    let mib: i32 = 1 << 20;
    let b = Broker::start(&[
        ("CHRONIK_MAX_REQUEST_SIZE", &mib.to_string()),
        ("CHRONIK_QUEUED_MAX_REQUEST_BYTES", &mib.to_string()),
    ]);
    // A client announces a 1 MiB request and sends only part of it: its bytes are reserved.
    let mut hog = connect(&b);
    hog.write_all(&mib.to_be_bytes()).unwrap();
    hog.write_all(&[0u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile other connections are not read: the budget is spent.
    let mut other = connect(&b);
    api_versions(&mut other, 1);
    assert!(!answered_within(&mut other, Duration::from_secs(1)), "reading stops while the budget is spent");
    drop(hog);
    assert!(answered_within(&mut other, Duration::from_secs(10)), "the budget comes back when the hog goes");
}

fn batch(records: usize, value_len: usize) -> Bytes {
    raw::batch(&vec![chronik_tests::now_ms(); records], &vec![b'x'; value_len], -1)
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.into()))
}

/// Creates `name` (auto-creation through Metadata) and produces `batches` batches of ~`size` bytes.
fn fill(s: &mut TcpStream, name: &str, batches: usize, size: usize) {
    let meta = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic(name)))]))
        .with_allow_auto_topic_creation(true);
    s.write_all(&frame(ApiKey::Metadata, 9, 0, &meta)).unwrap();
    read_response(s).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..batches {
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic(name)).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(batch(4, size / 4))),
            ]),
        ]);
        s.write_all(&frame(ApiKey::Produce, 8, i as i32, &req)).unwrap();
        let (_, mut body) = read_response(s).unwrap();
        body.advance(4);
        let r = ProduceResponse::decode(&mut body, 8).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "batch {i} produced");
    }
}

/// Record bytes of partition 0 in a Fetch (v11) asking for `request_max` in all and
/// `partition_max` for the partition.
fn fetched_bytes(s: &mut TcpStream, name: &str, request_max: i32, partition_max: i32) -> usize {
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(request_max)
        .with_topics(vec![FetchTopic::default().with_topic(topic(name)).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(partition_max),
        ])]);
    s.write_all(&frame(ApiKey::Fetch, 11, 77, &req)).unwrap();
    let (_, mut body) = read_response(s).unwrap();
    body.advance(4);
    let r = FetchResponse::decode(&mut body, 11).unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.records.as_ref().map_or(0, |r| r.len())
}

#[test]
fn fetch_responses_are_capped_and_always_progress() {
    let b = Broker::start(&[("CHRONIK_FETCH_MAX_BYTES", "300000")]);
    let mut s = connect(&b);
    fill(&mut s, "capped", 10, 100_000); // ten entries of ~100 KB
    let all = fetched_bytes(&mut s, "capped", i32::MAX, i32::MAX);
    assert!((100_000..=300_000).contains(&all), "the broker's fetch_max_bytes caps a greedy fetch: {all}");
    let zero = fetched_bytes(&mut s, "capped", 0, i32::MAX);
    assert!((100_000..200_000).contains(&zero), "max_bytes 0 is one entry (progress), not unlimited: {zero}");
    let small = fetched_bytes(&mut s, "capped", 1000, 1000);
    assert!((100_000..200_000).contains(&small), "a first batch larger than the limits still comes: {small}");
}

#[test]
fn offset_commit_metadata_is_bounded() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    fill(&mut s, "committed", 1, 100);
    let commit = |s: &mut TcpStream, metadata_len: usize| {
        let req = OffsetCommitRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic("committed")).with_partitions(
                vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_metadata(Some(StrBytes::from_string("m".repeat(metadata_len)))),
                ],
            )]);
        let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, 8, &req);
        r.topics[0].partitions[0].error_code
    };
    assert_eq!(commit(&mut s, 4096), 0, "offset.metadata.max.bytes (4096) is allowed");
    assert_eq!(commit(&mut s, 4097), 12, "one byte more: OFFSET_METADATA_TOO_LARGE");
}

/// `__consumer_offsets` is a compacted topic: commits with large metadata on 100 partitions,
/// then thousands of commits to one partition (more than a WAL segment holds). The topic's log
/// rolls into segment files and compaction keeps the latest commit of each partition, so what
/// a restart replays stays small; every offset is there after the restart.
#[test]
fn consumer_offsets_is_compacted_and_replays_every_offset() {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
    let mut b = Broker::start(&[
        ("CHRONIK_WAL_SEGMENT_SIZE", "262144"),
        ("CHRONIK_MAX_REQUEST_SIZE", "258048"),
        ("CHRONIK_MESSAGE_MAX_BYTES", "100000"),
        ("CHRONIK_NUM_PARTITIONS", "100"),
        ("CHRONIK_OFFSETS_TOPIC_SEGMENT_BYTES", "65536"),
        ("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "200"),
        // Compact what has rolled within a second, whatever the dirty ratio.
        ("CHRONIK_LOG_CLEANER_MAX_COMPACTION_LAG_MS", "1000"),
    ]);
    let mut s = connect(&b);
    fill(&mut s, "wide", 1, 100);
    let group = || kafka_protocol::messages::GroupId(StrBytes::from_static_str("wide-readers"));
    let commit = |s: &mut TcpStream, partitions: std::ops::Range<i32>, offset: i64, metadata: &str| {
        let parts = partitions
            .map(|p| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(offset)
                    .with_committed_metadata(Some(StrBytes::from_string(metadata.to_string())))
            })
            .collect();
        let req = OffsetCommitRequest::default()
            .with_group_id(group())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic("wide")).with_partitions(parts)]);
        let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, 8, &req);
        assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0), "{r:?}");
    };
    let big = "m".repeat(4096);
    commit(&mut s, 0..50, 7, &big);
    commit(&mut s, 50..100, 7, &big);
    for i in 0..5000 {
        commit(&mut s, 0..1, 100 + i, "");
    }
    let fetch = |s: &mut TcpStream| {
        let req = OffsetFetchRequest::default().with_group_id(group()).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(topic("wide")).with_partition_indexes((0..100).collect()),
        ]));
        let r: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, 7, &req);
        r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.committed_offset, p.metadata.as_ref().map_or(0, |m| m.len())))
            .collect::<Vec<_>>()
    };
    let expected: Vec<(i64, usize)> = (0..100).map(|p| if p == 0 { (5099, 0) } else { (7, 4096) }).collect();
    assert_eq!(fetch(&mut s), expected);
    // 5,100 commits were written (one record each); compaction leaves the latest of each of the
    // 100 partitions plus the newest commits, not yet rolled into a segment file (64 KiB).
    let records = |s: &mut TcpStream| -> i32 {
        let batches = raw::fetch_batches(s, "__consumer_offsets", 0, 0, 5100);
        batches.iter().map(|b| i32::from_be_bytes(b[57..61].try_into().unwrap())).sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut left = records(&mut s);
    while left > 1000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        left = records(&mut s);
    }
    assert!(left <= 1000, "__consumer_offsets holds {left} of the 5,100 commits after compaction");
    assert_eq!(fetch(&mut s), expected, "compaction changes no committed offset");
    drop(s);
    b.restart();
    let mut s = connect(&b);
    assert_eq!(fetch(&mut s), expected, "every offset replays after a restart");
}
