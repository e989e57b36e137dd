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
//!
//! The copy (`Copier`) reads a `Source`: a broker here, an archive for `restore`.

mod admins;
mod http;
mod kafka;
mod source;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::error::MigrateError;
use crate::v2::empty_batch;
use admins::Admins;
use kafka::kafka_err;
use source::{Cluster, Conns, list_offset, metadata};
pub(crate) use source::{Commit, KafkaSource, Read, Source, batches_from};

/// Most bytes sent in one import.
const IMPORT_BYTES: usize = 1 << 20;
/// How long an import waits for a node just made a partition's leader to serve it.
const LEADER_WAIT_ROUNDS: u32 = 50;
const LEADER_WAIT_PAUSE: Duration = Duration::from_millis(100);
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

/// Copies a source into a running Chronik (the target), pass after pass.
pub(crate) struct Copier<S: Source> {
    source: S,
    /// The target's Kafka address and admin API addresses.
    to: String,
    admins: Admins,
    target: Conns,
    /// Commits last written to the target: (group, topic, partition) -> (offset, metadata).
    copied_commits: BTreeMap<(String, String, i32), (i64, Option<String>)>,
    report: OnlineReport,
    /// Set once told to stop: the pass in progress ends after its current partition.
    stopping: Arc<AtomicBool>,
}

impl<S: Source> Copier<S> {
    pub fn new(source: S, to: &str, to_admin: &str, stopping: Arc<AtomicBool>) -> Copier<S> {
        Copier {
            source,
            to: to.to_string(),
            admins: Admins::new(to_admin),
            target: Conns::default(),
            copied_commits: BTreeMap::new(),
            report: OnlineReport::default(),
            stopping,
        }
    }

    pub fn into_report(self) -> OnlineReport {
        self.report
    }

    /// The target's topics and their partitions' leaders.
    pub async fn target_metadata(&mut self) -> Result<Cluster, MigrateError> {
        let to = self.to.clone();
        metadata(self.target.to(&to).await?).await
    }

    pub async fn pass(&mut self) -> Result<(), MigrateError> {
        self.admins.resolve().await?;
        let src = self.source.topics().await?;
        let tgt = self.target_metadata().await?;
        for (topic, &partitions) in &src {
            match tgt.topics.get(topic) {
                None => self.create_topic(topic, partitions).await?,
                Some(t) if t.len() < partitions => {
                    let w = format!("{topic}: {partitions} partitions on the source, {} on the target", t.len());
                    if !self.report.warnings.contains(&w) {
                        self.report.warnings.push(w);
                    }
                }
                Some(_) => {}
            }
        }
        // Leaders of topics created just now.
        let tgt = self.target_metadata().await?;
        for (topic, &partitions) in &src {
            let on_target = tgt.topics.get(topic).map_or(0, Vec::len);
            for partition in 0..partitions.min(on_target) as i32 {
                if self.stopping.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let name = format!("{topic}-{partition}");
                match self.copy_partition(&tgt, topic, partition).await {
                    Ok(()) => {
                        self.report.errors.remove(&name);
                    }
                    Err(e) => {
                        tracing::warn!("copying {name}: {e}");
                        self.report.errors.insert(name, e.to_string());
                        // A broken connection is opened afresh for the next partition.
                        self.source.reset();
                        self.target = Conns::default();
                    }
                }
            }
        }
        self.copy_commits(&src, &tgt).await?;
        self.report.passes += 1;
        Ok(())
    }

    async fn create_topic(&mut self, topic: &str, partitions: usize) -> Result<(), MigrateError> {
        let configs = self.source.configs(topic).await?;
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
        let to = self.to.clone();
        let resp: CreateTopicsResponse = self.target.to(&to).await?.call(ApiKey::CreateTopics, 2, &req).await?;
        match resp.topics.first().map(|t| t.error_code) {
            Some(0) | Some(36) => {} // created, or already there (TOPIC_ALREADY_EXISTS)
            other => return Err(kafka_err(&to, format!("creating {topic}: error code {other:?}"))),
        }
        self.report.topics_created.push(topic.to_string());
        Ok(())
    }

