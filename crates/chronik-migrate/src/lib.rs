//! `chronik-server migrate-wal`: moves a v1 (legacy standalone Chronik) data directory into a
//! new data directory, offline. The input is only read. The output is written by a broker of
//! one node started on it in this process (no listeners), so it is exactly what `chronik-server`
//! writes and starts on: standalone, or as the bootstrap node of a cluster.
//!
//! - [`v1`] reads the input (WAL files, segment objects, the metadata event log);
//! - `import` writes topics, batches (their v1 offsets kept), committed offsets;
//! - `verify` reads the output back and compares it with the input, record by record.
//!
//! Also the copies between running brokers: [`online`] (`chronik-server migrate`, from any
//! Kafka-compatible broker into a running Chronik) and [`archive`] (`backup` into a file and
//! `restore` from one, through the same copy).

pub mod archive;
mod error;
mod import;
pub mod online;
mod progress;
pub mod report;
pub mod v1;
pub mod v2;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chronik_cluster::Tasks;
use chronik_config::Config;
use chronik_kafka::Broker;

pub use error::MigrateError;
pub use progress::Progress;
pub use report::Report;
use v1::V1Dir;
use v1::metadata::{V1Metadata, V1Topic};

#[derive(Debug, Clone)]
pub struct MigrateOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Skip records that fail their checks (listing each in the report) instead of stopping.
    pub skip_corrupt: bool,
    /// Carry topics whose retention would delete migrated data over with that retention off.
    pub keep_expired: bool,
    /// Read the output back and compare it with the input.
    pub verify: bool,
    /// Draw progress on stderr when it is a terminal.
    pub show_progress: bool,
}

/// Topic configs split into those this broker supports and the others, each with why it
/// does not (carried over vs named in the report).
pub(crate) fn supported_configs(
    configs: impl IntoIterator<Item = (String, String)>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut kept, mut dropped) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in configs {
        match chronik_cluster::validate_topic_config(&k, &v) {
            Ok(()) => kept.insert(k, v),
            Err(why) => dropped.insert(k, why),
        };
    }
    (kept, dropped)
}

/// Refuses an output that exists and holds anything.
fn check_output(output: &Path) -> Result<(), MigrateError> {
    match std::fs::read_dir(output).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(MigrateError::OutputNotEmpty(output.to_path_buf())),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MigrateError::Io { path: output.to_path_buf(), source }),
    }
}

/// The broker the output is written with: the defaults, on the output directory, with
/// retention (and compaction) passes held off until the migration is done.
fn output_config(output: &Path) -> Config {
    let mut c = Config { data_dir: output.to_path_buf(), ..Config::default() };
    c.kafka.retention_check_interval_ms = 365 * 24 * 3_600_000;
    c
}

async fn start(output: &Path, tasks: &Tasks) -> Result<Arc<Broker>, MigrateError> {
    Broker::start(&output_config(output), tasks)
        .await
        .map_err(|source| MigrateError::Start { path: output.to_path_buf(), source })
}

/// Stops the broker as `chronik-server` does: tasks, then the node (WAL made durable).
async fn stop(broker: Arc<Broker>, tasks: Tasks) -> Result<(), MigrateError> {
    let node = broker.node.clone();
    tasks.shutdown().await;
    drop(broker);
    node.shutdown().await.map_err(MigrateError::Stop)
}

/// Topics to create: the metadata log's, and any partition directory it does not explain
/// (an empty or lost metadata log), with a warning for each.
fn topics_to_create(dir: &V1Dir, meta: &V1Metadata, warnings: &mut Vec<String>) -> Vec<V1Topic> {
    let mut topics = meta.topics.clone();
    for (topic, partition) in dir.partitions.keys() {
        let needed = (*partition + 1).max(1) as u32;
        match topics.get_mut(topic) {
            Some(t) if t.partitions >= needed => {}
            Some(t) => {
                warnings.push(format!(
                    "{topic}: the metadata log says {} partitions but data exists for partition {partition}; created with {needed}",
                    t.partitions
                ));
                t.partitions = needed;
            }
            None => {
                warnings.push(format!(
                    "{topic}: data without a topic in the metadata log; created from its partition directories, with no configs"
                ));
                topics.insert(
                    topic.clone(),
                    V1Topic { name: topic.clone(), partitions: needed, configs: Default::default() },
                );
            }
        }
    }
    topics.into_values().collect()
}

