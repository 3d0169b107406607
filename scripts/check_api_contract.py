#!/usr/bin/env python3
"""The HTTP API against its OpenAPI document, with schemathesis.

Starts `kusanagi run` (embedded broker, every stage) in a scratch folder
with one API key per role, puts a few accounts in it, then runs
schemathesis over every route once per key and once with no key:

- the document (served, and docs/openapi.json) validates against the
  OpenAPI 3.1 schema (openapi-spec-validator);
- no 5xx answer, and every answer (status, content type, headers, body)
  as the document says (schemathesis' checks);
- requests the document says are invalid are refused with a 4xx, valid
  ones are not refused as invalid;
- with no key, or one the server does not hold, every route but the
  health checks answers 401
  (`scripts/schemathesis_hooks.py`, `key_required`);
- a key reaches a route only if its role is in the route's
  `x-kusanagi-roles`: any other is answered 403 `forbidden`
  (`role_boundary`).

Prints the cases run per key and in all; exits non-zero on any failure.

Usage: scripts/check_api_contract.py --kusanagi target/debug/kusanagi
       [--max-examples N] [--keep]
"""

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES = ["admin", "operator", "viewer", "service", "producer"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, key=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("x-api-key", key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(base, proc, log, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"kusanagi run exited with {proc.returncode}; its log: {log}")
        try:
            status, _ = request(base, "GET", "/healthz/ready")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"kusanagi run was not ready within {seconds} s; its log: {log}")


def seed(base, keys):
    """A few accounts, so that routes answer 200s; `player-42`, the
    document's example id, restricted."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    events = [
        {
            "event_id": f"contract-{i}",
            "timestamp": now,
            "actor_id": f"actor-{i}",
            "target_id": f"acct-{i}",
            "action_details": {"currency_amount": 10 + i, "item_id": "gem", "market_avg_price": 10},
        }
        for i in range(5)
    ]
    # A big trade with payment slang: R3 and R4, the account restricted.
    events.append(
        {
            "event_id": "contract-restricted",
            "timestamp": now,
            "actor_id": "actor-r",
            "target_id": "player-42",
            "action_details": {"currency_amount": 1_000_000, "item_id": "gem", "market_avg_price": 5000},
            "context_metadata": {"recent_chat_log": "PayPal ok? send cash"},
        }
    )
    status, body = request(base, "POST", "/api/v1/events", keys["producer"], events)
    if status != 202:
        sys.exit(f"seeding events: {status} {body!r}")
    deadline = time.time() + 60
    while time.time() < deadline:
        status, _ = request(base, "GET", "/api/v1/accounts/player-42", keys["viewer"])
        if status == 200:
            return
        time.sleep(0.5)
    sys.exit("the seeded account never appeared in the state API")


def validate_document(doc, name):
    """`doc` against the OpenAPI 3.1 schema (openapi-spec-validator)."""
    from openapi_spec_validator import validate

    try:
        validate(doc)
    except Exception as e:  # the validator's errors have no common base
        sys.exit(f"{name} is not a valid OpenAPI {doc.get('openapi')} document: {e}")
    print(f"{name}: a valid OpenAPI {doc['openapi']} document")


def schemathesis_bin() -> str:
    """schemathesis beside this Python (the test venv), else on PATH."""
    beside = Path(sys.executable).parent / "schemathesis"
    if beside.exists():
        return str(beside)
    found = shutil.which("schemathesis")
    if found is None:
        sys.exit("schemathesis is not installed (scripts/requirements-test.txt)")
    return found


def schemathesis(base, schema_file, role, key, max_examples, report_dir, seed_value):
    """One schemathesis run; returns (exit code, cases, failures)."""
    ndjson = report_dir / f"{role}.ndjson"
    cmd = [
        schemathesis_bin(),
        "run",
        str(schema_file),
        "--url",
        base,
        "--checks",
        ",".join(
            [
                "not_a_server_error",
                "status_code_conformance",
                "content_type_conformance",
                "response_headers_conformance",
                "response_schema_conformance",
                "negative_data_rejection",
                "unsupported_method",
                "key_required",
                "role_boundary",
            ]
        ),
        "--max-examples",
        str(max_examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        str(seed_value),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(ndjson),
        "--output-truncate",
        "true",
    ]
    if key:
        cmd += ["-H", f"X-API-Key: {key}"]
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = "schemathesis_hooks"
    env["PYTHONPATH"] = str(ROOT / "scripts") + os.pathsep + env.get("PYTHONPATH", "")
    env["KUSANAGI_CONTRACT_ROLE"] = role
    print(f"\n--- schemathesis as {role} ---", flush=True)
    # In the scratch folder: schemathesis keeps a cache where it runs.
    rc = subprocess.run(cmd, env=env, cwd=report_dir).returncode
    cases = 0
    if ndjson.exists():
        for line in ndjson.read_text().splitlines():
            event = json.loads(line)
            # One ScenarioFinished per generated test case scenario; each
            # recorded request is a case.
            for name, body in event.items():
                if name == "ScenarioFinished":
                    cases += len(body.get("recorder", {}).get("interactions", {}))
    return rc, cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kusanagi", required=True, help="the kusanagi binary")
    ap.add_argument("--max-examples", type=int, default=25, help="most generated cases per route and phase")
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    schemathesis_bin()

    work = Path(tempfile.mkdtemp(prefix="kusanagi-contract-"))
    keys = {role: "ksk_" + secrets.token_hex(32) for role in ROLES}
    (work / "keys.toml").write_text(
        "".join(
            f'[[keys]]\nname = "contract-{role}"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\nroles = ["{role}"]\n\n'
            for role, key in keys.items()
        )
    )
    http_port, broker_port = free_port(), free_port()
    (work / "topology.toml").write_text(
        f"""[embedded_broker]
listen = "127.0.0.1:{broker_port}"

[http]
listen = "127.0.0.1:{http_port}"

[http.auth]
keys_file = "{work / 'keys.toml'}"
"""
    )
    base = f"http://127.0.0.1:{http_port}"
    log = work / "kusanagi.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(args.kusanagi).resolve()), "--topology", str(work / "topology.toml"), "run"],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    failed = []
    counts = {}
    try:
        wait_ready(base, proc, log)
        seed(base, keys)
        status, body = request(base, "GET", "/api/v1/openapi.json", keys["viewer"])
        if status != 200:
            sys.exit(f"GET /api/v1/openapi.json: {status} {body!r}")
        schema_file = work / "openapi.json"
        schema_file.write_bytes(body)
        validate_document(json.loads(body), "GET /api/v1/openapi.json")
        validate_document(json.loads((ROOT / "docs" / "openapi.json").read_text()), "docs/openapi.json")
        operations = sum(len(item) for item in json.loads(body)["paths"].values())
        report_dir = work / "reports"
        report_dir.mkdir()
        # The admin last: its erasure requests (of the example subject) and
        # verdicts change accounts the other runs read.
        # `invalid`: a key the server does not hold, answered as no key.
        keys["invalid"] = "ksk_" + secrets.token_hex(32)
        runs = ["none", "invalid", "viewer", "service", "producer", "operator", "admin"]
        for i, role in enumerate(runs):
            rc, cases = schemathesis(
                base, schema_file, role, keys.get(role), args.max_examples, report_dir, args.seed + i
            )
            counts[role] = cases
            if rc != 0:
                failed.append(role)
        if proc.poll() is not None:
            failed.append(f"kusanagi run exited with {proc.returncode} during the checks")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    if "panicked" in log.read_text(errors="replace"):
        failed.append("kusanagi run panicked (see its log)")
    print("\nAPI contract: schemathesis cases per key (every route, %d operations):" % operations)
    for role, n in counts.items():
        print(f"  {role:<9} {n:>6}")
    print(f"  {'all':<9} {sum(counts.values()):>6}")
    if failed:
        print(f"FAILED: {', '.join(failed)}; the server's log and reports: {work}", file=sys.stderr)
        sys.exit(1)
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
