"""tooling/verify on a Kubernetes stack (gke), against a stand-in API server on loopback.

No real cluster runs here, so a small HTTP server plays the API server: it serves exactly the REST paths
verify's client calls (the /version, the lists of apps/v1 Deployments, StatefulSets and DaemonSets and of
batch/v1 Jobs in the namespace, core/v1 Secrets, and the service proxy
/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>), answers 404 to any other path and records
it, and 401 to a request without the kubeconfig's bearer token. Its objects are what the program registers
for Pulumi.gke.yaml under the mock engine: every Deployment, StatefulSet, DaemonSet and Job with its
labels and spec, every Secret with its values, every Service with its ports (a proxy request to a port a
Service does not have is refused); Prometheus's targets are those of the rendered prometheus.yml and
Grafana's datasources those of the rendered provisioning file. Behind the proxy the stand-in answers as
Ollama, Prometheus, Grafana (a session cookie after POST /login with the password of the grafana-env
Secret), Qdrant (the api-key header of the qdrant-env Secret) and the OctoLLM services would.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import k8s_manifests
from harness import stack_config
from tooling import verify, verify_kubernetes as vk
from components.config.schema import load_stack_config

NS = "octollm"
TOKEN = "standin-token-" + secrets.token_hex(8)
KINDS = {"deployments": ("apps/v1", "Deployment"), "statefulsets": ("apps/v1", "StatefulSet"),
         "daemonsets": ("apps/v1", "DaemonSet"), "jobs": ("batch/v1", "Job")}
TYPE_OF = {"kubernetes:apps/v1:Deployment": "deployments", "kubernetes:apps/v1:StatefulSet": "statefulsets",
           "kubernetes:apps/v1:DaemonSet": "daemonsets", "kubernetes:batch/v1:Job": "jobs"}


def status_obj(code: int, message: str, reason: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Estate:
    """The live state the stand-in serves, built from the program's registrations, and what tests break."""

    def __init__(self, result):
        self.result = result
        self.reset()

    def reset(self) -> None:
        r = self.result
        hpa = {h.inputs["spec"]["scaleTargetRef"]["name"]: int(h.inputs["spec"]["minReplicas"])
               for h in r.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")}
        self.objects: dict[str, dict[str, dict]] = {k: {} for k in KINDS}
        for reg in r.registrations:
            plural = TYPE_OF.get(reg.type)
            if plural is None:
                continue
            m = k8s_manifests._ints({k: reg.inputs[k] for k in ("metadata", "spec")})
            name = m["metadata"]["name"]
            assert m["metadata"]["namespace"] == NS
            m["apiVersion"], m["kind"] = KINDS[plural]
            m["metadata"].update({"generation": 1, "uid": f"uid-{plural}-{name}", "resourceVersion": "1"})
            if plural == "deployments":
                n = m["spec"].get("replicas", hpa.get(name, 1))
                m["spec"]["replicas"] = n
                m["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                               "availableReplicas": n, "conditions": [
                                   {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                    "message": "Deployment has minimum availability."},
                                   {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                                    "message": f'ReplicaSet "{name}-5d8f7c" has successfully progressed.'}]}
            elif plural == "statefulsets":
                n = m["spec"]["replicas"]
                m["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                               "availableReplicas": n, "currentRevision": f"{name}-7b9", "updateRevision": f"{name}-7b9"}
            elif plural == "daemonsets":
                m["status"] = {"observedGeneration": 1, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                               "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1,
                               "numberMisscheduled": 0}
            else:
                m["status"] = {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z",
                               "completionTime": "2026-01-01T00:09:00Z",
                               "conditions": [{"type": "Complete", "status": "True"}]}
            self.objects[plural][name] = m
        self.secrets = {reg.inputs["metadata"]["name"]: dict(reg.inputs["data"])
                        for reg in r.of_type("kubernetes:core/v1:Secret")}
        self.services = {reg.inputs["metadata"]["name"]: {int(p["port"]) for p in reg.inputs["spec"]["ports"]}
                         for reg in r.of_type("kubernetes:core/v1:Service")}
        self.models = {name: list(models) for name, models in r.outputs["models"].items()}
        files = {c.inputs["metadata"]["name"]: c.inputs["data"] for c in r.of_type("kubernetes:core/v1:ConfigMap")}
        prom = yaml.safe_load(files["prometheus-files"]["prometheus.yml"])
        self.targets = {(j["job_name"], t): ("up", "") for j in prom["scrape_configs"]
                        for sc in j["static_configs"] for t in sc["targets"]}
        ds = yaml.safe_load(files["grafana-files"]["provisioning-datasources-datasources.yml"])["datasources"]
        self.datasources = {d["uid"]: (d, "OK", "Data source is working") for d in ds}
        self.metrics = {("pg_up", "postgres-exporter"): "1", ("redis_up", "redis-exporter"): "1"}
        self.grafana_password = self.secret_value("grafana-env", "GF_SECURITY_ADMIN_PASSWORD")
        self.qdrant_key = self.secret_value("qdrant-env", "QDRANT__SERVICE__API_KEY")
        self.sessions: set[str] = set()
        self.logouts = 0
        self.forbidden_secrets: set[str] = set()
        self.seen: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []
        self.unauthenticated = 0

    def secret_value(self, name: str, key: str) -> str:
        return base64.b64decode(self.secrets[name][key]).decode()


class Handler(BaseHTTPRequestHandler):
    estate: Estate

    def log_message(self, *args):  # quiet
        pass

    def send(self, code: int, body, headers: dict | None = None, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            for one in v if isinstance(v, list) else [v]:
                self.send_header(k, one)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def handle_any(self, method: str) -> None:
        e = self.estate
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        e.seen.append((method, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            e.unauthenticated += 1
            return self.send(401, status_obj(401, "Unauthorized", "Unauthorized"))
        # As the real API server: the bearer token is consumed by authentication, never forwarded.
        forwarded = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        if method == "GET" and path == "/version/":
            return self.send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-gke.1200000",
                                   "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                                   "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"})
        m = re.fullmatch(r"/apis/(apps/v1|batch/v1)/namespaces/([^/]+)/(deployments|statefulsets|daemonsets|jobs)", path)
        if method == "GET" and m and KINDS[m[3]][0] == m[1]:
            api, kind = KINDS[m[3]]
            items = list(e.objects[m[3]].values()) if m[2] == NS else []
            return self.send(200, {"kind": f"{kind}List", "apiVersion": api, "metadata": {"resourceVersion": "1"},
                                   "items": items})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
        if method == "GET" and m:
            if m[2] in e.forbidden_secrets:
                return self.send(403, status_obj(403, f'secrets "{m[2]}" is forbidden: User "verifier" cannot get '
                                                      f'resource "secrets" in API group "" in the namespace "{NS}"',
                                                 "Forbidden"))
            if m[1] != NS or m[2] not in e.secrets:
                return self.send(404, status_obj(404, f'secrets "{m[2]}" not found', "NotFound"))
            return self.send(200, {"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                                   "metadata": {"name": m[2], "namespace": NS}, "data": e.secrets[m[2]]})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/services/([^/:]+):(\d+)/proxy(/.*)", path)
        if m and m[1] == NS:
            service, port, inner = m[2], int(m[3]), m[4]
            if port not in e.services.get(service, set()):
                return self.send(404, status_obj(404, f'services "{service}" not found', "NotFound"))
            return self.proxied(method, service, port, inner, query, forwarded, body)
        e.refused.append((method, self.path))
        return self.send(404, status_obj(404, "the server could not find the requested resource", "NotFound"))

    def proxied(self, method, service, port, path, query, headers, body):
        e = self.estate
        key = (method, service, path)
        if key == ("GET", "ollama", "/api/tags"):
            return self.send(200, {"models": [{"name": verify.normalise_model(x), "model": verify.normalise_model(x)}
                                              for x in e.models["ollama"]]})
        if key == ("GET", "prometheus", "/api/v1/targets") and query == {"state": ["active"]}:
            return self.send(200, {"status": "success", "data": {"activeTargets": [
                {"labels": {"job": j, "instance": t}, "health": h, "lastError": err}
                for (j, t), (h, err) in e.targets.items()], "droppedTargets": []}})
        if key == ("GET", "prometheus", "/api/v1/query") and list(query) == ["query"]:
            q = re.fullmatch(r'(\w+)\{job="([^"]+)"\}', query["query"][0])
            value = e.metrics.get((q[1], q[2])) if q else None
            result = [] if value is None else [{"metric": {"__name__": q[1], "job": q[2], "instance": f"{q[2]}:9"},
                                                "value": [1767225600.0, value]}]
            return self.send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})
        if service == "grafana":
            session = re.search(r"grafana_session=([0-9a-f]+)", headers.get("cookie", ""))
            authed = session is not None and session[1] in e.sessions
            if key == ("POST", "grafana", "/login"):
                creds = json.loads(body or b"{}")
                if creds == {"user": "admin", "password": e.grafana_password}:
                    token = secrets.token_hex(16)
                    e.sessions.add(token)
                    return self.send(200, {"message": "Logged in", "redirectUrl": "/"}, headers={"Set-Cookie": [
                        f"grafana_session={token}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax",
                        "grafana_session_expiry=1767229200; Path=/; Max-Age=2592000; SameSite=Lax"]})
                return self.send(401, {"message": "Invalid username or password"})
            if key == ("GET", "grafana", "/logout") and authed:
                e.sessions.discard(session[1])
                e.logouts += 1
                return self.send(302, b"", headers={"Location": "/login"}, content_type="text/html")
            if method == "GET" and not authed:
                return self.send(401, {"message": "Unauthorized"})
            if key == ("GET", "grafana", "/api/datasources"):
                return self.send(200, [{"uid": uid, "name": d["name"], "type": d["type"], "url": d["url"]}
                                       for uid, (d, _, _) in e.datasources.items()])
            hm = re.fullmatch(r"/api/datasources/uid/([^/]+)/health", path)
            if method == "GET" and hm and hm[1] in e.datasources:
                _, st, msg = e.datasources[hm[1]]
                return self.send(200 if st == "OK" else 400, {"status": st, "message": msg})
        if key == ("GET", "qdrant", "/collections"):
            if headers.get("api-key") == e.qdrant_key:
                return self.send(200, {"result": {"collections": []}, "status": "ok", "time": 0.00001})
            return self.send(401, b"Must provide an API key or an Authorization bearer token", content_type="text/plain")
        if key[0] == "GET" and path == "/health" and (service in ("orchestrator", "reflex-layer")
                                                      or service.startswith("arm-")):
            return self.send(200, {"status": "healthy", "service": service})
        e.refused.append((method, f"{service}:{port}{path}"))
        return self.send(404, b"404 page not found", content_type="text/plain")


@pytest.fixture(scope="module")
def gke(run):
    r = run("gke")
    assert r.error is None, r.error
    return r


@pytest.fixture(scope="module")
def apiserver(gke):
    estate = Estate(gke)
    handler = type("StandIn", (Handler,), {"estate": estate})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield estate, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(path: Path, server: str, token: str = TOKEN, context: str = "standin") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "verifier", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "standin", "user": "verifier", "namespace": NS}}],
        "current-context": context}))
    return path


