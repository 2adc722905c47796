"""Cross-references between what a stack generates and what it deploys: every job, metric and datasource a rule
or a dashboard panel selects exists (scrape jobs from the generated prometheus.yml; metric names from the one
table of what each deployed exporter exports, per pinned version: tests/exporter_metrics.py); every scrape
target and datasource URL reaches a deployed service on the port it listens on; every file a container is told
to read is delivered to it; and gke has the same latency probe, alert and GPU counters as the Docker stacks.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

import monitoring_tools as mt
from components.services import monitoring_stack as ms

STACKS = mt.MONITORED_STACKS


@pytest.fixture(scope="module")
def deployments(run):
    out = {}
    for stack in STACKS:
        r = run(stack)
        assert r.error is None, r.error
        out[stack] = mt.deployment(r, stack)
    return out


def job_metrics(dep: mt.Deployment) -> tuple[dict[str, set[str]], list[str]]:
    """Scrape job -> the series it yields, from what its targets reach; and the problems found on the way."""
    prom = dep.prometheus_config()
    out: dict[str, set[str]] = {}
    problems: list[str] = []
    for job, target, _ in mt.scrape_targets(prom):
        name = job["job_name"]
        metrics = out.setdefault(name, set(mt.SCRAPE_SERIES))
        reached = dep.resolve(target)
        if not reached:
            problems.append(f"job {name}: target {target} reaches no deployed service on that port")
            continue
        if job.get("params"):
            module = job["params"]["module"][0]
            box = dep.named(mt.BLACKBOX)
            modules = yaml.safe_load(box[0].file(mt.config_flag(box[0], "--config.file")))["modules"] if box else {}
            if module not in modules:
                problems.append(f"job {name}: module {module} is not in the blackbox exporter's config")
            for rc in job.get("relabel_configs", []):
                if rc.get("target_label") == "__address__" and dep.resolve(rc["replacement"]) != box:
                    problems.append(f"job {name}: probes through {rc['replacement']}, not the blackbox exporter")
            metrics |= mt.exported_by(box[0]) if box else set()
            continue
        for w in reached:
            if mt.exporter_of(w) is not None:
                try:
                    metrics |= mt.exported_by(w)
                except AssertionError as e:
                    problems.append(f"job {name}: {e}")
    return out, problems


def panel_queries(dashboard: dict):
    """(panel title, datasource, expr) of every query of every panel, rows and variables included."""
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", ""), t.get("datasource") or p.get("datasource"), t["expr"]
    yield from walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"label_values\((.*?)(?:,\s*\w+)?\)", q.strip())
            if m:
                yield f"variable {v.get('name')}", v.get("datasource"), m.group(1) or "up"


def check_selectors(where: str, expr: str, jobs: dict[str, set[str]], problems: list[str]) -> None:
    every = set().union(*jobs.values()) if jobs else set()
    for sel in mt.selectors(expr):
        job_values = [(op, v) for lab, op, v in sel.matchers if lab == "job"]
        selected = set(jobs)
        for op, v in job_values:
            if op == "=":
                selected &= {v}
                if v not in jobs:
                    problems.append(f"{where}: job {v!r} is not scraped ({expr})")
            elif op == "=~":
                selected &= {j for j in jobs if re.fullmatch(v, j)}
                if not selected:
                    problems.append(f"{where}: no scrape job matches {v!r} ({expr})")
        if sel.metric is None:
            continue
        pool = set().union(*(jobs[j] for j in selected)) if job_values else every
        if sel.metric not in pool:
            scope = f"job {sorted(selected)}" if job_values else "any scrape job"
            problems.append(f"{where}: {sel.metric} is not exported by {scope} ({expr})")


def crossref_problems(dep: mt.Deployment) -> list[str]:
    jobs, problems = job_metrics(dep)
    for r in mt.alert_rule_list(dep):
        check_selectors(f"alert {r['alert']}", r["expr"], jobs, problems)
    for g in dep.named("grafana"):
        provisioning = g.env.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
        ds_files = [p for p in g.files if p.startswith(f"{provisioning}/datasources/")]
        if not ds_files:
            problems.append(f"grafana: no datasource file under {provisioning}/datasources")
        sources = {}
        for p in ds_files:
            for d in yaml.safe_load(g.files[p])["datasources"]:
                sources[d["uid"]] = d
                if not dep.resolve(d["url"], on_host=g.host):
                    problems.append(f"datasource {d['uid']}: {d['url']} reaches no deployed service")
        provider_paths = []
        for p in g.files:
            if p.startswith(f"{provisioning}/dashboards/"):
                provider_paths += [x["options"]["path"] for x in yaml.safe_load(g.files[p])["providers"]]
        if not provider_paths:
            problems.append(f"grafana: no dashboard provider under {provisioning}/dashboards")
        for path, text in sorted(g.files.items()):
            if not path.endswith(".json"):
                continue
            if not any(path.startswith(pp.rstrip("/") + "/") for pp in provider_paths):
                problems.append(f"{path}: not under a dashboard provider's path {provider_paths}")
            board = json.loads(text)
            for title, ds, expr in panel_queries(board):
                where = f"{path.rsplit('/', 1)[-1]} panel {title!r}"
                uid = (ds or {}).get("uid") if isinstance(ds, dict) else ds
                if uid not in sources:
                    problems.append(f"{where}: datasource {uid!r} is not provisioned ({sorted(sources)})")
                    continue
                if isinstance(ds, dict) and ds.get("type") and ds["type"] != sources[uid]["type"]:
                    problems.append(f"{where}: datasource type {ds['type']} but {uid} is {sources[uid]['type']}")
                if sources[uid]["type"] == "prometheus":
                    check_selectors(where, expr, jobs, problems)
    return problems


@pytest.mark.parametrize("stack", STACKS)
def test_every_selected_job_metric_and_datasource_is_deployed(deployments, stack):
    problems = crossref_problems(deployments[stack])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stack", STACKS)
def test_every_file_a_container_is_told_to_read_is_delivered(deployments, stack):
    dep = deployments[stack]
    missing = []
    for w in dep.workloads:
        for a in [*w.entrypoint, *w.command]:
            for path in re.findall(r"(/etc/octollm/[\w./-]+)", a):
                if path.endswith("/"):
                    path = path.rstrip("/")
                if path not in w.files and not any(f.startswith(path + "/") for f in w.files):
                    missing.append(f"{w.resource}: {path}")
    assert not missing, missing


@pytest.mark.parametrize("stack", STACKS)
def test_probe_timeouts_fit_their_scrape(deployments, stack):
    """The blackbox exporter stops a probe at the smaller of its module timeout and Prometheus' scrape
    timeout: a module longer than its job's scrape timeout is cut short, and a slow model looks failed."""
    dep = deployments[stack]
    box = dep.one(mt.BLACKBOX)
    modules = yaml.safe_load(box.file(mt.config_flag(box, "--config.file")))["modules"]
    prom = dep.prometheus_config()
    for job in prom["scrape_configs"]:
        if job.get("params"):
            module = modules[job["params"]["module"][0]]
            timeout = mt.go_duration_s(job.get("scrape_timeout", "10s"))
            assert mt.go_duration_s(module["timeout"]) <= timeout <= mt.go_duration_s(job["scrape_interval"]), job