/// Runs the migration; the report says what was done, what was skipped and why.
pub async fn migrate(opts: &MigrateOptions) -> Result<Report, MigrateError> {
    let started = Instant::now();
    check_output(&opts.output)?;
    let dir = V1Dir::open(&opts.input)?;
    let meta = V1Metadata::replay(&dir.metadata_files, opts.skip_corrupt)?;
    let mut report = Report { input: opts.input.clone(), output: opts.output.clone(), ..Default::default() };
    report.damage.extend(meta.damage.iter().cloned());
    if meta.events == 0 {
        report.warnings.push(
            "the metadata log holds no events: topics come from the data directories (no configs), and no committed offsets exist".into(),
        );
    }
    for key in &meta.segment_keys {
        let present = dir.partitions.values().any(|p| p.segments.iter().any(|o| &o.key == key));
        if !present {
            report.warnings.push(format!(
                "segment object {key} is named in the metadata log but missing (its records are taken from the WAL)"
            ));
        }
    }
    let topics = topics_to_create(&dir, &meta, &mut report.warnings);

    let progress = Progress::new(dir.data_bytes());
    let drawer = opts.show_progress.then(|| progress.show()).flatten();
    let tasks = Tasks::new();
    let broker = start(&opts.output, &tasks).await?;
    let result = write_all(&broker, &dir, &meta, &topics, opts, &progress, &mut report).await;
    progress.finish();
    if let Some(d) = drawer {
        let _ = d.join();
    }
    let stopped = stop(broker, tasks).await;
    result?;
    stopped?;
    report.input_bytes = progress.input_bytes();
    report.seconds = started.elapsed().as_secs_f64();
    report.input_mb_per_s = report.input_bytes as f64 / 1e6 / report.seconds.max(0.001);

    if opts.verify {
        let tasks = Tasks::new();
        let broker = start(&opts.output, &tasks).await?;
        let verified = verify::verify(&broker, &dir, opts.skip_corrupt).await;
        stop(broker, tasks).await?;
        report.verify = Some(verified?);
    }
    Ok(report)
}

async fn write_all(
    broker: &Broker,
    dir: &V1Dir,
    meta: &V1Metadata,
    topics: &[V1Topic],
    opts: &MigrateOptions,
    progress: &Arc<Progress>,
    report: &mut Report,
) -> Result<(), MigrateError> {
    for topic in topics {
        let mut t = import::create_topic(broker, topic).await?;
        let mut turn_off: Vec<String> = Vec::new();
        for partition in 0..topic.partitions as i32 {
            let files = dir.partitions.get(&(topic.name.clone(), partition)).cloned().unwrap_or_default();
            let log_start = meta.log_starts.get(&(topic.name.clone(), partition)).copied();
            let outcome = import::import_partition(
                broker,
                &topic.name,
                partition,
                files,
                log_start,
                opts.skip_corrupt,
                progress.clone(),
            )
            .await?;
            let impact = import::retention_impact(broker, &topic.name, partition, &outcome.entries)?;
            let worst = impact.values().max_by_key(|i| (i.records, i.bytes)).copied();
            if let Some(w) = worst.filter(|w| w.records > 0) {
                let total = t.retention_would_delete.get_or_insert_default();
                total.records += w.records;
                total.bytes += w.bytes;
                for key in impact.keys() {
                    if !turn_off.iter().any(|k| k == key) {
                        turn_off.push(key.to_string());
                    }
                }
            }
            t.records += outcome.report.records;
            t.bytes += outcome.report.bytes;
            report.records += outcome.report.records;
            report.bytes += outcome.report.bytes;
            report.max_producer_id = report.max_producer_id.max(outcome.max_producer_id);
            report.damage.extend(outcome.damage);
            report.partitions.push(outcome.report);
        }
        if opts.keep_expired && !turn_off.is_empty() {
            import::turn_off_retention(broker, &topic.name, &turn_off).await?;
            for k in &turn_off {
                t.configs.insert(k.clone(), "-1".into());
            }
            t.retention_turned_off = turn_off;
            t.retention_would_delete = None;
        }
        report.topics.push(t);
    }
    report.groups = import::commit_offsets(broker, meta).await?;
    if let Some(max) = report.max_producer_id {
        import::reserve_producer_ids(broker, max).await?;
    }
    Ok(())
}
