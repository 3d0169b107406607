#!/usr/bin/env bash
# The coverage-guided fuzz targets (fuzz/, cargo fuzz with libFuzzer) on
# their committed corpora; docs/testing.md, "Fuzzing".
#
#   scripts/fuzz.sh               every target: its corpus, then 20 s of new
#                                 inputs (what scripts/test.sh runs)
#   scripts/fuzz.sh TARGET RUNS   one target for RUNS executions
#
# New inputs go to a scratch folder, never into the committed corpus. A
# crash stops the script non-zero, the input saved under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

# libFuzzer's sanitizer coverage needs the nightly toolchain; cargo-fuzz is
# kept under .cache.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
export PATH="$root/.cache/cargo-fuzz/bin:$PATH"
command -v cargo-fuzz >/dev/null ||
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$root/.cache/cargo-fuzz"

targets=(json_event json_batch avro_records catalog_log certificate config_files)
limit=(-max_total_time=20)
if [ $# -ge 1 ]; then targets=("$1"); fi
if [ $# -ge 2 ]; then limit=(-runs="$2"); fi

cd fuzz
for t in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  echo "fuzz: $t (${limit[*]}, corpus fuzz/corpus/$t)"
  cargo +nightly fuzz run -O -s none "$t" "$scratch" "corpus/$t" -- "${limit[@]}" -print_final_stats=1 \
    > "$root/.cache/logs/fuzz-$t.log" 2>&1 ||
    { tail -n 40 "$root/.cache/logs/fuzz-$t.log"; rm -rf "$scratch"; echo "fuzz: $t failed" >&2; exit 1; }
  grep -E '^(Done|stat::number_of_executed_units)' "$root/.cache/logs/fuzz-$t.log" || true
  rm -rf "$scratch"
done
