"""The real servers, started on 127.0.0.1 with what the program generates and the flags their containers get:
Prometheus (then reloaded with SIGHUP and with POST /-/reload), the blackbox exporter (`--config.check`, and a
live probe of a stand-in for every module), Traefik (its API shows every router, service and backend; basic
auth answers 401 without credentials) and redis-server (AOF on, password from the environment).

Only listen addresses and the config mount's paths are moved (to free loopback ports and a temporary
directory), and every address a generated file points at is rewritten to a loopback stand-in: no test sends
anything off the machine. A missing tool skips, or fails under OCTOLLM_REQUIRE_REAL_HOST=1.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import time

import pytest
import yaml

import monitoring_tools as mt
from harness import stack_config
from loopback import free_port

STACKS = mt.MONITORED_STACKS


@pytest.fixture(scope="module")
def deployments(run):
    return mt.deployments(run, STACKS)


@pytest.fixture
def cleanup():
    items = []
    yield items
    for x in reversed(items):
        x.stop()


def only_addresses_moved(original: list[str], started: list[str], allowed=("address", "directory", "file",
                                                                           "path", "listen")) -> None:
    """`started` is `original` but for the values of listen-address and path flags."""
    assert len(original) == len(started), (original, started)
    for a, b in zip(original, started):
        if a != b:
            flag = a.split("=", 1)[0]
            assert flag == b.split("=", 1)[0] and any(w in flag for w in allowed), (a, b)


# ------------------------------------------------------------------ stand-ins for what the configs point at

def exporter_stand_in(dep: mt.Deployment, target: str) -> mt.StandIn:
    """A loopback server for one scrape target or probed URL, answering as what it reaches would."""
    routes = {}
    for w in dep.resolve(target):
        key = mt.exporter_of(w)
        if key and key not in ("blackbox-exporter",):
            try:
                metrics = mt.exported_by(w)
            except AssertionError:
                metrics = set()
            routes[("GET", "/metrics")] = mt.Route(body=mt.metrics_page({m: "gauge" for m in metrics
                                                                          if not m.endswith(("_sum", "_count"))}))
    routes.setdefault(("GET", "/metrics"), mt.Route(body="# nothing\n"))
    path = "/" + target.split("://", 1)[-1].split("/", 1)[1] if "://" in target and "/" in \
        target.split("://", 1)[-1] else None
    if path:
        routes[("GET", path)] = mt.Route(body='{"version": "0.12.6"}', content_type="application/json")
        routes[("POST", path)] = mt.Route(body='{"response": "p", "done": true}', content_type="application/json")
    return mt.StandIn(routes)


def loopback_prometheus_config(dep: mt.Deployment, root, blackbox_addr: str, cleanup) -> tuple[dict, dict]:
    """The generated prometheus.yml with every target moved to its own loopback stand-in, the blackbox
    exporter's address to the real one started here, and the rule files to where they were placed."""
    prom = copy.deepcopy(dep.prometheus_config())
    moved = {}
    for job in prom["scrape_configs"]:
        for sc in job["static_configs"]:
            new = []
            for t in sc["targets"]:
                s = exporter_stand_in(dep, t)
                cleanup.append(s)
                hostport = t.split("://", 1)[-1].split("/", 1)[0]
                moved[t] = t.replace(hostport, f"127.0.0.1:{s.port}", 1)
                new.append(moved[t])
            sc["targets"] = new
        for rc in job.get("relabel_configs", []):
            if rc.get("target_label") == "__address__":
                assert dep.resolve(rc["replacement"]) == dep.named(mt.BLACKBOX), rc
                rc["replacement"] = blackbox_addr
    prom["rule_files"] = [str(root / p.lstrip("/")) for p in prom["rule_files"]]
    return prom, moved


