//! What current clients do that broke against Chronik, with the rdkafka crate (librdkafka
//! 2.12, built from source): Metadata requests with bytes after the fields this broker knows,
//! a transactional producer (refused at once, not after a minute of retries), and consumers
//! starting together (one assignment, thanks to the delayed first rebalance).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronik_tests::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

fn config(b: &Broker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap());
    c
}

async fn create(b: &Broker, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(b).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let r = admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

/// Metadata for a client that knows no topic yet: librdkafka asks for brokers only.
// Unsafe: rd_kafka_metadata with all_topics=0 and no topic has no safe wrapper in the crate.
#[allow(unsafe_code)]
fn brokers_only(producer: &BaseProducer) -> usize {
    let rk = producer.client().native_ptr();
    let mut md: *const rdkafka::bindings::rd_kafka_metadata_t = std::ptr::null();
    // SAFETY: `rk` is the live client's handle; librdkafka fills `md`, which is destroyed below.
    let err = unsafe { rdkafka::bindings::rd_kafka_metadata(rk, 0, std::ptr::null_mut(), &mut md, 10_000) };
    assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR, "brokers-only metadata");
    // SAFETY: `md` was just returned by rd_kafka_metadata, and is freed exactly once.
    unsafe {
        let brokers = (*md).broker_cnt as usize;
        rdkafka::bindings::rd_kafka_metadata_destroy(md);
        brokers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_of_all_topics_brokers_only_and_one_topic() {
    let b = Broker::start(&[("CHRONIK_LOG_LEVEL", "debug")]);
    create(&b, "meta-one", 3).await;
    create(&b, "meta-two", 1).await;
    let producer: BaseProducer = config(&b).create().unwrap();
    assert_eq!(brokers_only(&producer), 1);
    let all = producer.client().fetch_metadata(None, Duration::from_secs(10)).expect("metadata of all topics");
    let names: Vec<&str> = all.topics().iter().map(|t| t.name()).collect();
    assert!(names.contains(&"meta-one") && names.contains(&"meta-two"), "{names:?}");
    assert_eq!(all.brokers().len(), 1);
    let one = producer.client().fetch_metadata(Some("meta-one"), Duration::from_secs(10)).expect("one topic");
    assert_eq!(one.topics().len(), 1);
    assert_eq!(one.topics()[0].partitions().len(), 3);
    assert!(!b.log_text().contains("bytes left after the request body"), "no request was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producer_is_refused_at_once() {
    let b = Broker::start(&[]);
    let producer: BaseProducer = config(&b).set("transactional.id", "tx-refused").create().unwrap();
    let started = Instant::now();
    let err = producer.init_transactions(Duration::from_secs(60)).expect_err("transactions are not supported");
    let KafkaError::Transaction(e) = &err else { panic!("unexpected error {err:?}") };
    assert!(!matches!(e.code(), RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::OperationTimedOut), "{e:?}");
    assert!(e.is_fatal() || !e.is_retriable(), "a clear, non-retriable refusal: {e:?}");
    eprintln!("refused after {:?}: {e}", started.elapsed());
}

/// A consumer's rebalances: ("assign" | "revoke", partitions).
type Events = Arc<Mutex<Vec<(&'static str, usize)>>>;

/// Records each consumer's rebalances.
struct Rebalances(Events);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => ("assign", tpl.count()),
            Rebalance::Revoke(tpl) => ("revoke", tpl.count()),
            Rebalance::Error(_) => ("error", 0),
        };
        self.0.lock().unwrap().push(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_starting_together_get_one_assignment() {
    let b = Broker::start(&[]); // the default delay: 3 s
    create(&b, "together", 4).await;
    let events: Vec<Events> = (0..2).map(|_| Arc::default()).collect();
    let consumers: Vec<BaseConsumer<Rebalances>> = events
        .iter()
        .map(|e| {
            let c: BaseConsumer<Rebalances> = config(&b)
                .set("group.id", "together-group")
                .set("partition.assignment.strategy", "range")
                .create_with_context(Rebalances(e.clone()))
                .unwrap();
            c.subscribe(&["together"]).unwrap();
            c
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && events.iter().any(|e| e.lock().unwrap().is_empty()) {
        for c in &consumers {
            let _ = c.poll(Duration::from_millis(50));
        }
    }
    // A little longer: a second rebalance would show up now.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        for c in &consumers {
            let _ = c.poll(Duration::from_millis(50));
        }
    }
    let seen: Vec<Vec<(&str, usize)>> = events.iter().map(|e| e.lock().unwrap().clone()).collect();
    assert_eq!(seen, vec![vec![("assign", 2)], vec![("assign", 2)]], "one generation, two partitions each");
}
