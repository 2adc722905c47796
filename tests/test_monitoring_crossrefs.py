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
from components.config.rules import inference_instances
from components.services import monitoring_stack as ms

STACKS = mt.MONITORED_STACKS


@pytest.fixture(scope="module")
def deployments(run):
    return mt.deployments(run, STACKS)


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
        module = mt.target_module(job, target)
        if module:
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
    probed = mt.probe_targets(dep.prometheus_config())
    assert probed
    for job, target, _, name in probed:
        timeout = mt.go_duration_s(job.get("scrape_timeout", "10s"))
        assert mt.go_duration_s(modules[name]["timeout"]) <= timeout <= mt.go_duration_s(job["scrape_interval"]), \
            (target, name, job)


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
    box = dep.one(mt.BLACKBOX)
    generation = mt.generation_modules(yaml.safe_load(box.file(mt.config_flag(box, "--config.file"))))
    probes = [(job, t, lab) for job, t, lab, module in mt.probe_targets(prom) if module in generation]
    assert [(job["job_name"], lab["node"]) for job, _, lab in probes] == [("inference-latency", "ollama")]
    ((_, target, lab),) = probes
    assert [w.service for w in dep.resolve(target)] == ["ollama"]
    # the node reads its models from a shared store (readOnly): it is probed with one of those it lists
    assert dep.cfg.inference["ollama"].read_only and lab["model"] in dep.cfg.inference["ollama"].models
    alerts = [r for r in mt.alert_rule_list(dep) if r["alert"] == "InferenceLatencyHigh"]
    assert [r["labels"]["source"] for r in alerts] == ["probe"]
    assert 'probe_duration_seconds{job="inference-latency"}' in alerts[0]["expr"]


def expected_probe_model(cfg, node: str) -> str | None:
    """monitoring.probeModel where the node serves it, else the first chat model it serves in listed order; a
    read-only node serves its own models, then those its store's writers pull."""
    nc = cfg.all_inference[node]
    served = list(nc.models)
    if nc.read_only:
        served += [m for _, oc in sorted(cfg.all_inference.items()) if oc.engine == "ollama" and not oc.read_only
                   and oc.model_store == nc.model_store for m in oc.models if m not in served]
    if cfg.monitoring.probe_model in served:
        return cfg.monitoring.probe_model
    chat = [m for m in served if "embed" not in m]
    return chat[0] if chat else None


def generation_probes(dep: mt.Deployment) -> dict[str, tuple[str, dict, dict]]:
    """Target -> (module, its labels, the module's request body) of every generation probe."""
    box = dep.one(mt.BLACKBOX)
    modules = yaml.safe_load(box.file(mt.config_flag(box, "--config.file")))["modules"]
    generation = mt.generation_modules({"modules": modules})
    return {t: (m, lab, json.loads(modules[m]["http"]["body"]))
            for _, t, lab, m in mt.probe_targets(dep.prometheus_config()) if m in generation}


@pytest.mark.parametrize("stack", STACKS)
def test_every_inference_node_has_a_generation_probe_of_what_it_serves(deployments, stack):
    """Every instance of every Ollama node is probed for one token of a model it serves (probeModel where it
    does, else the first chat model it lists), every llama.cpp server on /completion; the `node` label names it."""
    check_generation_probes(deployments[stack])


def check_generation_probes(dep: mt.Deployment) -> None:
    probes = generation_probes(dep)
    seen = set()
    for name, nc in sorted(dep.cfg.all_inference.items()):
        if nc.engine not in ("ollama", "llamacpp"):
            continue
        instances = sorted(svc for svc, _, _ in inference_instances(name, nc))  # replicas included
        mine = {t: p for t, p in probes.items() if p[1]["node"] == name}
        # one probe per instance, each reaching that instance
        assert sorted(w.service for t in mine for w in dep.resolve(t)) == instances, (name, sorted(mine))
        for t, (module, lab, body) in mine.items():
            if nc.engine == "ollama":
                want = expected_probe_model(dep.cfg, name)
                assert t.endswith("/api/generate") and body["model"] == lab["model"] == want, (name, t, body, want)
            else:
                assert t.endswith("/completion") and body["n_predict"] == 1 and "model" not in body, (name, body)
        seen |= set(mine)
    assert seen == set(probes), f"probes of no inference node: {set(probes) - seen}"


def test_a_configured_probe_model_is_asked_of_the_nodes_that_serve_it(run):
    """homelab with monitoring.probeModel set to ollama-ai's model: ollama-ai is probed with it, `ollama` and
    the read-only ollama-84 (which do not serve it) with the first chat model they list."""
    from harness import stack_config

    cfg = stack_config("homelab")
    cfg["monitoring"] = {**cfg["monitoring"], "probeModel": "llama3.1:8b"}
    r = run("homelab", config=cfg)
    assert r.error is None, r.error
    dep = mt.deployment(r, "homelab", cfg)
    check_generation_probes(dep)
    assert {lab["node"]: lab["model"] for _, lab, _ in generation_probes(dep).values() if "node" in lab} == {
        "ollama": "mistral:7b", "ollama-84": "mistral:7b", "ollama-ai": "llama3.1:8b",
        "llm-server": "gguf/llama-2-7b-chat.Q4_K_M.gguf"}


