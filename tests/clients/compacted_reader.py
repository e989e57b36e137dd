"""kafka-python on a compacted topic: creates it (compacted, short segment.ms, tombstones
removed at once), writes many updates per key and deletes, the last write a delete on its own,
then reads from the beginning until compaction has left one record per live key. Checks the
state read equals the state the writes built, offsets rise with gaps, and that the reader's
position reaches the end offset although the last record was compacted away (the broker keeps
that batch, empty, for readers to step over)."""
import argparse
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    args = ap.parse_args()

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(args.topic, 1, 1, topic_configs={
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "0",
    })])
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    state = {}
    for i in range(600):
        key = f"k{(i * 7) % 40}"
        value = None if i % 9 == 0 else f"v{i}".encode()
        producer.send(args.topic, key=key.encode(), value=value, partition=0)
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    producer.flush()
    producer.send(args.topic, key=b"k0", value=None, partition=0).get(timeout=10)
    state.pop("k0", None)
    producer.close()

    tp = TopicPartition(args.topic, 0)
    deadline = time.time() + 60
    while True:
        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", consumer_timeout_ms=1500)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        read, offsets = {}, []
        for m in consumer:
            offsets.append(m.offset)
            if m.value is None:
                read.pop(m.key.decode(), None)
            else:
                read[m.key.decode()] = m.value
            if consumer.position(tp) >= end:
                break
        position = consumer.position(tp)
        consumer.close()
        if len(offsets) == len(state) or time.time() > deadline:
            break
        time.sleep(0.3)

    failures = []
    if read != state:
        failures.append(f"state read differs: {len(read)} keys vs {len(state)}")
    if len(offsets) != len(state):
        failures.append(f"{len(offsets)} records read, {len(state)} expected after compaction")
    if offsets != sorted(offsets) or len(set(offsets)) != len(offsets):
        failures.append("offsets do not rise")
    if position != end:
        failures.append(f"position {position} did not reach the end offset {end}")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