@pytest.fixture
def estate(apiserver, tmp_path, monkeypatch):
    """The healthy estate, KUBECONFIG pointing at the stand-in, and a pulumi CLI that knows no secret."""
    e, server = apiserver
    e.reset()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", server)))
    log = tmp_path / "pulumi-argv.log"
    fake = tmp_path / "pulumi"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\n"
                    "echo \"error: configuration key 'octollm-infra:$3' not found\" >&2\nexit 255\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PULUMI", str(fake))
    e.server, e.pulumi_log, e.tmp = server, log, tmp_path
    yield e
    assert not e.refused, f"verify asked the API server for paths it does not serve: {e.refused}"


def run_verify(capsys, *args: str) -> tuple[int, str, list[tuple[str, str, str, str]]]:
    code = verify.main(["-s", "gke", "--timeout", "10", *args])
    out = capsys.readouterr()
    return code, out.out + out.err, table(out.out)


def table(text: str) -> list[tuple[str, str, str, str]]:
    lines = text.splitlines()
    assert lines and lines[0].split() == ["HOST", "SERVICE", "CHECK", "RESULT"], text
    rows = []
    for line in lines[1:]:
        if not line.strip():
            break
        rows.append(tuple(re.split(r"\s{2,}", line, maxsplit=3)))
    return rows


