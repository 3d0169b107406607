#!/usr/bin/env python3
"""Checks the deployment artifacts without deploying them.

- docker-compose.yml parses; every Kusanagi stage service gets
  KUSANAGI_KEYS_FILE, the `keys` volume and its own instance id; Prometheus
  and Grafana mount what they need.
- deploy/prometheus/prometheus.yml and rules.yml parse; Prometheus scrapes
  every stage service with the API key; every metric name in the rules and
  in the Grafana dashboard's PromQL is one of docs/metrics.md (with the
  histograms' _bucket/_sum/_count series), and every label a selector or a
  grouping names is one those metrics have (or a target label). With
  `promtool` on PATH (Debian's `prometheus` package): promtool check config,
  check rules, and test rules (deploy/prometheus/rules.test.yml).
- deploy/grafana: the dashboard JSON loads, its panels have unique ids; the
  provisioning files parse and agree with docker-compose.yml.
- deploy/helm/kusanagi: Chart.yaml and values.yaml parse, the stages are the
  seven, the topology in values.yaml is valid TOML. With `helm` on PATH:
  `helm lint`, and `helm template` renders one Deployment per stage with the
  arguments, environment, probes, Services and HPAs the chart promises.
- With KUSANAGI_BIN set to a built `kusanagi`: `check-config` accepts the
  chart's topology and topologies/compose.toml.

Usage: scripts/check-deploy.py [--root DIR]   (exit 1 on any failure)
Needs PyYAML (scripts/requirements-test.txt); run with the test venv's python.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check-deploy: PyYAML is missing: run with the test venv's python (source scripts/python-env.sh)")

STAGES = ["ingest", "screen", "decide", "analyze", "archive", "tier", "view"]
LAG_SCALED = ["screen", "decide", "analyze", "archive"]
KEYS_FILE = "/etc/kusanagi/keys/keys.toml"
# Labels Prometheus or the scrape configs attach to every series, besides
# the ones a metric has (docs/metrics.md): `service` is the stage a process
# runs (prometheus.yml, the chart's ServiceMonitor).
TARGET_LABELS = {"job", "instance", "service", "namespace", "pod", "container", "endpoint"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without",
                   "on", "ignoring", "group_left", "group_right", "start", "end"}

failures: list[str] = []


def fail(where: str, msg: str) -> None:
    failures.append(f"{where}: {msg}")


def load_yaml(path: Path, multi: bool = False):
    try:
        text = path.read_text()
    except OSError as e:
        fail(str(path), f"cannot read: {e}")
        return None
    try:
        return list(yaml.safe_load_all(text)) if multi else yaml.safe_load(text)
    except yaml.YAMLError as e:
        fail(str(path), f"is not valid YAML: {e}")
        return None


# --- docs/metrics.md -----------------------------------------------------

class Metric:
    def __init__(self, name: str, kind: str, labels: set[str]):
        self.name, self.kind, self.labels = name, kind, labels


def documented_metrics(root: Path) -> dict[str, Metric]:
    """The table of docs/metrics.md: | `name` | type | `label`, ... | meaning |."""
    path = root / "docs/metrics.md"
    metrics: dict[str, Metric] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4:
            continue
        m = re.fullmatch(r"`(kusanagi_[a-z0-9_]+)`", cells[0])
        if not m:
            continue
        labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
        metrics[m.group(1)] = Metric(m.group(1), cells[1], labels)
    if len(metrics) < 10:
        fail(str(path), f"found only {len(metrics)} metrics in its table: has its format changed?")
    return metrics


def series_metric(name: str, docs: dict[str, Metric]) -> Metric | None:
    """The documented metric a series name belongs to: itself, or a
    histogram's _bucket/_sum/_count series."""
    if name in docs and docs[name].kind != "histogram":
        return docs[name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in docs and docs[base].kind == "histogram":
            return docs[base]
    return None


# --- PromQL ------------------------------------------------------------------

def promql_names(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric names with the label names of the selector attached to each,
    label names in by/without/on/ignoring/group_* clauses) of a PromQL
    expression; Grafana's $variables are taken as opaque."""
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "0", expr)            # Grafana variables
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', e)  # strings
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges, subqueries
    e = re.sub(r"\boffset\s+-?\w+", "", e)
    grouping: set[str] = set()

    def take_group(m: re.Match) -> str:
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
        return " "

    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", take_group, e)
    selectors: list[tuple[str, set[str]]] = []
    pos = 0
    ident = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)")
    while True:
        m = ident.search(e, pos)
        if not m:
            break
        name = m.group(1)
        rest = e[m.end():]
        stripped = rest.lstrip()
        pos = m.end()
        if stripped.startswith("(") or name.lower() in PROMQL_KEYWORDS:
            continue  # a function or aggregation, or a keyword
        labels: set[str] = set()
        if stripped.startswith("{"):
            close = stripped.index("}")
            body = stripped[1:close]
            labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
            pos = m.end() + (len(rest) - len(stripped)) + close + 1
        selectors.append((name, labels))
    # A bare selector {__name__=...} names no metric we can check.
    return selectors, grouping


