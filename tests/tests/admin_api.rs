//! docs/ADMIN_API.md against a running node: every `GET` endpoint it documents answers 200
//! with exactly the fields of its example (recursively; arrays by their first element); the
//! cluster operations answer as documented on a node of one (moves and removals in a cluster
//! are tested in tests/tests/cluster.rs).

use chronik_tests::raw::{batch, connect, create_topic, try_produce};
use chronik_tests::{Broker, http_get, http_post_bytes, http_post_json, repo_dir};
use serde_json::Value;

/// (path, example) of each documented `GET` endpoint that answers JSON.
fn documented() -> Vec<(String, Value)> {
    let doc = std::fs::read_to_string(repo_dir().join("docs/ADMIN_API.md")).unwrap();
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix("### `GET ").and_then(|p| p.strip_suffix('`')) else { continue };
        let mut json = None;
        for l in lines.by_ref() {
            if l.starts_with("### ") {
                break;
            }
            if l == "```json" {
                json = Some(lines.by_ref().take_while(|l| *l != "```").collect::<Vec<_>>().join("\n"));
                break;
            }
        }
        if let Some(json) = json {
            out.push((path.to_string(), serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}"))));
        }
    }
    out
}

/// The fields of a JSON value, recursively: objects by their keys, arrays by their first
/// element, everything else by its type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

#[test]
fn every_documented_endpoint_answers_with_the_documented_fields() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    assert_eq!(create_topic(&mut s, "orders", 1), 0);
    assert_eq!(try_produce(&mut s, "orders", 0, batch(&[chronik_tests::now_ms()], b"x", -1)).map(|r| r.0), Some(0));
    // The snapshots example shows a node that took one.
    assert_eq!(http_post_json(&b.admin_url("/admin/cluster/snapshot"), "{}").0, 200);
    let documented = documented();
    assert!(documented.len() >= 7, "the doc lists the endpoints: {documented:?}");
    for (path, example) in documented {
        let (status, body) = http_get(&b.admin_url(&path));
        assert_eq!(status, 200, "{path}: {body}");
        let mut live: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        if let Value::Array(items) = &mut live {
            // The examples show the user's topic; the node also hosts __consumer_offsets.
            items.retain(|i| i.get("topic").or(i.get("name")) != Some(&Value::from("__consumer_offsets")));
        }
        assert_eq!(shape(&live), shape(&example), "{path}: the answer's fields differ from docs/ADMIN_API.md:\n{body}");
    }
}