def failures(rows):
    return [r for r in rows if r[3].startswith("FAILED")]


def registered_workloads(r) -> list[tuple[str, str]]:
    kinds = {"kubernetes:apps/v1:Deployment": "Deployment", "kubernetes:apps/v1:StatefulSet": "StatefulSet",
             "kubernetes:apps/v1:DaemonSet": "DaemonSet"}
    return sorted((kinds[x.type], x.inputs["metadata"]["name"]) for x in r.registrations if x.type in kinds)


def expected_rows(cfg) -> set[tuple[str, str]]:
    rows = {("-", "kubernetes-api")}
    for w in vk.plan(cfg):
        rows |= {(w.service, "workload")} | {(w.service, c) for c, _ in w.checks}
        rows |= {(w.service, "model-pull") for _ in w.jobs}
    return rows


# ---- what verify expects is what the program deploys -----------------------------------------------------


def test_expected_workloads_jobs_and_targets_are_what_the_program_registers(gke):
    cfg, _ = load_stack_config(stack_config("gke"))
    assert sorted((w.kind, w.service) for w in vk.expected_workloads(cfg)) == registered_workloads(gke)
    assert sorted(vk.expected_jobs(cfg).values()) == sorted(
        j.inputs["metadata"]["name"] for j in gke.of_type("kubernetes:batch/v1:Job"))
    prom = next(c for c in gke.of_type("kubernetes:core/v1:ConfigMap") if c.inputs["metadata"]["name"] == "prometheus-files")
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]]
            for j in yaml.safe_load(prom.inputs["data"]["prometheus.yml"])["scrape_configs"]}
    assert verify.expected_scrape_targets(cfg) == jobs
    # Every workload with checks has the Service and port they go through.
    services = {s.inputs["metadata"]["name"] for s in gke.of_type("kubernetes:core/v1:Service")}
    assert {w.service for w in vk.plan(cfg) if w.checks} <= services


