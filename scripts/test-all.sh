#!/usr/bin/env bash
# Runs every test: installs what the tests need (idempotently), checks formatting and lints
# (rustfmt, clippy and rustdoc, warnings as errors), builds the workspace, runs the unit,
# property, crash and storage-suite tests, the black-box tests against the real binary with
# real Kafka clients, and a short fuzzing run of request decoding and dispatch.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n=== %s ===\n' "$*"; }

step "system packages"
apt_packages=(kcat librdkafka-dev cmake libcurl4-openssl-dev libsasl2-dev libzstd-dev liblz4-dev pkg-config python3-venv iproute2)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi

step "Python clients"
venv="$root/tests/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import confluent_kafka, kafka, snappy, lz4, zstandard' 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt
fi

step "Node.js clients"
if [ ! -d tests/clients/node_modules/kafkajs ]; then
    (cd tests/clients && npm install --no-audit --no-fund --loglevel=error)
fi

step "formatting and lints"
# rustfmt.toml and [workspace.lints] in Cargo.toml are the rules; any difference or warning fails.
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --quiet

step "build"
cargo build --workspace --all-targets

step "tests"
export CHRONIK_SERVER_BIN="$root/target/debug/chronik-server"
cargo test --workspace -- --test-threads=2

step "fuzz (short run)"
scripts/fuzz.sh 60

echo
echo "all tests passed"
