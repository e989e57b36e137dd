//! Log compaction against the real binary with the rdkafka crate: a compacted topic with many
//! updates per key and tombstones, read by a new consumer (the latest value of each key at the
//! offset it was acknowledged at, and the tombstones still inside `delete.retention.ms`); and a
//! state store restored from a compacted changelog topic as Kafka Streams restores one, equal
//! to the map a reader of the whole history builds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chronik_tests::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// What a consumer reads: (offset, key, value or None for a tombstone).
type Read = Vec<(i64, String, Option<String>)>;

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

async fn create_compacted(broker: &Broker, topic: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let mut t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin.create_topics(&[t], &opts).await.unwrap();
    assert!(created[0].is_ok(), "{topic}: {created:?}");
}

/// Produces `(key, value)` updates in order (one codec per round of `round` records); returns
/// the offset each was acknowledged at.
async fn produce(broker: &Broker, topic: &str, updates: &[(String, Option<String>)], round: usize) -> Vec<i64> {
    let mut offsets = Vec::new();
    for (r, chunk) in updates.chunks(round).enumerate() {
        let codec = ["none", "gzip", "snappy", "lz4", "zstd"][r % 5];
        let producer: FutureProducer = config(&broker.bootstrap())
            .set("compression.type", codec)
            .set("linger.ms", "2")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let sends = chunk.iter().map(|(k, v)| {
            let producer = producer.clone();
            async move {
                let mut record = FutureRecord::<String, String>::to(topic).key(k);
                if let Some(v) = v {
                    record = record.payload(v);
                }
                producer.send(record, Duration::from_secs(10)).await
            }
        });
        for d in futures::future::join_all(sends).await {
            offsets.push(d.unwrap_or_else(|(e, _)| panic!("{topic} with {codec}: {e}")).offset);
        }
    }
    offsets
}

/// The last write of each key (by the offset it was acknowledged at), in offset order: what a
/// fully compacted log holds while its tombstones are still kept.
fn latest_per_key(offsets: &[i64], updates: &[(String, Option<String>)]) -> Read {
    let mut latest: BTreeMap<&String, (i64, &Option<String>)> = BTreeMap::new();
    for (o, (k, v)) in offsets.iter().zip(updates) {
        if latest.get(k).is_none_or(|(seen, _)| seen < o) {
            latest.insert(k, (*o, v));
        }
    }
    let mut out: Read = latest.into_iter().map(|(k, (o, v))| (o, k.clone(), v.clone())).collect();
    out.sort();
    out
}

/// Everything a new consumer reads from the beginning up to the high watermark.
fn read_all(broker: &Broker, topic: &str) -> Read {
    let consumer: BaseConsumer = config(&broker.bootstrap())
        .set("group.id", "compaction-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    // Until the last offset is read, or nothing more comes (compaction may have removed the
    // last records, leaving an empty batch at the end).
    let mut quiet_since = Instant::now();
    while out.last().is_none_or(|(o, _, _)| *o < high - 1) && quiet_since.elapsed() < Duration::from_secs(2) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            out.push((m.offset(), key, m.payload().map(|p| String::from_utf8(p.to_vec()).unwrap())));
            quiet_since = Instant::now();
        }
    }
    out
}