    async fn copy_partition(&mut self, tgt: &Cluster, topic: &str, partition: i32) -> Result<(), MigrateError> {
        let tgt_addr = Conns::leader(tgt, topic, partition)?.clone();
        let (start, end) = self.source.bounds(topic, partition).await?;
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
        let leader = tgt.topics.get(topic).and_then(|l| l.get(partition as usize)).copied().unwrap_or(-1);
        let admin = self.admins.for_leader(leader);
        // Whether the source was found to hold nothing more before `end`.
        let mut drained = true;
        while next < end {
            let batches = match self.source.read(topic, partition, next).await? {
                Read::Batches(batches) => batches,
                Read::Drained => break,
                Read::Stalled => {
                    drained = false;
                    break;
                }
            };
            // Grouped into imports of about IMPORT_BYTES.
            let mut chunk = BytesMut::new();
            let n = batches.len();
            for (i, b) in batches.into_iter().enumerate() {
                let base = i64::from_be_bytes(b[..8].try_into().expect("a batch header"));
                if base < target_next {
                    // Ends after the target's end (the source answered it for `next`), begins
                    // before it: the two logs disagree on where this batch lies.
                    return Err(MigrateError::Batch {
                        partition: format!("{topic}-{partition}"),
                        offset: base,
                        reason: format!("it straddles the target's next offset {target_next}"),
                    });
                }
                chunk.extend_from_slice(&b);
                self.report.batches += 1;
                if chunk.len() >= IMPORT_BYTES || i + 1 == n {
                    let body = chunk.split().freeze();
                    next = self.import(&admin, topic, partition, &log_start, &body).await?;
                    target_next = next;
                }
            }
        }
        // The source holds no records from here to its end (compacted or expired): an empty
        // batch carries the target's next offset there, so both logs end at the same offset.
        if drained && target_next < end {
            target_next = self.import(&admin, topic, partition, &log_start, &empty_batch(end - 1)).await?;
        }
        self.report.partitions.insert(format!("{topic}-{partition}"), target_next as u64);
        Ok(())
    }

    /// One import through the admin API at `admin`; the target's next offset after it. Where
    /// that node does not lead the partition (409), it is made the leader and asked again.
    async fn import(
        &mut self,
        admin: &str,
        topic: &str,
        partition: i32,
        query: &str,
        body: &[u8],
    ) -> Result<i64, MigrateError> {
        let path = format!("/admin/import/{topic}/{partition}{query}");
        let (mut status, mut answer) = http::post(admin, &path, body).await?;
        if status == 409 {
            self.admins.lead_through(admin, topic, partition).await?;
            // A new leader serves once it has committed an entry of its own term: moments.
            for _ in 0..LEADER_WAIT_ROUNDS {
                (status, answer) = http::post(admin, &path, body).await?;
                if status != 409 {
                    break;
                }
                tokio::time::sleep(LEADER_WAIT_PAUSE).await;
            }
        }
        if status == 404 && answer.contains("on this node") {
            let what = format!(
                "{topic}-{partition} has no replica on this node and its leader's admin API was not given: give \
                 every node's admin API in --to-admin, comma-separated"
            );
            return Err(MigrateError::Http { addr: admin.to_string(), what });
        }
        if status != 200 {
            return Err(MigrateError::Http { addr: admin.to_string(), what: format!("{path}: {status} {answer}") });
        }
        self.report.bytes += body.len() as u64;
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        v["next_offset"].as_i64().ok_or_else(|| MigrateError::Http {
            addr: admin.to_string(),
            what: format!("{path}: answer without next_offset: {answer}"),
        })
    }

    /// Writes the source's committed offsets (of topics on either side) that changed since
    /// the last pass, group by group.
    async fn copy_commits(&mut self, src: &BTreeMap<String, usize>, tgt: &Cluster) -> Result<(), MigrateError> {
        let mut by_group: BTreeMap<String, BTreeMap<String, Vec<OffsetCommitRequestPartition>>> = BTreeMap::new();
        for c in self.source.commits().await? {
            if !tgt.topics.contains_key(&c.topic) && !src.contains_key(&c.topic) {
                continue;
            }
            let key = (c.group.clone(), c.topic.clone(), c.partition);
            if self.copied_commits.get(&key) == Some(&(c.offset, c.metadata.clone())) {
                continue;
            }
            self.copied_commits.insert(key, (c.offset, c.metadata.clone()));
            by_group.entry(c.group).or_default().entry(c.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(c.partition)
                    .with_committed_offset(c.offset)
                    .with_committed_metadata(c.metadata.map(StrBytes::from_string)),
            );
        }
        let to = self.to.clone();
        for (group, changed) in by_group {
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
            let target_coordinator = self.target.coordinator(&to, &group).await?;
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
    let (once, opts_poll) = (opts.once, opts.poll);
    let mut copier = Copier::new(KafkaSource::new(&opts.from), &opts.to, &opts.to_admin, stopping.clone());
    let result = loop {
        match copier.pass().await {
            Ok(()) => {
                copier.report.errors.remove("pass");
            }
            Err(e) if once => break Err(e),
            Err(e) => {
                tracing::warn!("copy pass failed, retrying: {e}");
                copier.report.errors.insert("pass".into(), e.to_string());
                copier.source.reset();
                copier.target = Conns::default();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        if once || stopping.load(Ordering::Relaxed) {
            break Ok(copier.report);
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(opts_poll) => {}
        }
    };
    watcher.abort();
    result
}
