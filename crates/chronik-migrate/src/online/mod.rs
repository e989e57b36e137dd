//! `chronik-server migrate --from SOURCE --to TARGET --to-admin TARGET_ADMIN`: the blue-green
//! path. Copies topics (partition counts and the configs set on them), every record from the
//! source's log start with its offset, and every group's committed offsets from any running
//! Kafka-compatible broker into a running Chronik, then keeps following new writes until told
//! to stop. It speaks only Kafka APIs to the source. Batches go into the target through its
//! admin API's import endpoint, which keeps their offsets (gaps of compacted topics included).
//!
//! All progress lives in the target: each round resumes every partition at the target's own
//! next offset, and the import refuses batches before it, so a restart after a crash of the
//! tool or of either broker copies nothing twice.

mod http;
mod kafka;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::error::MigrateError;
use crate::v1::legacy::parse_message_set;
use crate::v2::{BatchFields, NewRecord, empty_batch, encode_batch};
use kafka::{KafkaConn, kafka_err};

/// Most bytes asked of one fetch, and sent in one import.
const FETCH_BYTES: i32 = 4 << 20;
const IMPORT_BYTES: usize = 1 << 20;
/// Kafka's "a topic config set on the topic" config source.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const RESOURCE_TOPIC: i8 = 2;
const RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct OnlineOptions {
    /// The source's bootstrap address (host:port).
    pub from: String,
    /// The target Chronik's Kafka address and admin API address.
    pub to: String,
    pub to_admin: String,
    /// Stop after the first pass has reached the source's end.
    pub once: bool,
    /// Pause between passes while following.
    pub poll: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OnlineReport {
    pub passes: u64,
    pub topics_created: Vec<String>,
    /// Per topic: configs set on the source that the target does not support, with why.
    pub dropped_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub batches: u64,
    pub bytes: u64,
    /// Committed offsets written to the target (a changed commit is written again).
    pub commits: u64,
    /// Per `topic-partition`: the next offset on the target when the copy stopped.
    pub partitions: BTreeMap<String, u64>,
    /// Per `topic-partition`: why its copy failed in the last pass (the others went on).
    pub errors: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// A source or target partition: leader and partition count from Metadata.
struct Cluster {
    brokers: BTreeMap<i32, String>,
    /// topic -> leaders of its partitions, by partition index.
    topics: BTreeMap<String, Vec<i32>>,
}

async fn metadata(conn: &mut KafkaConn) -> Result<Cluster, MigrateError> {
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
struct Conns(BTreeMap<String, KafkaConn>);

impl Conns {
    async fn to(&mut self, addr: &str) -> Result<&mut KafkaConn, MigrateError> {
        if !self.0.contains_key(addr) {
            let c = KafkaConn::connect(addr).await?;
            self.0.insert(addr.to_string(), c);
        }
        Ok(self.0.get_mut(addr).expect("inserted"))
    }

    fn leader<'a>(cluster: &'a Cluster, topic: &str, partition: i32) -> Result<&'a String, MigrateError> {
        let leader = cluster.topics.get(topic).and_then(|l| l.get(partition as usize)).copied().unwrap_or(-1);
        cluster.brokers.get(&leader).ok_or_else(|| kafka_err("metadata", format!("{topic}-{partition} has no leader")))
    }
}

/// ListOffsets at `timestamp` (-2 earliest, -1 latest).
async fn list_offset(conn: &mut KafkaConn, topic: &str, partition: i32, timestamp: i64) -> Result<i64, MigrateError> {
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

/// The configs set on a source topic (not defaults).
async fn topic_configs(conn: &mut KafkaConn, topic: &str) -> Result<BTreeMap<String, String>, MigrateError> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None),
    ]);
    let resp: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 1, &req).await?;
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

