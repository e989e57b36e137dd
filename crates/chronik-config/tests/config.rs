use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use chronik_config::keys::{KEYS, reference_markdown};
use chronik_config::{Config, ConfigErrors, Origin, WalSyncMode, load};

fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chronik.toml");
    std::fs::write(&path, toml).unwrap();
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    load(Some(&path), &|k| env.get(k).cloned())
}

#[test]
fn defaults_without_file_or_env() {
    let c = load(None, &|_| None).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.kafka_addr, "127.0.0.1:9092");
    assert_eq!(c.advertised_kafka_addr(), "127.0.0.1:9092");
    assert_eq!(c.admin_addr, "127.0.0.1:8080");
    assert_eq!(c.data_dir, Path::new("./data"));
}

#[test]
fn seed_document_example_loads() {
    let c = load_str(
        "[cluster]\nenabled = true\nnode_id = 3\nnode_addr = \"0.0.0.0:9093\"\nadvertised_node_addr = \
            \"node3:9093\"\nseed_nodes = [\"1@node1:9093\", \"2@node2:9093\"]\n",
        &[],
    )
    .unwrap();
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.node_id, 3);
    assert_eq!(
        c.cluster.seeds().iter().map(|s| (s.id, s.addr.as_str())).collect::<Vec<_>>(),
        vec![(1, "node1:9093"), (2, "node2:9093")]
    );
}

#[test]
fn env_overrides_file_overrides_defaults() {
    let c = load_str(
        "kafka_addr = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\n[cluster.raft]\nelection_timeout_ms = 900\n\
            [cluster.storage]\nwal_sync_mode = \"always\"\n",
        &[
            ("CHRONIK_KAFKA_ADDR", "127.0.0.1:2222"),
            ("CHRONIK_SEED_NODES", "1@a:9093, 2@b:9093"),
            ("CHRONIK_NODE_ID", "2"),
            ("CHRONIK_WAL_SYNC_MODE", "periodic"),
            ("CHRONIK_AUTO_CREATE_TOPICS", "false"),
        ],
    )
    .unwrap();
    assert_eq!(c.kafka_addr, "127.0.0.1:2222", "env beats file");
    assert_eq!(c.data_dir, Path::new("/from/file"), "file beats default");
    assert_eq!(c.cluster.raft.election_timeout_ms, 900);
    assert_eq!(c.cluster.raft.heartbeat_interval_ms, 100, "default");
    assert_eq!(c.cluster.seed_nodes, vec!["1@a:9093", "2@b:9093"]);
    assert_eq!(c.cluster.node_id, 2);
    assert_eq!(c.cluster.storage.wal_sync_mode, WalSyncMode::Periodic);
    assert!(!c.kafka.auto_create_topics);
}

