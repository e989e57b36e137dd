//! kafkajs against the real binary (through a consumer group): admin topic creation, produce
//! with every codec, broker restart, consume and compare every field, list offsets by time,
//! delete records, alter and read a config.

use std::process::Command;

use chronik_tests::{Broker, client_script, run_client};

#[test]
fn kafkajs_end_to_end() {
    let mut broker = Broker::start(&[]);
    let manifest = broker.data.path().join("manifest.json");
    let phase = |broker: &Broker, phase: &str| {
        let mut cmd = Command::new("node");
        cmd.arg(client_script("kafkajs_client.js"))
            .args([phase, &broker.bootstrap(), "kafkajs-events"])
            .arg(&manifest)
            .current_dir(client_script(""));
        run_client(cmd, &format!("kafkajs {phase}"));
    };
    phase(&broker, "produce");
    broker.restart();
    phase(&broker, "verify");
}