/// Kafka v2 batches from a fetch answer, whole ones only, from `next` on; legacy message sets
/// become v2 batches with the same offsets.
fn batches_from(records: &Bytes, next: i64) -> Result<Vec<Bytes>, String> {
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
            if h.last_offset() < next {
                continue;
            }
            if base < next {
                return Err(format!("the batch {base}..={} straddles the copy's position {next}", h.last_offset()));
            }
            out.push(bytes);
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

struct Copier {
    opts: OnlineOptions,
    source: Conns,
    target: Conns,
    /// Commits last written to the target: (group, topic, partition) -> (offset, metadata).
    copied_commits: BTreeMap<(String, String, i32), (i64, Option<String>)>,
    report: OnlineReport,
    /// Set once told to stop: the pass in progress ends after its current partition.
    stopping: Arc<AtomicBool>,
}

impl Copier {
    async fn pass(&mut self) -> Result<(), MigrateError> {
        let from = self.opts.from.clone();
        let to = self.opts.to.clone();
        let src = metadata(self.source.to(&from).await?).await?;
        let tgt = metadata(self.target.to(&to).await?).await?;
        for (topic, leaders) in &src.topics {
            match tgt.topics.get(topic) {
                None => self.create_topic(&src, topic, leaders.len()).await?,
                Some(t) if t.len() < leaders.len() => {
                    let w = format!("{topic}: {} partitions on the source, {} on the target", leaders.len(), t.len());
                    if !self.report.warnings.contains(&w) {
                        self.report.warnings.push(w);
                    }
                }
                Some(_) => {}
            }
        }
        // Leaders of topics created just now.
        let tgt = metadata(self.target.to(&to).await?).await?;
        for (topic, leaders) in &src.topics {
            let on_target = tgt.topics.get(topic).map_or(0, Vec::len);
            for partition in 0..leaders.len().min(on_target) as i32 {
                if self.stopping.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let name = format!("{topic}-{partition}");
                match self.copy_partition(&src, &tgt, topic, partition).await {
                    Ok(()) => {
                        self.report.errors.remove(&name);
                    }
                    Err(e) => {
                        tracing::warn!("copying {name}: {e}");
                        self.report.errors.insert(name, e.to_string());
                        // A broken connection is opened afresh for the next partition.
                        self.source = Conns::default();
                        self.target = Conns::default();
                    }
                }
            }
        }
        self.copy_commits(&src, &tgt).await?;
        self.report.passes += 1;
        Ok(())
    }

    async fn create_topic(&mut self, src: &Cluster, topic: &str, partitions: usize) -> Result<(), MigrateError> {
        let leader = Conns::leader(src, topic, 0).cloned().unwrap_or_else(|_| self.opts.from.clone());
        let configs = topic_configs(self.source.to(&leader).await?, topic).await?;
        let (kept, dropped) = crate::supported_configs(configs);
        if !dropped.is_empty() {
            self.report.dropped_configs.insert(topic.to_string(), dropped);
        }
        let kept: Vec<CreatableTopicConfig> = kept
            .into_iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k))
                    .with_value(Some(StrBytes::from_string(v)))
            })
            .collect();
        let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions as i32)
                .with_replication_factor(-1)
                .with_configs(kept),
        ]);
        let to = self.opts.to.clone();
        let resp: CreateTopicsResponse = self.target.to(&to).await?.call(ApiKey::CreateTopics, 2, &req).await?;
        match resp.topics.first().map(|t| t.error_code) {
            Some(0) | Some(36) => {} // created, or already there (TOPIC_ALREADY_EXISTS)
            other => return Err(kafka_err(&to, format!("creating {topic}: error code {other:?}"))),
        }
        self.report.topics_created.push(topic.to_string());
        Ok(())
    }

    async fn copy_partition(
        &mut self,
        src: &Cluster,
        tgt: &Cluster,
        topic: &str,
        partition: i32,
    ) -> Result<(), MigrateError> {
        let src_addr = Conns::leader(src, topic, partition)?.clone();
        let tgt_addr = Conns::leader(tgt, topic, partition)?.clone();
        let conn = self.source.to(&src_addr).await?;
        let (start, end) =
            (list_offset(conn, topic, partition, -2).await?, list_offset(conn, topic, partition, -1).await?);
        let mut target_next = list_offset(self.target.to(&tgt_addr).await?, topic, partition, -1).await?;
        let mut next = target_next;
        if next > 0 && next < start {
            self.report.warnings.push(format!(
                "{topic}-{partition}: the source's log now starts at {start}, after the copy's position {next}: \
                 offsets {next}..{start} were deleted on the source before they were copied"
            ));
        }
        next = next.max(start);
        let log_start = format!("?log_start={start}");
        // Whether the source was found to hold nothing more before `end`.
        let mut drained = true;
        while next < end {
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_BYTES)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(next)
                                .with_partition_max_bytes(FETCH_BYTES),
                        ]),
                ]);
            let resp: FetchResponse = self.source.to(&src_addr).await?.call(ApiKey::Fetch, 4, &req).await?;
            let data = resp.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next());
            let Some(data) = data else {
                drained = false;
                break;
            };
            if data.error_code != 0 {
                return Err(kafka_err(
                    &src_addr,
                    format!("Fetch {topic}-{partition} at {next}: error code {}", data.error_code),
                ));
            }
            let records = data.records.unwrap_or_default();
            if records.is_empty() {
                break; // nothing stored from `next` up to the source's end
            }
            let batches = batches_from(&records, next)
                .map_err(|why| kafka_err(&src_addr, format!("{topic}-{partition}: {why}")))?;
            if batches.is_empty() {
                drained = false;
                break;
            }
            // Grouped into imports of about IMPORT_BYTES.
            let mut chunk = BytesMut::new();
            let n = batches.len();
            for (i, b) in batches.into_iter().enumerate() {
                chunk.extend_from_slice(&b);
                self.report.batches += 1;
                if chunk.len() >= IMPORT_BYTES || i + 1 == n {
                    let body = chunk.split().freeze();
                    next = self.import(topic, partition, &log_start, &body).await?;
                    target_next = next;
                }
            }
        }
        // The source holds no records from here to its end (compacted or expired): an empty
        // batch carries the target's next offset there, so both logs end at the same offset.
        if drained && target_next < end {
            target_next = self.import(topic, partition, &log_start, &empty_batch(end - 1)).await?;
        }
        self.report.partitions.insert(format!("{topic}-{partition}"), target_next as u64);
        Ok(())
    }

    /// One import; the target's next offset after it.
    async fn import(&mut self, topic: &str, partition: i32, query: &str, body: &[u8]) -> Result<i64, MigrateError> {
        let path = format!("/admin/import/{topic}/{partition}{query}");
        let (status, answer) = http::post(&self.opts.to_admin, &path, body).await?;
        if status != 200 {
            return Err(MigrateError::Http {
                addr: self.opts.to_admin.clone(),
                what: format!("{path}: {status} {answer}"),
            });
        }
        self.report.bytes += body.len() as u64;
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        v["next_offset"].as_i64().ok_or_else(|| MigrateError::Http {
            addr: self.opts.to_admin.clone(),
            what: format!("{path}: answer without next_offset: {answer}"),
        })
    }

    async fn coordinator(conns: &mut Conns, bootstrap: &str, group: &str) -> Result<String, MigrateError> {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
        let resp: FindCoordinatorResponse = conns.to(bootstrap).await?.call(ApiKey::FindCoordinator, 0, &req).await?;
        if resp.error_code != 0 {
            return Err(kafka_err(bootstrap, format!("FindCoordinator {group}: error code {}", resp.error_code)));
        }
        Ok(format!("{}:{}", resp.host, resp.port))
    }

    async fn copy_commits(&mut self, src: &Cluster, tgt: &Cluster) -> Result<(), MigrateError> {
        let mut groups = Vec::new();
        for addr in src.brokers.values() {
            let resp: ListGroupsResponse =
                self.source.to(addr).await?.call(ApiKey::ListGroups, 0, &ListGroupsRequest::default()).await?;
            groups.extend(resp.groups.into_iter().map(|g| g.group_id.to_string()));
        }
        groups.sort();
        groups.dedup();
        let (from, to) = (self.opts.from.clone(), self.opts.to.clone());
        for group in groups {
            let coordinator = Self::coordinator(&mut self.source, &from, &group).await?;
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(None);
            let resp: OffsetFetchResponse =
                self.source.to(&coordinator).await?.call(ApiKey::OffsetFetch, 2, &req).await?;
            let mut changed: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
            for t in resp.topics {
                let topic = t.name.to_string();
                if !tgt.topics.contains_key(&topic) && !src.topics.contains_key(&topic) {
                    continue;
                }
                for p in t.partitions.into_iter().filter(|p| p.error_code == 0 && p.committed_offset >= 0) {
                    let meta = p.metadata.as_ref().map(|m| m.to_string());
                    let key = (group.clone(), topic.clone(), p.partition_index);
                    if self.copied_commits.get(&key) == Some(&(p.committed_offset, meta.clone())) {
                        continue;
                    }
                    self.copied_commits.insert(key, (p.committed_offset, meta.clone()));
                    changed.entry(topic.clone()).or_default().push(
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p.partition_index)
                            .with_committed_offset(p.committed_offset)
                            .with_committed_metadata(meta.map(StrBytes::from_string)),
                    );
                }
            }
            if changed.is_empty() {
                continue;
            }
            let topics: Vec<OffsetCommitRequestTopic> = changed
                .into_iter()
                .map(|(t, parts)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partitions(parts)
                })
                .collect();
            let n: usize = topics.iter().map(|t| t.partitions.len()).sum();
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_generation_id_or_member_epoch(-1)
                .with_member_id(StrBytes::from_static_str(""))
                .with_retention_time_ms(-1)
                .with_topics(topics);
            let target_coordinator = Self::coordinator(&mut self.target, &to, &group).await?;
            let resp: OffsetCommitResponse =
                self.target.to(&target_coordinator).await?.call(ApiKey::OffsetCommit, 2, &req).await?;
            if let Some(code) = resp.topics.iter().flat_map(|t| &t.partitions).map(|p| p.error_code).find(|c| *c != 0) {
                // Written again on the next pass.
                self.copied_commits.retain(|(g, _, _), _| *g != group);
                return Err(kafka_err(&to, format!("OffsetCommit {group}: error code {code}")));
            }
            self.report.commits += n as u64;
        }
        Ok(())
    }
}

