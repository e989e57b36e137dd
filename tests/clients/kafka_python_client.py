"""kafka-python against Chronik: `produce` then (after a broker restart) `verify`."""
import argparse
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

import common


def produce(args):
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(args.topic, common.PARTITIONS, 1)])
    acked = {}
    for codec in common.CODECS:
        p = KafkaProducer(bootstrap_servers=args.bootstrap, compression_type=None if codec == "none" else codec,
                          linger_ms=5, acks="all")
        futures = []
        for n in common.all_n():
            if common.CODECS[n // common.PER_CODEC] != codec:
                continue
            r = common.record(n)
            futures.append((n, p.send(args.topic, key=r["key"], value=r["value"], headers=r["headers"],
                                      timestamp_ms=r["timestamp"], partition=r["partition"])))
        p.flush()
        for n, f in futures:
            md = f.get(timeout=30)
            acked[n] = (md.partition, md.offset)
        p.close()
    common.save_manifest(args.manifest, acked)
    print(f"produced {len(acked)}")


def verify(args):
    c = common.Checker()
    manifest = common.load_manifest(args.manifest)
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False, group_id=None)
    tps = [TopicPartition(args.topic, p) for p in range(common.PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    consumed = {}
    deadline = time.time() + 60
    while len(consumed) < len(manifest) and time.time() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            for m in msgs:
                consumed[(m.partition, m.offset)] = {
                    "key": m.key, "value": m.value, "headers": [(k, v) for k, v in m.headers], "timestamp": m.timestamp,
                }
    common.check_consumed(c, manifest, consumed)

    # List offsets by time (see confluent_client.py).
    for n in (7, 77):
        part, want, floor = common.by_time_expectation(manifest, n)
        found = consumer.offsets_for_times({TopicPartition(args.topic, part): common.record(n)["timestamp"]})
        c.within(found[TopicPartition(args.topic, part)].offset, floor, want, f"offsets_for_times of record {n}")

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.delete_records({TopicPartition(args.topic, 0): 10})
    c.equal(consumer.beginning_offsets([TopicPartition(args.topic, 0)])[TopicPartition(args.topic, 0)], 10,
            "earliest offset after delete_records")

    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, args.topic, configs={"retention.ms": "5400000"})])
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, args.topic)])
    text = str(described)
    c.check("5400000" in text, f"retention.ms after alter in {text[:500]}")
    consumer.close()
    c.finish()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["produce", "verify"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--manifest", required=True)
    args = ap.parse_args()
    {"produce": produce, "verify": verify}[args.phase](args)
