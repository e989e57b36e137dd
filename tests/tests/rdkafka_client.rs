//! The rdkafka crate (librdkafka built from source) against the real binary: admin topic
//! creation, produce with every codec (keys, values, headers, timestamps), restart, consume
//! and compare every field, list offsets by time, delete records, alter and read a config; and
//! records the broker has dropped from the page cache read back intact.

use std::collections::BTreeMap;
use std::time::Duration;

use chronik_tests::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "rd-events";
const PARTITIONS: i32 = 3;
const PER_CODEC: usize = 40;

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: i64,
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_end_to_end() {
    let mut broker = Broker::start(&[]);
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created =
        admin.create_topics(&[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))], &opts).await.unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    // Produce with every codec; remember what was acknowledged where.
    let base_ts = 1_700_000_000_000i64;
    let mut acked: BTreeMap<(i32, i64), Sent> = BTreeMap::new();
    for (c, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let producer: FutureProducer = config(&broker.bootstrap())
            .set("compression.type", *codec)
            .set("linger.ms", "5")
            .set("acks", "all")
            .create()
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..PER_CODEC {
            let n = c * PER_CODEC + i;
            let sent = Sent {
                key: format!("key-{n}").into_bytes(),
                value: format!("value-{n}-{codec}-{}", "x".repeat(n % 97)).into_bytes(),
                headers: vec![("codec".into(), codec.as_bytes().to_vec()), ("n".into(), n.to_string().into_bytes())],
                timestamp: base_ts + n as i64 * 1000,
            };
            let producer = producer.clone();
            let s = sent.clone();
            pending.push(async move {
                let mut headers = OwnedHeaders::new();
                for (k, v) in &s.headers {
                    headers = headers.insert(Header { key: k, value: Some(v) });
                }
                let record = FutureRecord::to(TOPIC)
                    .partition((n % PARTITIONS as usize) as i32)
                    .key(&s.key)
                    .payload(&s.value)
                    .headers(headers)
                    .timestamp(s.timestamp);
                (producer.send(record, Duration::from_secs(10)).await, s)
            });
        }
        for (result, sent) in futures::future::join_all(pending).await {
            let d = result.unwrap_or_else(|(e, _)| panic!("produce with {codec} failed: {e}"));
            acked.insert((d.partition, d.offset), sent);
        }
    }
    assert_eq!(acked.len(), 5 * PER_CODEC);

    broker.restart();

    // Consume everything back from the beginning and compare every field.
    let consumer: BaseConsumer =
        config(&broker.bootstrap()).set("enable.auto.commit", "false").set("group.id", "rd-check").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got: BTreeMap<(i32, i64), Sent> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < acked.len() && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
                .unwrap_or_default();
            got.insert(
                (m.partition(), m.offset()),
                Sent {
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    timestamp: m.timestamp().to_millis().unwrap(),
                },
            );
        }
    }
    assert_eq!(got.len(), acked.len(), "consumed every acknowledged record");
    assert_eq!(got, acked, "every field of every record matches");
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = got.keys().filter(|(q, _)| *q == p).map(|(_, o)| *o).collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>(), "partition {p}: offsets contiguous from 0");
    }

    // List offsets by time: the first record at or after the timestamp, exactly in an
    // uncompressed batch. In a compressed batch the broker answers the batch's first offset (it
    // does not decompress): never after the answer, never before the first record of the same
    // codec in that partition (each codec has its own producer, so no batch mixes two).
    let codec_of = |s: &Sent| s.headers[0].1.clone();
    for n in [7, 77] {
        let key = format!("key-{n}").into_bytes();
        let (&(probe_p, _), probe) = acked.iter().find(|(_, s)| s.key == key).unwrap();
        let mut times = TopicPartitionList::new();
        times.add_partition_offset(TOPIC, probe_p, Offset::Offset(probe.timestamp)).unwrap();
        let found = consumer.offsets_for_times(times, Duration::from_secs(10)).unwrap();
        let in_partition = |keep: &dyn Fn(&Sent) -> bool| {
            acked.iter().filter(|((p, _), s)| *p == probe_p && keep(s)).map(|((_, o), _)| *o).min().unwrap()
        };
        let want = in_partition(&|s| s.timestamp >= probe.timestamp);
        let floor = if codec_of(probe) == b"none" { want } else { in_partition(&|s| codec_of(s) == codec_of(probe)) };
        let Offset::Offset(got) = found.elements()[0].offset() else { panic!("record {n}: no offset") };
        assert!((floor..=want).contains(&got), "record {n}: got {got}, want {floor}..={want}");
    }

    // Delete records below offset 10 of partition 0; the low watermark moves.
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset(TOPIC, 0, Offset::Offset(10)).unwrap();
    let deleted = admin.delete_records(&cut, &opts).await.unwrap();
    assert_eq!(deleted.elements()[0].error(), Ok(()));
    let (low, high) = consumer.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).unwrap();
    assert_eq!(low, 10);
    assert_eq!(high, acked.keys().filter(|(p, _)| *p == 0).count() as i64);

    // Alter a topic config and read it back.
    let alter = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("retention.ms", "3600000");
    let altered = admin.alter_configs(&[alter], &opts).await.unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let described = admin.describe_configs(&[ResourceSpecifier::Topic(TOPIC)], &opts).await.unwrap();
    let resource = described[0].as_ref().unwrap();
    let retention = resource.get("retention.ms").and_then(|e| e.value.clone());
    assert_eq!(retention.as_deref(), Some("3600000"));
    // An unknown cleanup.policy is refused. (The rdkafka crate reports every AlterConfigs
    // resource as Ok, so the refusal shows as an unchanged config; the other clients check the
    // error.)
    let bad = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("cleanup.policy", "compact,archive");
    admin.alter_configs(&[bad], &opts).await.unwrap();
    let described = admin.describe_configs(&[ResourceSpecifier::Topic(TOPIC)], &opts).await.unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(resource.get("cleanup.policy").and_then(|e| e.value.clone()).as_deref(), Some("delete"));
    assert_eq!(
        resource.get("retention.ms").and_then(|e| e.value.clone()).as_deref(),
        Some("3600000"),
        "a refused change changes nothing"
    );
}

