//! Topic configs (Kafka names): which are supported, how values are checked, and the effective
//! settings of a topic (its overrides over the broker defaults).

use std::collections::BTreeMap;

/// Broker-wide defaults (from chronik.toml's `[kafka]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: u64,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub max_compaction_lag_ms: i64,
}

impl TopicDefaults {
    pub fn from_config(c: &chronik_config::Config) -> TopicDefaults {
        TopicDefaults {
            retention_ms: c.kafka.log_retention_ms,
            retention_bytes: c.kafka.log_retention_bytes,
            max_message_bytes: c.kafka.message_max_bytes,
            timestamp_before_max_ms: c.kafka.log_message_timestamp_before_max_ms,
            timestamp_after_max_ms: c.kafka.log_message_timestamp_after_max_ms,
            max_compaction_lag_ms: c.kafka.log_cleaner_max_compaction_lag_ms,
        }
    }
}

/// The broker defaults of an unconfigured broker.
impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults::from_config(&chronik_config::Config::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A topic's effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: u64,
    pub timestamp_type: TimestampType,
    /// CreateTime batches may lie at most this far in the past / future (ms).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub segment_bytes: u64,
    pub cleanup: CleanupPolicy,
    /// How long a tombstone stays readable on a compacted topic (ms).
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    /// A compacted topic's WAL tail rolls into a segment file at least this often (ms).
    pub segment_ms: i64,
}

/// `cleanup.policy`: `delete`, `compact` or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    /// Parses Kafka's list form (`compact,delete`, in any order); `None` if it names
    /// anything else or nothing.
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let mut p = CleanupPolicy { delete: false, compact: false };
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => return None,
            }
        }
        Some(p)
    }

    pub fn as_kafka(&self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const TIMESTAMP_BEFORE_MAX_MS: &str = "message.timestamp.before.max.ms";
pub const TIMESTAMP_AFTER_MAX_MS: &str = "message.timestamp.after.max.ms";
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
pub const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
pub const MAX_COMPACTION_LAG_MS: &str = "max.compaction.lag.ms";
pub const SEGMENT_MS: &str = "segment.ms";

/// Every topic config Chronik accepts, with what it means here.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    (RETENTION_MS, "Delete record batches whose newest timestamp is older than this (ms); -1 keeps them."),
    (RETENTION_BYTES, "Delete the oldest record batches while the partition stays above this size; -1: no limit."),
    (MAX_MESSAGE_BYTES, "Largest record batch a producer may send (bytes)."),
    (TIMESTAMP_TYPE, "CreateTime (the producer's timestamps) or LogAppendTime (the broker's clock at append)."),
    (
        TIMESTAMP_BEFORE_MAX_MS,
        "CreateTime only: a batch with a timestamp further in the past than this (ms) is refused (INVALID_TIMESTAMP).",
    ),
    (
        TIMESTAMP_AFTER_MAX_MS,
        "CreateTime only: a batch with a timestamp further in the future than this (ms) is refused (INVALID_TIMESTAMP).",
    ),
    (
        SEGMENT_BYTES,
        "Compacted topics: the WAL tail rolls into a segment file at this size, and compaction writes files up to it. Other topics move out of the WAL by the node's WAL window instead.",
    ),
    (
        CLEANUP_POLICY,
        "`delete` (retention by time and size), `compact` (keep the latest record per key), or `compact,delete` (both).",
    ),
    (
        DELETE_RETENTION_MS,
        "Compacted topics: a tombstone (null value) stays readable this long after its batch's timestamp (ms).",
    ),
    (
        MIN_CLEANABLE_DIRTY_RATIO,
        "Compacted topics: compact when the not yet compacted part is at least this share of the segment files (0..1).",
    ),
    (MIN_COMPACTION_LAG_MS, "Compacted topics: records younger than this (ms) are never compacted."),
    (
        MAX_COMPACTION_LAG_MS,
        "Compacted topics: compact regardless of the dirty ratio once the oldest uncompacted segment file is this old (ms).",
    ),
    (SEGMENT_MS, "Compacted topics: the WAL tail rolls into a segment file once its oldest record is this old (ms)."),
];

/// Checks one config value; the error names what is wrong.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| -> Result<(), String> {
        match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(v) => Err(format!("{key} must be at least {min} (got {v})")),
            Err(_) => Err(format!("{key} must be an integer (got '{value}')")),
        }
    };
    match key {
        RETENTION_MS | RETENTION_BYTES => int(-1),
        MAX_MESSAGE_BYTES | TIMESTAMP_BEFORE_MAX_MS | TIMESTAMP_AFTER_MAX_MS => int(0),
        DELETE_RETENTION_MS | MIN_COMPACTION_LAG_MS => int(0),
        MAX_COMPACTION_LAG_MS | SEGMENT_MS => int(1),
        SEGMENT_BYTES => int(14),
        MIN_CLEANABLE_DIRTY_RATIO => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!("{key} must be a number from 0 to 1 (got '{value}')")),
        },
        TIMESTAMP_TYPE => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!("{key} must be CreateTime or LogAppendTime (got '{value}')")),
        },
        CLEANUP_POLICY => match CleanupPolicy::parse(value) {
            Some(_) => Ok(()),
            None => Err(format!("{key} must be 'delete', 'compact' or 'compact,delete' (got '{value}')")),
        },
        _ => Err(format!("unknown or unsupported topic config '{key}'")),
    }
}

