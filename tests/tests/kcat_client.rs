//! Debian's kcat (librdkafka 2.0.2, old enough to trip over a malformed ApiVersions v3) against
//! the real binary: metadata, produce with every codec (keys, values, headers), broker restart,
//! consume and compare, list offsets by time. kcat has no admin API: the topic is created by
//! Metadata auto-creation (3 partitions here), and delete-records / configs are covered by the
//! other clients.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chronik_tests::now_ms;
use chronik_tests::{Broker, run_client};

const TOPIC: &str = "kcat-events";
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn kcat(broker: &Broker) -> Command {
    let mut c = Command::new("kcat");
    c.args(["-b", &broker.bootstrap(), "-X", "topic.metadata.refresh.interval.ms=1000"]);
    c
}

#[derive(Debug, PartialEq)]
struct Rec {
    key: String,
    value: String,
    headers: String,
}

#[test]
fn kcat_end_to_end() {
    let mut broker = Broker::start(&[("CHRONIK_NUM_PARTITIONS", "3")]);
    let meta = run_client(
        {
            let mut c = kcat(&broker);
            c.args(["-L", "-J"]);
            c
        },
        "kcat -L",
    );
    let meta = String::from_utf8_lossy(&meta.stdout);
    assert!(meta.contains("\"brokers\""), "{meta}");

    // Produce: one kcat run per codec and partition; keys and values from stdin, one header.
    let mut sent: BTreeMap<(i32, usize), Rec> = BTreeMap::new(); // (partition, nth in partition)
    let mut boundaries = Vec::new(); // (timestamp before the codec's records, codec index)
    for (c, codec) in CODECS.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(20));
        boundaries.push(now_ms());
        std::thread::sleep(Duration::from_millis(20));
        for p in 0..3 {
            let mut input = String::new();
            for i in 0..10 {
                let n = (c * 3 + p as usize) * 10 + i;
                let rec = Rec {
                    key: format!("key-{n}"),
                    value: format!("value-{n}-{codec}"),
                    headers: format!("codec={codec}"),
                };
                input.push_str(&format!("{}:{}\n", rec.key, rec.value));
                let nth = sent.keys().filter(|(q, _)| *q == p).count();
                sent.insert((p, nth), rec);
            }
            let mut child = kcat(&broker)
                .args(["-P", "-t", TOPIC, "-p", &p.to_string(), "-z", codec, "-K:", "-H", &format!("codec={codec}")])
                .args(["-X", "acks=all", "-X", "linger.ms=5"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "kcat -P -z {codec}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    broker.restart();

    for p in 0..3 {
        let out = run_client(
            {
                let mut c = kcat(&broker);
                c.args(["-C", "-t", TOPIC, "-p", &p.to_string(), "-o", "beginning", "-e", "-f", "%o|%k|%s|%h|%T\\n"]);
                c
            },
            "kcat -C",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 50, "partition {p}: {text}");
        for (nth, line) in lines.iter().enumerate() {
            let f: Vec<&str> = line.splitn(5, '|').collect();
            assert_eq!(f[0].parse::<usize>().unwrap(), nth, "partition {p}: offsets contiguous from 0");
            let got = Rec { key: f[1].into(), value: f[2].into(), headers: f[3].into() };
            assert_eq!(&got, &sent[&(p, nth)], "partition {p} offset {nth}");
            let ts: i64 = f[4].parse().unwrap();
            assert!(ts >= boundaries[0] && ts <= now_ms(), "CreateTime timestamp {ts} within the run");
        }
    }

    // List offsets by time: each codec's records start after its boundary timestamp.
    for (c, ts) in boundaries.iter().enumerate() {
        let out = run_client(
            {
                let mut k = kcat(&broker);
                k.args(["-Q", "-t", &format!("{TOPIC}:1:{ts}")]);
                k
            },
            "kcat -Q",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let offset: i64 = text
            .split("offset")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(-99);
        assert_eq!(offset, c as i64 * 10, "offset for timestamp of codec {}: {text}", CODECS[c]);
    }
}
