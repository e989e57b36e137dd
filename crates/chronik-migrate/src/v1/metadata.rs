//! v1's metadata event log (format document, section 6): JSON events in WAL records, replayed
//! in order with v1's own rules into topics, committed offsets and log start offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{Damage, WalFileReader};
use crate::error::MigrateError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Topic {
    pub name: String,
    pub partitions: u32,
    /// The topic-level configs the user set (CreateTopics / AlterConfigs), as given.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Commit {
    pub offset: i64,
    pub metadata: Option<String>,
}

/// (group, topic, partition)
pub type CommitKey = (String, String, i32);

#[derive(Debug, Default)]
pub struct V1Metadata {
    pub topics: BTreeMap<String, V1Topic>,
    pub offsets: BTreeMap<CommitKey, V1Commit>,
    /// DeleteRecords' log start offsets, per (topic, partition).
    pub log_starts: BTreeMap<(String, i32), i64>,
    /// Object keys of the segment objects v1 recorded writing.
    pub segment_keys: BTreeSet<String>,
    pub events: usize,
    pub damage: Vec<Damage>,
}

impl V1Metadata {
    /// Replays the log files, oldest first.
    pub fn replay(files: &[impl AsRef<Path>], skip_corrupt: bool) -> Result<V1Metadata, MigrateError> {
        let mut m = V1Metadata::default();
        for file in files {
            let file = file.as_ref();
            let mut reader = WalFileReader::open(file, skip_corrupt)?;
            while let Some(rec) = reader.next_record(&mut m.damage)? {
                match serde_json::from_slice::<Value>(&rec.payload) {
                    Ok(event) => {
                        m.events += 1;
                        m.apply(&event["payload"]);
                    }
                    // v1 before 2.2.9 wrote bincode events that even v1 cannot read back.
                    Err(e) => {
                        let reason = format!("metadata event is not JSON ({e})");
                        reader.bad_record(rec.at, Some(rec.payload.len()), reason, &mut m.damage)?;
                    }
                }
            }
        }
        Ok(m)
    }

    fn apply(&mut self, p: &Value) {
        let str_of = |v: &Value| v.as_str().map(str::to_string);
        match p["type"].as_str().unwrap_or_default() {
            "TopicCreated" => {
                let Some(t) = topic_of(p) else { return };
                match self.topics.get_mut(&t.name) {
                    None => {
                        self.topics.insert(t.name.clone(), t);
                    }
                    Some(old) if t.partitions > old.partitions => *old = t,
                    Some(old) => {
                        for (k, v) in t.configs {
                            old.configs.entry(k).or_insert(v);
                        }
                    }
                }
            }
            "TopicUpdated" => {
                if let Some(t) = topic_of(p) {
                    self.topics.insert(t.name.clone(), t);
                }
            }
            "TopicDeleted" => {
                if let Some(name) = str_of(&p["name"]) {
                    self.topics.remove(&name);
                    self.offsets.retain(|(_, t, _), _| *t != name);
                    self.log_starts.retain(|(t, _), _| *t != name);
                }
            }
            "OffsetCommitted" => {
                let o = &p["offset"];
                if let (Some(g), Some(t), Some(part), Some(off)) =
                    (str_of(&o["group_id"]), str_of(&o["topic"]), o["partition"].as_i64(), o["offset"].as_i64())
                {
                    self.offsets
                        .insert((g, t, part as i32), V1Commit { offset: off, metadata: str_of(&o["metadata"]) });
                }
            }
            "ConsumerOffsetDeleted" => {
                if let (Some(g), Some(t), Some(part)) =
                    (str_of(&p["group_id"]), str_of(&p["topic"]), p["partition"].as_i64())
                {
                    self.offsets.remove(&(g, t, part as i32));
                }
            }
            "LogStartOffsetUpdated" => {
                if let (Some(t), Some(part), Some(start)) =
                    (str_of(&p["topic"]), p["partition"].as_i64(), p["new_log_start_offset"].as_i64())
                {
                    let e = self.log_starts.entry((t, part as i32)).or_insert(start);
                    *e = (*e).max(start);
                }
            }
            "SegmentCreated" => {
                if let Some(path) = str_of(&p["metadata"]["path"]) {
                    self.segment_keys.insert(path);
                }
            }
            _ => {}
        }
    }
}

fn topic_of(p: &Value) -> Option<V1Topic> {
    let name = p["name"].as_str()?.to_string();
    let c = &p["config"];
    let partitions = u32::try_from(c["partition_count"].as_u64()?).ok()?;
    let configs = c["config"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Some(V1Topic { name, partitions, configs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created(name: &str, partitions: u32, configs: Value) -> Value {
        json!({"type": "TopicCreated", "name": name, "config": {"partition_count": partitions, "config": configs}})
    }

    fn commit(g: &str, t: &str, p: i32, o: i64, meta: Value) -> Value {
        json!({"type": "OffsetCommitted", "offset": {"group_id": g, "topic": t, "partition": p, "offset": o, "metadata": meta}})
    }

    #[test]
    fn replay_follows_v1_rules() {
        let mut m = V1Metadata::default();
        for e in [
            created("a", 2, json!({"retention.ms": "5"})),
            created("a", 2, json!({"retention.ms": "9", "retention.bytes": "7"})), // merges missing keys only
            created("b", 1, json!({})),
            created("b", 3, json!({"x": "1"})), // more partitions: replaces
            created("gone", 1, json!({})),
            commit("g", "a", 0, 7, json!("")),
            commit("g", "a", 0, 10, json!("m")), // last write wins
            commit("g", "a", 1, 3, Value::Null),
            commit("g", "gone", 0, 1, json!("")),
            json!({"type": "ConsumerOffsetDeleted", "group_id": "g", "topic": "a", "partition": 1}),
            json!({"type": "TopicDeleted", "name": "gone"}),
            json!({"type": "LogStartOffsetUpdated", "topic": "a", "partition": 0, "new_log_start_offset": 40}),
            json!({"type": "LogStartOffsetUpdated", "topic": "a", "partition": 0, "new_log_start_offset": 30}),
            json!({"type": "HighWatermarkUpdated", "topic": "a", "partition": 0, "new_watermark": 3}),
        ] {
            m.apply(&e);
        }
        let a = &m.topics["a"];
        assert_eq!(
            (a.partitions, a.configs.clone()),
            (2, BTreeMap::from([("retention.ms".into(), "5".into()), ("retention.bytes".into(), "7".into())]))
        );
        assert_eq!((m.topics["b"].partitions, m.topics["b"].configs.len()), (3, 1));
        assert!(!m.topics.contains_key("gone"));
        assert_eq!(
            m.offsets.into_iter().collect::<Vec<_>>(),
            vec![(("g".into(), "a".into(), 0), V1Commit { offset: 10, metadata: Some("m".into()) })]
        );
        assert_eq!(m.log_starts[&("a".to_string(), 0)], 40, "log start only moves forward");
    }
}