def test_gke_delivers_the_dcgm_counters_to_its_daemonset(run):
    r = run("gke")
    assert r.error is None, r.error
    ds = r.by_name("monitoring-gke-gpu-exporter")
    assert ds.type == "kubernetes:apps/v1:DaemonSet"
    pod = ds.inputs["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (name,) = [n for n, v in volumes.items() if "configMap" in v]
    assert mounts[name]["mountPath"] == mt.CONFIG_MOUNT and mounts[name]["readOnly"] is True
    cm_name = volumes[name]["configMap"]["name"]
    cm = [x for x in r.of_type("kubernetes:core/v1:ConfigMap") if x.inputs["metadata"]["name"] == cm_name]
    assert len(cm) == 1, cm_name
    items = {i["key"]: i["path"] for i in volumes[name]["configMap"]["items"]}
    assert c["args"][c["args"].index("-f") + 1] == f"{mt.CONFIG_MOUNT}/{items['counters.csv']}"
    assert cm[0].inputs["data"]["counters.csv"] == ms.dcgm_counters_csv()
    # the pod rolls when the counters change
    assert "octollm.io/files-checksum" in ds.inputs["spec"]["template"]["metadata"]["annotations"]
    dep = mt.deployment(r, "gke")
    fields = mt.dcgm_fields(dep.one("gpu-exporter"))
    assert set(fields) <= mt.DCGM_FIELDS_3_3_9, set(fields) - mt.DCGM_FIELDS_3_3_9
    assert "DCGM_FI_DEV_GPU_TEMP" in fields


@pytest.mark.parametrize("stack", STACKS)
def test_dcgm_counters_are_fields_the_pinned_dcgm_knows(deployments, stack):
    for w in deployments[stack].named("gpu-exporter"):
        if mt.exporter_of(w) == "dcgm-exporter":
            fields = mt.dcgm_fields(w)
            assert fields and set(fields) <= mt.DCGM_FIELDS_3_3_9, set(fields) - mt.DCGM_FIELDS_3_3_9


def test_gke_has_the_latency_probe_and_its_alert(deployments):
    dep = deployments["gke"]
    prom = dep.prometheus_config()
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    box = dep.one(mt.BLACKBOX)
    generation = mt.generation_modules(yaml.safe_load(box.file(mt.config_flag(box, "--config.file"))))
    probes = [j for j in jobs.values() if j.get("params", {}).get("module", [None])[0] in generation]
    assert [j["job_name"] for j in probes] == ["inference-latency"]
    (target,) = probes[0]["static_configs"][0]["targets"]
    assert [w.service for w in dep.resolve(target)] == ["ollama"]
    alerts = [r for r in mt.alert_rule_list(dep) if r["alert"] == "InferenceLatencyHigh"]
    assert [r["labels"]["source"] for r in alerts] == ["probe"]
    assert 'probe_duration_seconds{job="inference-latency"}' in alerts[0]["expr"]


@pytest.mark.parametrize("stack", STACKS)
def test_latency_sources_match_what_is_deployed(deployments, stack):
    """A P95 alert per latency measurement deployed: probes of Ollama, vLLM's histogram, the load balancer."""
    dep = deployments[stack]
    sources = sorted(r["labels"]["source"] for r in mt.alert_rule_list(dep) if r["alert"] == "InferenceLatencyHigh")
    want = ["probe"]
    prom = dep.prometheus_config()
    keys = {mt.exporter_of(w) for _, t, _ in mt.scrape_targets(prom) for w in dep.resolve(t)}
    if "vllm" in keys:
        want.append("vllm")
    if "traefik" in keys:
        want.append("traefik")
    assert sources == sorted(want)


@pytest.mark.parametrize("stack", STACKS)
def test_dashboards_show_the_alerts_p95(deployments, stack):
    dep = deployments[stack]
    exprs = {e for g in dep.named("grafana") for p, t in g.files.items() if p.endswith(".json")
             for _, _, e in panel_queries(json.loads(t))}
    for src in ms.inference_latency_p95([ms.ScrapeJob(j["job_name"], (), probe_module=(j.get("params") or {}).get(
            "module", [None])[0]) for j in dep.prometheus_config()["scrape_configs"]]):
        assert src.expr in exprs, src.expr


def test_selector_reader():
    sel = mt.selectors('histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{job="x", le!=""}[5m]))) >= 10 '
                       'and on (instance) up{job=~"x|y"} offset 5m unless b')
    assert [(s.metric, s.matchers) for s in sel] == [
        ("a_bucket", (("job", "=", "x"), ("le", "!=", ""))), ("up", (("job", "=~", "x|y"),)), ("b", ())]
    assert [s.metric for s in mt.selectors('{__name__="up"} == 0')] == ["up"]
    assert [s.metric for s in mt.selectors("100 * (1 - avg by (instance) (rate(node_cpu_seconds_total[5m])))")] == \
        ["node_cpu_seconds_total"]
    jobs = {"x": {"up", "a_bucket"}}
    problems: list[str] = []
    check_selectors("t", 'a_bucket{job="x"} + c{job="x"} + up{job="z"}', jobs, problems)
    assert problems == ['t: c is not exported by job [\'x\'] (a_bucket{job="x"} + c{job="x"} + up{job="z"})',
                        't: job \'z\' is not scraped (a_bucket{job="x"} + c{job="x"} + up{job="z"})',
                        't: up is not exported by job [] (a_bucket{job="x"} + c{job="x"} + up{job="z"})']
