"""The Grafana dashboards the stack provisions (components/services/dashboards.py).

Checked on the dashboards the real program delivers for unraid, homelab and gke, and on a made-up set
of scrape jobs that turns every dashboard and row on:

- PromQL: every Prometheus query parses with Prometheus' own parser. `promtool` has no query-parsing
  subcommand in the Debian build (2.42: no `promtool promql`), and `promtool query` needs a server; but
  `promtool check rules` parses each rule's `expr` with the PromQL parser, offline. So each query becomes
  a recording rule in a throwaway rules file. The parser is Debian's 2.42 while the stack runs 2.55.1:
  nothing used here is newer than 2.42 (a query using a function 2.42 lacks would fail here, not pass).
  No promtool: skipped, or a failure where OCTOLLM_REQUIRE_REAL_HOST=1 (CI).
- Metrics: every series a query selects is exported by an exporter the stack deploys, per the pinned
  versions' list in tests/exporter_metrics.py; a selector naming a job must name a deployed job that
  exports that series.
- LogQL: Loki cannot be installed here, so the queries are checked against LogQL's documented grammar
  (Loki 2.9 docs: stream selector, line filters, parsers, label filters, range and vector aggregations),
  for the subset a dashboard uses, after Grafana's variable interpolation. Regexes are compiled with
  Python's `re`, an approximation of RE2 for the simple patterns used. The labels the queries use must
  be ones Alloy attaches (monitoring_stack.alloy_config / alloy_kubernetes_config).
- Grafana JSON for the pinned Grafana: the SDK's release line matches the Grafana pin, schemaVersion
  is that line's, every dashboard round-trips unchanged through the SDK's typed models (so it holds no
  field the schema does not know), panel ids are unique, every panel lies inside the 24 columns and no
  two overlap, datasources are the provisioned UIDs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from exporter_metrics import EXPORTERS, SAME_AS, metrics_of_job
from components.config import catalog
from components.services import dashboards
from components.services.monitoring_stack import (alloy_config, alloy_kubernetes_config, grafana_datasources,
                                                  grafana_dashboard_provider)

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("OCTOLLM_REQUIRE_REAL_HOST") == "1"
SECRETS = {"homelab": {"registryPassword": "harbor-robot-token", "workerRedisPassword": "worker-redis-pw"}}


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"a checker the dashboard tests need is missing here: {reason}")
    pytest.skip(f"skipped: {reason}")


# ------------------------------------------------------------------------------------------ cases

EVERY_JOB = {  # job -> probed through the blackbox exporter
    "node-exporter": False, "cadvisor": False, "gpu-dcgm": False, "gpu-nvidia-smi": False, "ollama": True,
    "inference-latency": True, "vllm": False, "llamacpp": False, "octollm": False, "postgres-exporter": False,
    "redis-exporter": False, "qdrant": True, "prometheus": False, "grafana": False, "loki": False,
    "blackbox-exporter": False}


class Case:
    def __init__(self, name: str, jobs: dict[str, bool], files: dict[str, str]):
        self.name, self.jobs = name, jobs
        self.files = {f: json.loads(text) for f, text in files.items()}

    def __repr__(self):
        return self.name


def _delivered(result) -> tuple[dict[str, bool], dict[str, str]]:
    """The scrape jobs (-> probed?) and the dashboard files (name -> JSON) a program run registered."""
    names = result.names()
    if "monitoring-prometheus-file-prometheus-yml" in names:  # Docker hosts: one file resource each
        prom = result.by_name("monitoring-prometheus-file-prometheus-yml").inputs["stdin"]
        prefix = "monitoring-grafana-file-dashboards-"
        files = {r.name[len(prefix):-len("-json")] + ".json": r.inputs["stdin"]
                 for r in result.registrations if r.name.startswith(prefix)}
    else:  # Kubernetes: ConfigMaps
        prom = result.by_name("monitoring-prometheus-files").inputs["data"]["prometheus.yml"]
        data = result.by_name("monitoring-grafana-files").inputs["data"]
        files = {k[len("dashboards-"):]: v for k, v in data.items() if k.startswith("dashboards-")}
    jobs = {j["job_name"]: j.get("metrics_path") == "/probe" for j in yaml.safe_load(prom)["scrape_configs"]}
    return jobs, files


@pytest.fixture(scope="module")
def program(run):
    out = {}
    for stack in ("unraid", "homelab", "gke"):
        r = run(stack, secrets=SECRETS.get(stack))
        assert r.error is None, r.error
        out[stack] = Case(stack, *_delivered(r))
    return out


@pytest.fixture(scope="module")
def cases(program):
    every = Case("every-job", EVERY_JOB, dashboards.grafana_dashboards(EVERY_JOB))
    return [*program.values(), every]


def panels(board: dict) -> list[dict]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def queries(case: Case, kind: str):
    """(file, panel, target) of every query on a datasource of `kind` ("prometheus" or "loki")."""
    for f, board in sorted(case.files.items()):
        for p in panels(board):
            for t in p.get("targets", []):
                if (t.get("datasource") or p.get("datasource") or {}).get("type") == kind:
                    yield f, p, t


# ---------------------------------------------------------------------------------- which boards


def test_each_dashboard_only_where_the_stack_deploys_what_it_shows(program):
    assert set(program["unraid"].files) == {"host.json", "gpu-dcgm.json", "inference.json", "octollm.json",
                                            "data-services.json", "logs.json"}
    assert set(program["homelab"].files) == {"host.json", "gpu-nvidia-smi.json", "inference.json", "logs.json"}
    # Kubernetes: no node-exporter or cAdvisor, so no host dashboard.
    assert set(program["gke"].files) == {"gpu-dcgm.json", "inference.json", "octollm.json",
                                         "data-services.json", "logs.json"}
    rows = {c: [p["title"] for p in program[c].files["inference.json"]["panels"] if p["type"] == "row"]
            for c in ("unraid", "homelab")}
    assert rows == {"unraid": ["Latency P95, as alerted", "Generation probes", "Ollama"],
                    "homelab": ["Latency P95, as alerted", "Generation probes", "Ollama", "vLLM", "llama.cpp"]}
    data = [p["title"] for p in program["unraid"].files["data-services.json"]["panels"] if p["type"] == "row"]
    assert data == ["PostgreSQL", "Redis", "Qdrant"]
    # On Kubernetes every Grafana file shares one ConfigMap, which holds at most 1 MiB.
    assert sum(len(json.dumps(b, indent=2)) for b in program["gke"].files.values()) < 512 * 1024


def test_dashboards_are_files_the_provider_reads():
    provider = yaml.safe_load(grafana_dashboard_provider())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/octollm/dashboards"
    assert all(f.endswith(".json") and "/" not in f for f in dashboards.grafana_dashboards(EVERY_JOB))


def test_the_panels_asked_for_are_there(cases):
    every = {c.name: c for c in cases}["every-job"].files
    exprs = {f: " ".join(t["expr"] for p in panels(b) for t in p.get("targets", [])) for f, b in every.items()}
    inference = exprs["inference.json"]
    for needle in ('quantile_over_time(0.95, probe_duration_seconds{job="inference-latency"}[10m])',
                   "histogram_quantile(0.95, sum by (le, instance, model_name) "
                   '(rate(vllm:e2e_request_latency_seconds_bucket{job="vllm"}[5m])))',
                   "histogram_quantile(0.5", "vllm:time_to_first_token_seconds_bucket",
                   "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc", "vllm:generation_tokens_total",
                   "llamacpp:tokens_predicted_total", "llamacpp:requests_deferred", "llamacpp:kv_cache_usage_ratio"):
        assert needle in inference, needle
    for needle in ("pg_stat_database_numbackends", "pg_stat_database_xact_commit", "pg_stat_database_blks_hit",
                   "redis_memory_used_bytes", "redis_keyspace_hits_total", "redis_keyspace_misses_total",
                   'probe_success{job="qdrant"}'):
        assert needle in exprs["data-services.json"], needle
    assert 'up{job="octollm"}' in exprs["octollm.json"]
    assert "DCGM_FI_DEV_GPU_TEMP" in exprs["gpu-dcgm.json"] and "DCGM_FI_PROF" not in exprs["gpu-dcgm.json"]
    assert [p["type"] for p in every["logs.json"]["panels"]].count("logs") == 2


# ------------------------------------------------------------------------------------------ PromQL


def promtool_check(exprs: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package `prometheus`)")
    rules = {"groups": [{"name": "dashboards", "rules": [{"record": name, "expr": e} for name, e in exprs.items()]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False, width=10_000))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def _record_name(f: str, panel: dict, target: dict) -> str:
    return "dashboard:" + re.sub(r"[^a-zA-Z0-9_]", "_", f"{f[:-5]}_panel{panel['id']}_{target['refId']}")


def test_every_promql_query_parses(cases, tmp_path):
    exprs = {}
    for case in cases:
        for f, p, t in queries(case, "prometheus"):
            exprs[f"{_record_name(f, p, t)}:{case.name.replace('-', '_')}"] = t["expr"]
    assert len(exprs) > 100
    out = promtool_check(exprs, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout + out.stderr


@pytest.mark.parametrize("broken", ['rate(node_cpu_seconds_total{mode="idle"}[5m]',
                                    "sum by (instance (up)", "histogram_quantile(0.95, rate(x_bucket[5x]))"])
def test_promtool_check_rejects_a_broken_query(broken, tmp_path):
    out = promtool_check({"dashboard:broken": broken}, tmp_path)
    assert out.returncode != 0 and "dashboard:broken" in out.stdout + out.stderr


# ----------------------------------------------------------------------------------------- metrics

_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(e[+-]?[0-9]+)?)([smhdwy]|ms)?", re.I)
AGGREGATORS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
               "count_values", "group", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATOR_WORDS = {"and", "or", "unless", "bool", "atan2"}
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _skip_string(s: str, i: int) -> int:
    quote, i = s[i], i + 1
    while s[i] != quote:
        i += 2 if s[i] == "\\" and quote != "`" else 1
    return i + 1


def _close(s: str, i: int, open_: str, close: str) -> int:
    """Index after the bracket that closes the one at s[i], strings skipped."""
    depth = 0
    while True:
        if s[i] in "\"'`":
            i = _skip_string(s, i)
            continue
        depth += (s[i] == open_) - (s[i] == close)
        i += 1
        if depth == 0:
            return i


def selectors(expr: str) -> list[tuple[str | None, dict[str, tuple[str, str]]]]:
    """The vector selectors of a PromQL expression: (metric name or None, {label: (op, value)}).

    A small scanner, not a parser (promtool decides validity): identifiers that are not functions,
    aggregations, keywords or grouping labels are metric names; braces after one are its matchers."""
    out: list = []
    i, last_metric = 0, False
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            i, last_metric = _skip_string(expr, i), False
        elif c == "{":
            end = _close(expr, i, "{", "}")
            body, matchers = expr[i + 1:end - 1], {}
            for m in _MATCHER.finditer(body):
                matchers[m.group(1)] = (m.group(2), m.group(3))
            assert _MATCHER.sub("", body).strip() == "", f"unreadable matchers {body!r} in {expr}"
            if last_metric:
                out[-1] = (out[-1][0], matchers)
            else:
                out.append((None, matchers))
            i, last_metric = end, False
        elif c == "[":
            i, last_metric = _close(expr, i, "[", "]"), False
        elif c.isdigit() or (c == "." and expr[i + 1:i + 2].isdigit()):
            i, last_metric = _NUMBER.match(expr, i).end(), False
        elif (m := _IDENT.match(expr, i)) is not None:
            word, j = m.group(0), m.end()
            rest = expr[j:].lstrip()
            last_metric = False
            if word in GROUPING:
                j = _close(expr, expr.index("(", j), "(", ")") if rest.startswith("(") else j
            elif word == "offset":
                j = _NUMBER.match(expr, len(expr) - len(rest)).end()
            elif word in AGGREGATORS or word in OPERATOR_WORDS or word.lower() in ("inf", "nan"):
                pass
            elif rest.startswith("("):
                pass  # a function
            else:
                out.append((word, {}))
                last_metric = True
            i = j
        else:
            i, last_metric = i + 1, False
    return out


def test_the_selector_scanner():
    assert selectors('histogram_quantile(0.95, sum by (le, instance) (rate(a:b_bucket{job="vllm"}[5m])))') == \
        [("a:b_bucket", {"job": ("=", "vllm")})]
    assert selectors('100 * (1 - avg by (instance) (rate(x{mode="idle", a=~"b|c"}[5m])))') == \
        [("x", {"mode": ("=", "idle"), "a": ("=~", "b|c")})]
    assert selectors("a / (b + c) offset 5m or vector(0)") == [("a", {}), ("b", {}), ("c", {})]
    assert selectors('count(up{job="o"} == 0) and on (instance) d') == [("up", {"job": ("=", "o")}), ("d", {})]


def unknown_series(case: Case) -> list[str]:
    deployed = {job: metrics_of_job(job, probed) for job, probed in case.jobs.items()}
    anywhere = set().union(*deployed.values())
    problems = []
    for f, p, t in queries(case, "prometheus"):
        found = selectors(t["expr"])
        if not found:
            problems.append(f"{f} {p['title']!r}: selects nothing: {t['expr']}")
        for metric, matchers in found:
            where = f"{case.name} {f} {p['title']!r}: {metric}"
            if metric is None:
                problems.append(f"{where}: a selector without a metric name")
            elif "job" in matchers:
                op, job = matchers["job"]
                if op != "=" or job not in deployed:
                    problems.append(f"{where}: job {job!r} is not a deployed scrape job")
                elif metric not in deployed[job]:
                    problems.append(f"{where}: not exported by what job {job!r} scrapes")
            elif metric not in anywhere:
                problems.append(f"{where}: exported by none of the deployed exporters")
    return problems


def test_every_selected_series_is_exported_by_a_deployed_exporter(cases):
    assert [problem for case in cases for problem in unknown_series(case)] == []


def test_an_unknown_series_is_caught(cases):
    case = {c.name: c for c in cases}["homelab"]
    board = case.files["inference.json"]
    target = next(t for p in panels(board) for t in p.get("targets", []) if "vllm:num_requests_waiting" in t["expr"])
    saved = target["expr"]
    try:
        target["expr"] = saved.replace("vllm:num_requests_waiting", "vllm:num_requests_queued")
        assert any("vllm:num_requests_queued" in p for p in unknown_series(case))
        target["expr"] = 'probe_success{job="qdrant"}'  # homelab deploys no Qdrant
        assert any("job 'qdrant' is not a deployed scrape job" in p for p in unknown_series(case))
    finally:
        target["expr"] = saved


def test_the_exporter_table_is_for_the_pinned_images():
    for key, entry in EXPORTERS.items():
        assert catalog.IMAGES[key].ref == entry["image"], f"{key}: re-read its metrics for the new pin"
    for key, (same, ref) in SAME_AS.items():
        assert catalog.IMAGES[key].ref == ref and same in EXPORTERS


# ------------------------------------------------------------------------------------------- LogQL

LINE_FILTERS = ("|=", "!=", "|~", "!~")
RANGE_AGGREGATIONS = {"count_over_time", "rate", "bytes_over_time", "bytes_rate", "absent_over_time"}
VECTOR_AGGREGATIONS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk"}
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


class LogQL:
    """A recursive-descent check of the LogQL subset dashboards use (Loki 2.9 grammar, as documented).

    query    := metric | log
    log      := '{' matcher (',' matcher)* '}' stage*
    matcher  := label ('=' | '!=' | '=~' | '!~') string
    stage    := ('|=' | '!=' | '|~' | '!~') string | '|' ('json' | 'logfmt' | 'line_format' string
                | label ('=' | '!=' | '=~' | '!~') string)
    metric   := range_fn '(' log '[' duration ']' ')'
              | vector_fn [grouping] '(' metric ')' [grouping]
    grouping := ('by' | 'without') '(' label (',' label)* ')'
    """

    def __init__(self, text: str):
        self.s, self.i, self.labels = text, 0, set()

    def error(self, what: str):
        raise ValueError(f"{what} at {self.i} in {self.s!r}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self, token: str) -> bool:
        self.ws()
        return self.s.startswith(token, self.i)

    def take(self, token: str):
        if not self.peek(token):
            self.error(f"expected {token!r}")
        self.i += len(token)

    def word(self) -> str:
        self.ws()
        m = LABEL_NAME.match(self.s, self.i) or self.error("expected a name")
        self.i = m.end()
        return m.group(0)

    def string(self) -> str:
        self.ws()
        q = self.s[self.i:self.i + 1]
        if q == "`":
            end = self.s.find("`", self.i + 1)
            if end < 0:
                self.error("unterminated raw string")
            value, self.i = self.s[self.i + 1:end], end + 1
            return value
        if q != '"':
            self.error("expected a string")
        m = re.compile(r'"((?:[^"\\]|\\.)*)"').match(self.s, self.i) or self.error("unterminated string")
        self.i = m.end()
        return json.loads(m.group(0))  # Go's escapes, for the ones used here

    def regex(self, pattern: str):
        try:
            re.compile(pattern)
        except re.error as exc:
            self.error(f"bad regex {pattern!r}: {exc}")

    def query(self):
        self.ws()
        if self.peek("{"):
            self.log()
        else:
            self.metric()
        self.ws()
        if self.i != len(self.s):
            self.error("trailing input")

    def log(self):
        self.take("{")
        nonempty = False
        while True:
            label = self.word()
            op = next((o for o in ("=~", "!~", "!=", "=") if self.peek(o)), None) or self.error("expected a matcher")
            self.take(op)
            value = self.string()
            if "~" in op:
                self.regex(value)
            self.labels.add(label)
            nonempty |= (op == "=" and value != "") or (op == "=~" and not re.fullmatch(value, ""))
            if not self.peek(","):
                break
            self.take(",")
        self.take("}")
        if not nonempty:
            self.error("a stream selector needs a matcher that does not match the empty string")
        while True:
            op = next((f for f in LINE_FILTERS if self.peek(f)), None)
            if op:
                self.take(op)
                value = self.string()
                if "~" in op:
                    self.regex(value)
            elif self.peek("|"):
                self.take("|")
                name = self.word()
                if name == "line_format":
                    self.string()
                elif name not in ("json", "logfmt"):
                    op = next((o for o in ("=~", "!~", "!=", "=") if self.peek(o)), None) or \
                        self.error("expected a parser or a label filter")
                    self.take(op)
                    self.string()
            else:
                return

    def grouping(self):
        if self.peek("by") or self.peek("without"):
            self.word()
            self.take("(")
            while True:
                self.labels.add(self.word())
                if not self.peek(","):
                    break
                self.take(",")
            self.take(")")

    def metric(self):
        fn = self.word()
        if fn in RANGE_AGGREGATIONS:
            self.take("(")
            self.log()
            self.take("[")
            self.ws()
            m = DURATION.match(self.s, self.i) or self.error("expected a duration")
            self.i = m.end()
            self.take("]")
            self.take(")")
        elif fn in VECTOR_AGGREGATIONS:
            self.grouping()
            self.take("(")
            self.metric()
            self.take(")")
            self.grouping()
        else:
            self.error(f"unknown function {fn!r}")


def interpolations(board: dict, expr: str) -> list[str]:
    """The expression as Grafana sends it, for each kind of value its variables take."""
    values = {}
    for v in board.get("templating", {}).get("list", []):
        if v["type"] == "query":
            values[v["name"]] = [v["allValue"], "orchestrator", "(arm-coder|arm-judge)"]
        elif v["type"] == "textbox":
            values[v["name"]] = [v["query"], "timeout", "status=5[0-9]{2}"]
    names = set(re.findall(r"\$(\w+)", expr))
    assert names <= set(values), f"undefined variables {names - set(values)} in {expr}"
    out = [expr]
    for name in names:
        out = [e.replace(f"${name}", value) for e in out for value in values[name]]
    return out


def alloy_labels() -> dict[str, set[str]]:
    out = {}
    for kind, text in (("docker", alloy_config("unraid", "http://loki:3100/loki/api/v1/push")),
                       ("kubernetes", alloy_kubernetes_config("octollm", "http://loki:3100/loki/api/v1/push"))):
        labels = set(re.findall(r'target_label\s*=\s*"(\w+)"', text))
        for block in re.findall(r"labels\s*=\s*\{([^}]*)\}", text):
            labels |= set(re.findall(r"(\w+)\s*=", block))
        out[kind] = labels
    return out


def test_every_logql_query_is_valid_and_uses_labels_alloy_attaches(cases):
    labels = alloy_labels()
    assert labels["docker"] >= {"container", "service", "host"} and labels["kubernetes"] >= {"pod", "service"}
    both = labels["docker"] & labels["kubernetes"]
    checked = 0
    for case in cases:
        for f, p, t in queries(case, "loki"):
            for expr in interpolations(case.files[f], t["expr"]):
                q = LogQL(expr)
                q.query()
                assert q.labels <= both, f"{f} {p['title']!r}: labels {q.labels - both} are not on every stream"
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("broken", ['{service=~"$service"', '{service=~".*"}', '{service="a"} |~ "(unclosed"',
                                    'sum by (service) (count_over_time({service="a"}))',
                                    'sum by (service) (count_over_time({service="a"} [5q]))', '{service="a"} |'])
def test_the_logql_check_rejects_a_broken_query(broken):
    with pytest.raises(ValueError):
        LogQL(broken.replace("$service", ".+")).query()


# ------------------------------------------------------------------------------ Grafana JSON schema


def test_the_sdk_is_the_pinned_grafanas_line():
    """grafana-foundation-sdk versions are <build>!<Grafana major.minor>.0: its models are generated from
    that Grafana line's schema. The pin in requirements.txt is exact and matches the Grafana image."""
    version = metadata.version("grafana-foundation-sdk")
    pins = [line.split("==", 1)[1].split()[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.startswith("grafana-foundation-sdk==")]
    assert pins == [version]
    grafana = catalog.IMAGES["grafana"].ref.rsplit(":", 1)[1]
    assert version.split("!", 1)[1].split(".")[:2] == grafana.split(".")[:2]


def test_dashboards_are_valid_grafana_json_for_the_pinned_version(cases):
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import units
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()  # typed panel options and queries: unknown fields are dropped
    sources = {(d["type"], d["uid"]) for d in yaml.safe_load(grafana_datasources())["datasources"]}
    schema_version = Dashboard().schema_version
    assert schema_version == 39  # Grafana 11.3's latest dashboard schema
    known_types = {"row", "timeseries", "stat", "state-timeline", "logs"}
    known_units = {v for v in vars(units).values() if isinstance(v, str)}
    for case in cases:
        uids = [b["uid"] for b in case.files.values()]
        assert len(uids) == len(set(uids))
        for f, board in case.files.items():
            where = f"{case.name} {f}"
            assert json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder)) == board, where
            assert board["schemaVersion"] == schema_version and board["title"] and len(board["uid"]) <= 40
            assert board["annotations"] == {"list": []} and "list" in board["templating"]
            ps = panels(board)
            ids = [p["id"] for p in ps]
            assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids), where
            cells = set()
            for p in ps:
                g = p["gridPos"]
                assert p["type"] in known_types, (where, p["type"])
                assert g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24, \
                    (where, p["title"], g)
                mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
                assert not cells & mine, (where, p["title"], "overlaps another panel")
                cells |= mine
                if p["type"] == "row":
                    assert p["collapsed"] is False and p["panels"] == [] and g["w"] == 24, (where, p["title"])
                    continue
                unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
                assert unit is None or unit in known_units, (where, p["title"], unit)
                ds = p["datasource"]
                assert (ds["type"], ds["uid"]) in sources, (where, p["title"], ds)
                refs = [t["refId"] for t in p["targets"]]
                assert refs and len(refs) == len(set(refs)) and all(t["expr"] for t in p["targets"]), where
            for v in board["templating"]["list"]:
                if v.get("datasource"):
                    assert (v["datasource"]["type"], v["datasource"]["uid"]) in sources


def test_the_layout_wraps_panels_the_sdk_would_push_past_the_grid():
    b = dashboards._Board("t", "t", "t")
    b.timeseries("half", [dashboards.Q("up")], "short")
    b.logs("full", '{service="a"}')
    board = json.loads(b.render())
    assert [p["gridPos"] for p in board["panels"]] == [{"h": 8, "w": 12, "x": 0, "y": 0},
                                                        {"h": 16, "w": 24, "x": 0, "y": 8}]
