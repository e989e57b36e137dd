//! `chronik-server migrate-wal` on the data directories the real v1 binary wrote
//! (tests/fixtures/chronik-v1, see its README): the migrated directory served by the real
//! server and read with librdkafka (rdkafka) must hold exactly what v1 served (every field of
//! every record, committed offsets, topic configs), the input must stay untouched, and damaged
//! copies of the input must get their documented outcomes (docs/MIGRATION.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chronik_tests::{Broker, raft_ports, repo_dir, server_bin, write_cluster_toml};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    repo_dir().join("tests/fixtures/chronik-v1").join(name)
}

fn migrate(input: &Path, output: &Path, flags: &[&str]) -> Output {
    Command::new(server_bin())
        .args(["migrate-wal", "--json", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(flags)
        .output()
        .unwrap()
}

/// Runs a migration expected to succeed; its JSON report.
fn migrate_ok(input: &Path, output: &Path, flags: &[&str]) -> Value {
    let out = migrate(input, output, flags);
    assert!(out.status.success(), "migrate-wal failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir` with its bytes (the input must not change).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// One record as a consumer sees it: topic, partition, offset, timestamp, type, key, value,
/// headers.
type Seen = (String, i32, i64, i64, String, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

fn expected(name: &str) -> Vec<Seen> {
    let text = std::fs::read_to_string(fixture(name).join("expected.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let bytes = |v: &Value| v.as_str().map(b64);
            let headers = v["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().to_string(), bytes(&h[1])))
                .collect();
            (
                v["topic"].as_str().unwrap().to_string(),
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
                v["timestamp"].as_i64().unwrap(),
                v["timestamp_type"].as_str().unwrap().to_string(),
                bytes(&v["key_b64"]),
                bytes(&v["value_b64"]),
                headers,
            )
        })
        .collect()
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Reads every partition of `topics` from the beginning (CRCs checked), `want` records in all.
fn consume_all(bootstrap: &str, topics: &[(&str, i32)], want: usize) -> Vec<Seen> {
    let consumer: BaseConsumer =
        client(bootstrap).set("group.id", "migration-check").set("check.crcs", "true").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, n) in topics {
        for p in 0..*n {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < want && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        let (ts_type, ts) = match m.timestamp() {
            rdkafka::Timestamp::CreateTime(t) => ("CreateTime", t),
            rdkafka::Timestamp::LogAppendTime(t) => ("LogAppendTime", t),
            rdkafka::Timestamp::NotAvailable => ("NotAvailable", -1),
        };
        seen.push((
            m.topic().to_string(),
            m.partition(),
            m.offset(),
            ts,
            ts_type.to_string(),
            m.key().map(<[u8]>::to_vec),
            m.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    // Nothing beyond what v1 held (a short wait for stragglers).
    if let Some(m) = consumer.poll(Duration::from_millis(500)) {
        panic!(
            "a record beyond the expected ones: {:?}",
            m.map(|m| (m.topic().to_string(), m.partition(), m.offset()))
        );
    }
    seen
}

/// Topic-level configs the broker reports as set on the topic (not defaults).
async fn topic_configs(bootstrap: &str, topic: &str) -> BTreeMap<String, String> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts).await.unwrap();
    let resource = res.into_iter().next().unwrap().unwrap();
    resource.entries.into_iter().filter(|e| !e.is_default).map(|e| (e.name, e.value.unwrap_or_default())).collect()
}

fn committed(bootstrap: &str, group: &str, parts: &[(&str, i32)]) -> Vec<(String, i32, i64, String)> {
    let consumer: BaseConsumer = client(bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition(), e.offset().to_raw().unwrap(), e.metadata().to_string()))
        .collect()
}

fn topics_json(name: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&std::fs::read_to_string(fixture(name).join("topics.json")).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Migrates fixture `name` with `flags`, serves it, and checks everything against what v1
/// served. `keep_expired`: the run turned retention off where it would delete data.
async fn migrate_and_check(name: &str, flags: &[&str]) {
    let input = fixture(name).join("data");
    let before = snapshot(&input);
    let data = tempfile::tempdir().unwrap();
    let output = data.path().join("data");
    let report = migrate_ok(&input, &output, flags);
    assert_eq!(snapshot(&input), before, "the v1 directory is never modified");
    assert_eq!(report["records"], 1913);
    assert_eq!(report["verify"]["records_compared"], 1913, "{report:#}");
    assert_eq!(report["verify"]["mismatch_count"], 0, "{report:#}");
    assert_eq!(report["damage"].as_array().unwrap().len(), 0, "{report:#}");
    let second = migrate(&input, &output, flags);
    assert!(!second.status.success(), "a second run onto the same output is refused");
    assert!(String::from_utf8_lossy(&second.stderr).contains("is not empty"));

    let keep_expired = flags.contains(&"--keep-expired");
    let broker = Broker::start_in(data, &[("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "86400000")], &[]);
    let bootstrap = broker.bootstrap();

    // Records: every field of every record as v1 served it, nothing else.
    let want = expected(name);
    let mut got = consume_all(&bootstrap, &[("orders", 3), ("events", 1), ("compressed", 2)], want.len());
    got.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    assert_eq!(got.len(), want_sorted.len());
    for (g, w) in got.iter().zip(&want_sorted) {
        assert_eq!(g, w, "record {}-{} offset {}", w.0, w.1, w.2);
    }
    // v1 acknowledged these LZ4 batches but never stored them: they must not appear.
    let lost = std::fs::read_to_string(fixture(name).join("acked_not_stored.jsonl")).unwrap();
    for l in lost.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let (key, value, ts) =
            (v["key_b64"].as_str().map(b64), v["value_b64"].as_str().map(b64), v["timestamp"].as_i64());
        let same = |g: &&Seen| g.0 == v["topic"].as_str().unwrap() && g.5 == key && g.6 == value && Some(g.3) == ts;
        assert!(!got.iter().any(|g| same(&g)), "never-stored record present: {l}");
    }

    // An idempotent producer retrying its last batch across the migration is answered with
    // the batch's offset, not given a second copy (the sequence state came with the batches).
    let mut conn = chronik_tests::raw::connect(&broker);
    let batches = chronik_tests::raw::fetch_batches(&mut conn, "events", 0, 0, 406);
    let mut retry = batches.last().unwrap().to_vec();
    let original_base = i64::from_be_bytes(retry[0..8].try_into().unwrap());
    assert!(i64::from_be_bytes(retry[43..51].try_into().unwrap()) >= 0, "the last events batch is idempotent");
    retry[0..8].copy_from_slice(&0i64.to_be_bytes()); // as the client sends it
    let answer = chronik_tests::raw::try_produce(&mut conn, "events", 0, retry.into());
    assert_eq!(answer, Some((0, original_base)), "a retry is a duplicate");
    let (error, after) = chronik_tests::raw::fetch(&mut conn, "events", 0, 406);
    assert_eq!((error, after.len()), (0, 0), "nothing appended after offset 405");

    // Committed offsets, with their metadata.
    let groups: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("groups.json")).unwrap()).unwrap();
    for (group, commits) in groups.as_object().unwrap() {
        let commits = commits.as_array().unwrap();
        let parts: Vec<(&str, i32)> =
            commits.iter().map(|c| (c["topic"].as_str().unwrap(), c["partition"].as_i64().unwrap() as i32)).collect();
        let want: Vec<_> = commits
            .iter()
            .map(|c| {
                let (t, p) = (c["topic"].as_str().unwrap().to_string(), c["partition"].as_i64().unwrap() as i32);
                (t, p, c["offset"].as_i64().unwrap(), c["metadata"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(committed(&bootstrap, group, &parts), want, "group {group}");
    }

    // Topics and configs: as v1 had them, except what the report names.
    for t in topics_json(name) {
        let topic = t["name"].as_str().unwrap();
        let reported = report["topics"].as_array().unwrap().iter().find(|r| r["name"] == topic).unwrap();
        assert_eq!(reported["partitions"], t["partitions"], "{topic}");
        let dropped: Vec<&String> = reported["dropped_configs"].as_object().unwrap().keys().collect();
        let mut want: BTreeMap<String, String> = t["configs"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !dropped.contains(k))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let turned_off = reported["retention_turned_off"].as_array().unwrap();
        if keep_expired {
            for k in turned_off {
                want.insert(k.as_str().unwrap().to_string(), "-1".into());
            }
        } else {
            assert!(turned_off.is_empty(), "{topic}: retention left as the user set it");
        }
        assert_eq!(topic_configs(&bootstrap, topic).await, want, "{topic}");
    }
    // Only v1's own auto-created topic had configs this broker lacks.
    let dropped: Vec<(String, String)> = report["topics"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["dropped_configs"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| (t["name"].as_str().unwrap().to_string(), k.clone()))
        })
        .collect();
    assert_eq!(
        dropped,
        vec![
            ("chronik-default".to_string(), "compression.type".to_string()),
            ("chronik-default".to_string(), "min.insync.replicas".to_string())
        ]
    );
    // The output can be the bootstrap node of a cluster (`seed_nodes = []`), serving the same.
    let mut broker = broker;
    broker.stop();
    write_cluster_toml(broker.data.path(), 1, &raft_ports(1), &[]);
    broker.args = ["-c", "chronik.toml", "cluster"].map(String::from).to_vec();
    broker.start_again();
    let again = consume_all(&broker.bootstrap(), &[("orders", 3), ("events", 1), ("compressed", 2)], want.len());
    assert_eq!(again.len(), want.len(), "served by the cluster's bootstrap node");

    // The records are from January 2026: with the default 7-day retention the first check
    // would delete them all. Reported by default; turned off with --keep-expired.
    for (topic, records) in [("orders", 1200), ("events", 406), ("compressed", 307)] {
        let r = report["topics"].as_array().unwrap().iter().find(|r| r["name"] == topic).unwrap();
        if keep_expired {
            assert!(r["retention_would_delete"].is_null(), "{topic}: {r}");
            assert_eq!(r["retention_turned_off"][0], "retention.ms", "{topic}");
        } else {
            assert_eq!(r["retention_would_delete"]["records"], records, "{topic}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_fixture_migrates_exactly() {
    migrate_and_check("graceful", &["--verify"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_fixture_migrates_exactly_with_retention_kept_off() {
    migrate_and_check("killed", &["--verify", "--keep-expired"]).await;
}

/// A copy of fixture `name`'s data directory to damage.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status =
        Command::new("cp").arg("-a").arg(fixture(name).join("data")).arg(dir.path().join("in")).status().unwrap();
    assert!(status.success());
    dir
}

fn partition<'a>(report: &'a Value, topic: &str, p: i64) -> &'a Value {
    report["partitions"].as_array().unwrap().iter().find(|r| r["topic"] == topic && r["partition"] == p).unwrap()
}

#[test]
fn damaged_inputs_get_their_documented_outcomes() {
    // A truncated last record where no segment object has a copy (killed: `compressed` was
    // never indexed): reported as a torn tail, the partition ends at the last whole batch.
    let d = copy_of("killed");
    let wal = d.path().join("in/wal/compressed/1/wal_1_0.log");
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len - 7).unwrap();
    let report = migrate_ok(&d.path().join("in"), &d.path().join("out"), &["--verify"]);
    let damage = report["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 1, "{report:#}");
    assert_eq!(damage[0]["kind"], "torn-tail");
    assert!(damage[0]["file"].as_str().unwrap().ends_with("compressed/1/wal_1_0.log"));
    let p = partition(&report, "compressed", 1);
    assert!(p["records"].as_u64().unwrap() < 161 && p["records"].as_u64().unwrap() > 100, "{p}");
    assert_eq!(report["verify"]["mismatch_count"], 0);

    // The same cut where segment objects hold a copy (graceful): nothing is lost.
    let d = copy_of("graceful");
    let wal = d.path().join("in/wal/compressed/1/wal_1_0.log");
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len - 7).unwrap();
    let report = migrate_ok(&d.path().join("in"), &d.path().join("out"), &["--verify"]);
    let p = partition(&report, "compressed", 1);
    assert_eq!((p["records"].as_u64(), p["from_segment_objects"].as_u64()), (Some(161), Some(1)), "{p}");

    // A flipped byte in the middle of a WAL file: an error naming file and byte offset...
    let d = copy_of("killed");
    let wal = d.path().join("in/wal/orders/0/wal_0_0.log");
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x5A;
    std::fs::write(&wal, &bytes).unwrap();
    let out = migrate(&d.path().join("in"), &d.path().join("out"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("orders/0/wal_0_0.log")
            && err.contains("corrupt record at byte")
            && err.contains("checksum")
            && err.contains("was left as it is"),
        "{err}"
    );
    // ... and with --skip-corrupt the record is listed, its batch taken from the segment
    // object v1 wrote earlier (phase A was indexed), so nothing is lost.
    let report = migrate_ok(&d.path().join("in"), &d.path().join("out2"), &["--skip-corrupt", "--verify"]);
    let damage = report["damage"].as_array().unwrap();
    assert_eq!((damage.len(), damage[0]["kind"].as_str()), (1, Some("skipped")), "{report:#}");
    assert!(damage[0]["at"].as_u64().unwrap() <= middle as u64);
    let p = partition(&report, "orders", 0);
    assert_eq!((p["records"].as_u64(), p["from_segment_objects"].as_u64()), (Some(347), Some(1)), "{p}");
    assert_eq!(report["verify"]["mismatch_count"], 0);

    // A missing segment object: the WAL has every record; the report names the object.
    let d = copy_of("graceful");
    std::fs::remove_file(d.path().join("in/segments/segments/orders/0/0-346.segment")).unwrap();
    let report = migrate_ok(&d.path().join("in"), &d.path().join("out"), &[]);
    assert_eq!(report["records"], 1913);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("segments/orders/0/0-346.segment") && warnings.contains("missing"), "{warnings}");

    // An empty metadata log: topics from the data directories (no configs), no groups.
    let d = copy_of("graceful");
    std::fs::write(d.path().join("in/metadata_wal/__chronik_metadata/0/wal_0_0.log"), b"").unwrap();
    let report = migrate_ok(&d.path().join("in"), &d.path().join("out"), &[]);
    assert_eq!(report["records"], 1913);
    let topics: Vec<(String, u64)> = report["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["partitions"].as_u64().unwrap()))
        .collect();
    assert_eq!(topics, vec![("compressed".into(), 2), ("events".into(), 1), ("orders".into(), 3)]);
    assert_eq!(report["groups"].as_array().unwrap().len(), 0);
    assert!(report["warnings"].to_string().contains("metadata log holds no events"));
}
