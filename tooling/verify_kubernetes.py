"""verify on Kubernetes: check the live estate of a Kubernetes stack through the cluster's API server.

    python -m tooling.verify -s gke                      # the kubeconfig and context the stack's provider uses
    python -m tooling.verify -s gke --kubeconfig ~/.kube/gke.yaml --context prod --wait 180

Called by tooling/verify.py's main for a stack on `platform: kubernetes`; the same table and exit status
(0 every check passes, 1 one fails). Everything it expects comes from the stack's config, through the same
functions the program composes the estate with, and it changes nothing. It checks:

- every Deployment, StatefulSet and DaemonSet the config deploys exists in the namespace, is the program's
  (its labels), and is available: the controller has seen its latest generation and every desired replica
  is updated, ready and available; when not, the rollout condition's message is the hint;
- every model-pull Job has succeeded;
- through the API server's service proxy (`/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>`):
  each inference node serves exactly its configured models, Prometheus reports every expected target up,
  Grafana's datasources pass their health checks (logged in as admin), Qdrant answers `GET /collections`
  with its API key, and the OctoLLM services and apps answer their health endpoints (the load balancer,
  Traefik, is Docker-only: the schema refuses it on Kubernetes);
- PostgreSQL and Redis, which speak no HTTP, accept an authenticated login: Prometheus's `pg_up` and
  `redis_up`, from the exporters that log in to them with the stack's passwords, are 1.

The kubeconfig is the one the stack's kubernetes provider uses: the stack's `kubeconfig` config (secret,
read through the pulumi CLI), else KUBECONFIG, else ~/.kube/config; the context is `kubernetes.context`,
else the kubeconfig's current one. `--kubeconfig` and `--context` override both. Secrets (the Grafana
admin password, the Qdrant API key: from the Secrets the program creates, else from the stack) go only
into request headers and bodies, never onto a command line or into the output.
"""

from __future__ import annotations

import base64
import http.cookies
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import urllib3
import yaml
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from components.config.rules import inference_instances, inventory, node_path
from components.config.schema import StackConfig
from components.platforms.kubernetes import NAME_LABEL, KubernetesPlatform, labels_for
from components.services.apps import PROBED_NOT_HEALTHCHECKED

from .verify import (GRAFANA_ADMIN_USER, RETRY_EVERY_S, Outcome, Response, Row,
                     expected_ollama_models, expected_scrape_targets, failed, datasources_health, model_diff,
                     ok, openai_models, render, stack_secret, target_health)

# The services whose ServiceSpec is `stateful` (their data is theirs): KubernetesPlatform.run makes them
# StatefulSets. The GPU exporter is an agent on the GPU nodes: KubernetesPlatform.daemon, a DaemonSet.
# tests/test_verify_kubernetes.py holds this to what the program registers.
STATEFUL = frozenset({"postgres", "redis", "qdrant", "worker-redis", "prometheus", "grafana", "loki",
                      "open-webui", "portainer"})
DAEMONS = frozenset({"gpu-exporter"})
SHORT = {"Deployment": "deploy", "StatefulSet": "sts", "DaemonSet": "ds", "Job": "job"}  # kubectl's names
PROMETHEUS_PORT, GRAFANA_PORT, QDRANT_PORT = 9090, 3000, 6333  # the container ports, which the Services expose
GRAFANA_SESSION = "grafana_session"  # Grafana's login_cookie_name default


# --------------------------------------------------------------------------- what the config deploys


@dataclass
class Workload:
    """One Deployment, StatefulSet or DaemonSet of the stack, and what is checked through its Service."""

    service: str
    kind: str
    checks: list[tuple[str, Callable[["Cluster", "Workload"], Outcome]]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)  # the Jobs that must have run before it (model pulls)


def telemetry(cfg: StackConfig, host: str):
    kc = cfg.kubernetes
    return KubernetesPlatform.telemetry(SimpleNamespace(cfg=cfg.hosts[host], kube=kc, namespace_name=kc.namespace))


def workload_kind(service: str) -> str:
    return "DaemonSet" if service in DAEMONS else "StatefulSet" if service in STATEFUL else "Deployment"


