"""What the client tests produce and how they check it back, shared by every Python client.

Record n is fully determined by n, so the verify phase (after a broker restart, in a new
process) regenerates what each acknowledged record must contain."""
import json
import sys

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 40
PARTITIONS = 3
BASE_TS = 1_700_000_000_000


def record(n):
    codec = CODECS[n // PER_CODEC]
    return {
        "key": f"key-{n}".encode(),
        "value": (f"value-{n}-{codec}-" + "x" * (n % 97)).encode(),
        "headers": [("codec", codec.encode()), ("n", str(n).encode())],
        "timestamp": BASE_TS + n * 1000,
        "partition": n % PARTITIONS,
    }


def all_n():
    return range(len(CODECS) * PER_CODEC)


def by_time_expectation(manifest, n):
    """(partition, exact answer, earliest acceptable answer) of a lookup by record n's timestamp.

    Exact for an uncompressed batch. For a compressed one the broker answers the batch's first
    offset, which is no earlier than the first record of n's codec in that partition (each codec
    is produced separately, so no batch holds two codecs)."""
    part, _ = manifest[n]
    ts = record(n)["timestamp"]
    want = min(o for m, (p, o) in manifest.items() if p == part and record(m)["timestamp"] >= ts)
    codec = CODECS[n // PER_CODEC]
    if codec == "none":
        return part, want, want
    floor = min(o for m, (p, o) in manifest.items() if p == part and CODECS[m // PER_CODEC] == codec)
    return part, want, floor


def save_manifest(path, acked):
    """acked: {n: (partition, offset)}"""
    with open(path, "w") as f:
        json.dump({str(n): list(po) for n, po in acked.items()}, f)


def load_manifest(path):
    with open(path) as f:
        return {int(n): tuple(po) for n, po in json.load(f).items()}


class Checker:
    def __init__(self):
        self.failures = []

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)

    def equal(self, got, want, what):
        if got != want:
            self.failures.append(f"{what}: got {got!r}, want {want!r}")

    def within(self, got, low, high, what):
        if not (low <= got <= high):
            self.failures.append(f"{what}: got {got!r}, want {low!r}..={high!r}")

    def finish(self):
        if self.failures:
            for f in self.failures[:50]:
                print("FAIL:", f)
            print(f"{len(self.failures)} failure(s)")
            sys.exit(1)
        print("OK")


def check_consumed(c, manifest, consumed):
    """consumed: {(partition, offset): {"key","value","headers","timestamp"}}"""
    c.equal(len(consumed), len(manifest), "number of records consumed")
    by_position = {po: n for n, po in manifest.items()}
    for po, n in by_position.items():
        got = consumed.get(po)
        if got is None:
            c.failures.append(f"record {n} acknowledged at partition {po[0]} offset {po[1]} is missing")
            continue
        want = record(n)
        for field in ("key", "value", "headers", "timestamp"):
            c.equal(got[field], want[field], f"record {n} {field}")
    for p in range(PARTITIONS):
        offsets = sorted(o for (q, o) in consumed if q == p)
        c.equal(offsets, list(range(len(offsets))), f"partition {p} offsets contiguous from 0")
