"""confluent-kafka (librdkafka) against Chronik: `produce` then (after a broker restart) `verify`."""
import argparse
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

import common


def produce(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(args.topic, num_partitions=common.PARTITIONS, replication_factor=1)])[args.topic].result(10)
    acked = {}
    for codec in common.CODECS:
        p = Producer({"bootstrap.servers": args.bootstrap, "compression.type": codec, "linger.ms": 5, "acks": "all"})
        errors = []
        for n in common.all_n():
            if common.CODECS[n // common.PER_CODEC] != codec:
                continue
            r = common.record(n)

            def delivered(err, msg, n=n):
                if err:
                    errors.append(f"record {n}: {err}")
                else:
                    acked[n] = (msg.partition(), msg.offset())

            p.produce(args.topic, key=r["key"], value=r["value"], headers=r["headers"], timestamp=r["timestamp"],
                      partition=r["partition"], on_delivery=delivered)
        p.flush(30)
        assert not errors, errors
    common.save_manifest(args.manifest, acked)
    print(f"produced {len(acked)}")


def verify(args):
    c = common.Checker()
    manifest = common.load_manifest(args.manifest)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "confluent-verify", "enable.auto.commit": False})
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(common.PARTITIONS)])
    consumed = {}
    deadline = time.time() + 60
    while len(consumed) < len(manifest) and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        consumed[(m.partition(), m.offset())] = {
            "key": m.key(), "value": m.value(), "headers": [(k, v) for k, v in (m.headers() or [])],
            "timestamp": m.timestamp()[1],
        }
    common.check_consumed(c, manifest, consumed)

    # List offsets by time: exact in an uncompressed batch; in a compressed one, the batch's
    # first offset (the broker does not decompress), so never after the answer nor before the
    # codec's first record in that partition.
    for n in (7, 77):
        part, want, floor = common.by_time_expectation(manifest, n)
        found = consumer.offsets_for_times([TopicPartition(args.topic, part, common.record(n)["timestamp"])], timeout=10)
        c.within(found[0].offset, floor, want, f"offsets_for_times of record {n}")

    # Delete records below offset 10 in partition 0.
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    futures = admin.delete_records([TopicPartition(args.topic, 0, 10)])
    for f in futures.values():
        c.equal(f.result(10).low_watermark, 10, "delete_records low watermark")
    low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, 0), timeout=10, cached=False)
    c.equal(low, 10, "low watermark after delete_records")

    # Alter a config (incrementally) and read it back; an unknown cleanup.policy is refused.
    res = ConfigResource(ResourceType.TOPIC, args.topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(10)
    desc = admin.describe_configs([ConfigResource(ResourceType.TOPIC, args.topic)])
    for f in desc.values():
        c.equal(f.result(10)["retention.ms"].value, "7200000", "retention.ms after alter")
    bad = ConfigResource(ResourceType.TOPIC, args.topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact,archive", incremental_operation=AlterConfigOpType.SET)])
    try:
        for f in admin.incremental_alter_configs([bad]).values():
            f.result(10)
        c.failures.append("cleanup.policy=compact,archive was accepted")
    except KafkaException as e:
        c.check("cleanup.policy" in str(e), f"the refusal names the config: {e}")
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