def test_expected_workloads_follow_the_config(run):
    """Variants: GKE's managed DCGM (no GPU exporter of ours), and no monitoring at all (no exporters, no
    collectors): the expectation follows the program's registrations."""
    for change in ({"kubernetes": {"managedDcgm": True}}, {"monitoring": None}):
        doc = copy.deepcopy(stack_config("gke"))
        for k, v in change.items():
            if v is None:
                doc.pop(k)
            else:
                doc[k] = {**doc[k], **v}
        r = run("gke", config=doc)
        assert r.error is None, r.error
        cfg, _ = load_stack_config(doc)
        assert sorted((w.kind, w.service) for w in vk.expected_workloads(cfg)) == registered_workloads(r), change


# ---- the healthy estate ------------------------------------------------------------------------------------


def test_healthy_estate_verifies_clean(estate, capsys):
    code, out, rows = run_verify(capsys)
    assert code == 0, out
    cfg, _ = load_stack_config(stack_config("gke"))
    assert {(s, c) for _, s, c, _ in rows} == expected_rows(cfg)
    assert len(rows) == len(expected_rows(cfg))
    assert all(host == "gke" and result.startswith("ok") for host, _, _, result in rows), out
    by = {(s, c): r for _, s, c, r in rows}
    assert by[("-", "kubernetes-api")] == f"ok (Kubernetes v1.31.0-gke.1200000, context standin, {estate.server})"
    assert by[("ollama", "model-pull")] == "ok (Job completed at 2026-01-01T00:09:00+00:00)"
    assert by[("ollama", "workload")] == "ok (Deployment, 1 of 1 replicas available)"
    assert by[("orchestrator", "workload")] == "ok (Deployment, 2 of 2 replicas available)"
    assert by[("postgres", "workload")] == "ok (StatefulSet, 1 of 1 replicas available)"
    assert by[("gpu-exporter", "workload")] == "ok (DaemonSet, 1 of 1 pods available)"
    assert by[("ollama", "models")] == "ok (llama3.1:8b, codellama:13b, nomic-embed-text)"
    assert by[("prometheus", "targets")] == "ok (18 targets of 11 jobs up)"
    assert by[("grafana", "datasources")] == "ok (Prometheus OK, Loki OK)"
    assert by[("postgres", "login")] == "ok (pg_up 1: postgres-exporter logs in with the stack's password)"
    assert by[("redis", "login")] == "ok (redis_up 1: redis-exporter logs in with the stack's password)"
    assert by[("qdrant", "api")] == "ok (GET /collections with the API key: 200)"
    assert by[("arm-coder", "health")] == "ok (200 on :6004/health)"
    assert out.splitlines()[len(rows) + 2] == f"{len(rows)} checks: {len(rows)} ok, 0 failed"
    # Grafana's session was ended; no secret reached the output or the pulumi CLI's command line.
    assert estate.logouts == 1 and not estate.sessions
    assert not estate.pulumi_log.exists()
    for name, data in estate.secrets.items():
        for key in data:
            assert estate.secret_value(name, key) not in out, (name, key)


