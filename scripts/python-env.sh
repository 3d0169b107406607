#!/usr/bin/env bash
# Creates (once) the test harness's Python environment under .cache/venv and
# installs the pinned tools the integration tests use: the Tansu
# Kafka-protocol broker binary, the moto S3 server and DuckDB (the noida-db
# broker is built from vendor/noida-db by scripts/test.sh).
# Usage: source scripts/python-env.sh   (exports KUSANAGI_VENV and PATH)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/venv"
requirements="$root/scripts/requirements-test.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing the test harness's Python tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi
export KUSANAGI_VENV="$venv"
export PATH="$venv/bin:$PATH"