def expected_workloads(cfg: StackConfig) -> list[Workload]:
    """Every workload the config deploys, in inventory order: the inventory's placements, less the per-node
    collectors the namespace does not run (KubernetesPlatform.telemetry: no node exporters; its GPU exporter)."""
    out: list[Workload] = []
    for p in inventory(cfg):
        if p.service in ("node-exporter", "cadvisor") and not telemetry(cfg, p.host).node_metrics:
            continue
        if p.service == "gpu-exporter":
            continue  # added below, where the namespace's telemetry says it runs one
        out.append(Workload(p.service, workload_kind(p.service)))
        if p.service == "alloy" and telemetry(cfg, p.host).gpu_exporter:
            out.append(Workload("gpu-exporter", workload_kind("gpu-exporter")))
    return out


def expected_jobs(cfg: StackConfig) -> dict[str, str]:
    """The model-pull Jobs, by the inference node they fill the store of (GpuInferenceNode: an Ollama node
    with models on a model store; KubernetesPlatform.prepare_models)."""
    return {name: f"{name}-pull-models" for name, nc in sorted(cfg.all_inference.items())
            if nc.engine == "ollama" and nc.models and nc.model_store}


# --------------------------------------------------------------------------- the API server


class Unreachable(Exception):
    def __init__(self, message: str, hint: str = "", final: bool = False):
        super().__init__(message)
        self.hint, self.final = hint, final


@dataclass
class ProxyResponse(Response):
    cookies: dict[str, str] = field(default_factory=dict)
    proxy_error: str | None = None  # the API server could not reach the Service (its Status message)


def _bytes(body) -> bytes:
    return body.encode() if isinstance(body, str) else body or b""


