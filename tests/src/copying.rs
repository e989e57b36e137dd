//! What the copy tests (`migrate`, `backup` and `restore`) share: topics created, records
//! produced and read back whole (offset, key, value, headers, timestamp), committed offsets,
//! and the configs set on a topic, all through librdkafka.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::Broker;

pub fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

pub async fn create(broker: &Broker, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin.create_topics(&[t], &opts).await.unwrap();
    assert!(created[0].is_ok(), "{topic}: {created:?}");
}

pub async fn produce(broker: &Broker, topic: &str, partitions: i32, from: usize, count: usize, keys: usize) {
    let producer: FutureProducer = config(&broker.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("enable.idempotence", "true")
        .set("compression.type", ["none", "zstd", "gzip"][from % 3])
        .create()
        .unwrap();
    let sends = (from..from + count).map(|i| {
        let producer = producer.clone();
        let key = format!("k{}", i % keys);
        let value = format!("v{i}-{}", "x".repeat(i % 50));
        async move {
            let headers = rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "n", value: Some(&i.to_string()) });
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .partition((i % partitions as usize) as i32)
                .headers(headers);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)
        }
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
}

/// (offset, key, value, headers, timestamp) of everything in a partition.
pub type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>, i64);

pub fn read_partition(broker: &Broker, topic: &str, partition: i32) -> Vec<Rec> {
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", "online-check").create().unwrap();
    let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out: Vec<Rec> = Vec::new();
    let mut quiet = Instant::now();
    while out.last().is_none_or(|r| r.0 < high - 1) && quiet.elapsed() < Duration::from_secs(3) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
            out.push((
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
                m.timestamp().to_millis().unwrap_or(-1),
            ));
            quiet = Instant::now();
        }
    }
    out
}

pub fn high_watermark(broker: &Broker, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = config(&broker.bootstrap()).create().unwrap();
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).map(|w| w.1).unwrap_or(-1)
}

pub fn commit(broker: &Broker, group: &str, offsets: &[(&str, i32, i64, &str)]) {
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p, o, meta) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
        tpl.find_partition(t, *p).unwrap().set_metadata(meta);
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

pub fn committed(broker: &Broker, group: &str, parts: &[(&str, i32)]) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = config(&broker.bootstrap()).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| (e.offset().to_raw().unwrap_or(-1), e.metadata().to_string())).collect()
}

pub async fn set_configs(broker: &Broker, topic: &str) -> BTreeMap<String, String> {
    let admin: AdminClient<DefaultClientContext> = config(&broker.bootstrap()).create().unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts).await.unwrap();
    let r = res.into_iter().next().unwrap().unwrap();
    r.entries.into_iter().filter(|e| !e.is_default).map(|e| (e.name, e.value.unwrap_or_default())).collect()
}