def check_promql(where: str, expr: str, docs: dict[str, Metric], recorded: set[str]) -> int:
    """Checks the names in `expr`; returns how many metric references it had."""
    if not isinstance(expr, str) or not expr.strip():
        fail(where, "has no PromQL expression")
        return 0
    selectors, grouping = promql_names(expr)
    all_labels = set().union(*(m.labels for m in docs.values())) | TARGET_LABELS | {"le"}
    for name, labels in selectors:
        if name in recorded:
            continue
        metric = series_metric(name, docs)
        if metric is None:
            hint = ""
            if name + "_total" in docs:
                hint = f" (counters are exposed as {name}_total)"
            elif name in docs:
                hint = f" ({name} is a {docs[name].kind}: no such series)"
            fail(where, f"uses `{name}`, which docs/metrics.md does not document{hint}: {expr.strip()}")
            continue
        allowed = metric.labels | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        for label in sorted(labels - allowed):
            fail(where, f"selects `{name}` by label `{label}`, which it does not have "
                        f"(it has: {', '.join(sorted(metric.labels)) or 'none'}): {expr.strip()}")
    for label in sorted(grouping - all_labels):
        fail(where, f"groups by `{label}`, a label no documented metric has: {expr.strip()}")
    if not selectors:
        fail(where, f"references no metric: {expr.strip()}")
    return len(selectors)


# --- docker-compose.yml -------------------------------------------------------

def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def volume_pairs(service: dict) -> list[tuple[str, str, bool]]:
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else "", len(parts) > 2 and "ro" in parts[2].split(",")))
        elif isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v.get("target", "")), bool(v.get("read_only"))))
    return out


