//! confluent-kafka and kafka-python against the real binary: admin topic creation, produce
//! with every codec, broker restart, consume and compare every field, list offsets by time,
//! delete records, alter and read a config. The scripts in tests/clients do the checking.

use chronik_tests::{Broker, client_script, python, run_client};

fn run(script: &str, topic: &str) {
    let mut broker = Broker::start(&[]);
    let manifest = broker.data.path().join("manifest.json");
    let phase = |broker: &Broker, phase: &str| {
        let mut cmd = python();
        cmd.arg(client_script(script))
            .arg(phase)
            .args(["--bootstrap", &broker.bootstrap(), "--topic", topic])
            .arg("--manifest")
            .arg(&manifest)
            .current_dir(client_script(""));
        run_client(cmd, &format!("{script} {phase}"));
    };
    phase(&broker, "produce");
    broker.restart();
    phase(&broker, "verify");
}

#[test]
fn confluent_kafka_end_to_end() {
    run("confluent_client.py", "confluent-events");
}

#[test]
fn kafka_python_end_to_end() {
    run("kafka_python_client.py", "kafka-python-events");
}

/// A consumer group whose members left is Empty, as in Kafka: listed with its type, described,
/// its offsets listed and reset (confluent-kafka's AdminClient, as Kafka's tools use it).
#[test]
fn an_empty_group_keeps_its_offsets_and_can_be_reset() {
    let broker = Broker::start(&[]);
    let mut cmd = python();
    cmd.arg(client_script("groups_admin.py"))
        .args(["--bootstrap", &broker.bootstrap(), "--topic", "admin-groups"])
        .current_dir(client_script(""));
    run_client(cmd, "groups_admin.py");
}

/// kafka-python reads a compacted topic: one record per live key, offsets with gaps, and a
/// position that reaches the end offset although the last record was compacted away.
#[test]
fn kafka_python_reads_a_compacted_topic_to_its_end() {
    let broker = Broker::start(&[("CHRONIK_RETENTION_CHECK_INTERVAL_MS", "200")]);
    let mut cmd = python();
    cmd.arg(client_script("compacted_reader.py"))
        .args(["--bootstrap", &broker.bootstrap(), "--topic", "py-compacted"])
        .current_dir(client_script(""));
    run_client(cmd, "compacted_reader.py");
}