#[test]
fn cluster_operations_answer_as_documented_on_a_node_of_one() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    assert_eq!(create_topic(&mut s, "orders", 1), 0);
    let post = |path: &str, body: &str| {
        let (status, body) = http_post_json(&b.admin_url(path), body);
        (status, serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
    };
    // (path, body, status, what the answer says)
    let cases = [
        ("/admin/cluster/move-partition", r#"{"topic":"orders","partition":0,"replicas":[1]}"#, 202, r#""move":null"#),
        ("/admin/cluster/move-partition", r#"{"topic":"orders","partition":0,"replicas":[2]}"#, 404, "node 2"),
        ("/admin/cluster/move-partition", r#"{"topic":"orders","partition":3,"replicas":[1]}"#, 404, "no partition 3"),
        ("/admin/cluster/move-partition", r#"{"topic":"orders","partition":0,"replicas":[1,1]}"#, 400, "twice"),
        ("/admin/cluster/move-partition", r#"{"topic":"nope","partition":0,"replicas":[1]}"#, 404, "'nope'"),
        ("/admin/cluster/remove-node", r#"{"node_id":1}"#, 409, "the last node"),
        ("/admin/cluster/remove-node", r#"{"node_id":9}"#, 404, "node 9"),
        ("/admin/cluster/transfer-leader", r#"{"to":1}"#, 200, r#""group":"metadata""#),
        ("/admin/cluster/transfer-leader", r#"{"topic":"orders","partition":0,"to":1}"#, 200, r#""group":"orders-0""#),
        ("/admin/cluster/transfer-leader", r#"{"to":2}"#, 400, "node 2 is not a voter"),
        ("/admin/cluster/transfer-leader", r#"{"topic":"orders","to":1}"#, 400, "both topic and partition"),
        ("/admin/cluster/promote", r#"{"node_id":1}"#, 200, r#""role":"voter""#),
        ("/admin/cluster/promote", r#"{"node_id":2}"#, 404, "node 2"),
        ("/admin/cluster/backup", r#"{}"#, 501, "not supported"),
    ];
    for (path, body, status, says) in cases {
        let (got, answer) = post(path, body);
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert!(answer.to_string().contains(says), "{path} {body}: {answer} should say {says}");
    }
    let (status, body) = http_get(&b.admin_url("/admin/cluster/moves"));
    assert_eq!((status, body.as_str()), (200, r#"{"leaving":[],"moves":[]}"#), "nothing moved or left");
}

#[test]
fn a_snapshot_on_request_moves_the_log_out_of_the_wal_and_keeps_every_record() {
    let mut b = Broker::start(&[
        ("CHRONIK_WAL_SEGMENT_SIZE", "262144"),
        ("CHRONIK_MAX_REQUEST_SIZE", "258048"),
        ("CHRONIK_MESSAGE_MAX_BYTES", "100000"),
    ]);
    let mut s = connect(&b);
    assert_eq!(create_topic(&mut s, "orders", 1), 0);
    let value = vec![7u8; 16 << 10];
    for i in 0..60 {
        assert_eq!(try_produce(&mut s, "orders", 0, batch(&[chronik_tests::now_ms()], &value, -1)), Some((0, i)));
    }
    let orders = |answer: &Value| -> Value {
        let groups = answer["groups"].as_array().unwrap_or_else(|| panic!("groups: {answer}")).clone();
        groups.into_iter().find(|g| g["topic"] == "orders").unwrap_or_else(|| panic!("orders: {answer}"))
    };
    let (status, body) = http_get(&b.admin_url("/admin/cluster/snapshots"));
    assert_eq!(status, 200, "{body}");
    let before: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(orders(&before)["purged_through"], Value::Null, "nothing dropped yet: {before}");

    let (status, body) = http_post_json(&b.admin_url("/admin/cluster/snapshot"), "{}");
    assert_eq!(status, 200, "{body}");
    let taken: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(taken["failed"], serde_json::json!([]), "{taken}");
    assert_eq!(taken["groups"][0]["group"], 0, "the metadata group first: {taken}");
    assert!(taken["groups"][0]["index"].as_u64().is_some(), "{taken}");
    let snapshot = orders(&taken);
    let index = snapshot["index"].as_u64().unwrap_or_else(|| panic!("{taken}"));
    assert!(index >= 60, "a snapshot past the 60 produced entries: {taken}");
    assert_eq!(snapshot["purged_through"].as_u64(), Some(index), "the WAL let go of all of them: {taken}");
    let (before, after) =
        (taken["wal_segments_before"].as_u64().unwrap(), taken["wal_segments_after"].as_u64().unwrap());
    assert!(before >= 3 && after < before, "about 1 MB in 256 KiB segments, then fewer: {taken}");
    let (status, body) = http_get(&b.admin_url("/admin/cluster/snapshots"));
    assert_eq!(status, 200);
    assert_eq!(orders(&serde_json::from_str(&body).unwrap()), snapshot, "the list shows the same snapshot");

    // Every record is still served, from the segment files, before and after a restart.
    for round in 0..2 {
        let mut s = connect(&b);
        let batches = chronik_tests::raw::fetch_batches(&mut s, "orders", 0, 0, 60);
        assert_eq!(batches.len(), 60, "round {round}");
        assert!(batches.iter().all(|b| b.len() > value.len()), "round {round}");
        b.restart();
    }
    let mut s = connect(&b);
    assert_eq!(try_produce(&mut s, "orders", 0, batch(&[chronik_tests::now_ms()], b"after", -1)), Some((0, 60)));
}

/// A batch re-stamped at `offset` (outside its CRC, as a broker stamps it).
fn batch_at(offset: i64) -> Vec<u8> {
    let mut b = batch(&[chronik_tests::now_ms()], b"imported", -1).to_vec();
    b[0..8].copy_from_slice(&offset.to_be_bytes());
    b
}

#[test]
fn the_import_endpoint_keeps_offsets_and_refuses_what_is_out_of_place() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    assert_eq!(create_topic(&mut s, "copied", 1), 0);
    let post = |path: &str, body: &[u8]| {
        let (status, body) = http_post_bytes(&b.admin_url(path), body);
        (status, serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
    };
    let mut corrupt = batch_at(5);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    // (path, body, status, what the answer says), in order: each builds on the one before.
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/admin/import/copied/0?log_start=5",
            [batch_at(5), batch_at(9)].concat(),
            200,
            r#"{"log_start_offset":5,"next_offset":10}"#,
        ),
        ("/admin/import/copied/0", batch_at(7), 400, "out of order"),
        ("/admin/import/copied/0", corrupt, 400, "CRC"),
        ("/admin/import/copied/0", b"junk".to_vec(), 400, "not valid record batches"),
        ("/admin/import/copied/3", batch_at(0), 404, "no partition copied-3"),
        ("/admin/import/copied/0", batch_at(10), 200, r#""next_offset":11"#),
    ];
    for (path, body, status, says) in cases {
        let (got, answer) = post(path, &body);
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer.to_string().contains(says), "{path}: {answer} should say {says}");
    }
    // What a consumer reads: the imported batches at their own offsets, the gap kept.
    let fetched = chronik_tests::raw::fetch_batches(&mut s, "copied", 0, 5, 11);
    let bases: Vec<i64> = fetched.iter().map(|b| i64::from_be_bytes(b[0..8].try_into().unwrap())).collect();
    assert_eq!(bases, vec![5, 9, 10]);
    let (error, _) = chronik_tests::raw::fetch(&mut s, "copied", 0, 2);
    assert_eq!(error, 1, "below the log start: OFFSET_OUT_OF_RANGE");
}
