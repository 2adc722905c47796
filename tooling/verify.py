"""verify: check that the live estate of a stack works, and print a table.

    python -m tooling.verify -s unraid                # reads Pulumi.unraid.yaml
    python -m tooling.verify --file my-stack.yaml --hosts server80 --wait 180

Run after `pulumi up` (`make up` and the deploy workflow do). Everything it expects comes from the stack's
config, read as doctor reads it; every host is reached as doctor and the docker provider reach it
(`ssh … docker system dial-stdio` with the pinned host key, or the local socket), and it checks:

- every container the stack deploys exists under its name, belongs to this stack, runs and is healthy
  (a health check still `starting` is not healthy yet);
- every inference instance answers on its published port and serves exactly its configured models;
- Prometheus reports every scrape target the program configures up;
- Grafana's provisioned datasources pass their health checks (with the admin password from the stack);
- Traefik reports every Ollama backend up;
- PostgreSQL, Redis and Qdrant accept an authenticated request, run inside their containers;
- the OctoLLM services and the apps answer their health endpoints.

Published ports are reached through the host: an `ssh -W <bind address>:<port>` channel on the same
verified SSH connection, so what is checked is what a client of the host sees. Exit status 0 when
every check passes, 1 when one fails, 2 when the stack's config is invalid.

A Kubernetes stack is checked by tooling/verify_kubernetes.py, through the cluster's API server, with the
same table and exit status.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import yaml

from components import stack as program
from components.config.rules import inference_instances, inventory, monitored_hosts, node_path
from components.config.schema import HostConfig, InferenceConfig, StackConfig
from components.platforms.docker_host import (MANAGED_LABEL, DockerHost, docker_dial_command, docker_host_url,
                                              docker_ssh_opts, ensure_ssh_control_dir, ssh_control_path_problem)
from components.services.apps import PROBED_NOT_HEALTHCHECKED
from components.services.monitoring_stack import MonitoringStack, grafana_datasources

from .stackfile import load_or_report

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_ADMIN_USER = "admin"  # GF_SECURITY_ADMIN_USER in components/services/monitoring_stack.py
TRAEFIK_SERVICE = "ollama@file"  # the service of load_balancer.dynamic_config, from the file provider
WORKERS = 4  # checks at once: sessions on each host's shared SSH connection (sshd allows 10)
RETRY_EVERY_S = 5


# --------------------------------------------------------------------------- results


@dataclass
class Outcome:
    status: str  # "ok", "FAILED", "skipped", "not checked"
    detail: str = ""
    hint: str = ""
    retry: bool = True  # a later try may pass (the estate is still settling)


def ok(detail: str) -> Outcome:
    return Outcome("ok", detail)


def failed(detail: str, hint: str = "", retry: bool = True) -> Outcome:
    return Outcome("FAILED", detail, hint, retry)


@dataclass
class Row:
    host: str
    service: str
    check: str
    outcome: Outcome

    @property
    def failed(self) -> bool:
        return self.outcome.status == "FAILED"

    @property
    def result(self) -> str:
        o = self.outcome
        if o.status == "ok":
            return f"ok ({o.detail})" if o.detail else "ok"
        if o.status == "FAILED":
            return f"FAILED: {o.detail}" + (f": {o.hint}" if o.hint else "")
        return f"{o.status}: {o.detail}" if o.detail else o.status


def render(rows: list[Row]) -> str:
    wh = max([len(r.host) for r in rows] + [4])
    ws = max([len(r.service) for r in rows] + [7])
    wc = max([len(r.check) for r in rows] + [5])
    lines = [f"{'HOST':<{wh}}  {'SERVICE':<{ws}}  {'CHECK':<{wc}}  RESULT"]
    lines += [f"{r.host:<{wh}}  {r.service:<{ws}}  {r.check:<{wc}}  {r.result}" for r in rows]
    counts = {s: sum(r.outcome.status == s for r in rows) for s in ("ok", "FAILED", "skipped", "not checked")}
    summary = f"{len(rows)} checks: {counts['ok']} ok, {counts['FAILED']} failed"
    if counts["skipped"]:
        summary += f", {counts['skipped']} skipped"
    if counts["not checked"]:
        summary += f", {counts['not checked']} not checked"
    return "\n".join(lines + ["", summary])


# --------------------------------------------------------------------------- transport


class Unreachable(Exception):
    """The transport to a host failed; `final` when trying again cannot help (host key, login)."""

    def __init__(self, message: str, hint: str = "", final: bool = False):
        super().__init__(message)
        self.hint, self.final = hint, final


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8", errors="replace"))

    def text(self, limit: int = 160) -> str:
        text = " ".join(self.body.decode("utf-8", errors="replace").split())
        return text if len(text) <= limit else text[:limit] + "…"


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


class _Channel:
    """One HTTP/1.1 connection over a socket: to a unix socket or TCP port, or to the stdin and stdout of
    a process (`ssh … docker system dial-stdio`, `ssh -W host:port`) through a socket pair."""

    def __init__(self, host_header: str, timeout: float, *, argv: list[str] | None = None,
                 unix: str | None = None, tcp: tuple[str, int] | None = None):
        self.proc: subprocess.Popen | None = None
        self.err = None
        if argv is not None:
            mine, theirs = socket.socketpair()
            self.err = tempfile.TemporaryFile()
            try:
                self.proc = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=self.err)
            except FileNotFoundError as exc:
                mine.close()
                self.err.close()
                raise Unreachable(f"{exc.filename} is not installed here", final=True) from None
            finally:
                theirs.close()
        elif unix is not None:
            mine = socket.socket(socket.AF_UNIX)
            mine.settimeout(timeout)
            try:
                mine.connect(unix)
            except OSError:
                mine.close()
                raise
        else:
            mine = socket.create_connection(tcp, timeout=timeout)
        mine.settimeout(timeout)
        self.conn = http.client.HTTPConnection(host_header)
        self.conn.sock = mine  # connected already: http.client's connect() is never called

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
        hdrs = dict(headers)
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    @property
    def open(self) -> bool:
        """Still usable for another request (http.client drops the socket when the server closes)."""
        return self.conn.sock is not None

    def close(self) -> str:
        """Close it; what the process said on stderr (why ssh failed, for one)."""
        self.conn.close()
        if self.proc is None:
            return ""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        self.err.close()
        return text


class HostLink:
    """One host's Engine API and published ports, reached the way the docker provider reaches the host.

    Engine API requests share a few kept-alive connections (one `dial-stdio` each), as the docker CLI
    does; each published-port request is an `ssh -W` session on the host's shared SSH connection."""

    def __init__(self, name: str, cfg: HostConfig, timeout: float):
        self.name, self.cfg, self.timeout = name, cfg, timeout
        self._idle: list[_Channel] = []
        self._lock = threading.Lock()

    @property
    def via(self) -> str:
        if self.cfg.kind == "local":
            return docker_host_url(self.cfg)
        return f"ssh {self.cfg.ssh.user}@{self.cfg.address}:{self.cfg.ssh.port}"

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for ch in idle:
            ch.close()

    def _explain(self, stderr: str, exc: Exception, what: str) -> Unreachable:
        ssh = self.cfg.ssh
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return Unreachable(
                f"cannot reach {self.name}: Host key verification failed (the key {self.cfg.address}:{ssh.port} "
                f"presents is not hosts.{self.name}.ssh.hostKey)",
                f"if the host was reinstalled, pin its new key (`ssh-keyscan -t ed25519 -p {ssh.port} "
                f"{self.cfg.address} | cut -d' ' -f2-`); otherwise something else answers at {self.cfg.address}",
                final=True)
        if "Permission denied" in stderr:
            return Unreachable(
                f"cannot reach {self.name}: ssh login as {ssh.user} refused ({_last_line(stderr)})",
                f"is the public key of {ssh.identity_file or 'your identity'} in {ssh.user}'s authorized_keys "
                f"on {self.cfg.address}?", final=True)
        if "administratively prohibited" in stderr:
            return Unreachable(
                f"the sshd of {self.name} refuses to forward to {what} ({_last_line(stderr)})",
                "verify reaches published ports through `ssh -W`: allow it for this user "
                "(AllowTcpForwarding in sshd_config)", final=True)
        if any(m in stderr for m in ("connect failed", "open failed", "Stdio forwarding request failed")):
            # Through a shared connection ssh cannot tell a closed port from sshd refusing to forward.
            return Unreachable(f"nothing answers on {what}, or sshd does not forward there ({_last_line(stderr)})")
        line = _last_line(stderr)
        if line.startswith("ssh:") or "kex_exchange_identification" in line or "Connection closed by" in line:
            return Unreachable(f"cannot reach {self.name}: {line}")
        if not line:
            line = ("connection closed without a response" if isinstance(exc, http.client.RemoteDisconnected)
                    else f"no answer within {self.timeout:g}s" if isinstance(exc, socket.timeout)
                    else exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc))
        return Unreachable(f"{what}: {line}")

    def _new_engine_channel(self) -> _Channel:
        if self.cfg.kind == "local":
            path = docker_host_url(self.cfg).removeprefix("unix://")
            try:
                return _Channel("docker", self.timeout, unix=path)
            except OSError as exc:
                raise Unreachable(f"the Docker engine at {path}: {exc.strerror or exc}") from None
        return _Channel("docker", self.timeout, argv=docker_dial_command(self.name, self.cfg))

    def engine(self, method: str, path: str, body: dict | None = None, *, stream: bool = False) -> Response:
        """One Engine API request (unversioned paths: the engine's own API version). `stream`: the engine
        hijacks the connection (exec start) and closes it at the end, so it gets one of its own."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            with self._lock:
                reused = bool(self._idle) and not stream
                ch = self._idle.pop() if reused else None
            ch = ch or self._new_engine_channel()
            try:
                resp = ch.request(method, path, data, {"Connection": "close"} if stream else {})
            except (OSError, http.client.HTTPException) as exc:
                stderr = ch.close()
                if reused and attempt == 1:
                    continue  # a kept-alive connection the far end had closed: once more on a new one
                raise self._explain(stderr, exc, "the Docker API") from None
            if ch.open and not stream:
                with self._lock:
                    self._idle.append(ch)
            else:
                ch.close()
            return resp
        raise AssertionError("unreachable")

    def target(self, bind: str) -> str:
        """Where, on the host, a port published on `bind` is reached."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)

    def http(self, bind: str, port: int, path: str, headers: dict[str, str] | None = None) -> Response:
        """GET a published port of the host, from the host itself (ssh -W), or locally for a local host."""
        target = self.target(bind)
        hostport = f"[{target}]:{port}" if ":" in target else f"{target}:{port}"
        hdrs = {"Connection": "close", **(headers or {})}
        if self.cfg.kind == "local":
            try:
                ch = _Channel(hostport, self.timeout, tcp=(target, port))
            except OSError as exc:
                raise Unreachable(f"nothing answers on {hostport} ({exc.strerror or exc})") from None
        else:
            ssh = self.cfg.ssh
            ch = _Channel(hostport, self.timeout, argv=[
                "ssh", *docker_ssh_opts(self.name, self.cfg), "-T", "-l", ssh.user, "-p", str(ssh.port),
                "-W", hostport, "--", self.cfg.address])
        try:
            resp = ch.request("GET", path, None, hdrs)
        except (OSError, http.client.HTTPException) as exc:
            raise self._explain(ch.close(), exc, hostport) from None
        ch.close()
        return resp

    def exec(self, container: str, cmd: list[str]) -> tuple[int, str, str]:
        """Run `cmd` in a running container (Engine API exec): exit code, stdout, stderr.

        The command inherits the container's environment, so a password it needs is read there
        ("$POSTGRES_PASSWORD", REDISCLI_AUTH) and never travels on a command line."""
        r = self.engine("POST", f"/containers/{container}/exec",
                        {"Cmd": cmd, "AttachStdout": True, "AttachStderr": True, "Tty": False})
        if r.status != 201:
            raise Unreachable(f"exec in {container} refused ({r.status}: {r.text()})",
                              "verify needs the write SSH key: the read-only preview key cannot exec"
                              if r.status == 403 else "")
        exec_id = r.json()["Id"]
        stream = self.engine("POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False}, stream=True)
        out, err = demux(stream.body)
        for _ in range(20):
            info = self.engine("GET", f"/exec/{exec_id}/json").json()
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0), out, err
            time.sleep(0.25)
        raise Unreachable(f"{' '.join(cmd[:2])} in {container} did not finish")


