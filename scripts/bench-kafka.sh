#!/usr/bin/env bash
# Kafka-level benchmarks: builds the release broker, chronik-bench and librdkafka's
# rdkafka_performance (from the source shipped in the rdkafka-sys crate, linked against the
# librdkafka that crate builds), then runs `chronik-bench kafka`. Extra arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p chronik-server -p chronik-bench
# rdkafka-sys (with zstd) is built for the black-box tests; reuse that build.
cargo build -p chronik-tests --tests >/dev/null
src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'rdkafka-sys-*' | sort | tail -1)/librdkafka
lib=$(find target/debug/build -path '*rdkafka-sys-*/out/lib/librdkafka.a' | head -1)
zstd=$(find target/debug/build -path '*zstd-sys-*/out/libzstd.a' | head -1)
out=target/release/rdkafka_performance
if [ ! -x "$out" ] || [ "$out" -ot "$lib" ]; then
    build=$(dirname "$(dirname "$lib")")/build   # holds the generated config.h
    gcc -O2 -o "$out" "$src/examples/rdkafka_performance.c" -I"$src/src" -I"$build" -I"$build/generated/dummy" \
        "$lib" "$zstd" -lz -lpthread -lm -ldl -lrt
fi
exec target/release/chronik-bench kafka --perf "$out" "$@"