def test_an_unauthenticated_client_is_refused_and_every_row_says_so(estate, capsys):
    kubeconfig(estate.tmp / "kubeconfig", estate.server, token="not-the-token")
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert estate.unauthenticated >= 1
    assert rows[0][1:3] == ("-", "kubernetes-api")
    assert all(r[3].startswith("FAILED: the API server at http://127.0.0.1:") and "(401 Unauthorized)" in r[3]
               for r in rows), out
    assert len(rows) == len(expected_rows(load_stack_config(stack_config("gke"))[0]))


def test_kubeconfig_and_context_options(estate, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(estate.tmp / "nosuch"))
    code, out, rows = run_verify(capsys)
    assert code == 1 and rows[0][3].startswith("FAILED: cannot load the kubeconfig"), out
    other = kubeconfig(estate.tmp / "other", estate.server, context="elsewhere")
    code, out, rows = run_verify(capsys, "--kubeconfig", str(other))
    assert code == 0, out
    assert f"context elsewhere, {estate.server}" in rows[0][3]
    code, out, rows = run_verify(capsys, "--kubeconfig", str(other), "--context", "nosuch")
    assert code == 1 and rows[0][3].startswith("FAILED: cannot load the kubeconfig"), out


# ---- each breakage is its row ------------------------------------------------------------------------------


def test_deployment_with_unavailable_replicas(estate, capsys):
    d = estate.objects["deployments"]["arm-coder"]
    d["status"].update({"readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1})
    d["status"]["conditions"][0].update({"status": "False", "reason": "MinimumReplicasUnavailable",
                                         "message": "Deployment does not have minimum availability."})
    d["status"]["conditions"][1].update({"status": "False", "reason": "ProgressDeadlineExceeded",
                                         "message": 'ReplicaSet "arm-coder-5d8f7c" has timed out progressing.'})
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "arm-coder", "workload",
        "FAILED: Deployment arm-coder in namespace octollm has 1 of 2 replicas available (1 ready, 2 updated): "
        'ReplicaSet "arm-coder-5d8f7c" has timed out progressing. (Progressing); see '
        "`kubectl -n octollm describe deploy/arm-coder`")], out
    # One pod still serves: its health is checked through the Service.
    assert ("gke", "arm-coder", "health", "ok (200 on :6004/health)") in rows


def test_missing_and_foreign_workloads(estate, capsys):
    del estate.objects["statefulsets"]["loki"]
    estate.objects["deployments"]["reflex-layer"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
    estate.objects["deployments"]["orchestrator"]["status"].update({"readyReplicas": 0, "availableReplicas": 0})
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [
        ("gke", "orchestrator", "workload",
         "FAILED: Deployment orchestrator in namespace octollm has 0 of 2 replicas available (0 ready, 2 updated): "
         'ReplicaSet "orchestrator-5d8f7c" has successfully progressed. (Progressing); see '
         "`kubectl -n octollm describe deploy/orchestrator`"),
        ("gke", "reflex-layer", "workload",
         "FAILED: Deployment reflex-layer in namespace octollm is not this program's (app.kubernetes.io/name="
         "reflex-layer, app.kubernetes.io/managed-by=helm): remove or rename it, then run `pulumi up`"),
        ("gke", "loki", "workload",
         "FAILED: no StatefulSet named loki in namespace octollm: run `pulumi up` again (it creates it)"),
    ], out
    assert ("gke", "orchestrator", "health", "not checked: no ready pod behind its Service") in rows
    assert ("gke", "reflex-layer", "health", "not checked: the Deployment is not this program's") in rows


def test_missing_model_on_an_inference_node(estate, capsys):
    estate.models["ollama"].remove("codellama:13b")
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "ollama", "models",
        "FAILED: ollama in namespace octollm lists llama3.1:8b, nomic-embed-text but not codellama:13b: the pull "
        "Job fills the store: `kubectl -n octollm logs job/ollama-pull-models` says why it did not; run it again "
        "with `kubectl -n octollm delete job ollama-pull-models`, then `pulumi up --refresh`")], out


def test_model_the_config_does_not_name(estate, capsys):
    estate.models["ollama"].append("mistral:7b")
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "ollama", "models",
        "FAILED: ollama in namespace octollm lists mistral:7b as well, which inference.ollama.models does not name: "
        "add it to inference.ollama.models, or remove it from the model store (`ollama rm`)")], out