impl TopicSettings {
    pub fn resolve(defaults: &TopicDefaults, overrides: &BTreeMap<String, String>) -> TopicSettings {
        let int =
            |key: &str, default: i64| overrides.get(key).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(default);
        TopicSettings {
            retention_ms: int(RETENTION_MS, defaults.retention_ms),
            retention_bytes: int(RETENTION_BYTES, defaults.retention_bytes),
            max_message_bytes: int(MAX_MESSAGE_BYTES, defaults.max_message_bytes as i64).max(0) as u64,
            timestamp_type: match overrides.get(TIMESTAMP_TYPE).map(String::as_str) {
                Some("LogAppendTime") => TimestampType::LogAppendTime,
                _ => TimestampType::CreateTime,
            },
            timestamp_before_max_ms: int(TIMESTAMP_BEFORE_MAX_MS, defaults.timestamp_before_max_ms).max(0),
            timestamp_after_max_ms: int(TIMESTAMP_AFTER_MAX_MS, defaults.timestamp_after_max_ms).max(0),
            segment_bytes: int(SEGMENT_BYTES, 1 << 30).max(14) as u64,
            cleanup: overrides
                .get(CLEANUP_POLICY)
                .and_then(|v| CleanupPolicy::parse(v))
                .unwrap_or(CleanupPolicy { delete: true, compact: false }),
            // Kafka's defaults: a day, half, no lag, no upper bound, a week.
            delete_retention_ms: int(DELETE_RETENTION_MS, 86_400_000).max(0),
            min_cleanable_dirty_ratio: overrides
                .get(MIN_CLEANABLE_DIRTY_RATIO)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.5)
                .clamp(0.0, 1.0),
            min_compaction_lag_ms: int(MIN_COMPACTION_LAG_MS, 0).max(0),
            max_compaction_lag_ms: int(MAX_COMPACTION_LAG_MS, defaults.max_compaction_lag_ms).max(1),
            segment_ms: int(SEGMENT_MS, 604_800_000).max(1),
        }
    }

    /// Every supported key with its effective value (for DescribeConfigs).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (RETENTION_MS, self.retention_ms.to_string()),
            (RETENTION_BYTES, self.retention_bytes.to_string()),
            (MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (
                TIMESTAMP_TYPE,
                match self.timestamp_type {
                    TimestampType::CreateTime => "CreateTime".into(),
                    TimestampType::LogAppendTime => "LogAppendTime".into(),
                },
            ),
            (TIMESTAMP_BEFORE_MAX_MS, self.timestamp_before_max_ms.to_string()),
            (TIMESTAMP_AFTER_MAX_MS, self.timestamp_after_max_ms.to_string()),
            (SEGMENT_BYTES, self.segment_bytes.to_string()),
            (CLEANUP_POLICY, self.cleanup.as_kafka().into()),
            (DELETE_RETENTION_MS, self.delete_retention_ms.to_string()),
            (MIN_CLEANABLE_DIRTY_RATIO, self.min_cleanable_dirty_ratio.to_string()),
            (MIN_COMPACTION_LAG_MS, self.min_compaction_lag_ms.to_string()),
            (MAX_COMPACTION_LAG_MS, self.max_compaction_lag_ms.to_string()),
            (SEGMENT_MS, self.segment_ms.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let cases = [
            (RETENTION_MS, "-1", true),
            (RETENTION_MS, "86400000", true),
            (RETENTION_MS, "-2", false),
            (RETENTION_MS, "soon", false),
            (RETENTION_BYTES, "1048576", true),
            (MAX_MESSAGE_BYTES, "1000", true),
            (TIMESTAMP_TYPE, "LogAppendTime", true),
            (TIMESTAMP_TYPE, "Whenever", false),
            (CLEANUP_POLICY, "delete", true),
            (CLEANUP_POLICY, "compact", true),
            (CLEANUP_POLICY, "delete,compact", true),
            (CLEANUP_POLICY, "compact, delete", true),
            (CLEANUP_POLICY, "compact,archive", false),
            (CLEANUP_POLICY, "", false),
            (MIN_CLEANABLE_DIRTY_RATIO, "0.01", true),
            (MIN_CLEANABLE_DIRTY_RATIO, "1.5", false),
            (MIN_COMPACTION_LAG_MS, "0", true),
            (MAX_COMPACTION_LAG_MS, "0", false),
            (DELETE_RETENTION_MS, "-1", false),
            (SEGMENT_MS, "100", true),
            ("unclean.leader.election.enable", "true", false),
        ];
        for (k, v, ok) in cases {
            assert_eq!(validate_topic_config(k, v).is_ok(), ok, "{k}={v}: {:?}", validate_topic_config(k, v));
        }
        let compact: BTreeMap<String, String> = [(CLEANUP_POLICY.to_string(), "delete,compact".to_string())].into();
        let s = TopicSettings::resolve(&TopicDefaults::default(), &compact);
        assert_eq!((s.cleanup.compact, s.cleanup.delete, s.cleanup.as_kafka()), (true, true, "compact,delete"));
    }

    #[test]
    fn overrides_beat_defaults() {
        let d = TopicDefaults { retention_ms: 1000, retention_bytes: -1, max_message_bytes: 100, ..Default::default() };
        let o: BTreeMap<String, String> =
            [(RETENTION_BYTES.to_string(), "5".to_string()), (TIMESTAMP_TYPE.to_string(), "LogAppendTime".to_string())]
                .into();
        let s = TopicSettings::resolve(&d, &o);
        assert_eq!((s.retention_ms, s.retention_bytes, s.max_message_bytes), (1000, 5, 100));
        assert_eq!(s.timestamp_type, TimestampType::LogAppendTime);
    }
}
