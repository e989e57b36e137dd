//! The one list of configuration keys: file path, environment variable, kind and meaning.

/// How a key's value is written (in the file, and parsed from its environment variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// A list of strings; in the environment, comma-separated.
    StrList,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
}

#[derive(Debug)]
pub struct Key {
    /// Dotted path in chronik.toml (`cluster.raft.election_timeout_ms`).
    pub path: &'static str,
    pub kind: Kind,
    /// What the default is when it is not a plain value (for optional keys).
    pub default_note: Option<&'static str>,
    pub doc: &'static str,
}

impl Key {
    /// The key's own name, without its section.
    pub fn name(&self) -> &'static str {
        self.path.rsplit('.').next().unwrap_or(self.path)
    }

    /// `CHRONIK_` + the key's own name in capitals (names are unique across sections).
    pub fn env_var(&self) -> String {
        format!("CHRONIK_{}", self.name().to_ascii_uppercase())
    }
}

/// Sections that may appear as tables in chronik.toml.
pub const SECTIONS: &[&str] = &["kafka", "cluster", "cluster.raft", "cluster.network", "cluster.storage"];

const fn key(path: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key { path, kind, default_note: None, doc }
}

pub const KEYS: &[Key] = &[
    key("data_dir", Kind::Str, "Directory for the WAL, node identity and metadata. Created if missing."),
    key("kafka_addr", Kind::Str, "Address the Kafka listener binds (ip:port)."),
    Key {
        path: "advertised_kafka_addr",
        kind: Kind::Str,
        default_note: Some("the value of `kafka_addr`"),
        doc: "Address (host:port) given to clients in Metadata responses.",
    },
    key("admin_addr", Kind::Str, "Address the admin HTTP API binds (ip:port)."),
    key(
        "log_level",
        Kind::Str,
        "Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such as `chronik=debug`).",
    ),
    key(
        "kafka.auto_create_topics",
        Kind::Bool,
        "Create a topic when a client asks for metadata of an unknown topic (as Kafka: a produce to it first gets \
            UNKNOWN_TOPIC_OR_PARTITION, and the client's metadata refresh creates it).",
    ),
    key(
        "kafka.num_partitions",
        Kind::Int,
        "Partitions of an auto-created topic, and of CreateTopics requests that leave the count to the broker.",
    ),
    key(
        "kafka.default_replication_factor",
        Kind::Int,
        "Replication factor of auto-created topics and of CreateTopics requests that leave it to the broker.",
    ),
    key(
        "kafka.max_partitions",
        Kind::Int,
        "Most partitions the cluster may hold in total (each is a Raft group); creations beyond it are refused.",
    ),
    key(
        "kafka.max_request_size",
        Kind::Int,
        "Largest Kafka request frame accepted, in bytes; a larger one closes the connection.",
    ),
    key(
        "kafka.message_max_bytes",
        Kind::Int,
        "Default `max.message.bytes` of topics: the largest record batch accepted.",
    ),
    key("kafka.log_retention_ms", Kind::Int, "Default `retention.ms` of topics; -1 keeps data forever."),
    key("kafka.log_retention_bytes", Kind::Int, "Default `retention.bytes` of each partition; -1 means no size limit."),
    key(
        "kafka.retention_check_interval_ms",
        Kind::Int,
        "How often retention, and on compacted topics compaction, is applied to every partition.",
    ),
    key(
        "kafka.offsets_topic_segment_bytes",
        Kind::Int,
        "`segment.bytes` of `__consumer_offsets` (a compacted topic): its newest commits roll into a segment file \
            at this size, and compaction then keeps the latest commit of each group and partition.",
    ),
    key(
        "kafka.log_cleaner_max_compaction_lag_ms",
        Kind::Int,
        "Default `max.compaction.lag.ms` of compacted topics (`__consumer_offsets` included): compact once the \
            oldest uncompacted segment file is this old, whatever the dirty ratio.",
    ),
    key(
        "kafka.log_cleaner_io_max_bytes_per_second",
        Kind::Int,
        "Bytes per second log compaction may read plus write, over all partitions of the node; 0 means no limit.",
    ),
    key(
        "kafka.log_message_timestamp_before_max_ms",
        Kind::Int,
        "Default `message.timestamp.before.max.ms` of topics: a CreateTime batch whose timestamps lie further \
            in the past than this is refused (INVALID_TIMESTAMP).",
    ),
    key(
        "kafka.log_message_timestamp_after_max_ms",
        Kind::Int,
        "Default `message.timestamp.after.max.ms` of topics: a CreateTime batch whose timestamps lie further \
            in the future than this is refused (INVALID_TIMESTAMP). Kafka 4's default.",
    ),
    key(
        "kafka.fetch_max_bytes",
        Kind::Int,
        "Most record bytes one Fetch response carries, whatever the request asks (Kafka's `fetch.max.bytes`); \
            the first batch is returned even if larger, so a consumer always progresses.",
    ),
    key(
        "kafka.offset_metadata_max_bytes",
        Kind::Int,
        "Longest metadata string an offset commit may carry; a longer one gets OFFSET_METADATA_TOO_LARGE.",
    ),
    key(
        "kafka.group_initial_rebalance_delay_ms",
        Kind::Int,
        "How long the first rebalance of an empty consumer group waits for more members (each newcomer \
            extends it, up to the rebalance timeout), so consumers starting together get one assignment. 0 \
            rebalances at once.",
    ),
    key(
        "kafka.producer_id_expiration_ms",
        Kind::Int,
        "An idempotent producer's state is dropped from a partition after this long without a batch from it \
            (Kafka's `producer.id.expiration.ms`).",
    ),
    key(
        "kafka.max_connections",
        Kind::Int,
        "Most client connections at once; beyond it new connections wait in the listen backlog until one closes.",
    ),
    key(
        "kafka.max_connections_per_ip",
        Kind::Int,
        "Most client connections from one IP address; a connection beyond it is closed at once.",
    ),
    key(
        "kafka.queued_max_request_bytes",
        Kind::Int,
        "Most bytes of requests read and not yet answered, over all connections; when reached, the broker stops \
            reading sockets until responses go out. At least `max_request_size`.",
    ),
    key(
        "cluster.enabled",
        Kind::Bool,
        "Must be true for `chronik-server cluster`; a standalone node refuses a config that sets it.",
    ),
    key("cluster.node_id", Kind::Int, "This node's id, 1-65535. Never reuse the id of a removed node."),
    key("cluster.node_addr", Kind::Str, "Address the Raft listener binds (ip:port)."),
    Key {
        path: "cluster.advertised_node_addr",
        kind: Kind::Str,
        default_note: Some("the value of `node_addr`"),
        doc: "Address (host:port) other nodes use to reach this node's Raft listener.",
    },
    key(
        "cluster.seed_nodes",
        Kind::StrList,
        "Nodes to join through, as `id@host:port`; empty makes this node bootstrap a new cluster.",
    ),
    key(
        "cluster.raft.election_timeout_ms",
        Kind::Int,
        "How long a Raft follower hears nothing from its leader before it may start an election (and before it grants another candidate its vote). Must exceed the heartbeat interval.",
    ),
    key("cluster.raft.heartbeat_interval_ms", Kind::Int, "Raft heartbeat interval."),
    key("cluster.raft.max_payload_entries", Kind::Int, "Most log entries sent in one replication request."),
    key(
        "cluster.raft.snapshot_threshold",
        Kind::Int,
        "Metadata-log entries after which the metadata group takes a snapshot.",
    ),
    key(
        "cluster.raft.compaction_retain_entries",
        Kind::Int,
        "Metadata-log entries kept behind a snapshot when the metadata log is compacted.",
    ),
    key(
        "cluster.network.max_message_size",
        Kind::Int,
        "Largest Raft network message, in bytes: one Raft entry (up to `kafka.max_request_size`) must fit, with \
            64 KiB to spare; appends of more entries go in parts.",
    ),
    key("cluster.network.connect_timeout_ms", Kind::Int, "Timeout for connecting to a peer."),
    key("cluster.network.request_timeout_ms", Kind::Int, "Timeout for a Raft request to a peer."),
    key(
        "cluster.network.append_pipeline_depth",
        Kind::Int,
        "Appends to one follower of one Raft group on their way at once, each sent without waiting for the answers \
            to those before it (1 to 64). 1 sends one at a time, which batches best: it measured fastest with the \
            nodes on one machine (docs/BENCHMARKS.md). More can help where a round trip between nodes is long \
            compared with a durable write.",
    ),
    key(
        "cluster.storage.wal_sync_mode",
        Kind::Enum(&["always", "periodic"]),
        "`always`: a write counts as durable only after an fdatasync covering it (shared by all concurrent \
            writes). `periodic`: durable once written to the OS, with an fdatasync every `wal_sync_interval_ms` (a \
            power loss can lose that window; a process crash loses nothing).",
    ),
    key("cluster.storage.wal_sync_interval_ms", Kind::Int, "fdatasync interval in `periodic` mode."),
    key(
        "cluster.storage.wal_segment_size",
        Kind::Int,
        "Size of each WAL segment file, in bytes (64 KiB to 2 GiB); segments are preallocated (or recycled) before \
            use.",
    ),
    key(
        "cluster.storage.wal_page_cache_bytes",
        Kind::Int,
        "How much of the newest WAL data is left in the OS page cache. Older data of full segments is dropped from \
            the page cache as the log grows, so new writes reuse memory rather than growing the cache; consumers \
            reading further back read from disk (with `pread`, which reads ahead). 0 leaves caching to the kernel, \
            as Kafka does.",
    ),
    key(
        "cluster.storage.wal_retention_bytes",
        Kind::Int,
        "The WAL's window: once its segments hold more than this, the oldest entries move to their \
            partitions' own segment files (`<data_dir>/partitions/<group>/`), so a long-retention partition \
            never pins the WAL. Data that retention deletes first is never copied. At least two WAL segments.",
    ),
];

pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// The default of `key` as written in chronik.toml (or its note, for optional keys).
pub fn default_text(key: &Key) -> String {
    let defaults = toml::Value::try_from(crate::Config::default()).expect("defaults serialize");
    let mut v = &defaults;
    for part in key.path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return key.default_note.map(|n| format!("({n})")).unwrap_or_else(|| "(none)".into()),
        }
    }
    v.to_string()
}

/// The key reference table of docs/CONFIGURATION.md, generated from [`KEYS`] and the defaults.
pub fn reference_markdown() -> String {
    let mut out = String::from("| key | default | environment | meaning |\n|---|---|---|---|\n");
    for key in KEYS {
        let default = match key.default_note {
            Some(note) => note.to_string(),
            None => format!("`{}`", default_text(key).replace('|', "\\|")),
        };
        let kind = match key.kind {
            Kind::Enum(options) => {
                format!(" One of: {}.", options.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", "))
            }
            Kind::StrList => " In the environment: comma-separated.".to_string(),
            _ => String::new(),
        };
        out.push_str(&format!("| `{}` | {} | `{}` | {}{} |\n", key.path, default, key.env_var(), key.doc, kind));
    }
    out
}