def check_compose(root: Path) -> dict | None:
    path = root / "docker-compose.yml"
    doc = load_yaml(path)
    if not isinstance(doc, dict):
        return None
    services = doc.get("services") or {}
    where = "docker-compose.yml"
    if "keys" not in (doc.get("volumes") or {}):
        fail(where, "declares no `keys` volume")
    stage_services = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = cmd.split()
        if "stage" in cmd:
            stage_services[name] = svc
            stage = cmd[cmd.index("stage") + 1] if cmd.index("stage") + 1 < len(cmd) else None
            if stage != name:
                fail(where, f"service {name} runs `stage {stage}`")
    missing = [s for s in STAGES if s not in stage_services]
    if missing:
        fail(where, f"has no service running the stage(s) {', '.join(missing)}")
    ids = {}
    for name, svc in stage_services.items():
        env = env_of(svc)
        if env.get("KUSANAGI_KEYS_FILE") != KEYS_FILE:
            fail(where, f"service {name}: KUSANAGI_KEYS_FILE is {env.get('KUSANAGI_KEYS_FILE')!r}, not {KEYS_FILE!r}")
        if not any(src == "keys" and dst == "/etc/kusanagi/keys" for src, dst, _ in volume_pairs(svc)):
            fail(where, f"service {name} does not mount the `keys` volume at /etc/kusanagi/keys "
                        f"(a service's own `volumes:` replaces the x-kusanagi anchor's)")
        iid = env.get("KUSANAGI_INSTANCE_ID")
        if not iid:
            fail(where, f"service {name} sets no KUSANAGI_INSTANCE_ID")
        elif iid in ids:
            fail(where, f"services {ids[iid]} and {name} share the instance id {iid}")
        ids[iid] = name
        if not env.get("KAFKA_BOOTSTRAP"):
            fail(where, f"service {name} sets no KAFKA_BOOTSTRAP")
        deps = svc.get("depends_on") or {}
        if "keys" not in deps:
            fail(where, f"service {name} does not wait for the keys service")

    prom = services.get("prometheus")
    if not prom:
        fail(where, "has no prometheus service")
    else:
        vols = volume_pairs(prom)
        if not any(src == "keys" and dst == "/etc/prometheus/keys" and ro for src, dst, ro in vols):
            fail(where, "prometheus does not mount the `keys` volume read-only at /etc/prometheus/keys")
        if not any(src.rstrip("/").endswith("deploy/prometheus") for src, _, _ in vols):
            fail(where, "prometheus does not mount deploy/prometheus")
        if not any(str(p).split(":")[0] == "9090" for p in prom.get("ports") or []):
            fail(where, "prometheus does not publish port 9090")
        for src, dst, _ in vols:
            if src.startswith("./") and not (root / src).exists():
                fail(where, f"prometheus mounts {src}, which does not exist")
    graf = services.get("grafana")
    if not graf:
        fail(where, "has no grafana service")
    else:
        vols = volume_pairs(graf)
        for src, dst, _ in vols:
            if src.startswith("./") and not (root / src).exists():
                fail(where, f"grafana mounts {src}, which does not exist")
        for sub in ("datasources", "dashboards"):
            if not any(dst in ("/etc/grafana/provisioning", f"/etc/grafana/provisioning/{sub}") and
                       src.rstrip("/").endswith(("deploy/grafana/provisioning", f"deploy/grafana/provisioning/{sub}"))
                       for src, dst, _ in vols):
                fail(where, f"grafana does not mount deploy/grafana/provisioning/{sub} at /etc/grafana/provisioning/{sub}")
        if not any(dst.startswith("/var/lib/grafana/dashboards") and src.endswith(".json") or
                   dst == "/var/lib/grafana/dashboards" for src, dst, _ in vols):
            fail(where, "grafana does not mount the dashboard under /var/lib/grafana/dashboards")
        if not any(str(p).split(":")[0] == "3000" for p in graf.get("ports") or []):
            fail(where, "grafana does not publish port 3000")
        deps = graf.get("depends_on") or []
        if "prometheus" not in deps:
            fail(where, "grafana does not depend on prometheus")
    return {"stage_services": stage_services, "services": services}


# --- Prometheus ----------------------------------------------------------------

