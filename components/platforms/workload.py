"""A platform-neutral description of one service.

Components describe what they run as `ServiceSpec` values; a platform adapter (a Docker host
over SSH, or a Kubernetes namespace) turns a spec into its own resources. Nothing here
imports a provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

import pulumi

from components.host_scripts import q


@dataclass(frozen=True)
class PortSpec:
    container: int
    host: int | None = None  # published port; None keeps it on the internal network only
    bind: str = "0.0.0.0"
    protocol: Literal["tcp", "udp"] = "tcp"
    name: str = "http"
    metrics_path: str | None = None  # set when Prometheus scrapes this port


@dataclass(frozen=True)
class NfsSource:
    server: str
    export: str
    options: str


@dataclass(frozen=True)
class MountSpec:
    target: str
    source: str  # host path (bind), volume name (volume), claim name (claim)
    kind: Literal["bind", "volume", "nfs", "claim"] = "bind"
    read_only: bool = False
    nfs: NfsSource | None = None


@dataclass(frozen=True)
class HealthSpec:
    """`test` is the Docker exec form; `http_path`/`port` let Kubernetes use an httpGet probe."""

    test: tuple[str, ...]
    http_path: str | None = None
    port: int | None = None
    interval_s: int = 30
    timeout_s: int = 10
    retries: int = 3
    start_period_s: int = 30


@dataclass(frozen=True)
class GpuSpec:
    count: int | None = None  # -1 means every GPU
    device_ids: tuple[str, ...] = ()


CONFIG_MOUNT = "/etc/octollm"  # where a service's ConfigFileSpecs appear, on every platform

# Stop grace (seconds between the stop signal and SIGKILL) by what a service must finish first:
# databases, stores and the TSDB flush to disk; services drain requests, inference unloads models.
GRACE_DATA = 60
GRACE_SERVICE = 30


@dataclass(frozen=True)
class ConfigFileSpec:
    """A file the service reads, delivered by the platform and mounted read-only at `target`."""

    name: str  # path relative to the service's config directory, mounted at /etc/octollm
    content: pulumi.Input[str]  # a secret Output keeps the file's content out of diffs and logs
    reload_signal: str | None = None  # sent after an update so the service rereads it


@dataclass(frozen=True)
class PasswordApply:
    """A password the service keeps in its own data, which its environment variable only sets on first
    start: the platform applies `secret_env[env]` to the running service after every change of it."""

    service: Literal["postgres", "grafana"]
    env: str  # the secret_env key holding the password
    user: str | None = None  # postgres: the role
    database: str | None = None  # postgres: the database to connect to


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    cpus: float
    memory_gb: float
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    secret_env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    files: tuple[ConfigFileSpec, ...] = ()
    gpu: GpuSpec | None = None
    health: HealthSpec | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    shm_size_gb: int | None = None
    network: str | None = None
    ipv4_address: str | None = None
    stateful: bool = False
    privileged: bool = False
    read_only_rootfs: bool = False
    pid_host: bool = False
    devices: tuple[str, ...] = ()
    docker_socket: bool = False  # mounts /var/run/docker.sock read-only
    wait_healthy: bool = False  # block dependants until the health check passes
    single_gpu: bool = False  # stop the old instance before starting the new one
    # How long a stop waits after the stop signal before SIGKILL (Docker stop timeout and the
    # provider's destroy grace; Kubernetes terminationGracePeriodSeconds). Databases flush, models unload.
    stop_grace_s: int = 10
    stop_signal: str | None = None  # None: the image's own STOPSIGNAL (SIGTERM unless it says otherwise)
    # Kubernetes only: horizontal scaling and disruption budget
    autoscale: tuple[int, int, int] | None = None  # (min replicas, max replicas, target CPU %)
    service_account: str | None = None  # Kubernetes: the pod talks to the API (log shipping)
    needs_root: bool = False  # the image only works as root (Kubernetes then cannot enforce runAsNonRoot)
    password_apply: PasswordApply | None = None


EVERY_POD = "*"


@dataclass(frozen=True)
class Flow:
    """`src` may open TCP connections to `dst` on `ports`.

    src: a service name, EVERY_POD (any service of the platform) or "ns:<namespace>" (another namespace).
    dst: a service name, or "world" (outside the platform, e.g. a cloud API or a managed database).
    """

    src: str
    dst: str
    ports: tuple[int, ...]


# An HTTP path (and query) a health check requests: no '%' (printf reads it as a directive), no backslash,
# quote, space or '$', so the path is the same string in an argv, a shell word, Python code and a probe.
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9._~/?=&+-]*")


def http_health(port: int, path: str, tool: Literal["wget", "curl", "bash", "python"] = "wget",
                **kw) -> HealthSpec:
    """A health check that works with the tool the image actually ships."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"health check port {port!r} is not a TCP port (1-65535)")
    if not _HEALTH_PATH.fullmatch(path):
        raise ValueError(f"health check path {path!r} is not an HTTP path of letters, digits and ._~/?=&+- "
                         "starting with '/'")
    url = f"http://127.0.0.1:{port}{path}"
    if tool == "wget":
        test = ("CMD", "wget", "-q", "-O", "/dev/null", url)
    elif tool == "curl":
        test = ("CMD", "curl", "-fsS", "-o", "/dev/null", url)
    elif tool == "python":
        # repr: a Python string literal of the URL, whatever it holds
        test = ("CMD", "python3", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)")
    else:
        # Images without curl or wget (ollama/ollama): bash's /dev/tcp speaks enough HTTP. The request is
        # printf's format, one shell word through q; '%' is doubled so printf prints it as itself.
        request = f"GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n".replace("%", "%%")
        script = f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf {q(request)} >&3 && head -n1 <&3 | grep -q ' 200 '"
        test = ("CMD", "bash", "-c", script)
    return HealthSpec(test=test, http_path=path, port=port, **kw)