/// Copies until `stop` resolves, or after one pass with `once`. A stop ends the pass in
/// progress after the partition being copied (a rerun resumes). A partition whose copy fails
/// is named in the report's `errors` and retried on the next pass while the others go on; a
/// pass that fails as a whole (a broker restarting) is retried after a pause, or with `once`
/// ends the run.
pub async fn run(
    opts: OnlineOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<OnlineReport, MigrateError> {
    // Watched from the start, so a signal during the first (longest) pass is not lost.
    let stopping = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    let (flag, notify) = (stopping.clone(), wake.clone());
    let watcher = tokio::spawn(async move {
        stop.await;
        flag.store(true, Ordering::Relaxed);
        notify.notify_one();
    });
    let once = opts.once;
    let mut copier = Copier {
        opts,
        source: Conns::default(),
        target: Conns::default(),
        copied_commits: BTreeMap::new(),
        report: OnlineReport::default(),
        stopping: stopping.clone(),
    };
    let result = loop {
        match copier.pass().await {
            Ok(()) => {
                copier.report.errors.remove("pass");
            }
            Err(e) if once => break Err(e),
            Err(e) => {
                tracing::warn!("copy pass failed, retrying: {e}");
                copier.report.errors.insert("pass".into(), e.to_string());
                copier.source = Conns::default();
                copier.target = Conns::default();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        if once || stopping.load(Ordering::Relaxed) {
            break Ok(copier.report);
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(copier.opts.poll) => {}
        }
    };
    watcher.abort();
    result
}