/// (config file, environment, expected (key, line or env var, message fragment) for every error)
#[test]
fn validation_errors_name_key_and_line() {
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("unknown top-level key", "kafka_adr = \"x\"\n", vec![], vec![("kafka_adr", "line 1", "unknown key")]),
        (
            "unknown key in section",
            "[cluster]\nenabled = true\nnode = 1\n",
            vec![],
            vec![("cluster.node", "line 3", "unknown key")],
        ),
        (
            "node id zero",
            "[cluster]\nnode_id = 0\n",
            vec![],
            vec![("cluster.node_id", "line 2", "between 1 and 65535")],
        ),
        (
            "node id too big",
            "[cluster]\nnode_id = 70000\n",
            vec![],
            vec![("cluster.node_id", "line 2", "between 1 and 65535")],
        ),
        (
            "heartbeat not below election timeout",
            "[cluster.raft]\nelection_timeout_ms = 100\nheartbeat_interval_ms = 100\n",
            vec![],
            vec![("cluster.raft.heartbeat_interval_ms", "line 3", "below election_timeout_ms")],
        ),
        (
            "seed without id",
            "[cluster]\nseed_nodes = [\"node1:9093\"]\n",
            vec![],
            vec![("cluster.seed_nodes", "line 2", "id@host:port")],
        ),
        (
            "seed with bad port",
            "[cluster]\nseed_nodes = [\"1@node1:99999\"]\n",
            vec![],
            vec![("cluster.seed_nodes", "line 2", "port")],
        ),
        (
            "unparseable listen address",
            "kafka_addr = \"localhost\"\n",
            vec![],
            vec![("kafka_addr", "line 1", "ip:port")],
        ),
        (
            "wrong type",
            "[cluster]\nnode_id = \"one\"\n",
            vec![],
            vec![("cluster.node_id", "line 2", "expected an integer")],
        ),
        (
            "bad enum",
            "[cluster.storage]\nwal_sync_mode = \"sometimes\"\n",
            vec![],
            vec![("cluster.storage.wal_sync_mode", "line 2", "always, periodic")],
        ),
        (
            "bad env value",
            "",
            vec![("CHRONIK_NODE_ID", "x")],
            vec![("cluster.node_id", "CHRONIK_NODE_ID", "not an integer")],
        ),
        (
            "env value fails validation",
            "",
            vec![("CHRONIK_NODE_ID", "0")],
            vec![("cluster.node_id", "CHRONIK_NODE_ID", "between 1 and 65535")],
        ),
        (
            "section that is not a table, overridden by env",
            "kafka = 1\n",
            vec![("CHRONIK_NUM_PARTITIONS", "3")],
            vec![("kafka", "line 1", "table")],
        ),
        (
            "all interfaces, nothing advertised",
            "kafka_addr = \"0.0.0.0:9092\"\n",
            vec![],
            vec![("kafka_addr", "line 1", "advertised_kafka_addr")],
        ),
        (
            "more partitions per topic than in all",
            "[kafka]\nnum_partitions = 20\nmax_partitions = 10\n",
            vec![],
            vec![("kafka.num_partitions", "line 2", "max_partitions")],
        ),
        (
            "negative count",
            "[kafka]\nnum_partitions = -1\n",
            vec![],
            vec![("kafka.num_partitions", "line 2", "integer `-1`")],
        ),
        (
            "out of range from env",
            "",
            vec![("CHRONIK_NUM_PARTITIONS", "-3")],
            vec![("kafka.num_partitions", "CHRONIK_NUM_PARTITIONS", "integer `-3`")],
        ),
        (
            "segment smaller than the largest request",
            "[kafka]\nmax_request_size = 5000000\n[cluster.storage]\nwal_segment_size = 4194304\n",
            vec![],
            vec![("cluster.storage.wal_segment_size", "line 4", "must hold the largest request")],
        ),
        (
            "Raft messages smaller than the largest request, in a cluster",
            "[cluster]\nenabled = true\n[cluster.network]\nmax_message_size = 1048576\n",
            vec![],
            vec![("cluster.network.max_message_size", "line 4", "must hold the largest request as one Raft entry")],
        ),
        (
            "pipeline deeper than allowed",
            "[cluster.network]\nappend_pipeline_depth = 65\n",
            vec![],
            vec![("cluster.network.append_pipeline_depth", "line 2", "must be at most 64")],
        ),
        (
            "request budget below one request",
            "[kafka]\nqueued_max_request_bytes = 1000\n",
            vec![],
            vec![("kafka.queued_max_request_bytes", "line 2", "at least kafka.max_request_size")],
        ),
        (
            "several at once",
            "kafka_addr = \"nope\"\n[cluster]\nnode_id = 0\nseed_nodes = [\"x\"]\n",
            vec![],
            vec![
                ("kafka_addr", "line 1", "ip:port"),
                ("cluster.node_id", "line 3", "between"),
                ("cluster.seed_nodes", "line 4", "id@host:port"),
            ],
        ),
    ];
    for (name, file, env, expected) in cases {
        let errors = load_str(file, &env).expect_err(name).0;
        assert_eq!(errors.len(), expected.len(), "{name}: {errors:?}");
        for ((key, place, fragment), e) in expected.iter().zip(&errors) {
            assert_eq!(e.key.as_deref(), Some(*key), "{name}");
            let shown = e.to_string();
            match &e.origin {
                Origin::File { line, .. } => {
                    assert_eq!(format!("line {}", line.unwrap_or(0)), *place, "{name}: {shown}")
                }
                Origin::Env(var) => assert_eq!(var, place, "{name}"),
                Origin::Default => panic!("{name}: error without origin: {shown}"),
            }
            assert!(shown.contains(fragment), "{name}: `{shown}` should mention `{fragment}`");
        }
    }
}

#[test]
fn broken_toml_names_the_line() {
    let errors = load_str("data_dir = \"/x\"\n[cluster\nnode_id = 1\n", &[]).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors[0].origin, Origin::File { line: Some(2), .. }), "{:?}", errors[0]);
}

#[test]
fn key_table_matches_config_struct() {
    // Every leaf of the serialized defaults is a documented key, and every documented key is a
    // field (optional ones serialize as absent, so they carry a default note instead).
    fn leaves(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if v.is_table() {
                    leaves(v, &p, out)
                } else {
                    out.insert(p);
                }
            }
        }
    }
    let mut fields = BTreeSet::new();
    leaves(&toml::Value::try_from(Config::default()).unwrap(), "", &mut fields);
    let documented: BTreeSet<String> =
        KEYS.iter().filter(|k| k.default_note.is_none()).map(|k| k.path.to_string()).collect();
    assert_eq!(fields, documented);
    let names: BTreeSet<&str> = KEYS.iter().map(|k| k.name()).collect();
    assert_eq!(names.len(), KEYS.len(), "key names must be unique across sections (they name the env vars)");
    for key in KEYS.iter().filter(|k| k.default_note.is_some()) {
        let env = [(key.env_var(), "host:1234".to_string())];
        let c = load(None, &|k| env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone())).unwrap();
        assert!(format!("{c:?}").contains("host:1234"), "{} is a real field", key.path);
    }
}

#[test]
fn configuration_doc_matches_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIGURATION.md");
    let doc = std::fs::read_to_string(&path).expect("docs/CONFIGURATION.md exists");
    let (begin, end) = ("<!-- BEGIN GENERATED: chronik-config keys -->\n", "<!-- END GENERATED -->");
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let stop = doc[start..].find(end).expect("end marker") + start;
    let generated = reference_markdown();
    if std::env::var("CHRONIK_UPDATE_DOCS").is_ok() {
        std::fs::write(&path, format!("{}{}{}", &doc[..start], generated, &doc[stop..])).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..stop],
        generated,
        "docs/CONFIGURATION.md is out of date; regenerate with CHRONIK_UPDATE_DOCS=1 cargo test -p chronik-config \
            --test config"
    );
}

#[test]
fn example_configs_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            load(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 4, "config/ should hold the standalone example and three cluster node files");
}
