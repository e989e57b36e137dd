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
}

impl TopicDefaults {
    pub fn from_config(c: &chronik_config::Config) -> TopicDefaults {
        TopicDefaults {
            retention_ms: c.kafka.log_retention_ms,
            retention_bytes: c.kafka.log_retention_bytes,
            max_message_bytes: c.kafka.message_max_bytes,
            timestamp_before_max_ms: c.kafka.log_message_timestamp_before_max_ms,
            timestamp_after_max_ms: c.kafka.log_message_timestamp_after_max_ms,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: u64,
    pub timestamp_type: TimestampType,
    /// CreateTime batches may lie at most this far in the past / future (ms).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub segment_bytes: u64,
}

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const TIMESTAMP_BEFORE_MAX_MS: &str = "message.timestamp.before.max.ms";
pub const TIMESTAMP_AFTER_MAX_MS: &str = "message.timestamp.after.max.ms";

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
    (SEGMENT_BYTES, "Accepted and stored for compatibility; Chronik's shared WAL has no per-partition segments."),
    (CLEANUP_POLICY, "Only `delete`; `compact` is refused (log compaction is not implemented)."),
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
        SEGMENT_BYTES => int(14),
        TIMESTAMP_TYPE => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!("{key} must be CreateTime or LogAppendTime (got '{value}')")),
        },
        CLEANUP_POLICY => match value {
            "delete" => Ok(()),
            v if v.split(',').any(|p| p.trim() == "compact") => {
                Err(format!("{key}=compact is not supported: Chronik does not implement log compaction"))
            }
            _ => Err(format!("{key} must be 'delete' (got '{value}')")),
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
            (CLEANUP_POLICY, "delete".into()),
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
            (CLEANUP_POLICY, "compact", false),
            (CLEANUP_POLICY, "delete,compact", false),
            ("unclean.leader.election.enable", "true", false),
        ];
        for (k, v, ok) in cases {
            assert_eq!(validate_topic_config(k, v).is_ok(), ok, "{k}={v}: {:?}", validate_topic_config(k, v));
        }
        assert!(validate_topic_config(CLEANUP_POLICY, "compact").unwrap_err().contains("not supported"));
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