def demux(data: bytes) -> tuple[str, str]:
    """The Engine API's multiplexed stream (8-byte frame headers: stream, 0, 0, 0, size) as stdout, stderr."""
    out, err, i = [], [], 0
    while i + 8 <= len(data):
        kind, size = data[i], struct.unpack(">I", data[i + 4:i + 8])[0]
        chunk = data[i + 8:i + 8 + size]
        (err if kind == 2 else out).append(chunk)
        i += 8 + size
    return b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")


# --------------------------------------------------------------------------- what the stack deploys


def container_name(cfg: StackConfig, host: str, service: str) -> str:
    return f"{cfg.hosts[host].container_prefix}{service}"


def normalise_model(name: str) -> str:
    """Ollama lists a model pulled without a tag as <name>:latest."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def expected_ollama_models(cfg: StackConfig, name: str) -> tuple[list[str], str]:
    """The models an Ollama instance must list, and the node that pulls them into its store.

    A writer's replicas serve its own store; a read-only node serves the store its writer fills."""
    nc = cfg.all_inference[name]
    models, writer = list(nc.models), name
    if nc.read_only and nc.model_store:
        for other, oc in sorted(cfg.all_inference.items()):
            if oc.engine == "ollama" and not oc.read_only and oc.model_store == nc.model_store:
                writer = other
                models += [m for m in oc.models if m not in models]
    return models, writer