def check_prometheus(root: Path, compose: dict | None, docs: dict[str, Metric]) -> None:
    path = root / "deploy/prometheus/prometheus.yml"
    where = "deploy/prometheus/prometheus.yml"
    cfg = load_yaml(path)
    if not isinstance(cfg, dict):
        return
    if (cfg.get("global") or {}).get("scrape_interval") != "15s":
        fail(where, "global.scrape_interval is not 15s")
    rule_files = cfg.get("rule_files") or []
    if not any(Path(r).name == "rules.yml" for r in rule_files):
        fail(where, "does not load rules.yml (rule_files)")
    scraped: set[str] = set()
    for job in cfg.get("scrape_configs") or []:
        targets: set[str] = set()
        for sc in job.get("static_configs") or []:
            for t in sc.get("targets") or []:
                host, _, port = str(t).partition(":")
                if port == "8080":
                    targets.add(host)
        for dc in job.get("dns_sd_configs") or []:
            if str(dc.get("port")) == "8080":
                targets.update(dc.get("names") or [])
        if not targets:
            continue
        scraped |= targets
        jw = f"{where}: job {job.get('job_name')}"
        if job.get("metrics_path", "/metrics") != "/metrics":
            fail(jw, "metrics_path is not /metrics")
        auth = job.get("authorization") or {}
        if auth.get("type", "Bearer") != "Bearer" or auth.get("credentials_file") != "/etc/prometheus/keys/prometheus.key":
            fail(jw, "does not send the key: authorization: {type: Bearer, credentials_file: /etc/prometheus/keys/prometheus.key}")
        labels = {rc.get("target_label") for rc in job.get("relabel_configs") or []}
        for sc in job.get("static_configs") or []:
            labels |= set((sc.get("labels") or {}).keys())
        if "service" not in labels:
            fail(jw, "sets no `service` target label (rules.yml and the dashboard use it)")
    wanted = set(compose["stage_services"]) if compose else set(STAGES)
    for name in sorted(wanted - scraped):
        fail(where, f"does not scrape the service {name} on port 8080")

    rules_path = root / "deploy/prometheus/rules.yml"
    rwhere = "deploy/prometheus/rules.yml"
    rules = load_yaml(rules_path)
    if not isinstance(rules, dict) or not rules.get("groups"):
        fail(rwhere, "has no rule groups")
        return
    recorded = {r["record"] for g in rules["groups"] for r in g.get("rules") or [] if "record" in r}
    names, alerts, refs = set(), 0, 0
    for g in rules["groups"]:
        for i, r in enumerate(g.get("rules") or []):
            name = r.get("record") or r.get("alert")
            w = f"{rwhere}: group {g.get('name')} rule {name or i}"
            if bool(r.get("record")) == bool(r.get("alert")):
                fail(w, "must have exactly one of record and alert")
                continue
            if r.get("record"):
                if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", r["record"]):
                    fail(w, "is not a valid metric name")
                if ":" not in r["record"]:
                    fail(w, "a recorded name should be level:metric:operations (a colon tells it from exported metrics)")
            else:
                alerts += 1
                if name in names:
                    fail(w, "is defined twice")
                if not (r.get("labels") or {}).get("severity"):
                    fail(w, "has no severity label")
                if not (r.get("annotations") or {}).get("summary"):
                    fail(w, "has no summary annotation")
            names.add(name)
            refs += check_promql(w, r.get("expr"), docs, recorded - {r.get("record")})
    if alerts == 0:
        fail(rwhere, "has no alerting rule")
    print(f"prometheus: {len(scraped)} services scraped; {len(recorded)} recording and {alerts} alerting rules, "
          f"{refs} metric references checked against docs/metrics.md")
    check_promtool(root)


def check_promtool(root: Path) -> None:
    """promtool (Debian's `prometheus` package has it): the config with its
    files in place, the rules' syntax, and their unit tests."""
    promtool = shutil.which("promtool")
    if not promtool:
        print("prometheus: promtool not on PATH: promtool check config/rules and test rules skipped")
        return
    src = root / "deploy/prometheus"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "prometheus.key").write_text("check-deploy\n")
        for f in src.glob("*.yml"):
            (tmp / f.name).write_text(f.read_text())
        cfg = (src / "prometheus.yml").read_text()
        cfg = cfg.replace("/etc/prometheus/keys/prometheus.key", str(tmp / "prometheus.key"))
        cfg = cfg.replace("/etc/prometheus/kusanagi/", f"{tmp}/")
        (tmp / "prometheus.yml").write_text(cfg)
        steps = [
            ("promtool check config", [promtool, "check", "config", str(tmp / "prometheus.yml")]),
            ("promtool check rules", [promtool, "check", "rules", str(tmp / "rules.yml")]),
        ]
        if (src / "rules.test.yml").exists():
            steps.append(("promtool test rules", [promtool, "test", "rules", str(tmp / "rules.test.yml")]))
        else:
            fail("deploy/prometheus", "has no rules.test.yml (unit tests of the alerts)")
        for what, cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            if r.returncode != 0:
                fail("deploy/prometheus", f"{what} failed:\n{r.stdout}{r.stderr}")
            else:
                print(f"prometheus: {what} OK")