def test_prometheus_target_down(estate, capsys):
    err = 'Get "http://arm-judge:6005/metrics": dial tcp 10.8.2.14:6005: connect: connection refused'
    estate.targets[("octollm", "arm-judge:6005")] = ("down", err)
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "prometheus", "targets",
        f"FAILED: prometheus in namespace octollm reports 1 of 11 jobs down: octollm (arm-judge:6005: {err}): check "
        "those services (their rows above, `kubectl -n octollm logs`); Prometheus's view: "
        "`kubectl -n octollm port-forward svc/prometheus 9090` and http://127.0.0.1:9090/targets")], out


def test_failed_model_pull_job(estate, capsys):
    estate.objects["jobs"]["ollama-pull-models"]["status"] = {
        "failed": 4, "startTime": "2026-01-01T00:00:00Z", "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]}
    code, out, rows = run_verify(capsys, "--wait", "30")
    assert code == 1
    assert failures(rows) == [(
        "gke", "ollama", "model-pull",
        "FAILED: Job ollama-pull-models in namespace octollm failed (BackoffLimitExceeded: Job has reached the "
        "specified backoff limit; 4 failed pods): `kubectl -n octollm logs job/ollama-pull-models` says why; run it "
        "again with `kubectl -n octollm delete job ollama-pull-models`, then `pulumi up --refresh`")], out
    assert "not passing yet" not in out, "a failed Job does not heal: no waiting for it"


def test_data_service_login_refused_and_not_scraped_yet(estate, capsys):
    estate.metrics[("pg_up", "postgres-exporter")] = "0"
    del estate.metrics[("redis_up", "redis-exporter")]
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert [r[:3] for r in failures(rows)] == [("gke", "postgres", "login"), ("gke", "redis", "login")], out
    by = {(s, c): r for _, s, c, r in rows}
    assert by[("postgres", "login")].startswith(
        "FAILED: postgres in namespace octollm refuses the login of postgres-exporter (pg_up 0): a rotated password")
    assert by[("redis", "login")].startswith(
        "FAILED: redis in namespace octollm: Prometheus has no redis_up from redis-exporter yet")


def test_grafana_datasource_down_and_wrong_password(estate, capsys):
    d, _, _ = estate.datasources["loki"]
    estate.datasources["loki"] = (d, "ERROR", "Unable to connect with Loki. Bad Gateway")
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "grafana", "datasources",
        "FAILED: grafana in namespace octollm: datasource Loki (loki) fails its health check (Unable to connect with "
        "Loki. Bad Gateway): check loki (their rows above, `kubectl -n octollm logs`)")], out
    estate.reset()
    estate.grafana_password = "the-previous-password"  # Grafana still holds it: the Secret was rotated since
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "grafana", "datasources",
        "FAILED: grafana in namespace octollm refuses the stack's admin password (401): a rotated password that did "
        "not reach Grafana? run `pulumi up` again (a new pod applies it with `grafana cli admin "
        "reset-admin-password`)")], out


def test_qdrant_refuses_another_key(estate, capsys):
    estate.qdrant_key = "the-previous-key"
    code, out, rows = run_verify(capsys)
    assert code == 1
    assert failures(rows) == [(
        "gke", "qdrant", "api",
        "FAILED: qdrant in namespace octollm refuses GET /collections with its API key (401: Must provide an API key "
        "or an Authorization bearer token): a rotated key that did not reach Qdrant? run `pulumi up` again; see "
        "`kubectl -n octollm logs sts/qdrant`")], out


def test_secrets_the_identity_may_not_read_come_from_the_stack(estate, capsys):
    estate.forbidden_secrets |= {"grafana-env", "qdrant-env"}
    code, out, rows = run_verify(capsys)
    assert code == 0, out
    by = {(s, c): r for _, s, c, r in rows}
    assert by[("grafana", "datasources")].startswith("skipped: needs grafanaAdminPassword (Secret grafana-env: "
                                                     "reading it: forbidden (secrets \"grafana-env\" is forbidden")
    assert "secret config: error: configuration key 'octollm-infra:grafanaAdminPassword' not found" in \
        by[("grafana", "datasources")]
    assert by[("qdrant", "api")].startswith("skipped: needs the Qdrant API key (Secret qdrant-env: ")
    # The stack's CLI was asked, by key name only.
    argv = estate.pulumi_log.read_text().splitlines()
    assert "config get grafanaAdminPassword --stack gke" in argv
    assert "stack output grafanaAdminPassword --show-secrets --stack gke" in argv
