//! Where a copy reads from ([`Source`]): a running Kafka-compatible broker ([`KafkaSource`],
//! Kafka APIs only) or a backup archive (`archive.rs`). Also the Kafka-side helpers the
//! target side shares: metadata, connections per broker, ListOffsets.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetFetchRequest,
    OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::kafka::{KafkaConn, kafka_err};
use crate::error::MigrateError;
use crate::v1::legacy::parse_message_set;
use crate::v2::{BatchFields, NewRecord, encode_batch};

/// Most bytes asked of one fetch.
const FETCH_BYTES: i32 = 4 << 20;
/// Kafka's "a topic config set on the topic" config source.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const RESOURCE_TOPIC: i8 = 2;

/// What a source holds from a position on.
pub(crate) enum Read {
    /// Whole v2 batches, the first ending at or after the position (it may begin before it),
    /// in offset order.
    Batches(Vec<Bytes>),
    /// Nothing stored from the position up to the partition's end (compacted or expired).
    Drained,
    /// No usable answer now (a leader moving); the next pass tries again.
    Stalled,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Commit {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

/// What a copy reads: topics, their configs, each partition's records with their offsets,
/// and the groups' committed offsets. Internal topics (`__*`) are not listed: committed
/// offsets travel as [`Commit`]s.
pub(crate) trait Source {
    /// Each topic and its partition count.
    async fn topics(&mut self) -> Result<BTreeMap<String, usize>, MigrateError>;
    /// The configs set on `topic` (not defaults).
    async fn configs(&mut self, topic: &str) -> Result<BTreeMap<String, String>, MigrateError>;
    /// The partition's log start offset and end (its next offset).
    async fn bounds(&mut self, topic: &str, partition: i32) -> Result<(i64, i64), MigrateError>;
    async fn read(&mut self, topic: &str, partition: i32, from: i64) -> Result<Read, MigrateError>;
    async fn commits(&mut self) -> Result<Vec<Commit>, MigrateError>;
    /// Drops what a failure may have broken (connections), so the next call starts afresh.
    fn reset(&mut self);
}

/// A Kafka cluster as Metadata describes it.
pub(crate) struct Cluster {
    pub brokers: BTreeMap<i32, String>,
    /// topic -> leaders of its partitions, by partition index.
    pub topics: BTreeMap<String, Vec<i32>>,
}

pub(crate) async fn metadata(conn: &mut KafkaConn) -> Result<Cluster, MigrateError> {
    let resp: MetadataResponse = conn.call(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None)).await?;
    let brokers =
        resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect::<BTreeMap<_, _>>();
    let mut topics = BTreeMap::new();
    for t in resp.topics {
        let Some(name) = t.name else { continue };
        if t.is_internal || name.starts_with("__") {
            continue;
        }
        let mut leaders = vec![-1; t.partitions.len()];
        for p in &t.partitions {
            if let Some(slot) = usize::try_from(p.partition_index).ok().and_then(|i| leaders.get_mut(i)) {
                *slot = p.leader_id.0;
            }
        }
        topics.insert(name.to_string(), leaders);
    }
    Ok(Cluster { brokers, topics })
}

/// One connection per broker address, opened on first use.
#[derive(Default)]
pub(crate) struct Conns(BTreeMap<String, KafkaConn>);

impl Conns {
    pub async fn to(&mut self, addr: &str) -> Result<&mut KafkaConn, MigrateError> {
        if !self.0.contains_key(addr) {
            let c = KafkaConn::connect(addr).await?;
            self.0.insert(addr.to_string(), c);
        }
        Ok(self.0.get_mut(addr).expect("inserted"))
    }

    pub fn leader<'a>(cluster: &'a Cluster, topic: &str, partition: i32) -> Result<&'a String, MigrateError> {
        let leader = cluster.topics.get(topic).and_then(|l| l.get(partition as usize)).copied().unwrap_or(-1);
        cluster.brokers.get(&leader).ok_or_else(|| kafka_err("metadata", format!("{topic}-{partition} has no leader")))
    }

    /// The address of `group`'s coordinator, asked of `bootstrap`.
    pub async fn coordinator(&mut self, bootstrap: &str, group: &str) -> Result<String, MigrateError> {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
        let resp: FindCoordinatorResponse = self.to(bootstrap).await?.call(ApiKey::FindCoordinator, 0, &req).await?;
        if resp.error_code != 0 {
            return Err(kafka_err(bootstrap, format!("FindCoordinator {group}: error code {}", resp.error_code)));
        }
        Ok(format!("{}:{}", resp.host, resp.port))
    }
}

/// ListOffsets at `timestamp` (-2 earliest, -1 latest).
pub(crate) async fn list_offset(
    conn: &mut KafkaConn,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<i64, MigrateError> {
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default().with_name(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(
            vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp)],
        ),
    ]);
    let resp: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 1, &req).await?;
    let p = resp.topics.first().and_then(|t| t.partitions.first());
    match p {
        Some(p) if p.error_code == 0 => Ok(p.offset),
        Some(p) => Err(kafka_err(conn.addr(), format!("ListOffsets {topic}-{partition}: error code {}", p.error_code))),
        None => Err(kafka_err(conn.addr(), format!("ListOffsets {topic}-{partition}: empty answer"))),
    }
}

