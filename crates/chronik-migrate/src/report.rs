//! What a migration did, for the terminal and (`--json`) for scripts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::v1::Damage;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub input: PathBuf,
    pub output: PathBuf,
    pub topics: Vec<TopicReport>,
    pub partitions: Vec<PartitionReport>,
    pub groups: Vec<GroupReport>,
    pub records: u64,
    /// Kafka record-batch bytes written.
    pub bytes: u64,
    /// v1 WAL bytes read.
    pub input_bytes: u64,
    pub seconds: f64,
    /// Input bytes per second (MB = 10^6 bytes).
    pub input_mb_per_s: f64,
    /// Idempotent producer ids seen in v1's batches; new ids start above the largest.
    pub max_producer_id: Option<i64>,
    /// Everything in the input that was stepped over, and why.
    pub damage: Vec<Damage>,
    pub warnings: Vec<String>,
    pub verify: Option<VerifyReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicReport {
    pub name: String,
    pub partitions: u32,
    /// Configs carried over, as the topic now has them.
    pub configs: BTreeMap<String, String>,
    /// v1 configs this broker does not support, with the reason; not carried over.
    pub dropped_configs: BTreeMap<String, String>,
    pub records: u64,
    pub bytes: u64,
    /// What the first retention check would delete under the configs carried over.
    pub retention_would_delete: Option<RetentionImpact>,
    /// Retention was turned off (`--keep-expired`) because it would have deleted migrated data.
    pub retention_turned_off: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionImpact {
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub records: u64,
    pub batches: u64,
    pub bytes: u64,
    pub log_start_offset: u64,
    pub next_offset: u64,
    pub from_segment_objects: u64,
    pub duplicates_dropped: u64,
    /// Offset ranges `[from, to)` no copy in the input held.
    pub gaps: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub offsets: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub records_compared: u64,
    /// The first differences found (at most 20), each naming partition and offset.
    pub mismatches: Vec<String>,
    pub mismatch_count: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "migrated {} -> {}", self.input.display(), self.output.display())?;
        writeln!(
            f,
            "  {} topics, {} partitions, {} records, {} bytes of batches, {} groups; read {} bytes in {:.1} s ({:.0} MB/s)",
            self.topics.len(),
            self.partitions.len(),
            self.records,
            self.bytes,
            self.groups.len(),
            self.input_bytes,
            self.seconds,
            self.input_mb_per_s
        )?;
        for t in &self.topics {
            writeln!(f, "  topic {} ({} partitions): {} records, {} bytes", t.name, t.partitions, t.records, t.bytes)?;
            for (k, why) in &t.dropped_configs {
                writeln!(f, "    config {k} NOT carried over: {why}")?;
            }
            if let Some(r) = t.retention_would_delete {
                writeln!(
                    f,
                    "    WARNING: the first retention check would delete {} records ({} bytes) of this topic; \
                     rerun with --keep-expired to carry it over with retention off",
                    r.records, r.bytes
                )?;
            }
            for k in &t.retention_turned_off {
                writeln!(f, "    {k}=-1 set (--keep-expired): retention would have deleted migrated data")?;
            }
        }
        for p in self.partitions.iter().filter(|p| !p.gaps.is_empty()) {
            writeln!(f, "  {}-{}: offsets missing from every copy: {:?}", p.topic, p.partition, p.gaps)?;
        }
        for g in &self.groups {
            writeln!(f, "  group {}: {} committed offsets", g.group, g.offsets)?;
        }
        for d in &self.damage {
            writeln!(f, "  {} at byte {} of {} ({} bytes): {}", d.kind, d.at, d.file.display(), d.bytes, d.reason)?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        if let Some(v) = &self.verify {
            writeln!(f, "  verify: {} records compared, {} differences", v.records_compared, v.mismatch_count)?;
            for m in &v.mismatches {
                writeln!(f, "    {m}")?;
            }
        }
        Ok(())
    }
}