def start_blackbox(dep: mt.Deployment, root, cleanup, config_text: str | None = None) -> tuple[mt.Server, str]:
    w = dep.one(mt.BLACKBOX)
    exe = mt.need_tool("prometheus-blackbox-exporter")
    mt.place_files(w, root)
    if config_text is not None:
        (root / mt.config_flag(w, "--config.file").lstrip("/")).write_text(config_text)
    port = free_port()
    args = mt.relocate(w.command, root)
    only_addresses_moved(w.command, args)
    srv = mt.Server([exe, *args, f"--web.listen-address=127.0.0.1:{port}"], root / "blackbox.log")
    cleanup.append(srv)
    srv.wait_http(f"http://127.0.0.1:{port}/-/healthy")
    return srv, f"127.0.0.1:{port}"


def metric_value(url: str, name: str) -> float:
    status, body, _ = mt.http(url)
    assert status == 200, (url, status)
    series = mt.parse_metrics(body.decode()).get(name)
    assert series, f"{name} not in {url}"
    return series[0][1]


# ------------------------------------------------------------------ Prometheus

@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_runs_the_generated_config_and_reloads_it(deployments, stack, tmp_path, cleanup):
    dep = deployments[stack]
    w = dep.prometheus()
    exe = mt.need_tool("prometheus")
    _, blackbox = start_blackbox(dep, tmp_path / "bb", cleanup)
    root = tmp_path / "prom"
    mt.place_files(w, root)
    prom, moved = loopback_prometheus_config(dep, root, blackbox, cleanup)
    config = root / mt.config_flag(w, "--config.file").lstrip("/")
    config.write_text(yaml.safe_dump(prom, sort_keys=False))
    # the container's own flags; its data mount (/prometheus) and config mount moved under root
    data_mounts = [a.split("=", 1)[1] for a in w.command if a.startswith("--storage.tsdb.path=")]
    args = mt.relocate(w.command, root)
    args = [a.replace(f"={p}", f"={root}{p}") if a.startswith("--storage.tsdb.path=") else a
            for a, p in zip(args, data_mounts * len(args))] if data_mounts else args
    only_addresses_moved(w.command, args)
    assert "--web.enable-lifecycle" in args  # POST /-/reload depends on it
    port = free_port()
    srv = mt.Server([exe, *args, f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prometheus.log")
    cleanup.append(srv)
    base = f"http://127.0.0.1:{port}"
    srv.wait_http(f"{base}/-/ready", timeout_s=60)

    flags = mt.get_json(f"{base}/api/v1/status/flags")["data"]
    assert flags["storage.tsdb.retention.time"] == dep.monitoring.retention
    assert flags["web.enable-lifecycle"] == "true"
    # every job and target of the generated file is active, with the probe module and target it names
    jobs = {j["job_name"]: j for j in dep.prometheus_config()["scrape_configs"]}
    deadline = time.monotonic() + 30  # discovery hands targets over every 5 s
    while time.monotonic() < deadline:
        targets = mt.get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
        by_job: dict[str, list] = {}
        for t in targets:
            by_job.setdefault(t["labels"]["job"], []).append(t)
        if set(by_job) == set(jobs):
            break
        time.sleep(0.5)
    assert set(by_job) == set(jobs)
    # each probed target with its own module (a static group's __param_module, else the job's) and labels
    generated = {moved[t]: (mt.target_module(job, t), {k: v for k, v in lab.items() if k != "instance"})
                 for job, t, lab in mt.scrape_targets(dep.prometheus_config())}
    for name, job in jobs.items():
        want = sorted(moved[t] for sc in job["static_configs"] for t in sc["targets"])
        assert sorted(t["labels"]["instance"] for t in by_job[name]) == want, name
        for t in by_job[name]:
            module, labels = generated[t["labels"]["instance"]]
            assert labels.items() <= t["labels"].items(), (labels, t["labels"])
            if module:
                assert f"module={module}" in t["scrapeUrl"].split("?", 1)[1].split("&"), t["scrapeUrl"]
                assert t["scrapeUrl"].startswith(f"http://{blackbox}/probe?"), t["scrapeUrl"]
    # every 15 s target answers through what it points at: exporters' stand-ins, probes via the real blackbox
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        targets = mt.get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
        quick = [t for t in targets if mt.go_duration_s(t.get("scrapeInterval") or "15s") <= 15]
        if all(t["health"] == "up" for t in quick):
            break
        time.sleep(1)
    assert all(t["health"] == "up" for t in quick), [(t["scrapeUrl"], t["lastError"]) for t in quick
                                                     if t["health"] != "up"]
    # every alert rule is loaded and evaluates
    names = sorted(r["alert"] for r in mt.alert_rule_list(dep))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        groups = mt.get_json(f"{base}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") and not r["lastEvaluation"].startswith("0001")
                         for r in rules):
            break
        time.sleep(1)
    assert sorted(r["name"] for r in rules) == names
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

    metrics = f"{base}/metrics"

    def reloaded_after(t0: float, ok: bool = True) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if metric_value(metrics, "prometheus_config_last_reload_success_timestamp_seconds") > t0 or \
                    (not ok and metric_value(metrics, "prometheus_config_last_reload_successful") == 0):
                break
            time.sleep(0.2)
        assert metric_value(metrics, "prometheus_config_last_reload_successful") == (1 if ok else 0), srv.output()[-2000:]

    def live_jobs() -> set[str]:
        return {j["job_name"] for j in yaml.safe_load(mt.get_json(f"{base}/api/v1/status/config")["data"]["yaml"])
                ["scrape_configs"]}

    # 1. the file step rewrites the file and sends the container the signal it names (Docker), SIGHUP
    sig = w.reload_signals.get(mt.config_flag(w, "--config.file"), "HUP")
    assert sig == "HUP" or w.kind == "kubernetes"
    smaller = copy.deepcopy(prom)
    dropped = smaller["scrape_configs"].pop()["job_name"]
    t0 = metric_value(metrics, "prometheus_config_last_reload_success_timestamp_seconds")
    time.sleep(1.1)  # the timestamp has a resolution of one second
    config.write_text(yaml.safe_dump(smaller, sort_keys=False))
    srv.signal(getattr(signal, f"SIG{sig}"))
    reloaded_after(t0)
    assert dropped not in live_jobs()
    # 2. the lifecycle API
    t0 = metric_value(metrics, "prometheus_config_last_reload_success_timestamp_seconds")
    time.sleep(1.1)
    config.write_text(yaml.safe_dump(prom, sort_keys=False))
    status, body, _ = mt.http(f"{base}/-/reload", method="POST")
    assert status == 200, body
    reloaded_after(t0)
    assert dropped in live_jobs()
    # 3. a broken file is refused on reload and the running config stays
    config.write_text(config.read_text().replace("scrape_interval:", "scrape_intervall:", 1))
    status, body, _ = mt.http(f"{base}/-/reload", method="POST")
    assert status == 500 and b"scrape_intervall" in body, body
    reloaded_after(0, ok=False)
    assert dropped in live_jobs()


# ------------------------------------------------------------------ blackbox exporter

@pytest.mark.parametrize("stack", STACKS)
def test_blackbox_config_check(deployments, stack, tmp_path):
    dep = deployments[stack]
    w = dep.one(mt.BLACKBOX)
    exe = mt.need_tool("prometheus-blackbox-exporter")
    mt.place_files(w, tmp_path)
    out = subprocess.run([exe, *mt.relocate(w.command, tmp_path), "--config.check"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "Config file is ok" in out.stdout + out.stderr, out.stdout + out.stderr


def probe(blackbox: str, module: str, target: str) -> dict[str, float]:
    status, body, _ = mt.http(f"http://{blackbox}/probe?module={module}&target={target}", timeout=40)
    assert status == 200, (status, body[:300])
    return {k: v[0][1] for k, v in mt.parse_metrics(body.decode()).items()}


def served_models(cfg, node: str) -> set[str]:
    """What an Ollama node serves: its models, and on a read-only node those its store's writers pull."""
    nc = cfg.all_inference[node]
    out = set(nc.models)
    if nc.read_only:
        out |= {m for oc in cfg.all_inference.values() if oc.engine == "ollama" and not oc.read_only
                and oc.model_store == nc.model_store for m in oc.models}
    return out


def generation_check(dep: mt.Deployment, path: str, targets: list[dict]):
    """What a stand-in of the generate endpoint at `path` accepts (a request -> an error or None): Ollama's
    POST /api/generate of one unstreamed token of a model every probed node serves (the targets' `model`
    label); llama.cpp's POST /completion of one unstreamed token (n_predict) of a prompt."""
    def check(req):
        if req["headers"].get("Content-Type") != "application/json":
            return "not JSON"
        body = json.loads(req["body"] or b"{}")
        if path == "/completion":
            if body.get("n_predict") != 1 or body.get("stream", False) is not False:
                return f"not a one-token, unstreamed completion: {body}"
            if not isinstance(body.get("prompt"), str) or not body["prompt"]:
                return f"no prompt: {body}"
            return None
        if body.get("stream") is not False or body.get("options", {}).get("num_predict") != 1:
            return f"not a one-token, unstreamed generation: {body}"
        for lab in targets:
            if body.get("model") != lab["model"] or body["model"] not in served_models(dep.cfg, lab["node"]):
                return f"model {body.get('model')!r}: {lab['node']} is probed for {lab['model']!r} and serves " \
                       f"{sorted(served_models(dep.cfg, lab['node']))}"
        return None
    return check


@pytest.mark.parametrize("stack", STACKS)
def test_every_blackbox_module_probes_a_stand_in(deployments, stack, tmp_path, cleanup):
    """Each module, against a loopback server answering the path its targets are probed on: success when it
    answers as Ollama, llama.cpp (or the probed service) does, failure when it does not. A generation module
    sends the request its engine's stand-in accepts (one token, no stream, as JSON; Ollama: the model the
    node it probes serves) and no other module's request is accepted there; its duration is the server's."""
    dep = deployments[stack]
    _, blackbox = start_blackbox(dep, tmp_path, cleanup)
    modules = yaml.safe_load(dep.one(mt.BLACKBOX).file(mt.config_flag(dep.one(mt.BLACKBOX), "--config.file")))[
        "modules"]
    used: dict[str, dict[str, list[dict]]] = {}  # module -> path -> the labels of the targets probed there
    for _, target, labels, module in mt.probe_targets(dep.prometheus_config()):
        path = "/" + target.split("://", 1)[1].split("/", 1)[1]
        used.setdefault(module, {}).setdefault(path, []).append(labels)
    assert set(used) <= set(modules), f"jobs use modules the blackbox config lacks: {set(used) - set(modules)}"
    assert set(modules) <= set(used), f"modules no job uses: {set(modules) - set(used)}"
    generation = mt.generation_modules({"modules": modules})
    assert generation, f"{stack}: no generation probe module"
    # the generate endpoints are probed by generation modules only, and those probe nothing else
    assert {m for m, paths in used.items() if set(paths) & {"/api/generate", "/completion"}} == generation
    assert {p for m in generation for p in used[m]} <= {"/api/generate", "/completion"}

    good_at: dict[str, mt.StandIn] = {}
    for module, paths in sorted(used.items()):
        method = modules[module]["http"].get("method", "GET")
        for path, targets in sorted(paths.items()):
            check = generation_check(dep, path, targets) if module in generation else None
            good = mt.StandIn({(method, path): mt.Route(body='{"response": "p", "done": true}',
                                                        content_type="application/json", check=check,
                                                        delay_s=1.2 if module in generation else 0)})
            bad = mt.StandIn({(method, path): mt.Route(status=500, body="model not loaded")})
            cleanup += [good, bad]
            ok = probe(blackbox, module, f"{good.url}{path}")
            assert ok["probe_success"] == 1 and ok["probe_http_status_code"] == 200, (module, path, good.requests)
            assert good.requests and good.requests[-1]["method"] == method
            if module in generation:
                assert ok["probe_duration_seconds"] >= 1.2, ok  # the latency the alert reads is the server's
                good_at[module] = good
            assert probe(blackbox, module, f"{bad.url}{path}")["probe_success"] == 0, (module, path)
            # every series the alerts and panels read from a probe is among those it returns
            assert {"probe_success", "probe_duration_seconds"} <= set(ok)
    # a generation stand-in refuses any other module's request (another path, method, body or model)
    for module, good in sorted(good_at.items()):
        (path,) = used[module]
        for other in sorted(set(modules) - {module}):
            if modules[other]["http"].get("body") != modules[module]["http"].get("body"):
                assert probe(blackbox, other, f"{good.url}{path}")["probe_success"] == 0, (other, module, path)


# ------------------------------------------------------------------ Traefik

def traefik_run(run, basic_auth: bool, dashboard: bool, users: str | None = None):
    cfg = copy.deepcopy(stack_config("homelab"))
    lb = dict(cfg["loadBalancer"])
    if dashboard:
        lb["dashboardPort"] = 8081
    if basic_auth:
        lb["basicAuth"] = True
    cfg["loadBalancer"] = lb
    secrets = {"loadBalancerUsers": users} if users else None
    r = run("homelab", config=cfg, secrets=secrets)
    assert r.error is None, r.error
    return mt.deployment(r, "homelab", cfg, secrets), cfg


def start_traefik(dep: mt.Deployment, root, cleanup, unhealthy: int | None = None):
    """Traefik with the container's flags (addresses and the dynamic directory moved) and the generated
    dynamic files, every backend replaced by its own loopback stand-in (`unhealthy`: one failing its
    health check)."""
    w = dep.one("traefik")
    exe = mt.need_tool("traefik")
    lb = dep.cfg.load_balancer
    backends, stand_ins = {}, []

    def rewrite(path, text):
        doc = yaml.safe_load(text)
        for svc in (doc.get("http", {}).get("services") or {}).values():
            for i, s in enumerate(svc["loadBalancer"]["servers"]):
                health = mt.Route(status=500) if i == unhealthy else mt.Route(body='{"version": "0.12.6"}')
                si = mt.StandIn({("GET", lb.health_path): health,
                                 ("GET", "/api/tags"): mt.Route(body=f'{{"backend": {i}}}'),
                                 ("POST", "/api/generate"): mt.Route(body=f'{{"backend": {i}}}')})
                stand_ins.append(si)
                cleanup.append(si)
                backends[s["url"]] = si.url
                s["url"] = si.url
        return yaml.safe_dump(doc, sort_keys=False)

    mt.place_files(w, root, rewrite=rewrite)
    ports, args = {}, []
    for a in mt.relocate(w.command, root):
        m = re.fullmatch(r"--entrypoints\.(\w+)\.address=:(\d+)", a)
        if m:
            ports[m.group(1)] = free_port()
            a = f"--entrypoints.{m.group(1)}.address=127.0.0.1:{ports[m.group(1)]}"
        args.append(a)
    only_addresses_moved(w.command, args)
    srv = mt.Server([exe, *args], root / "traefik.log")
    cleanup.append(srv)
    srv.wait_http(f"http://127.0.0.1:{ports['metrics']}/ping")
    return srv, ports, backends, stand_ins, w


def test_traefik_routes_over_every_backend_with_the_stack_flags(run, tmp_path, cleanup):
    dep, _ = traefik_run(run, basic_auth=False, dashboard=False)
    srv, ports, backends, stand_ins, w = start_traefik(dep, tmp_path, cleanup)
    generated = yaml.safe_load(w.file("dynamic/ollama.yml"))
    assert len(backends) == len(generated["http"]["services"]["ollama"]["loadBalancer"]["servers"]) == 5
    entry = f"http://127.0.0.1:{ports['ollama']}"
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen) < len(stand_ins):
        status, body, _ = mt.http(f"{entry}/api/generate", method="POST", data=b"{}", headers={"Host": "ollama.local"})
        if status == 200:
            seen.add(json.loads(body)["backend"])
        else:
            time.sleep(0.3)
    assert seen == set(range(len(stand_ins))), (seen, srv.output()[-2000:])
    # PathPrefix(`/api`) matches without the Host header; anything else is not routed
    assert mt.http(f"{entry}/api/tags")[0] == 200
    assert mt.http(f"{entry}/other", headers={"Host": "x.example"})[0] == 404
    # Prometheus reads the per-service request duration histogram from the metrics entry point
    status, body, _ = mt.http(f"http://127.0.0.1:{ports['metrics']}/metrics")
    series = mt.parse_metrics(body.decode())
    buckets = [lab for lab, _ in series.get("traefik_service_request_duration_seconds_bucket", [])
               if lab.get("service") == "ollama@file"]
    assert buckets, sorted(series)[:50]
    used = {n for n in series}
    missing = {m for m in mt.EXTRA_EXPORTERS["traefik"]["metrics"] if m not in used
               and not m.startswith("traefik_service_server_up")}
    assert not missing, f"the metrics table names series traefik {mt.tool_version('traefik')} does not export: {missing}"
    les = sorted({float(lab["le"]) for lab in buckets if lab["le"] != "+Inf"})
    assert les == mt.histogram_buckets(w, "traefik_service_request_duration_seconds")


def test_traefik_latency_histogram_has_the_threshold_as_a_bucket(run, tmp_path, cleanup):
    dep, _ = traefik_run(run, basic_auth=False, dashboard=False)
    _, ports, _, _, _ = start_traefik(dep, tmp_path, cleanup)
    # Traefik loads the dynamic file after it starts answering (a request before that is a 404 and counts
    # for no service), and records a request's duration after answering it: retry both on a busy machine.
    deadline = time.monotonic() + 30
    while True:
        routed = mt.http(f"http://127.0.0.1:{ports['ollama']}/api/tags")[0] == 200
        series = mt.parse_metrics(mt.http(f"http://127.0.0.1:{ports['metrics']}/metrics")[1].decode())
        if routed and "traefik_service_request_duration_seconds_bucket" in series or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    les = {float(lab["le"]) for lab, _ in series.get("traefik_service_request_duration_seconds_bucket", [])}
    assert float(dep.monitoring.inference_latency_alert_s) in les, sorted(les)


def test_traefik_api_shows_every_router_service_and_backend_and_auth_refuses(run, tmp_path, cleanup):
    password = "pw-" + str(free_port())
    users = mt.sha_htpasswd("octo", password)
    dep, cfg = traefik_run(run, basic_auth=True, dashboard=True, users=users)
    srv, ports, backends, stand_ins, w = start_traefik(dep, tmp_path, cleanup, unhealthy=4)
    assert "--api.insecure=true" in w.command and "traefik" in ports
    api = f"http://127.0.0.1:{ports['traefik']}/api"
    lb = dep.cfg.load_balancer
    deadline = time.monotonic() + 15  # the file provider's first load
    while time.monotonic() < deadline:
        routers = {r["name"]: r for r in mt.get_json(f"{api}/http/routers")}
        if "ollama@file" in routers:
            break
        time.sleep(0.3)
    assert sorted(w.files) == ["/etc/octollm/dynamic/auth.yml", "/etc/octollm/dynamic/ollama.yml"]
    assert "ollama@file" in routers, (routers, srv.output()[-3000:])
    assert routers["ollama@file"]["rule"] == lb.rule
    assert routers["ollama@file"]["service"] == "ollama" and routers["ollama@file"]["entryPoints"] == ["ollama"]
    assert routers["ollama@file"]["middlewares"] == ["ollama-auth@file"]
    assert routers["ollama@file"]["status"] == "enabled", routers["ollama@file"]
    middlewares = {m["name"]: m for m in mt.get_json(f"{api}/http/middlewares")}
    assert middlewares["ollama-auth@file"]["basicAuth"]["users"] == [users]
    # every backend, in order, health-checked on the configured path: the failing one is DOWN
    deadline = time.monotonic() + lb.health_interval_s + 10
    while time.monotonic() < deadline:
        svc = {s["name"]: s for s in mt.get_json(f"{api}/http/services")}["ollama@file"]
        if len(svc.get("serverStatus", {})) == len(stand_ins) and "DOWN" in svc["serverStatus"].values():
            break
        time.sleep(0.5)
    assert [s["url"] for s in svc["loadBalancer"]["servers"]] == [si.url for si in stand_ins]
    assert svc["loadBalancer"]["healthCheck"]["path"] == lb.health_path
    assert svc["loadBalancer"]["healthCheck"]["interval"] == f"{lb.health_interval_s}s"
    assert svc["serverStatus"] == {si.url: ("DOWN" if i == 4 else "UP") for i, si in enumerate(stand_ins)}
    assert all(any(r["path"] == lb.health_path for r in si.requests) for si in stand_ins)
    entry = f"http://127.0.0.1:{ports['ollama']}/api/generate"
    assert mt.http(entry, method="POST", data=b"{}", headers={"Host": "ollama.local"})[0] == 401
    wrong = "Basic " + mt.base64.b64encode(b"octo:nope").decode()
    assert mt.http(entry, method="POST", data=b"{}", headers={"Host": "ollama.local", "Authorization": wrong})[0] == 401
    good = "Basic " + mt.base64.b64encode(f"octo:{password}".encode()).decode()
    status, body, _ = mt.http(entry, method="POST", data=b"{}", headers={"Host": "ollama.local", "Authorization": good})
    assert status == 200 and json.loads(body)["backend"] != 4, body


# ------------------------------------------------------------------ redis-server

def redis_workloads(deployments) -> list[tuple[str, mt.Workload]]:
    out = []
    for stack, dep in deployments.items():
        out += [(stack, w) for w in dep.workloads if w.image_repo in ("redis", "library/redis")]
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_redis_starts_with_its_exact_command_line(deployments, stack, tmp_path, cleanup):
    exe = mt.need_tool("redis-server")
    cli = mt.need_tool("redis-cli")
    found = [w for s, w in redis_workloads(deployments) if s == stack]
    assert found, f"{stack}: no Redis"
    for w in found:
        argv = [*w.entrypoint, *w.command]
        assert argv[:2] == ["sh", "-c"] and "exec redis-server " in argv[2], argv
        assert "$REDISCLI_AUTH" in argv[2] and "REDISCLI_AUTH" in w.secret_env
        assert not re.search(r"requirepass\s+[^\"$]", argv[2])  # no literal password on the command line
        port, data = free_port(), tmp_path / w.resource
        data.mkdir()
        # the same script; only where it listens and where it keeps its data (the container's /data) differ,
        # by the arguments after it, which it hands to redis-server
        password = f"test-{port}-secret"
        srv = mt.Server(["sh", "-c", argv[2], "redis", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)],
                        data / "redis.log",
                        env={"REDISCLI_AUTH": password, "PATH": f"{mt.Path(exe).parent}:/usr/bin:/bin"})
        cleanup.append(srv)
        srv.wait_port(port)

        def redis_cli(*args, auth=None, stderr=False):
            env = {"PATH": "/usr/bin:/bin"}
            if auth is not None:
                env["REDISCLI_AUTH"] = auth
            out = subprocess.run([cli, "-p", str(port), *args], capture_output=True, text=True, env=env, timeout=10)
            return (out.stdout + (out.stderr if stderr else "")).strip()

        assert redis_cli("PING") == "NOAUTH Authentication required."
        wrong = redis_cli("PING", auth="not-it", stderr=True)
        assert "WRONGPASS" in wrong and "PONG" not in wrong
        assert redis_cli("PING", auth=password) == "PONG"
        assert redis_cli("CONFIG", "GET", "appendonly", auth=password).split() == ["appendonly", "yes"]
        assert redis_cli("CONFIG", "GET", "appendfsync", auth=password).split() == ["appendfsync", "everysec"]
        assert redis_cli("SET", "k", "v", auth=password) == "OK"
        time.sleep(1.2)  # everysec
        aof = list(data.glob("appendonlydir/*.aof")) + list(data.glob("*.aof"))
        assert any(b"SET" in p.read_bytes() for p in aof), aof
        # the container's health check, as written, with its port
        health = subprocess.run(["sh", "-c", "redis-cli -p %d ping | grep -q PONG" % port], env={
            "REDISCLI_AUTH": password, "PATH": f"{mt.Path(cli).parent}:/usr/bin:/bin"}, timeout=10)
        assert health.returncode == 0
        # exec'd by the shell, redis-server renames its process: the password is not in its argv
        pid = int(redis_cli("INFO", "server", auth=password).split("process_id:")[1].split()[0])
        assert password.encode() not in open(f"/proc/{pid}/cmdline", "rb").read()