/// Kafka v2 batches from a fetch answer (or a backup's chunk), whole ones only, those ending
/// at or after `next` (the first may begin before it: a log start moved by DeleteRecords
/// can fall inside a batch, and a broker serves that batch whole); legacy message sets become
/// v2 batches with the same offsets.
pub(crate) fn batches_from(records: &Bytes, next: i64) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 17 <= records.len() {
        let base = i64::from_be_bytes(records[pos..pos + 8].try_into().expect("8"));
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4"));
        if len < 5 {
            return Err(format!("the entry at offset {base} claims a length of {len}"));
        }
        let end = match usize::try_from(len).ok().and_then(|l| (pos + 12).checked_add(l)) {
            Some(end) if end <= records.len() => end,
            _ => break, // the answer's size limit cut the last batch
        };
        let bytes = records.slice(pos..end);
        pos = end;
        if bytes[16] >= 2 {
            let h = chronik_cluster::BatchHeader::parse(&bytes).map_err(|e| format!("offset {base}: {e}"))?;
            if h.last_offset() >= next {
                out.push(bytes);
            }
        } else if base >= next {
            // A legacy entry: one message (a wrapper of a compressed set is refused).
            let messages = parse_message_set(&bytes)?;
            let log_append_time = messages.first().is_some_and(|m| m.log_append_time);
            let records: Vec<NewRecord> = messages
                .into_iter()
                .map(|m| NewRecord {
                    offset: base,
                    timestamp: m.timestamp,
                    key: m.key,
                    value: m.value,
                    headers: vec![],
                })
                .collect();
            out.push(encode_batch(BatchFields { log_append_time, ..BatchFields::PLAIN }, &records).into());
        }
    }
    Ok(out)
}

/// A running Kafka-compatible broker, through `bootstrap`.
pub(crate) struct KafkaSource {
    bootstrap: String,
    conns: Conns,
    /// As of the last [`Source::topics`].
    cluster: Cluster,
}

impl KafkaSource {
    pub fn new(bootstrap: &str) -> KafkaSource {
        KafkaSource {
            bootstrap: bootstrap.to_string(),
            conns: Conns::default(),
            cluster: Cluster { brokers: BTreeMap::new(), topics: BTreeMap::new() },
        }
    }

    async fn leader_conn(&mut self, topic: &str, partition: i32) -> Result<&mut KafkaConn, MigrateError> {
        let addr = Conns::leader(&self.cluster, topic, partition)?.clone();
        self.conns.to(&addr).await
    }
}

impl Source for KafkaSource {
    async fn topics(&mut self) -> Result<BTreeMap<String, usize>, MigrateError> {
        let bootstrap = self.bootstrap.clone();
        self.cluster = metadata(self.conns.to(&bootstrap).await?).await?;
        Ok(self.cluster.topics.iter().map(|(t, leaders)| (t.clone(), leaders.len())).collect())
    }

    async fn configs(&mut self, topic: &str) -> Result<BTreeMap<String, String>, MigrateError> {
        let leader = Conns::leader(&self.cluster, topic, 0).cloned().unwrap_or_else(|_| self.bootstrap.clone());
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configuration_keys(None),
        ]);
        let resp: DescribeConfigsResponse =
            self.conns.to(&leader).await?.call(ApiKey::DescribeConfigs, 1, &req).await?;
        let mut out = BTreeMap::new();
        for r in resp.results {
            for c in r.configs.into_iter().filter(|c| c.config_source == DYNAMIC_TOPIC_CONFIG) {
                if let Some(v) = c.value {
                    out.insert(c.name.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn bounds(&mut self, topic: &str, partition: i32) -> Result<(i64, i64), MigrateError> {
        let conn = self.leader_conn(topic, partition).await?;
        Ok((list_offset(conn, topic, partition, -2).await?, list_offset(conn, topic, partition, -1).await?))
    }

    async fn read(&mut self, topic: &str, partition: i32, from: i64) -> Result<Read, MigrateError> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES)
            .with_topics(vec![
                FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(
                    vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(from)
                            .with_partition_max_bytes(FETCH_BYTES),
                    ],
                ),
            ]);
        let conn = self.leader_conn(topic, partition).await?;
        let addr = conn.addr().to_string();
        let resp: FetchResponse = conn.call(ApiKey::Fetch, 4, &req).await?;
        let Some(data) = resp.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next()) else {
            return Ok(Read::Stalled);
        };
        if data.error_code != 0 {
            return Err(kafka_err(
                &addr,
                format!("Fetch {topic}-{partition} at {from}: error code {}", data.error_code),
            ));
        }
        let records = data.records.unwrap_or_default();
        if records.is_empty() {
            return Ok(Read::Drained);
        }
        let batches =
            batches_from(&records, from).map_err(|why| kafka_err(&addr, format!("{topic}-{partition}: {why}")))?;
        Ok(if batches.is_empty() { Read::Stalled } else { Read::Batches(batches) })
    }

    async fn commits(&mut self) -> Result<Vec<Commit>, MigrateError> {
        let mut groups = Vec::new();
        let brokers: Vec<String> = self.cluster.brokers.values().cloned().collect();
        for addr in brokers {
            let resp: ListGroupsResponse =
                self.conns.to(&addr).await?.call(ApiKey::ListGroups, 0, &ListGroupsRequest::default()).await?;
            groups.extend(resp.groups.into_iter().map(|g| g.group_id.to_string()));
        }
        groups.sort();
        groups.dedup();
        let bootstrap = self.bootstrap.clone();
        let mut out = Vec::new();
        for group in groups {
            let coordinator = self.conns.coordinator(&bootstrap, &group).await?;
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(None);
            let resp: OffsetFetchResponse =
                self.conns.to(&coordinator).await?.call(ApiKey::OffsetFetch, 2, &req).await?;
            for t in resp.topics {
                let topic = t.name.to_string();
                for p in t.partitions.into_iter().filter(|p| p.error_code == 0 && p.committed_offset >= 0) {
                    out.push(Commit {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        metadata: p.metadata.as_ref().map(|m| m.to_string()),
                    });
                }
            }
        }
        Ok(out)
    }

    fn reset(&mut self) {
        self.conns = Conns::default();
    }
}
