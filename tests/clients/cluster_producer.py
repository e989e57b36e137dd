"""kafka-python (idempotent, acks=all) producing through a cluster's leader changes: sends
COUNT records valued PREFIX-n, paced over a few seconds so that a node killed meanwhile is
killed mid-stream, and writes where each was acknowledged to OUT as JSON lines."""
import argparse
import json
import time

from kafka import KafkaProducer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--pace-ms", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    producer = KafkaProducer(bootstrap_servers=a.bootstrap.split(","), acks="all", enable_idempotence=True,
                             linger_ms=2, retry_backoff_ms=50)
    sent = []
    for n in range(a.count):
        value = f"{a.prefix}-{n}"
        sent.append((value, producer.send(a.topic, key=value.encode(), value=value.encode())))
        time.sleep(a.pace_ms / 1000)
    producer.flush(timeout=60)
    with open(a.out, "w") as out:
        for value, future in sent:
            md = future.get(timeout=60)
            out.write(json.dumps({"partition": md.partition, "offset": md.offset, "value": value}) + "\n")
    producer.close()
    print(f"acknowledged {len(sent)}")


if __name__ == "__main__":
    main()
