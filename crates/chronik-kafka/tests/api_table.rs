//! The advertised API table against the handlers: every advertised (API, version) is served
//! with a response that decodes at that version; anything else is refused. And
//! docs/KAFKA_API.md is the table.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use chronik_cluster::Tasks;
use chronik_config::Config;
use chronik_kafka::handlers::{self, Outcome};
use chronik_kafka::{Broker, versions};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;

async fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.cluster.storage.wal_segment_size = 1 << 20;
    config.kafka.max_partitions = 1000;
    config.kafka.max_request_size = 1 << 19;
    Broker::start(&config, &Tasks::new()).await.unwrap()
}

/// A default request of `key`, as a client would send it.
fn request(key: ApiKey) -> RequestKind {
    match key {
        ApiKey::Produce => ProduceRequest::default().with_acks(1).into(),
        ApiKey::Fetch => FetchRequest::default().into(),
        ApiKey::ListOffsets => ListOffsetsRequest::default().into(),
        ApiKey::Metadata => MetadataRequest::default().into(),
        ApiKey::OffsetCommit => OffsetCommitRequest::default().into(),
        ApiKey::OffsetFetch => OffsetFetchRequest::default().into(),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default().into(),
        ApiKey::JoinGroup => JoinGroupRequest::default().with_session_timeout_ms(500).into(),
        ApiKey::Heartbeat => HeartbeatRequest::default().into(),
        ApiKey::LeaveGroup => LeaveGroupRequest::default().into(),
        ApiKey::SyncGroup => SyncGroupRequest::default().into(),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default().into(),
        ApiKey::ListGroups => ListGroupsRequest::default().into(),
        ApiKey::ApiVersions => ApiVersionsRequest::default().into(),
        ApiKey::CreateTopics => CreateTopicsRequest::default().into(),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().into(),
        ApiKey::DeleteRecords => DeleteRecordsRequest::default().into(),
        ApiKey::InitProducerId => InitProducerIdRequest::default().with_transactional_id(None).into(),
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default().into(),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().into(),
        ApiKey::AlterConfigs => AlterConfigsRequest::default().into(),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default().into(),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default().into(),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default().into(),
        ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
        other => panic!("add a default request for {other:?}"),
    }
}

fn frame(key: ApiKey, version: i16, req: &RequestKind) -> Bytes {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(version as i32)
        .encode(&mut b, key.request_header_version(version))
        .unwrap();
    req.encode(&mut b, version).unwrap();
    b.freeze()
}

async fn response(outcome: Outcome) -> Option<Bytes> {
    match outcome {
        Outcome::Response(b) => Some(b),
        Outcome::Later(f) => tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("answered in time")
            .map(|mut frame| frame.copy_to_bytes(frame.remaining())),
        Outcome::NoResponse => None,
        Outcome::Close(reason) => panic!("connection closed: {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut served = 0;
    for (key, min, max, _) in versions::SUPPORTED {
        for v in *min..=*max {
            let req = request(*key);
            let out = handlers::dispatch(&b, frame(*key, v, &req)).await;
            let Some(mut bytes) = response(out).await else { continue };
            let _len = bytes.split_to(4);
            let header = ResponseHeader::decode(&mut bytes, key.response_header_version(v)).unwrap();
            assert_eq!(header.correlation_id, v as i32, "{key:?} v{v}");
            ResponseKind::decode(*key, &mut bytes, v)
                .unwrap_or_else(|e| panic!("{key:?} v{v} response does not decode: {e}"));
            served += 1;
        }
    }
    assert!(served > 100, "served {served} (API, version) pairs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unadvertised_apis_and_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    for key in ApiKey::iter() {
        let range = versions::range(key);
        let probe = match range {
            Some((_, max)) => max + 1,
            None => key.valid_versions().max,
        };
        if key == ApiKey::ApiVersions {
            continue; // answered at v0 instead (KIP-511), tested end to end
        }
        let mut f = BytesMut::new();
        f.extend_from_slice(&(key as i16).to_be_bytes());
        f.extend_from_slice(&probe.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0xff, 0xff, 0]);
        match handlers::dispatch(&b, f.freeze()).await {
            Outcome::Close(_) => {}
            _ => panic!("{key:?} v{probe} must be refused (advertised: {range:?})"),
        }
    }
}

use kafka_protocol::protocol::Decodable;

#[test]
fn kafka_api_doc_matches_the_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/KAFKA_API.md");
    let doc = std::fs::read_to_string(&path).expect("docs/KAFKA_API.md exists");
    let (begin, end) = ("<!-- BEGIN GENERATED: chronik-kafka versions -->\n", "<!-- END GENERATED -->");
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let stop = doc[start..].find(end).expect("end marker") + start;
    let table = versions::reference_markdown();
    if std::env::var("CHRONIK_UPDATE_DOCS").is_ok() {
        std::fs::write(&path, format!("{}{}{}", &doc[..start], table, &doc[stop..])).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..stop],
        table,
        "docs/KAFKA_API.md is stale; regenerate with CHRONIK_UPDATE_DOCS=1 cargo test -p chronik-kafka --test api_table"
    );
}