def test_homelab_probes_each_ollama_node_with_its_own_model():
    """The issue's case: homelab's ollama-ai serves none of the other nodes' models and is probed with its
    own; the read-only ollama-84 with a model of the store it shares with `ollama`; llama.cpp too."""
    from components import stack
    from components.config.schema import load_stack_config
    from harness import stack_config

    cfg, _ = load_stack_config(stack_config("homelab"), set())
    chosen = stack.probe_models(cfg, cfg.monitoring.probe_model or stack._default_probe_model(cfg))
    assert chosen == {"ollama": "mistral:7b", "ollama-84": "mistral:7b", "ollama-ai": "llama3.1:8b"}
    names = ms.ollama_generate_module_names(chosen.values())
    assert names == {"mistral:7b": "ollama_generate_mistral_7b", "llama3.1:8b": "ollama_generate_llama3_1_8b"}
    assert set(stack.probe_modules(cfg, stack._default_probe_model(cfg))) == {*names.values(), "llamacpp_completion"}
    # monitoring.probeModel is asked of every node that serves it, the others keep their own
    assert stack.probe_models(cfg, "codellama:7b") == {"ollama": "codellama:7b", "ollama-84": "codellama:7b",
                                                       "ollama-ai": "llama3.1:8b"}


def test_generation_module_names_are_valid_stable_and_distinct():
    names = ms.ollama_generate_module_names(["llama3.1:8b", "llama3-1:8b", "qwen2.5:0.5b", "hf.co/Org/M:Q4_K_M"])
    assert names == ms.ollama_generate_module_names(reversed(list(names)))  # the same whatever the order
    assert len(set(names.values())) == len(names)
    assert all(re.fullmatch(r"ollama_generate_[a-z0-9_]+", n) for n in names.values()), names
    assert names["qwen2.5:0.5b"] == "ollama_generate_qwen2_5_0_5b"
    assert names["llama3.1:8b"].startswith("ollama_generate_llama3_1_8b_")  # clashes with llama3-1:8b


RENDER = """
import json, sys, tempfile
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import monitoring_tools as mt
from harness import run_stack, stand_in_ssh_home
r = run_stack(sys.argv[2], home=stand_in_ssh_home(Path(tempfile.mkdtemp())))
dep = mt.deployment(r, sys.argv[2])
print(json.dumps({s: dep.one(s).files for s in ("prometheus", "grafana", mt.BLACKBOX)}, sort_keys=True))
"""


@pytest.mark.parametrize("stack", STACKS)
def test_generated_monitoring_files_are_the_same_on_every_run(deployments, stack):
    """Two runs (in processes that order sets differently) render the same scrape, rule, dashboard and
    blackbox files: a file that changes on every run would restart its server on every `pulumi up`."""
    import subprocess
    import sys

    out = []
    for seed in ("1", "2"):
        p = subprocess.run([sys.executable, "-c", RENDER, str(mt.Path(__file__).resolve().parent.parent), stack],
                           capture_output=True, text=True, timeout=300, env={**mt.os.environ, "PYTHONHASHSEED": seed})
        assert p.returncode == 0, p.stderr[-3000:]
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert out[0] == out[1]
    assert out[0][mt.BLACKBOX] == deployments[stack].one(mt.BLACKBOX).files


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


@pytest.mark.parametrize("stack", STACKS)
def test_probe_latency_panels_cover_every_generation_probe(deployments, stack):
    """The inference dashboard's P95 (as alerted) and probe panels select every node's generation probe
    series: llama.cpp's as well as Ollama's."""
    dep = deployments[stack]
    probes = generation_probes(dep)
    targets_of: dict[str, set[str]] = {}
    for job, t, _ in mt.scrape_targets(dep.prometheus_config()):
        targets_of.setdefault(job["job_name"], set()).add(t)
    (grafana,) = dep.named("grafana")
    board = json.loads(next(text for path, text in grafana.files.items() if path.endswith("/inference.json")))
    covered: dict[str, set[str]] = {}
    for title, _, expr in panel_queries(board):
        for sel in mt.selectors(expr):
            if sel.metric == "probe_duration_seconds" and sel.label("job"):
                covered.setdefault(title, set()).update(targets_of.get(sel.label("job"), set()))
    for title in ("Inference latency P95 (the InferenceLatencyHigh expressions)",
                  "Generation latency P95 / P50 (10m)", "Generation probe"):
        assert set(probes) <= covered.get(title, set()), (title, set(probes) - covered.get(title, set()))


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
