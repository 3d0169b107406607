#!/usr/bin/env bash
# Starts the test S3-protocol server (moto) on 127.0.0.1 and prints its
# endpoint. Usage: source scripts/python-env.sh; scripts/s3-server.sh PORT LOGFILE
set -euo pipefail
port="${1:?port}"
log="${2:?log file}"
moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
echo $! > "$log.pid"
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1; then
    echo "http://127.0.0.1:$port"
    exit 0
  fi
  sleep 0.1
done
echo "the S3 server did not start; see $log" >&2
exit 1