/// On a LogAppendTime topic the broker's clock is every record's timestamp: a lookup by time
/// finds records by when they were appended, whatever their producer wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_on_a_log_append_time_topic() {
    let broker = Broker::start(&[]);
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topic =
        NewTopic::new("append-time", 1, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime");
    assert!(admin.create_topics(&[topic], &opts).await.unwrap()[0].is_ok());
    let producer: FutureProducer = config(&broker.bootstrap()).set("acks", "all").create().unwrap();
    let hour_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 3_600_000;
    for i in 0..3 {
        let value = format!("v{i}");
        let record = FutureRecord::<(), _>::to("append-time").payload(&value).timestamp(hour_ago);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", "append-time").create().unwrap();
    let mut times = TopicPartitionList::new();
    // Half an hour ago: after every producer timestamp, before every append.
    times.add_partition_offset("append-time", 0, Offset::Offset(hour_ago + 1_800_000)).unwrap();
    let found = consumer.offsets_for_times(times, Duration::from_secs(10)).unwrap();
    assert_eq!(found.elements()[0].offset(), Offset::Offset(0), "the first record appended after that time");
}

/// With a page-cache window far smaller than the log, the broker drops old segments from the
/// page cache and serves them with `pread`: a consumer from the beginning still gets every
/// record, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_outside_the_page_cache_window_read_back() {
    let broker = Broker::start(&[
        ("CHRONIK_WAL_SEGMENT_SIZE", "1048576"),
        ("CHRONIK_MAX_REQUEST_SIZE", "1044480"),
        ("CHRONIK_MESSAGE_MAX_BYTES", "262144"),
        ("CHRONIK_WAL_PAGE_CACHE_BYTES", "1048576"),
    ]);
    // Batches stay under the broker's message size limit (a quarter of a segment here).
    let producer: FutureProducer = config(&broker.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.size", "100000")
        .create()
        .unwrap();
    let value = |i: usize| format!("record-{i}-{}", "v".repeat(4000 + i % 50)).into_bytes();
    const COUNT: usize = 2500; // about 10 MB: ten segments, eight of them behind the window
    let mut pending = Vec::new();
    for i in 0..COUNT {
        let producer = producer.clone();
        pending.push(async move {
            let v = value(i);
            producer
                .send(FutureRecord::<(), _>::to("cold").payload(&v), Duration::from_secs(30))
                .await
                .map(|d| d.offset)
                .map_err(|(e, _)| e)
        });
    }
    let offsets: Vec<i64> =
        futures::future::join_all(pending).await.into_iter().map(|r| r.expect("acknowledged")).collect();
    assert_eq!(offsets, (0..COUNT as i64).collect::<Vec<_>>(), "one partition, offsets in send order");

    let dropped = || {
        let (_, metrics) = chronik_tests::http_get(&broker.admin_url("/metrics"));
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("chronik_wal_page_cache_dropped_bytes_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dropped() < 4e6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker dropped only {} bytes from the page cache",
            dropped()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", "cold-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("cold", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut next = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next < COUNT {
        assert!(std::time::Instant::now() < deadline, "consumed only {next} of {COUNT}");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m.unwrap();
        assert_eq!(m.offset(), next as i64);
        assert_eq!(m.payload(), Some(&value(next)[..]), "record {next}");
        next += 1;
    }
}