def model_diff(want: list[str], listed: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Of the models an Ollama instance must serve: those it lists, those it lacks; and what it lists besides."""
    have = {normalise_model(m) for m in listed if m}
    wanted = {normalise_model(m) for m in want}
    return ([m for m in want if normalise_model(m) in have], [m for m in want if normalise_model(m) not in have],
            sorted(m for m in listed if m and normalise_model(m) not in wanted))


def ollama_backends(cfg: StackConfig) -> list[str]:
    """The URLs Traefik balances over: every Ollama instance's published port (stack.ollama_endpoints)."""
    out = []
    for name, nc in sorted(cfg.all_inference.items()):
        if nc.engine == "ollama":
            for _, port, _ in sorted(inference_instances(name, nc)):
                out.append(f"http://{cfg.hosts[nc.host].address}:{port}")
    return out


def expected_scrape_targets(cfg: StackConfig) -> dict[str, list[str]]:
    """Every Prometheus job and its targets, as the program generates prometheus.yml, by `instance` label.

    The same functions the program composes its jobs with, fed with the config alone."""
    mc = cfg.monitoring
    if mc is None:
        return {}
    nodes = {name: SimpleNamespace(cfg=nc) for name, nc in cfg.all_inference.items()}
    octo = None
    if cfg.octollm:
        oc = cfg.octollm
        services = [("orchestrator", oc.orchestrator), ("reflex-layer", oc.reflex)] + [
            (f"arm-{a}", p) for a, p in sorted(oc.arms.items())]
        # Each OctoLLM service publishes its port on the same port (octo_arm_service.service_specs).
        octo = SimpleNamespace(specs=[SimpleNamespace(name=s, ports=[SimpleNamespace(container=p.port, host=p.port)])
                                      for s, p in services])
    probe_model = mc.probe_model or program._default_probe_model(cfg)
    jobs = program.scrape_jobs(cfg, nodes, octo, probe_model) + program.app_jobs(cfg, {})
    ds = cfg.data_services
    data = ds is not None and ds.external is None

    def platform(h: str) -> SimpleNamespace:
        hc = cfg.hosts[h]
        if hc.kind == "kubernetes":
            # What the namespace collects (KubernetesPlatform.telemetry): no node exporters, the cluster's logs.
            from components.platforms.kubernetes import KubernetesPlatform

            kc = cfg.kubernetes
            me = SimpleNamespace(cfg=hc, kube=kc, namespace_name=kc.namespace)
            return SimpleNamespace(name=h, cfg=hc, telemetry=lambda: KubernetesPlatform.telemetry(me))
        return SimpleNamespace(name=h, cfg=hc, telemetry=lambda: DockerHost.telemetry(SimpleNamespace(cfg=hc)))

    args = SimpleNamespace(central=platform(mc.host), hosts={h: platform(h) for h in monitored_hosts(cfg)},
                           data_host=platform(ds.host) if data else None,
                           redis_password="set" if data and ds.redis else None,
                           postgres_dsn="set" if data and ds.postgres else None)
    jobs += MonitoringStack._exporter_jobs(args)
    # A probed job's targets are URLs that the relabelling turns into the `instance` label.
    return {j.job: list(j.targets) for j in sorted(jobs, key=lambda j: j.job)}


def target_health(expected: dict[str, list[str]], active: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """Prometheus's active targets against the expected ones: the jobs with targets down (and their errors),
    the jobs not scraped yet, and the expected targets Prometheus does not have."""
    seen = {((t.get("labels") or {}).get("job"), (t.get("labels") or {}).get("instance")): t for t in active}
    down, unknown, absent = [], [], []
    for job, targets in expected.items():
        bad = []
        for inst in targets:
            t = seen.get((job, inst))
            if t is None:
                absent.append(f"{job} ({inst})")
            elif t.get("health") == "unknown":
                unknown.append(job)
            elif t.get("health") != "up":
                err = " ".join(str(t.get("lastError") or t.get("health")).split())[:100]
                bad.append(f"{inst}: {err}")
        if bad:
            down.append(f"{job} ({'; '.join(bad)})")
    return down, unknown, absent


def expected_datasources() -> list[dict]:
    return yaml.safe_load(grafana_datasources())["datasources"]


# --------------------------------------------------------------------------- checks


@dataclass
class Service:
    """One container of the stack and what is checked through it."""

    host: str
    service: str
    container: str
    checks: list[tuple[str, Callable[["HostLink", "Service"], Outcome]]] = field(default_factory=list)


@dataclass
class Context:
    cfg: StackConfig
    stack: str
    grafana_password: str | None
    grafana_password_problem: str


def check_container(ctx: Context, svc: Service, info: dict | None) -> Outcome:
    name, where = svc.container, f"{svc.service} on {svc.host}"
    if info is None:
        return failed(f"{where}: no container named {name}", "run `pulumi up` again (it creates it)")
    label = (info.get("Config") or {}).get("Labels") or {}
    managed = label.get(MANAGED_LABEL)
    if managed != f"pulumi/{ctx.stack}":
        return failed(f"{where}: container {name} is not this stack's ({MANAGED_LABEL}={managed or '(unset)'}, "
                      f"expected pulumi/{ctx.stack})",
                      "remove or rename that container, then run `pulumi up`", retry=False)
    state = info.get("State") or {}
    status = state.get("Status", "?")
    if state.get("Restarting"):
        return failed(f"{where} is restarting (exit code {state.get('ExitCode')}, "
                      f"{info.get('RestartCount', 0)} restarts)",
                      f"see why with `docker logs {name}`")
    if not state.get("Running"):
        why = f"exit code {state.get('ExitCode')}" + (", out of memory" if state.get("OOMKilled") else "")
        if state.get("Error"):
            why += f", {state['Error']}"
        return failed(f"{where} is {status} ({why})",
                      f"`docker start {name}` (its logs: `docker logs {name}`), or run `pulumi up` again")
    if state.get("Paused"):
        return failed(f"{where} is paused", f"`docker unpause {name}`")
    health = state.get("Health")
    if not health:
        return ok("running, no health check")
    hstatus = health.get("Status")
    if hstatus == "healthy":
        return ok("running, healthy")
    inspect = f"`docker inspect --format '{{{{json .State.Health}}}}' {name}`"
    if hstatus == "starting":
        return failed(f"{where} is running but not healthy yet (health: starting)",
                      f"it may still be starting: run verify again in a minute, or with `--wait 180`; see {inspect}")
    last = (health.get("Log") or [{}])[-1]
    output = " ".join(str(last.get("Output", "")).split())[:120]
    return failed(f"{where} is unhealthy ({health.get('FailingStreak', '?')} failed health checks"
                  + (f", last: {output}" if output else "") + ")",
                  f"see `docker logs {name}` and {inspect}")


def _answer(link: HostLink, where: str, container: str, bind: str, port: int, path: str,
            headers: dict[str, str] | None = None) -> Response | Outcome:
    try:
        return link.http(bind, port, path, headers)
    except Unreachable as exc:
        return failed(f"{where} does not answer on port {port} ({exc})",
                      exc.hint or f"see `docker logs {container}`", retry=not exc.final)


def check_health(bind: str, port: int, path: str):
    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        r = _answer(link, where, svc.container, bind, port, path)
        if isinstance(r, Outcome):
            return r
        if 200 <= r.status < 300:
            return ok(f"{r.status} on :{port}{path}")
        return failed(f"{where} answers {path} on port {port} with {r.status} ({r.text(80)})",
                      f"see `docker logs {svc.container}`")
    return run


def check_ollama(cfg: StackConfig, name: str, bind: str, port: int):
    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        want, writer = expected_ollama_models(cfg, name)
        r = _answer(link, where, svc.container, bind, port, "/api/tags")
        if isinstance(r, Outcome):
            return r
        if r.status != 200:
            return failed(f"{where} answers /api/tags with {r.status} ({r.text(80)})", f"see `docker logs {svc.container}`")
        try:
            listed = [m.get("name") or m.get("model") for m in r.json().get("models") or []]
        except (ValueError, AttributeError):
            return failed(f"{where} answers /api/tags with something that is not Ollama's model list ({r.text(80)})",
                          f"is {svc.container} really Ollama? see `docker logs {svc.container}`")
        present, missing, extra = model_diff(want, listed)
        if not missing and not extra:
            return ok(", ".join(want) if want else "no models configured, none listed")
        wnode = cfg.all_inference[writer]
        wname = container_name(cfg, wnode.host, writer)
        if missing:
            lists = ", ".join(present) or "no model of its config"
            pulls = " && ".join(f"docker exec {wname} ollama pull {m}" for m in missing)
            on = "" if wnode.host == svc.host and writer == name else f" on {wnode.host}"
            detail = f"{where} lists {lists} but not {', '.join(missing)}"
            hint = f"run `pulumi up` again or `{pulls}`{on}"
            if extra:
                detail += f" (and {', '.join(extra)}, which the config does not name)"
            return failed(detail, hint)
        key = f"{node_path(cfg, writer)}.models"
        rms = " && ".join(f"docker exec {wname} ollama rm {m}" for m in extra)
        return failed(f"{where} lists {', '.join(extra)} as well, which {key} does not name",
                      f"add {'it' if len(extra) == 1 else 'them'} to {key}, or `{rms}`", retry=False)
    return run


def openai_models(nc: InferenceConfig, where: str, logs: str, answer) -> Outcome:
    """vLLM (/v1/models) and llama.cpp (/health, then /v1/models): the one model each serves. `answer(path)` is
    the platform's way to ask the node (a Response, or the Outcome of not reaching it)."""
    if nc.engine == "llamacpp":
        r = answer("/health")
        if isinstance(r, Outcome):
            return r
        if r.status != 200:
            return failed(f"{where} answers /health with {r.status} ({r.text(80)})",
                          f"llama.cpp answers 503 while it loads the model; {logs}")
        want = nc.model_path or ""
        match = lambda mid: mid.rsplit("/", 1)[-1] == want.rsplit("/", 1)[-1]  # noqa: E731
    else:
        want = nc.models[0] if nc.models else ""
        match = lambda mid: mid == want  # noqa: E731
    r = answer("/v1/models")
    if isinstance(r, Outcome):
        return r
    if r.status != 200:
        return failed(f"{where} answers /v1/models with {r.status} ({r.text(80)})", logs)
    try:
        ids = [m.get("id", "") for m in r.json().get("data") or []]
    except (ValueError, AttributeError):
        return failed(f"{where} answers /v1/models with something that is not a model list ({r.text(80)})", logs)
    if any(match(i) for i in ids) and len(ids) == 1:
        return ok(ids[0])
    return failed(f"{where} serves {', '.join(ids) or 'no model'}, not {want}",
                  f"it loads its model at start: {logs}, or run `pulumi up` again")


def check_openai_models(nc: InferenceConfig, bind: str, port: int):
    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        return openai_models(nc, where, f"see `docker logs {svc.container}`",
                             lambda path: _answer(link, where, svc.container, bind, port, path))
    return run


def check_exec(kind: str, pg_user: str = "", pg_db: str = ""):
    """An authenticated request run inside the data service's container; no password on any command line."""
    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        logs = f"see `docker logs {svc.container}`"
        try:
            if kind == "postgres":
                code, out, err = link.exec(svc.container, ["pg_isready", "-h", "127.0.0.1", "-p", "5432",
                                                           "-U", pg_user, "-d", pg_db])
                if code != 0:
                    return failed(f"{where}: pg_isready says {_last_line(out + err) or f'exit status {code}'}", logs)
                # psql reads the password from PGPASSWORD, set from the container's own environment.
                code, out, err = link.exec(svc.container, [
                    "sh", "-c", 'PGPASSWORD="$POSTGRES_PASSWORD" exec psql -h 127.0.0.1 -p 5432 -U "$1" -d "$2" '
                                '-X -tA -c "select 1"', "verify", pg_user, pg_db])
                if code != 0 or out.strip() != "1":
                    return failed(f"{where} refuses an authenticated `select 1` as {pg_user} "
                                  f"({_last_line(err + out) or f'exit status {code}'})",
                                  "a rotated password that did not reach the database? run `pulumi up` again; " + logs)
                return ok(f"accepting connections, select 1 as {pg_user}")
            if kind == "redis":
                # redis-cli reads REDISCLI_AUTH, the password the server was started with, from the environment.
                code, out, err = link.exec(svc.container, ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"])
                if out.strip() != "PONG":
                    return failed(f"{where} does not answer an authenticated PING ({_last_line(out + err) or code})", logs)
                return ok("PONG to an authenticated PING")
            # Qdrant ships bash and no HTTP client: bash's /dev/tcp and printf (a builtin) send the key.
            code, out, err = link.exec(svc.container, ["bash", "-c", (
                'exec 3<>/dev/tcp/127.0.0.1/6333 && printf "GET /collections HTTP/1.0\\r\\nHost: localhost\\r\\n'
                'api-key: %s\\r\\n\\r\\n" "$QDRANT__SERVICE__API_KEY" >&3 && cat <&3')])
            head = out.split("\r\n", 1)[0] if out else ""
            if code != 0 or " 200 " not in head + " ":
                return failed(f"{where} refuses GET /collections with its API key ({head or _last_line(err) or code})",
                              logs)
            return ok("GET /collections with the API key: 200")
        except Unreachable as exc:
            return failed(f"{where}: {exc}", exc.hint or logs, retry=not exc.final)
    return run


def check_prometheus(cfg: StackConfig, bind: str, port: int):
    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        expected = expected_scrape_targets(cfg)
        r = _answer(link, where, svc.container, bind, port, "/api/v1/targets?state=active")
        if isinstance(r, Outcome):
            return r
        try:
            active = r.json()["data"]["activeTargets"]
        except (ValueError, KeyError, TypeError):
            return failed(f"{where} answers /api/v1/targets with {r.status} ({r.text(80)})",
                          f"see `docker logs {svc.container}`")
        down, unknown, absent = target_health(expected, active)
        total = len(expected)
        ui = f"http://{cfg.hosts[svc.host].address}:{port}/targets"
        if down:
            return failed(f"{where} reports {len(down)} of {total} jobs down: {', '.join(down)}",
                          f"check those services (their rows above, `docker logs`); Prometheus's view: {ui}")
        if absent:
            return failed(f"{where} does not scrape {', '.join(absent)}",
                          "its prometheus.yml is not the one this config generates: run `pulumi up` again "
                          "(it rewrites the file and reloads Prometheus)")
        if unknown:
            return failed(f"{where} has not scraped {', '.join(sorted(set(unknown)))} yet",
                          f"a first scrape takes up to a scrape interval: run verify again, or with `--wait 180`; {ui}")
        return ok(f"{sum(len(t) for t in expected.values())} targets of {total} jobs up")
    return run


def datasources_health(where: str, listing: Response, logs: str, logs_cmd: str, health) -> Outcome:
    """Grafana's answer to /api/datasources holds every datasource the program provisions, and each passes its
    health check (`health(uid)`: the platform's way to ask, a Response or the Outcome of not reaching it)."""
    try:
        listed = {d.get("uid"): d for d in listing.json()}
    except (ValueError, AttributeError):
        return failed(f"{where} answers /api/datasources with {listing.status} ({listing.text(80)})", logs)
    want = expected_datasources()
    missing = [f"{d['name']} ({d['uid']})" for d in want if d["uid"] not in listed]
    if missing:
        return failed(f"{where} has no datasource {', '.join(missing)}",
                      "its provisioning files are not the ones this config generates: run `pulumi up` again")
    broken = []
    for d in want:
        h = health(d["uid"])
        if isinstance(h, Outcome):
            return h
        try:
            body = h.json()
        except ValueError:
            body = {"message": h.text(80)}
        if h.status != 200 or str(body.get("status", "")).upper() != "OK":
            broken.append((d, " ".join(str(body.get("message", h.status)).split())[:100]))
    if broken:
        names = ", ".join(f"{d['name']} ({d['uid']})" for d, _ in broken)
        if len(broken) == 1:
            detail = f"{where}: datasource {names} fails its health check ({broken[0][1]})"
        else:
            detail = (f"{where}: datasources {names} fail their health checks ("
                      + "; ".join(f"{d['name']}: {m}" for d, m in broken) + ")")
        # Each datasource's URL names the service behind it (http://loki:3100).
        behind = " and ".join(d["url"].split("//", 1)[-1].split(":", 1)[0] for d, _ in broken)
        return failed(detail, f"check {behind} (their rows above, {logs_cmd})")
    return ok(", ".join(f"{d['name']} OK" for d in want))


def check_grafana(ctx: Context, bind: str, port: int):
    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        if ctx.grafana_password is None:
            return Outcome("skipped", f"needs grafanaAdminPassword ({ctx.grafana_password_problem})")
        token = base64.b64encode(f"{GRAFANA_ADMIN_USER}:{ctx.grafana_password}".encode()).decode()
        auth = {"Authorization": f"Basic {token}"}
        r = _answer(link, where, svc.container, bind, port, "/api/datasources", auth)
        if isinstance(r, Outcome):
            return r
        if r.status == 401:
            return failed(f"{where} refuses the stack's admin password (401)",
                          "a rotated password that did not reach Grafana? run `pulumi up` again "
                          "(it applies the password with `grafana cli admin reset-admin-password`)")
        return datasources_health(where, r, f"see `docker logs {svc.container}`", "`docker logs`",
                                  lambda uid: _answer(link, where, svc.container, bind, port,
                                                      f"/api/datasources/uid/{uid}/health", auth))
    return run


def check_traefik(cfg: StackConfig, bind: str):
    lb = cfg.load_balancer

    def run(link: HostLink, svc: Service) -> Outcome:
        where = f"{svc.service} on {svc.host}"
        want = ollama_backends(cfg)
        status: dict[str, str] = {}
        if lb.dashboard_port:
            r = _answer(link, where, svc.container, bind, lb.dashboard_port, "/api/http/services")
            if isinstance(r, Outcome):
                return r
            try:
                services = {s.get("name"): s for s in r.json()}
            except (ValueError, AttributeError):
                return failed(f"{where} answers /api/http/services with {r.status} ({r.text(80)})",
                              f"see `docker logs {svc.container}`")
            if TRAEFIK_SERVICE not in services:
                return failed(f"{where} has no service {TRAEFIK_SERVICE} (it has {', '.join(sorted(services)) or 'none'})",
                              "its dynamic config is not the one this config generates: run `pulumi up` again")
            status = {u: str(s).upper() for u, s in (services[TRAEFIK_SERVICE].get("serverStatus") or {}).items()}
            source = "API"
        else:
            # Without loadBalancer.dashboardPort the API is off; the metrics entry point is always on.
            r = _answer(link, where, svc.container, bind, lb.metrics_port, "/metrics")
            if isinstance(r, Outcome):
                return r
            pat = re.compile(r'^traefik_service_server_up\{([^}]*)\}\s+(\S+)', re.M)
            for labels, value in pat.findall(r.body.decode(errors="replace")):
                lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                if lab.get("service") == TRAEFIK_SERVICE:
                    status[lab.get("url", "")] = "UP" if value.strip() in ("1", "1.0") else "DOWN"
            source = "metrics"
        down = [f"{u} ({status[u]})" for u in want if u in status and status[u] != "UP"]
        absent = [u for u in want if u not in status]
        if down:
            return failed(f"{where} reports {len(down)} of {len(want)} Ollama backends down: {', '.join(down)}",
                          f"check those Ollama instances (their rows above); Traefik's health check GETs "
                          f"{lb.health_path} every {lb.health_interval_s}s")
        if absent:
            return failed(f"{where} does not balance over {', '.join(absent)}",
                          "its dynamic config is not the one this config generates: run `pulumi up` again")
        return ok(f"{len(want)} of {len(want)} backends UP ({source})")
    return run


def plan(ctx: Context, hosts: list[str]) -> list[Service]:
    """Every container of the stack on `hosts`, with the checks made through it, in inventory order."""
    cfg = ctx.cfg
    services: dict[tuple[str, str], Service] = {}
    for p in inventory(cfg):
        if p.host in hosts:
            services[(p.host, p.service)] = Service(p.host, p.service, container_name(cfg, p.host, p.service))

    def add(host: str, service: str, check: str, fn) -> None:
        if (host, service) in services:
            services[(host, service)].checks.append((check, fn))

    for name, nc in sorted(cfg.all_inference.items()):
        bind = cfg.hosts[nc.host].llm_bind
        for svc, port, _ in inference_instances(name, nc):
            if nc.engine == "ollama":
                add(nc.host, svc, "models", check_ollama(cfg, name, bind, port))
            else:
                add(nc.host, svc, "models", check_openai_models(nc, bind, port))
    ds = cfg.data_services
    if ds is not None and ds.external is None:
        if ds.postgres:
            add(ds.host, "postgres", "query", check_exec("postgres", ds.postgres.user, ds.postgres.database))
        if ds.redis:
            add(ds.host, "redis", "ping", check_exec("redis"))
        if ds.qdrant:
            add(ds.host, "qdrant", "api", check_exec("qdrant"))
    if cfg.workers:
        add(cfg.workers.host, "worker-redis", "ping", check_exec("redis"))
    if cfg.octollm:
        oc = cfg.octollm
        bind = cfg.hosts[oc.host].publish_address
        for svc, p in [("orchestrator", oc.orchestrator), ("reflex-layer", oc.reflex)] + [
                (f"arm-{a}", p) for a, p in sorted(oc.arms.items())]:
            add(oc.host, svc, "health", check_health(bind, p.port, "/health"))
    if cfg.monitoring:
        mc = cfg.monitoring
        bind = cfg.hosts[mc.host].publish_address
        add(mc.host, "prometheus", "targets", check_prometheus(cfg, bind, mc.prometheus_port))
        add(mc.host, "grafana", "datasources", check_grafana(ctx, bind, mc.grafana_port))
    if cfg.load_balancer:
        add(cfg.load_balancer.host, "traefik", "backends", check_traefik(cfg, cfg.hosts[cfg.load_balancer.host].publish_address))
    if cfg.open_webui:
        ow = cfg.open_webui
        add(ow.host, "open-webui", "health", check_health(cfg.hosts[ow.host].publish_address, ow.port, "/health"))
    if cfg.portainer:
        pt = cfg.portainer
        add(pt.host, "portainer", "health",
            check_health(cfg.hosts[pt.host].publish_address, pt.port, PROBED_NOT_HEALTHCHECKED["portainer"]))
    if cfg.homelab_ai:
        ha = cfg.homelab_ai
        for svc, port in (("llm-router", ha.router_port), ("llm-manager", ha.manager_port),
                          ("dashboard", ha.dashboard_port)):
            add(ha.host, svc, "health", check_health(cfg.hosts[ha.host].publish_address, port, "/health"))
    return list(services.values())


def run_service(ctx: Context, link: HostLink, svc: Service) -> list[Row]:
    """The container's row, then its service's checks: those only where the stack's container runs
    (a stopped container is one failed row, not one per endpoint it no longer serves)."""
    info = None
    try:
        r = link.engine("GET", f"/containers/{svc.container}/json")
        if r.status in (200, 404):
            info = r.json() if r.status == 200 else None
            if info is not None and str(info.get("Name", "")).lstrip("/") != svc.container:
                info = None  # the engine also resolves ID prefixes: only the name itself counts
            container = check_container(ctx, svc, info)
        else:
            container = failed(f"{svc.service} on {svc.host}: the Docker API answers {r.status} ({r.text(80)})")
    except Unreachable as exc:
        container = failed(f"{svc.service} on {svc.host}: {exc}", exc.hint, retry=not exc.final)
    rows = [Row(svc.host, svc.service, "container", container)]
    state = (info or {}).get("State") or {}
    ours = info is not None and ((info.get("Config") or {}).get("Labels") or {}).get(MANAGED_LABEL) \
        == f"pulumi/{ctx.stack}"
    why = ("there is no such container" if info is None else
           "the container is not running" if ours else "the container is not this stack's")
    for check, fn in svc.checks:
        if ours and state.get("Running") and not state.get("Restarting"):
            rows.append(Row(svc.host, svc.service, check, fn(link, svc)))
        else:
            rows.append(Row(svc.host, svc.service, check, Outcome("not checked", why)))
    return rows


def check_api(link: HostLink) -> Outcome:
    if link.cfg.kind == "ssh":
        ensure_ssh_control_dir()
        problem = ssh_control_path_problem(link.name, link.cfg)
        if problem:
            return failed(f"cannot start ssh for {link.name}: {problem}", retry=False)
    try:
        r = link.engine("GET", "/_ping")
    except Unreachable as exc:
        return failed(str(exc), exc.hint, retry=not exc.final)
    if r.status != 200:
        return failed(f"the Docker API of {link.name} answers /_ping with {r.status} ({r.text(80)})")
    return ok(f"API {r.headers.get('api-version', '?')}, {link.via}")


def verify_once(ctx: Context, hosts: list[str], timeout: float) -> list[Row]:
    services = plan(ctx, hosts)
    rows: list[Row] = []
    for h in hosts:
        link = HostLink(h, ctx.cfg.hosts[h], timeout)
        try:
            # First, and alone: the first ssh becomes the host's shared connection, which the rest then use.
            api = check_api(link)
            rows.append(Row(h, "-", "docker-api", api))
            mine = [s for s in services if s.host == h]
            if api.status != "ok":
                # Nothing on the host can be checked, and every row says why.
                for svc in mine:
                    for check in ["container", *(c for c, _ in svc.checks)]:
                        rows.append(Row(h, svc.service, check,
                                        failed(f"{svc.service} on {h}: {api.detail}", api.hint, api.retry)))
                continue
            with ThreadPoolExecutor(max_workers=WORKERS) as pool:
                for result in pool.map(lambda s: run_service(ctx, link, s), mine):
                    rows.extend(result)
        finally:
            link.close()
    return rows


def verify(ctx: Context, hosts: list[str], timeout: float = 30, wait: float = 0,
           progress: Callable[[str], None] | None = None) -> list[Row]:
    """Check everything; while something fails that may still pass, check again until `wait` runs out."""
    deadline = time.monotonic() + wait
    while True:
        rows = verify_once(ctx, hosts, timeout)
        pending = [r for r in rows if r.failed and r.outcome.retry]
        left = deadline - time.monotonic()
        if not pending or left <= RETRY_EVERY_S:
            return rows
        if progress:
            names = ", ".join(f"{r.service} {r.check}" for r in pending[:4]) + (" …" if len(pending) > 4 else "")
            progress(f"verify: {len(pending)} checks not passing yet ({names}); again in {RETRY_EVERY_S}s "
                     f"(waiting up to {left:.0f}s more)")
        time.sleep(RETRY_EVERY_S)


# --------------------------------------------------------------------------- the admin password


def pulumi_binary() -> str | None:
    given = os.environ.get("PULUMI")
    if given:
        return given
    return shutil.which("pulumi") or next(
        (p for p in [os.path.expanduser("~/.pulumi/bin/pulumi")] if os.access(p, os.X_OK)), None)


def grafana_password(stack: str, project_dir: Path) -> tuple[str | None, str]:
    """Grafana's admin password from the stack's secret config, else from its output; or why not.

    The value stays in memory: it goes into the Authorization header of the requests to Grafana only."""
    return stack_secret(stack, project_dir, "grafanaAdminPassword", "grafanaAdminPassword")


def stack_secret(stack: str, project_dir: Path, config_key: str, output_key: str | None) -> tuple[str | None, str]:
    """A secret of the stack from its secret config, else (with output_key) from its output; or why not.

    Read through the pulumi CLI (`PULUMI` names it); the value is returned, never printed or put in argv."""
    binary = pulumi_binary()
    if binary is None:
        return None, "no pulumi CLI here to read the stack's secret config or output"
    tries = [("secret config", ["config", "get", config_key, "--stack", stack])]
    if output_key:
        tries.append(("stack output", ["stack", "output", output_key, "--show-secrets", "--stack", stack]))
    problems = []
    for what, args in tries:
        try:
            r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=project_dir)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{what}: {exc}")
            continue
        value = r.stdout.rstrip("\n")
        if r.returncode == 0 and value:
            return value, what
        problems.append(f"{what}: {_last_line(r.stderr) or 'not set'}")
    return None, "; ".join(problems)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", default=None)
    ap.add_argument("--file", type=Path, default=None, help="a Pulumi.<stack>.yaml (default: from -s)")
    ap.add_argument("--hosts", nargs="*", default=None)
    ap.add_argument("--timeout", type=float, default=30, help="seconds each request may take (default 30)")
    ap.add_argument("--wait", type=float, default=0,
                    help="keep checking what fails, every 5 s, for up to this many seconds: right after "
                         "`pulumi up` health checks are still starting and targets not yet scraped (default 0)")
    ap.add_argument("--kubeconfig", type=Path, default=None,
                    help="Kubernetes: this kubeconfig file instead of the one the stack's provider uses (its "
                         "`kubeconfig` secret config, else KUBECONFIG, else ~/.kube/config)")
    ap.add_argument("--context", default=None,
                    help="Kubernetes: this kubeconfig context instead of kubernetes.context (else the current one)")
    a = ap.parse_args(argv)
    if a.file is None and a.stack is None:
        ap.error("give -s STACK or --file")
    path = a.file or ROOT / f"Pulumi.{a.stack}.yaml"
    stack = a.stack or path.stem.split(".", 1)[-1]
    # As doctor: encrypted values are left out (the admin password is read through pulumi).
    loaded = load_or_report(path)
    if loaded is None:
        return 2
    cfg, encrypted = loaded
    unknown = sorted(set(a.hosts or ()) - set(cfg.hosts))
    if unknown:
        print(f"no host named {', '.join(unknown)} in {path.name} (hosts: {', '.join(sorted(cfg.hosts))})",
              file=sys.stderr)
        return 2
    hosts = [h for h in sorted(cfg.hosts) if not a.hosts or h in a.hosts]
    project = path.resolve().parent if (path.resolve().parent / "Pulumi.yaml").exists() else ROOT
    if cfg.platform == "kubernetes" and cfg.kubernetes is not None:
        from . import verify_kubernetes

        return verify_kubernetes.run(cfg, stack, project, hosts, encrypted, kubeconfig=a.kubeconfig,
                                     context=a.context, timeout=a.timeout, wait=a.wait)
    password, problem = (None, "")
    if cfg.monitoring and cfg.monitoring.host in hosts:
        password, problem = grafana_password(stack, project)
    ctx = Context(cfg, stack, password, problem)
    rows = verify(ctx, hosts, timeout=a.timeout, wait=a.wait, progress=lambda m: print(m, file=sys.stderr))
    print(render(rows))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