/// Reads until `done` holds for what is read (compaction runs in the background).
fn read_until(broker: &Broker, topic: &str, done: impl Fn(&Read) -> bool) -> Read {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let read = read_all(broker, topic);
        if done(&read) || Instant::now() > deadline {
            return read;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A deterministic pseudo-random sequence (no dependency for it).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

const FAST_CLEANER: &[(&str, &str)] = &[("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "200")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_reads_the_latest_value_per_key_and_recent_tombstones() {
    let mut broker = Broker::start(FAST_CLEANER);
    let topic = "compacted-latest";
    create_compacted(
        &broker,
        topic,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "3600000"),
        ],
    )
    .await;
    // 40 keys, 20 updates each; then k0..k7 deleted, k8 deleted and set again.
    let mut updates: Vec<(String, Option<String>)> = Vec::new();
    for round in 0..20 {
        for k in 0..40 {
            updates.push((format!("k{k}"), Some(format!("v{round}-{k}-{}", "x".repeat(k * 3)))));
        }
    }
    for k in 0..9 {
        updates.push((format!("k{k}"), None));
    }
    updates.push(("k8".into(), Some("back".into())));
    let offsets = produce(&broker, topic, &updates, 100).await;
    let expected = latest_per_key(&offsets, &updates);

    let read = read_until(&broker, topic, |r| r == &expected);
    assert_eq!(read, expected, "exactly the latest record of each key, at its acknowledged offset");
    assert_eq!(read.iter().filter(|(_, _, v)| v.is_none()).count(), 8, "the 8 tombstones are still read");

    // A record without a key cannot go to a compacted topic (as in Kafka).
    let producer: FutureProducer = config(&broker.bootstrap()).set("acks", "all").create().unwrap();
    let refused = producer.send(FutureRecord::<(), str>::to(topic).payload("no key"), Duration::from_secs(10)).await;
    assert!(matches!(refused, Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _))), "{refused:?}");

    broker.restart();
    assert_eq!(read_all(&broker, topic), expected, "the same after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_store_restored_from_a_compacted_changelog_equals_the_history() {
    let broker = Broker::start(FAST_CLEANER);
    let topic = "store-changelog";
    // The configs Kafka Streams gives a changelog topic, with times shortened; tombstones
    // expire at once, so deleted keys leave no trace.
    create_compacted(
        &broker,
        topic,
        &[
            ("cleanup.policy", "compact"),
            ("min.compaction.lag.ms", "0"),
            ("segment.bytes", "65536"),
            ("segment.ms", "100"),
            ("message.timestamp.type", "CreateTime"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    )
    .await;
    let mut rng = Lcg(42);
    let mut updates: Vec<(String, Option<String>)> = (0..3000)
        .map(|i| {
            let key = format!("word-{}", rng.next(150));
            let value = (rng.next(10) != 0).then(|| format!("count-{i}"));
            (key, value)
        })
        .collect();
    // The log ends with a delete: compaction removes it, and a reader must still reach the end.
    updates.push(("word-0".into(), None));
    produce(&broker, topic, &updates[..3000], 500).await;
    produce(&broker, topic, &updates[3000..], 1).await; // a batch of its own
    let mut history: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &updates {
        match v {
            Some(v) => history.insert(k.clone(), v.clone()),
            None => history.remove(k),
        };
    }
    let restore = |read: &Read| {
        let mut store = BTreeMap::new();
        for (_, k, v) in read {
            match v {
                Some(v) => store.insert(k.clone(), v.clone()),
                None => store.remove(k),
            };
        }
        store
    };
    let read = read_until(&broker, topic, |r| r.len() == history.len());
    assert_eq!(read.len(), history.len(), "compacted down to one record per live key");
    assert_eq!(restore(&read), history, "the restored store is the store the full history builds");
    let offsets: Vec<i64> = read.iter().map(|(o, _, _)| *o).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase, with gaps");
    // Fetching batch by batch reaches the high watermark: the batch that held the removed last
    // record is still there, empty, to step over.
    let mut s = chronik_tests::raw::connect(&broker);
    let batches = chronik_tests::raw::fetch_batches(&mut s, topic, 0, 0, updates.len() as i64);
    let last = batches.last().expect("batches");
    let last_offset = i64::from_be_bytes(last[0..8].try_into().unwrap())
        + i64::from(i32::from_be_bytes(last[23..27].try_into().unwrap()));
    assert_eq!(last_offset, updates.len() as i64 - 1, "the last batch ends at the log end");
    assert_eq!(i32::from_be_bytes(last[57..61].try_into().unwrap()), 0, "and holds no record");
}

/// Killed after a pass wrote its new file and before the files it replaces were dropped: at
/// the restart the newer file wins, the old ones go, and every key reads its latest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_writing_a_compacted_file_and_dropping_what_it_replaces() {
    let mut broker = Broker::start(&[
        ("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "200"),
        ("CHRONIK_TEST_CRASH_AT", "compact.file_written"),
    ]);
    let topic = "compacted-crash";
    create_compacted(
        &broker,
        topic,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            // Nothing is compacted until everything is acknowledged.
            ("min.compaction.lag.ms", "3000"),
        ],
    )
    .await;
    let updates: Vec<(String, Option<String>)> =
        (0..300).map(|i| (format!("k{}", i % 30), (i % 11 != 0).then(|| format!("v{i}")))).collect();
    let offsets = produce(&broker, topic, &updates, 100).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.is_running() {
        assert!(Instant::now() < deadline, "the broker did not reach the kill point:\n{}", broker.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.env.retain(|(k, _)| k != "CHRONIK_TEST_CRASH_AT");
    let files_before = segment_files(&broker);
    assert!(files_before.iter().any(|(_, _, generation)| *generation > 0), "the pass wrote its file: {files_before:?}");
    broker.start_again();

    let expected = latest_per_key(&offsets, &updates);
    // Right after the restart: the files the pass replaced are gone (one file per span), every
    // key's latest record is there, and replaying what is read gives the same state.
    let replaced: Vec<(String, u64, u32)> = files_before
        .iter()
        .filter(|(group, base, generation)| {
            *generation == 0 && files_before.iter().any(|(gr, b, g)| gr == group && b == base && *g > 0)
        })
        .cloned()
        .collect();
    assert!(!replaced.is_empty(), "the crash left a file beside its replacement: {files_before:?}");
    // The replica opens its files as the node reconciles its partitions, which may finish
    // just after the node reports ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files_after = segment_files(&broker);
        if replaced.iter().all(|r| !files_after.contains(r)) {
            break;
        }
        assert!(Instant::now() < deadline, "replaced files are gone: {files_after:?} (before: {files_before:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = read_all(&broker, topic);
    assert!(expected.iter().all(|e| first.contains(e)), "every key's latest record survives the crash");
    let state = |read: &Read| -> BTreeMap<String, Option<String>> {
        read.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect()
    };
    assert_eq!(state(&first), state(&expected));
    // And compaction goes on from there.
    let read = read_until(&broker, topic, |r| r == &expected);
    assert_eq!(read, expected);
}

/// (base offset, generation) of every partition segment file of the broker.
/// (partition group, base offset, generation) of every segment file: other partitions (the
/// group coordinator's `__consumer_offsets`) have files of their own, with the same names.
fn segment_files(broker: &Broker) -> Vec<(String, u64, u32)> {
    let mut out = Vec::new();
    for group in std::fs::read_dir(broker.data.path().join("data/partitions")).unwrap().flatten() {
        let group_name = group.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(group.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".seg") else { continue };
            let (base, generation) = stem.split_once('.').unwrap_or((stem, "0"));
            out.push((group_name.clone(), base.parse().unwrap(), generation.parse().unwrap()));
        }
    }
    out.sort();
    out
}