# --- Grafana -----------------------------------------------------------------

def all_panels(panels: list) -> list:
    out = []
    for p in panels or []:
        out.append(p)
        out.extend(all_panels(p.get("panels") or []))
    return out


def check_grafana(root: Path, docs: dict[str, Metric]) -> None:
    where = "deploy/grafana/kusanagi-dashboard.json"
    path = root / where
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(where, f"does not load as JSON: {e}")
        return
    if not isinstance(dash.get("schemaVersion"), int):
        fail(where, "has no schemaVersion")
    if not dash.get("uid") or not dash.get("title"):
        fail(where, "has no uid or title")
    panels = all_panels(dash.get("panels") or [])
    if not panels:
        fail(where, "has no panels")
    seen: dict = {}
    refs = 0
    exprs = 0
    for p in panels:
        pid = p.get("id")
        pw = f"{where}: panel {pid} {p.get('title')!r}"
        if not isinstance(pid, int):
            fail(pw, "has no integer id")
        elif pid in seen:
            fail(pw, f"has the same id as panel {seen[pid]!r}")
        seen[pid] = p.get("title")
        if "gridPos" not in p:
            fail(pw, "has no gridPos")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            fail(pw, "has no query")
        for t in targets:
            ds = t.get("datasource") or p.get("datasource") or {}
            uid = ds.get("uid") if isinstance(ds, dict) else ds
            if uid not in ("${datasource}", "$datasource", "prometheus"):
                fail(pw, f"queries the data source {uid!r}, not ${{datasource}} or prometheus")
            exprs += 1
            refs += check_promql(f"{pw} target {t.get('refId')}", t.get("expr"), docs, set())
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q or "")
            if m:
                refs += check_promql(f"{where}: variable {v.get('name')}", m.group(1), docs, set())
    rows = sum(1 for p in panels if p.get("type") == "row")
    print(f"grafana: {len(panels) - rows} panels in {rows} rows with unique ids, {exprs} queries, "
          f"{refs} metric references checked")

    ds_path = root / "deploy/grafana/provisioning/datasources/prometheus.yml"
    ds = load_yaml(ds_path)
    if isinstance(ds, dict):
        items = ds.get("datasources") or []
        if not any(d.get("uid") == "prometheus" and d.get("type") == "prometheus" and
                   d.get("url") == "http://prometheus:9090" for d in items):
            fail(str(ds_path.relative_to(root)), "defines no prometheus data source with uid prometheus at http://prometheus:9090")
    db_path = root / "deploy/grafana/provisioning/dashboards/kusanagi.yml"
    db = load_yaml(db_path)
    if isinstance(db, dict):
        paths = [(p.get("options") or {}).get("path") for p in db.get("providers") or [] if p.get("type") == "file"]
        if "/var/lib/grafana/dashboards" not in paths:
            fail(str(db_path.relative_to(root)), "has no file provider with path /var/lib/grafana/dashboards")


# --- Helm --------------------------------------------------------------------

