#!/usr/bin/env bash
# Fuzzes Kafka request decoding and dispatch (fuzz/fuzz_targets/request.rs) for N seconds
# (default 60). Needs cargo-fuzz (installed here if missing). The machine has only the stable
# toolchain, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only instrumentation flags.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/request
# -rss_limit_mb: a request may never make the broker hold more than this.
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none request fuzz/corpus/request -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1