def _status_message(body) -> str | None:
    """The message of a Kubernetes Status object (what the API server answers an error with), or None."""
    try:
        doc = json.loads(_bytes(body).decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("apiVersion") == "v1":
        return str(doc.get("message") or doc.get("reason") or doc.get("code"))
    return None


class Cluster:
    """The namespace of the stack, through one API client (the kubeconfig's server and credentials)."""

    def __init__(self, api: kclient.ApiClient, namespace: str, timeout: float, server: str, context: str):
        self.api, self.namespace, self.timeout = api, namespace, timeout
        self.server, self.context = server, context
        self.apps, self.batch, self.core = kclient.AppsV1Api(api), kclient.BatchV1Api(api), kclient.CoreV1Api(api)

    def _explain(self, exc: Exception, what: str) -> Unreachable:
        if isinstance(exc, ApiException):
            msg = _status_message(exc.body) or exc.reason or ""
            if exc.status == 401:
                return Unreachable(f"the API server at {self.server} refuses the credentials of context "
                                   f"{self.context} (401 Unauthorized)",
                                   "renew them (`gcloud container clusters get-credentials …` on GKE), or pass "
                                   "--kubeconfig/--context", final=True)
            if exc.status == 403:
                return Unreachable(f"{what}: forbidden ({msg})",
                                   f"the identity of context {self.context} may not do this in namespace "
                                   f"{self.namespace}: grant it read access (get, list)", final=True)
            return Unreachable(f"{what}: the API server answers {exc.status} ({msg})")
        if isinstance(exc, urllib3.exceptions.HTTPError):
            reason = getattr(exc, "reason", None) or exc
            return Unreachable(f"cannot reach the API server at {self.server}: {reason}")
        return Unreachable(f"{what}: {exc}")

    def version(self) -> str:
        try:
            v = kclient.VersionApi(self.api).get_code(_request_timeout=self.timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._explain(exc, "the API server's /version") from None
        return v.git_version

    def list(self, kind: str) -> dict[str, object]:
        """Every object of `kind` in the namespace, by name."""
        fn = {"Deployment": self.apps.list_namespaced_deployment, "StatefulSet": self.apps.list_namespaced_stateful_set,
              "DaemonSet": self.apps.list_namespaced_daemon_set, "Job": self.batch.list_namespaced_job}[kind]
        try:
            items = fn(self.namespace, _request_timeout=self.timeout).items
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._explain(exc, f"listing the {kind}s of namespace {self.namespace}") from None
        return {o.metadata.name: o for o in items}

    def secret(self, name: str, key: str) -> tuple[str | None, str]:
        """One value of a Secret the program created, or why not."""
        try:
            s = self.core.read_namespaced_secret(name, self.namespace, _request_timeout=self.timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return None, f"Secret {name}: {self._explain(exc, 'reading it')}"
        value = (s.data or {}).get(key)
        if not value:
            return None, f"Secret {name} has no {key}"
        return base64.b64decode(value).decode(), f"Secret {name}"

    def proxy(self, service: str, port: int, path: str, *, method: str = "GET", query: list | None = None,
              headers: dict[str, str] | None = None, body: dict | None = None) -> ProxyResponse:
        """A request to a Service's port through the API server's service proxy."""
        resource = f"/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy{path}"
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            r = self.api.call_api(resource, method, query_params=query or [], header_params=hdrs, body=body,
                                  auth_settings=["BearerToken"], _preload_content=False,
                                  _return_http_data_only=True, _request_timeout=self.timeout)
            status, rheaders, data = r.status, r.headers, r.data
        except ApiException as exc:
            if exc.status in (401, 403) and _status_message(exc.body):
                raise self._explain(exc, f"the service proxy of {service}") from None
            status, rheaders = exc.status, exc.headers or {}
            data = _bytes(exc.body)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._explain(exc, f"the service proxy of {service}") from None
        cookies: dict[str, str] = {}
        getlist = getattr(rheaders, "getlist", None)
        for raw in (getlist("Set-Cookie") if getlist else [rheaders.get("Set-Cookie")] if rheaders.get("Set-Cookie")
                    else []):
            jar = http.cookies.SimpleCookie()
            jar.load(raw)
            cookies.update({k: m.value for k, m in jar.items()})
        error = _status_message(data) if status >= 400 else None
        return ProxyResponse(status, {k.lower(): v for k, v in rheaders.items()}, data, cookies, error)


# --------------------------------------------------------------------------- checks


@dataclass
class Context:
    cfg: StackConfig
    stack: str
    project: Path
    host: str
    cluster: Cluster | None = None
    _secrets: dict[str, tuple[str | None, str]] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return self.cfg.kubernetes.namespace

    def kubectl(self, *args: str) -> str:
        return f"`kubectl -n {self.ns} {' '.join(args)}`"

    def stack_secret(self, secret: str, key: str, config_key: str, output_key: str) -> tuple[str | None, str]:
        """A secret value: from the Secret the program created (what the pods were given), else from the
        stack's secret config or output. Read once per run."""
        if secret not in self._secrets:
            value, where = self.cluster.secret(secret, key)
            if value is None:
                value, other = stack_secret(self.stack, self.project, config_key, output_key)
                where = other if value is not None else f"{where}; {other}"
            self._secrets[secret] = (value, where)
        return self._secrets[secret]


def _where(ctx: Context, w: Workload) -> str:
    return f"{w.service} in namespace {ctx.ns}"


def _answer(ctx: Context, w: Workload, service: str, port: int, path: str, **kw) -> ProxyResponse | Outcome:
    where = _where(ctx, w)
    logs = f"see {ctx.kubectl('logs', f'{SHORT[w.kind]}/{w.service}')}"
    try:
        r = ctx.cluster.proxy(service, port, path, **kw)
    except Unreachable as exc:
        return failed(f"{where}: {exc}", exc.hint, retry=not exc.final)
    if r.proxy_error is not None:
        return failed(f"{where}: the API server cannot reach Service {service} port {port} ({r.proxy_error})",
                      f"does the Service exist and have ready endpoints? {ctx.kubectl('get', 'svc,endpoints', service)}; "
                      f"{logs}")
    return r


def _logs(ctx: Context, w: Workload) -> str:
    return f"see {ctx.kubectl('logs', f'{SHORT[w.kind]}/{w.service}')}"


def check_health(port: int, path: str):
    def run(ctx: Context, w: Workload) -> Outcome:
        r = _answer(ctx, w, w.service, port, path)
        if isinstance(r, Outcome):
            return r
        if 200 <= r.status < 300:
            return ok(f"{r.status} on :{port}{path}")
        return failed(f"{_where(ctx, w)} answers {path} on port {port} with {r.status} ({r.text(80)})", _logs(ctx, w))
    return run


def check_ollama(name: str, port: int):
    def run(ctx: Context, w: Workload) -> Outcome:
        cfg, where = ctx.cfg, _where(ctx, w)
        want, writer = expected_ollama_models(cfg, name)
        r = _answer(ctx, w, w.service, port, "/api/tags")
        if isinstance(r, Outcome):
            return r
        if r.status != 200:
            return failed(f"{where} answers /api/tags with {r.status} ({r.text(80)})", _logs(ctx, w))
        try:
            listed = [m.get("name") or m.get("model") for m in r.json().get("models") or []]
        except (ValueError, AttributeError):
            return failed(f"{where} answers /api/tags with something that is not Ollama's model list ({r.text(80)})",
                          _logs(ctx, w))
        present, missing, extra = model_diff(want, listed)
        if not missing and not extra:
            return ok(", ".join(want) if want else "no models configured, none listed")
        jobs = expected_jobs(cfg)
        if missing:
            # Each node's pull Job pulls that node's models; a read-only node's others come from its writer's.
            owners = sorted({name if m in cfg.all_inference[name].models else writer for m in missing})
            pulls = [jobs[o] for o in owners if o in jobs]
            detail = f"{where} lists {', '.join(present) or 'no model of its config'} but not {', '.join(missing)}"
            if extra:
                detail += f" (and {', '.join(extra)}, which the config does not name)"
            if pulls:
                hint = (f"the pull Job fills the store: {ctx.kubectl('logs', 'job/' + pulls[0])} says why it did not; "
                        f"run it again with {ctx.kubectl('delete', 'job', *pulls)}, then `pulumi up --refresh`")
            else:
                hint = f"run `pulumi up` again; {_logs(ctx, w)}"
            return failed(detail, hint)
        key = f"{node_path(cfg, writer)}.models"
        return failed(f"{where} lists {', '.join(extra)} as well, which {key} does not name",
                      f"add {'it' if len(extra) == 1 else 'them'} to {key}, or remove "
                      f"{'it' if len(extra) == 1 else 'them'} from the model store (`ollama rm`)", retry=False)
    return run


def check_openai_models(name: str, port: int):
    def run(ctx: Context, w: Workload) -> Outcome:
        return openai_models(ctx.cfg.all_inference[name], _where(ctx, w), _logs(ctx, w),
                             lambda path: _answer(ctx, w, w.service, port, path))
    return run


def _port_forward_ui(ctx: Context, service: str, port: int, path: str) -> str:
    return f"{ctx.kubectl('port-forward', f'svc/{service}', str(port))} and http://127.0.0.1:{port}{path}"


def check_prometheus(ctx: Context, w: Workload) -> Outcome:
    where, expected = _where(ctx, w), expected_scrape_targets(ctx.cfg)
    r = _answer(ctx, w, "prometheus", PROMETHEUS_PORT, "/api/v1/targets", query=[("state", "active")])
    if isinstance(r, Outcome):
        return r
    try:
        active = r.json()["data"]["activeTargets"]
    except (ValueError, KeyError, TypeError):
        return failed(f"{where} answers /api/v1/targets with {r.status} ({r.text(80)})", _logs(ctx, w))
    down, unknown, absent = target_health(expected, active)
    total, ui = len(expected), _port_forward_ui(ctx, "prometheus", PROMETHEUS_PORT, "/targets")
    if down:
        return failed(f"{where} reports {len(down)} of {total} jobs down: {', '.join(down)}",
                      f"check those services (their rows above, `kubectl -n {ctx.ns} logs`); Prometheus's view: {ui}")
    if absent:
        return failed(f"{where} does not scrape {', '.join(absent)}",
                      "its prometheus.yml is not the one this config generates: run `pulumi up` again")
    if unknown:
        return failed(f"{where} has not scraped {', '.join(sorted(set(unknown)))} yet",
                      f"a first scrape takes up to a scrape interval: run verify again, or with `--wait 180`; {ui}")
    return ok(f"{sum(len(t) for t in expected.values())} targets of {total} jobs up")


def check_login_metric(metric: str, exporter: str):
    """PostgreSQL and Redis: the exporter that logs in with the stack's password reports the login worked."""
    def run(ctx: Context, w: Workload) -> Outcome:
        where = _where(ctx, w)
        r = _answer(ctx, w, "prometheus", PROMETHEUS_PORT, "/api/v1/query", query=[("query", f'{metric}{{job="{exporter}"}}')])
        if isinstance(r, Outcome):
            return r
        try:
            doc = r.json()
            result = doc["data"]["result"]
            values = [str(s["value"][1]) for s in result]
        except (ValueError, KeyError, TypeError, IndexError):
            return failed(f"{where}: Prometheus answers /api/v1/query with {r.status} ({r.text(80)})",
                          f"see {ctx.kubectl('logs', 'sts/prometheus')}")
        exporter_logs = ctx.kubectl("logs", f"deploy/{exporter}")
        if not values:
            return failed(f"{where}: Prometheus has no {metric} from {exporter} yet",
                          f"is {exporter} up (its row above)? a first scrape takes up to a scrape interval: run "
                          f"verify again, or with `--wait 180`; {exporter_logs}")
        if all(v in ("1", "1.0") for v in values):
            return ok(f"{metric} 1: {exporter} logs in with the stack's password")
        return failed(f"{where} refuses the login of {exporter} ({metric} {values[0]})",
                      f"a rotated password that did not reach {w.service}? run `pulumi up` again; {exporter_logs} "
                      f"and {ctx.kubectl('logs', f'{SHORT[w.kind]}/{w.service}')}")
    return run


def check_qdrant(ctx: Context, w: Workload) -> Outcome:
    where = _where(ctx, w)
    key, source = ctx.stack_secret("qdrant-env", "QDRANT__SERVICE__API_KEY", "qdrantApiKey", "qdrantApiKey")
    if key is None:
        return Outcome("skipped", f"needs the Qdrant API key ({source})")
    r = _answer(ctx, w, "qdrant", QDRANT_PORT, "/collections", headers={"api-key": key})
    if isinstance(r, Outcome):
        return r
    if r.status != 200:
        return failed(f"{where} refuses GET /collections with its API key ({r.status}: {r.text(80)})",
                      "a rotated key that did not reach Qdrant? run `pulumi up` again; " + _logs(ctx, w))
    return ok("GET /collections with the API key: 200")


def check_grafana(ctx: Context, w: Workload) -> Outcome:
    """Logged in with the admin password (POST /login, then its session cookie): the API server takes the
    Authorization header for itself, so Basic auth cannot reach Grafana through the service proxy."""
    where = _where(ctx, w)
    password, source = ctx.stack_secret("grafana-env", "GF_SECURITY_ADMIN_PASSWORD", "grafanaAdminPassword",
                                        "grafanaAdminPassword")
    if password is None:
        return Outcome("skipped", f"needs grafanaAdminPassword ({source})")
    r = _answer(ctx, w, "grafana", GRAFANA_PORT, "/login", method="POST",
                body={"user": GRAFANA_ADMIN_USER, "password": password})
    if isinstance(r, Outcome):
        return r
    if r.status == 401:
        return failed(f"{where} refuses the stack's admin password (401)",
                      "a rotated password that did not reach Grafana? run `pulumi up` again (a new pod applies "
                      "it with `grafana cli admin reset-admin-password`)")
    session = r.cookies.get(GRAFANA_SESSION)
    if r.status != 200 or not session:
        return failed(f"{where} answers POST /login with {r.status} and no session ({r.text(80)})", _logs(ctx, w))
    auth = {"Cookie": f"{GRAFANA_SESSION}={session}"}
    try:
        r = _answer(ctx, w, "grafana", GRAFANA_PORT, "/api/datasources", headers=auth)
        if isinstance(r, Outcome):
            return r
        return datasources_health(where, r, _logs(ctx, w), f"`kubectl -n {ctx.ns} logs`",
                                  lambda uid: _answer(ctx, w, "grafana", GRAFANA_PORT,
                                                      f"/api/datasources/uid/{uid}/health", headers=auth))
    finally:
        try:  # end the session: verify leaves nothing behind
            ctx.cluster.proxy("grafana", GRAFANA_PORT, "/logout", headers=auth)
        except Unreachable:
            pass


def plan(cfg: StackConfig) -> list[Workload]:
    """Every workload of the stack with the checks made through its Service, and the Jobs it waits for."""
    workloads = {w.service: w for w in expected_workloads(cfg)}

    def add(service: str, check: str, fn) -> None:
        if service in workloads:
            workloads[service].checks.append((check, fn))

    jobs = expected_jobs(cfg)
    for name, nc in sorted(cfg.all_inference.items()):
        for svc, _, primary in inference_instances(name, nc):
            if primary and name in jobs:
                workloads[svc].jobs.append(jobs[name])
            add(svc, "models", check_ollama(name, nc.internal_port) if nc.engine == "ollama"
                else check_openai_models(name, nc.internal_port))
    ds = cfg.data_services
    data = ds is not None and ds.external is None
    if data and cfg.monitoring:
        # The exporters are deployed with the monitoring stack (MonitoringStack: redis-exporter, postgres-exporter).
        if ds.postgres:
            add("postgres", "login", check_login_metric("pg_up", "postgres-exporter"))
        if ds.redis:
            add("redis", "login", check_login_metric("redis_up", "redis-exporter"))
    if data and ds.qdrant:
        add("qdrant", "api", check_qdrant)
    if cfg.octollm:
        oc = cfg.octollm
        for svc, p in [("orchestrator", oc.orchestrator), ("reflex-layer", oc.reflex)] + [
                (f"arm-{a}", p) for a, p in sorted(oc.arms.items())]:
            add(svc, "health", check_health(p.port, "/health"))
    if cfg.monitoring:
        add("prometheus", "targets", check_prometheus)
        add("grafana", "datasources", check_grafana)
    if cfg.open_webui:
        add("open-webui", "health", check_health(8080, "/health"))
    if cfg.portainer:
        add("portainer", "health", check_health(9000, PROBED_NOT_HEALTHCHECKED["portainer"]))
    if cfg.homelab_ai:
        ha = cfg.homelab_ai
        for svc, port in (("llm-router", ha.router_port), ("llm-manager", ha.manager_port),
                          ("dashboard", ha.dashboard_port)):
            add(svc, "health", check_health(port, "/health"))
    return list(workloads.values())


# --------------------------------------------------------------------------- workloads and Jobs


def _condition(obj, *types: str) -> tuple[str, str] | None:
    """(type, message) of the first condition of `types` (in that order) the object carries with a message."""
    conds = {c.type: c for c in (obj.status.conditions or [])} if obj.status else {}
    for t in types:
        c = conds.get(t)
        if c is not None and c.message:
            return t, c.message
    return None


def check_workload(ctx: Context, w: Workload, obj) -> tuple[Outcome, bool]:
    """The workload's row, and whether its Service has a ready pod behind it to check through."""
    ref = f"{SHORT[w.kind]}/{w.service}"
    describe = ctx.kubectl("describe", ref)
    if obj is None:
        return failed(f"no {w.kind} named {w.service} in namespace {ctx.ns}", "run `pulumi up` again (it creates it)"), \
            False
    labels = obj.metadata.labels or {}
    mine = labels_for(w.service)
    if any(labels.get(k) != v for k, v in mine.items()):
        return failed(f"{w.kind} {w.service} in namespace {ctx.ns} is not this program's "
                      f"({NAME_LABEL}={labels.get(NAME_LABEL) or '(unset)'}, app.kubernetes.io/managed-by="
                      f"{labels.get('app.kubernetes.io/managed-by') or '(unset)'})",
                      "remove or rename it, then run `pulumi up`", retry=False), False
    st = obj.status
    observed = (st.observed_generation or 0) if st else 0
    generation = obj.metadata.generation or 0
    if w.kind == "DaemonSet":
        desired = st.desired_number_scheduled or 0
        ready, available = st.number_ready or 0, st.number_available or 0
        updated = st.updated_number_scheduled or 0
        unit = "pods"
    else:
        desired = obj.spec.replicas if obj.spec.replicas is not None else 1
        ready, available = (st.ready_replicas or 0), (st.available_replicas or 0)
        updated = st.updated_replicas or 0
        unit = "replicas"
    serving = ready > 0
    if observed < generation:
        return failed(f"{w.kind} {w.service} in namespace {ctx.ns}: its controller has not seen generation "
                      f"{generation} yet (observed {observed})",
                      f"a rollout is starting: run verify again, or with `--wait 180`; {describe}"), serving
    if w.kind == "DaemonSet" and desired == 0:
        return ok("no node to schedule on (0 desired)"), False
    if updated < desired or available < desired or ready < desired or (
            w.kind == "Deployment" and (st.replicas or 0) > updated):
        cond = _condition(obj, "ReplicaFailure", "Progressing", "Available") if w.kind == "Deployment" else \
            _condition(obj, *[c.type for c in (st.conditions or [])]) if st.conditions else None
        why = f"{cond[1]} ({cond[0]})" if cond else f"see the pods' events with {describe}"
        old = (st.replicas or 0) - updated if w.kind == "Deployment" else 0
        detail = (f"{w.kind} {w.service} in namespace {ctx.ns} has {available} of {desired} {unit} available"
                  f" ({ready} ready, {updated} updated" + (f", {old} old still running" if old > 0 else "") + ")")
        hint = why if cond is None else f"{why}; see {describe}"
        return failed(detail, hint), serving
    if w.kind == "StatefulSet" and st.update_revision and st.current_revision != st.update_revision:
        return failed(f"StatefulSet {w.service} in namespace {ctx.ns} is still rolling out revision "
                      f"{st.update_revision} (current {st.current_revision})",
                      f"run verify again, or with `--wait 180`; {describe}"), serving
    return ok(f"{w.kind}, {available} of {desired} {unit} available"), serving


def check_job(ctx: Context, name: str, obj) -> Outcome:
    logs = ctx.kubectl("logs", f"job/{name}")
    rerun = f"run it again with {ctx.kubectl('delete', 'job', name)}, then `pulumi up --refresh`"
    if obj is None:
        return failed(f"no Job named {name} in namespace {ctx.ns}", "run `pulumi up --refresh` (it creates it)")
    st = obj.status
    conds = {c.type: c for c in (st.conditions or []) if c.status == "True"} if st else {}
    if "Failed" in conds:
        c = conds["Failed"]
        return failed(f"Job {name} in namespace {ctx.ns} failed ({c.reason}: {c.message}; {st.failed or 0} failed pods)",
                      f"{logs} says why; {rerun}", retry=False)
    if (st.succeeded or 0) >= 1 or "Complete" in conds:
        return ok("Job completed" + (f" at {st.completion_time.isoformat()}" if st.completion_time else ""))
    if st and st.active:
        return failed(f"Job {name} in namespace {ctx.ns} is still running ({st.active} active pod"
                      f"{'s' if st.active != 1 else ''}, {st.failed or 0} failed)",
                      f"a model pull takes a while: run verify again, or with `--wait 180`; {logs}")
    return failed(f"Job {name} in namespace {ctx.ns} has not completed ({st.failed or 0 if st else 0} failed pods)",
                  f"{ctx.kubectl('describe', 'job/' + name)}; {rerun}")


# --------------------------------------------------------------------------- one pass, and the loop


def connect(cfg: StackConfig, stack: str, project: Path, encrypted: list[str], kubeconfig: Path | None,
            context: str | None, timeout: float) -> tuple[Cluster | None, Outcome]:
    """The API client for the stack's cluster, as its kubernetes provider is configured, or why not."""
    context = context or cfg.kubernetes.context
    conf = kclient.Configuration()
    try:
        if kubeconfig is None and (cfg.kubeconfig is not None or "kubeconfig" in encrypted):
            # The provider's `kubeconfig` argument: the stack's (secret) config, kept in memory.
            text = cfg.kubeconfig.get_secret_value() if cfg.kubeconfig is not None else None
            if text is None:
                text, where = stack_secret(stack, project, "kubeconfig", None)
                if text is None:
                    return None, failed(f"cannot read the stack's kubeconfig secret config ({where})",
                                        "log in to the stack's backend, or pass --kubeconfig", retry=False)
            doc = yaml.safe_load(text)
            kconfig.load_kube_config_from_dict(doc, context=context, client_configuration=conf,
                                               persist_config=False)
            source, current = "the stack's kubeconfig config", (doc or {}).get("current-context")
        else:
            # Explicit, else the ambient one as kubectl and the provider find it (read now: the client's own
            # default is fixed when it is imported).
            files = str(kubeconfig) if kubeconfig is not None else (
                os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config"))
            kconfig.load_kube_config(config_file=files, context=context, client_configuration=conf,
                                     persist_config=False)
            _, active = kconfig.list_kube_config_contexts(config_file=files)
            source = files if kubeconfig is not None or not os.environ.get("KUBECONFIG") else f"KUBECONFIG={files}"
            current = (active or {}).get("name")
    except (ConfigException, OSError, yaml.YAMLError, TypeError, ValueError, AttributeError) as exc:
        return None, failed(f"cannot load the kubeconfig: {' '.join(str(exc).split())[:200]}",
                            "set KUBECONFIG, pass --kubeconfig, or set the stack's `kubeconfig` secret config",
                            retry=False)
    conf.retries = False  # one try per request: --wait repeats what may still pass
    name = context or current or "(current)"
    return Cluster(kclient.ApiClient(conf), cfg.kubernetes.namespace, timeout, conf.host, name), \
        ok(f"{source}, context {name}, {conf.host}")


def verify_once(ctx: Context) -> list[Row]:
    host, cluster = ctx.host, ctx.cluster
    rows: list[Row] = []
    workloads = plan(ctx.cfg)
    try:
        version = cluster.version()
        api = ok(f"Kubernetes {version}, context {cluster.context}, {cluster.server}")
    except Unreachable as exc:
        api = failed(str(exc), exc.hint, retry=not exc.final)
    rows.append(Row(host, "-", "kubernetes-api", api))

    def every_row(outcome: Outcome) -> list[Row]:
        out = []
        for w in workloads:
            out += [Row(host, w.service, "model-pull", outcome) for _ in w.jobs]
            out += [Row(host, w.service, c, outcome) for c in ["workload", *(c for c, _ in w.checks)]]
        return out

    if api.status != "ok":
        return rows + every_row(failed(api.detail, api.hint, api.retry))
    live: dict[str, dict] = {}
    try:
        for kind in sorted({w.kind for w in workloads} | ({"Job"} if any(w.jobs for w in workloads) else set())):
            live[kind] = cluster.list(kind)
    except Unreachable as exc:
        return rows + every_row(failed(str(exc), exc.hint, retry=not exc.final))
    for w in workloads:
        for job in w.jobs:
            rows.append(Row(host, w.service, "model-pull", check_job(ctx, job, live["Job"].get(job))))
        outcome, serving = check_workload(ctx, w, live[w.kind].get(w.service))
        rows.append(Row(host, w.service, "workload", outcome))
        why = "no ready pod behind its Service" if outcome.status == "ok" or live[w.kind].get(w.service) is not None \
            else f"there is no such {w.kind}"
        if outcome.status == "FAILED" and "not this program's" in outcome.detail:
            why = f"the {w.kind} is not this program's"
        for check, fn in w.checks:
            rows.append(Row(host, w.service, check, fn(ctx, w) if serving else Outcome("not checked", why)))
    return rows


def run(cfg: StackConfig, stack: str, project: Path, hosts: list[str], encrypted: list[str], *,
        kubeconfig: Path | None = None, context: str | None = None, timeout: float = 30, wait: float = 0) -> int:
    """verify's main for a Kubernetes stack: print the table, return the exit status."""
    [host] = [h for h, hc in sorted(cfg.hosts.items()) if hc.kind == "kubernetes"]
    if host not in hosts:
        print(render([]))
        return 0
    cluster, how = connect(cfg, stack, project, encrypted, kubeconfig, context, timeout)
    if cluster is None:
        rows = [Row(host, "-", "kubernetes-api", how)]
        rows += [Row(host, w.service, c, Outcome("not checked", "the API server cannot be reached"))
                 for w in plan(cfg) for c in [*(["model-pull"] * len(w.jobs)), "workload", *(c for c, _ in w.checks)]]
        print(render(rows))
        return 1
    ctx = Context(cfg, stack, project, host, cluster)
    deadline = time.monotonic() + wait
    try:
        while True:
            rows = verify_once(ctx)
            pending = [r for r in rows if r.failed and r.outcome.retry]
            left = deadline - time.monotonic()
            if not pending or left <= RETRY_EVERY_S:
                break
            names = ", ".join(f"{r.service} {r.check}" for r in pending[:4]) + (" …" if len(pending) > 4 else "")
            print(f"verify: {len(pending)} checks not passing yet ({names}); again in {RETRY_EVERY_S}s "
                  f"(waiting up to {left:.0f}s more)", file=sys.stderr)
            time.sleep(RETRY_EVERY_S)
    finally:
        cluster.api.close()
    print(render(rows))
    return 1 if any(r.failed for r in rows) else 0