def values_lookup(values: dict, dotted: str):
    cur = values
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def check_helm(root: Path) -> None:
    chart = root / "deploy/helm/kusanagi"
    where = "deploy/helm/kusanagi"
    meta = load_yaml(chart / "Chart.yaml")
    if isinstance(meta, dict):
        for key in ("apiVersion", "name", "version"):
            if not meta.get(key):
                fail(f"{where}/Chart.yaml", f"has no {key}")
        if meta.get("apiVersion") != "v2":
            fail(f"{where}/Chart.yaml", "apiVersion is not v2")
    values = load_yaml(chart / "values.yaml")
    if not isinstance(values, dict):
        return
    vw = f"{where}/values.yaml"
    stages = values.get("stages") or {}
    if sorted(stages) != sorted(STAGES):
        fail(vw, f"stages are {sorted(stages)}, not {sorted(STAGES)}")
    tier = stages.get("tier") or {}
    if tier.get("replicas", 1) != 1 or (tier.get("autoscaling") or {}).get("enabled"):
        fail(vw, "the tier stage must be one replica without autoscaling")
    for s in LAG_SCALED:
        a = (stages.get(s) or {}).get("autoscaling") or {}
        if not a.get("enabled") or a.get("type", "lag") != "lag":
            fail(vw, f"stages.{s}.autoscaling is not an enabled lag HPA")
    if not (values.get("keys") or {}).get("existingSecret"):
        fail(vw, "keys.existingSecret is empty")
    # The topology: {{ .Values.x.y }} filled in from values.yaml, then TOML.
    topo = values.get("topology")
    if not isinstance(topo, str):
        fail(vw, "has no topology string")
        return

    def subst(m: re.Match) -> str:
        try:
            return str(values_lookup(values, m.group(1)))
        except KeyError:
            fail(vw, f"the topology uses .Values.{m.group(1)}, which values.yaml does not set")
            return "0"

    text = re.sub(r"\{\{-?\s*\.Values\.([\w.]+)\s*-?\}\}", subst, topo)
    if "{{" in text:
        fail(vw, "the topology uses template syntax this check cannot fill in (only {{ .Values.x }})")
    else:
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            fail(vw, f"the topology is not valid TOML: {e}")
        else:
            parts = (parsed.get("topics") or {}).get("partitions")
            if parts != (values.get("topics") or {}).get("partitions"):
                fail(vw, f"the topology's topics.partitions ({parts}) is not topics.partitions of the values")
            check_config(root, "the chart's topology", text)
    print(f"helm: Chart.yaml and values.yaml parse, {len(stages)} stages, the topology is valid TOML")

    helm = shutil.which("helm")
    if not helm:
        print("helm: not on PATH: helm lint and helm template skipped")
        return
    r = subprocess.run([helm, "lint", str(chart)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(where, f"helm lint failed:\n{r.stdout}{r.stderr}")
    docs = render(helm, chart, [])
    if docs is not None:
        check_rendered(docs, values)
    docs = render(helm, chart, ["--set", "serviceMonitor.enabled=true", "--set", "workloadKind=StatefulSet"])
    if docs is not None:
        sms = [d for d in docs if d.get("kind") == "ServiceMonitor"]
        if len(sms) != 1:
            fail(where, "with serviceMonitor.enabled=true, helm template renders no ServiceMonitor")
        else:
            ep = (sms[0]["spec"].get("endpoints") or [{}])[0]
            auth = ep.get("authorization") or {}
            if auth.get("type") != "Bearer" or not (auth.get("credentials") or {}).get("key"):
                fail(where, "the ServiceMonitor sends no Bearer key")
        kinds = sorted({d["kind"] for d in docs if (d.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/component") in STAGES and d["kind"] in ("Deployment", "StatefulSet")})
        if kinds != ["StatefulSet"]:
            fail(where, f"with workloadKind=StatefulSet the stages render as {kinds}")
        for d in docs:
            if d.get("kind") == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["kind"] != "StatefulSet":
                fail(where, f"with workloadKind=StatefulSet the HPA {d['metadata']['name']} still targets a {d['spec']['scaleTargetRef']['kind']}")
    # The chart refuses a second tier copy.
    r = subprocess.run([helm, "template", "kusanagi", str(chart), "--set", "stages.tier.replicas=2"],
                       capture_output=True, text=True)
    if r.returncode == 0 or "tier" not in r.stderr:
        fail(where, "helm template accepted stages.tier.replicas=2")
    print("helm: helm lint passed; helm template renders one Deployment per stage, the Services, HPAs and ServiceMonitor")


def render(helm: str, chart: Path, extra: list[str]) -> list[dict] | None:
    r = subprocess.run([helm, "template", "kusanagi", str(chart), "--namespace", "kusanagi", *extra],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail("deploy/helm/kusanagi", f"helm template {' '.join(extra)} failed:\n{r.stderr}")
        return None
    try:
        return [d for d in yaml.safe_load_all(r.stdout) if d]
    except yaml.YAMLError as e:
        fail("deploy/helm/kusanagi", f"helm template {' '.join(extra)} renders invalid YAML: {e}")
        return None


def check_rendered(docs: list[dict], values: dict) -> None:
    where = "deploy/helm/kusanagi (helm template)"
    partitions = values["topics"]["partitions"]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)

    def component(d: dict) -> str | None:
        return ((d.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")

    deployments = by_kind.get("Deployment", [])
    per_stage: dict[str, list[dict]] = {}
    for d in deployments:
        per_stage.setdefault(component(d), []).append(d)
    for s in STAGES:
        n = len(per_stage.get(s, []))
        if n != 1:
            fail(where, f"renders {n} Deployments for the stage {s}, not one")
    extra = sorted(set(per_stage) - set(STAGES), key=str)
    if extra:
        fail(where, f"renders Deployments for unknown components {extra}")
    for s, ds in per_stage.items():
        if s not in STAGES:
            continue
        d = ds[0]
        w = f"{where}: Deployment {d['metadata']['name']}"
        pod = d["spec"]["template"]
        sel = d["spec"]["selector"]["matchLabels"]
        if any(pod["metadata"]["labels"].get(k) != v for k, v in sel.items()):
            fail(w, "its selector does not match its pod labels")
        c = pod["spec"]["containers"][0]
        if c.get("args") != ["--topology", "/etc/kusanagi/topology.toml", "stage", s]:
            fail(w, f"args are {c.get('args')}")
        env = {e["name"]: e for e in c.get("env") or []}
        if env.get("KAFKA_BOOTSTRAP", {}).get("value") != values["kafka"]["bootstrap"]:
            fail(w, "KAFKA_BOOTSTRAP is not kafka.bootstrap")
        if (env.get("KUSANAGI_INSTANCE_ID", {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
            fail(w, "KUSANAGI_INSTANCE_ID does not come from metadata.name")
        if env.get("KUSANAGI_HTTP_LISTEN", {}).get("value") != "0.0.0.0:8080":
            fail(w, "KUSANAGI_HTTP_LISTEN is not 0.0.0.0:8080")
        if env.get("KUSANAGI_KEYS_FILE", {}).get("value") != KEYS_FILE:
            fail(w, f"KUSANAGI_KEYS_FILE is not {KEYS_FILE}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/healthz/ready")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in (8080, "http") or get.get("httpHeaders"):
                fail(w, f"{probe} is not GET {path} on port 8080 without a key")
        if not any(p.get("containerPort") == 8080 and p.get("name") == "http" for p in c.get("ports") or []):
            fail(w, "has no container port 8080 named http")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        vols = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        keys = mounts.get("/etc/kusanagi/keys")
        if not keys or ((vols.get(keys["name"]) or {}).get("secret") or {}).get("secretName") != values["keys"]["existingSecret"]:
            fail(w, "does not mount the keys Secret at /etc/kusanagi/keys")
        topo = mounts.get("/etc/kusanagi/topology.toml")
        if not topo or not (vols.get(topo["name"]) or {}).get("configMap"):
            fail(w, "does not mount the topology ConfigMap at /etc/kusanagi/topology.toml")
        autoscaled = ((values["stages"][s].get("autoscaling") or {}).get("enabled"))
        if autoscaled and "replicas" in d["spec"]:
            fail(w, "sets replicas although an HPA scales it")
        if s == "tier" and d["spec"].get("replicas") != 1:
            fail(w, "the tier stage is not one replica")

    config_maps = [c for c in by_kind.get("ConfigMap", []) if "topology.toml" in (c.get("data") or {})]
    if len(config_maps) != 1:
        fail(where, "renders no ConfigMap with topology.toml")
    else:
        try:
            t = tomllib.loads(config_maps[0]["data"]["topology.toml"])
            if t.get("topics", {}).get("partitions") != partitions:
                fail(where, "the rendered topology's topics.partitions is not topics.partitions")
        except tomllib.TOMLDecodeError as e:
            fail(where, f"the rendered topology is not valid TOML: {e}")

    services = {component(s): s for s in by_kind.get("Service", [])}
    for s in ("ingest", "view"):
        svc = services.get(s)
        if not svc:
            fail(where, f"renders no Service for {s}")
        elif svc["spec"]["selector"].get("app.kubernetes.io/component") != s:
            fail(where, f"the {s} Service does not select the {s} pods")
    metrics_svc = services.get("metrics")
    if not metrics_svc or metrics_svc["spec"].get("clusterIP") != "None":
        fail(where, "renders no headless metrics Service")

    hpas = {component(h): h for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for s in LAG_SCALED:
        h = hpas.get(s)
        if not h:
            fail(where, f"renders no HPA for {s}")
            continue
        if h["apiVersion"] != "autoscaling/v2":
            fail(where, f"the {s} HPA is {h['apiVersion']}")
        ext = [m["external"] for m in h["spec"].get("metrics") or [] if m.get("type") == "External"]
        if not ext or ext[0]["metric"]["name"] != "kusanagi_consumer_lag" or \
                ext[0]["metric"].get("selector", {}).get("matchLabels", {}).get("stage") != s:
            fail(where, f"the {s} HPA does not scale on kusanagi_consumer_lag{{stage={s!r}}}")
        if h["spec"].get("maxReplicas") != partitions:
            fail(where, f"the {s} HPA's maxReplicas is {h['spec'].get('maxReplicas')}, not the {partitions} partitions")
        target = h["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or target.get("name") != per_stage.get(s, [{}])[0].get("metadata", {}).get("name"):
            fail(where, f"the {s} HPA does not target the {s} Deployment")
    if "tier" in hpas:
        fail(where, "renders an HPA for the tier stage")


def check_config(root: Path, what: str, text: str) -> None:
    """`kusanagi check-config` on a topology, when KUSANAGI_BIN names a binary."""
    binary = os.environ.get("KUSANAGI_BIN")
    if not binary:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
        path = f.name
    env = dict(os.environ, OPENAI_API_KEY="check-deploy", KAFKA_BOOTSTRAP="kafka:9092",
               KUSANAGI_INSTANCE_ID="check-deploy", KUSANAGI_HTTP_LISTEN="0.0.0.0:8080",
               KUSANAGI_KEYS_FILE=KEYS_FILE)
    try:
        r = subprocess.run([binary, "--topology", path, "check-config"], capture_output=True, text=True, env=env, timeout=60)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        fail(what, f"`kusanagi check-config` refuses it:\n{r.stderr}")
    else:
        print(f"kusanagi check-config: {what} OK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    root = args.root.resolve()
    docs = documented_metrics(root)
    compose = check_compose(root)
    if compose:
        print(f"docker-compose: {len(compose['stage_services'])} Kusanagi services get KUSANAGI_KEYS_FILE and the keys volume")
    check_prometheus(root, compose, docs)
    check_grafana(root, docs)
    check_helm(root)
    if os.environ.get("KUSANAGI_BIN"):
        check_config(root, "topologies/compose.toml", (root / "topologies/compose.toml").read_text())
    if failures:
        print(f"\ncheck-deploy: {len(failures)} problem(s):", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("check-deploy: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
