"""The one interface every component deploys through: a `Platform`.

A platform is a place services run: a Docker host (local socket or SSH) or a Kubernetes namespace.
Components describe services as `ServiceSpec` values and ask the platform for what differs between
places: where data lives, how a model store is provisioned, how model weights get in place, how a
password reaches a running service (`ServiceSpec.password_apply`), how config files are delivered
(`ServiceSpec.files`), and how an agent runs on every node. A component never asks which kind of
platform it has; a new platform implements this protocol and every component works on it.

Resource names: `run`, `agent` and `job` take the full name of the service's main resource, built by
the component from its own name (`f"{component}-{service}"`). Resources that belong to the service
are named from it (`…-file-<f>`, `…-env`, `…-service`, `…-password-sync`). Adapters alias names that
older versions of this program gave a resource, so an existing deployment keeps its resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Protocol, Sequence, runtime_checkable

import pulumi

from components.config.schema import HostConfig, ModelStoreConfig
from components.platforms.workload import Flow, MountSpec, ServiceSpec


@dataclass(frozen=True)
class NodeTelemetry:
    """How a platform's nodes are observed."""

    node_metrics: bool  # node-exporter and cAdvisor run next to the services
    gpu_exporter: Literal["dcgm", "nvidia-smi"] | None  # None: no GPU, or a managed exporter
    # Where the log collector finds containers: the Docker engine's socket, or the Kubernetes API.
    log_discovery: Literal["docker", "kubernetes"]
    namespace: str | None = None  # Kubernetes: the namespace whose pods are collected


@dataclass(frozen=True)
class ScheduledJob:
    """A script a platform runs on a schedule (`Platform.schedule`)."""

    name: str  # the job's own name on the platform: a systemd timer, a cron file, a CronJob
    cron: str  # five-field cron expression (Kubernetes, cron)
    calendar: str  # the same times as a systemd OnCalendar expression
    script: str  # the bash script each run executes
    description: str = ""
    image: str | None = None  # where the platform runs it in a container (Kubernetes): the image
    # Kubernetes: containers that run one after another before `script` (init containers), each to completion
    steps: tuple["JobStep", ...] = ()
    claim: str | None = None  # Kubernetes: the volume claim every container mounts, read-write, at `mount`
    mount: str = "/backups"
    env: tuple[tuple[str, str], ...] = ()  # plain environment of every container


@dataclass(frozen=True)
class JobStep:
    """One container of a scheduled job that runs in containers: `script` with `shell -c` in `image`."""

    name: str
    image: str
    script: str
    shell: str = "/bin/sh"
    env: tuple[tuple[str, str], ...] = ()
    # (variable, Secret, key): a value from a Secret the program already made, by secretKeyRef
    secret_env: tuple[tuple[str, str, str], ...] = ()


@runtime_checkable
class Platform(Protocol):
    name: str  # the inventory name (hosts.<name>)
    cfg: HostConfig

    # ------------------------------------------------------------------ addressing
    def image_ref(self, key: str) -> str:
        """The image to run for a catalogue key (a stack's `images.<key>` override, else the pin)."""

    def appdata(self, service: str) -> str:
        """Where a service's persistent data lives (a host path, or a claim the workload owns)."""

    def url(self, service: str, port: int, container_port: int | None = None) -> str:
        """Where a user (or another service) reaches a service's port."""

    def network_name(self, network: str) -> pulumi.Input[str]:
        """The engine-side name of a configured network (for services that start containers themselves)."""

    def connect(self, name: str, flows: Sequence[Flow], routes: Mapping[str, tuple[str, int]]) -> dict[str, str] | None:
        """Enforce the service-to-service flows and publish the routes (key -> (service, port)) where this
        platform does so after the services exist; returns the public URL per published route, or None."""

    # ------------------------------------------------------------------ storage
    def ensure_dirs(self, name: str, parent: pulumi.Resource, paths: list[str],
                    owner: str | None = None) -> pulumi.Resource | None:
        """Make data directories (kept on destroy); None where the workload's claim does it."""

    def provision_store(self, name: str, parent: pulumi.Resource, store: ModelStoreConfig,
                        owner: str) -> pulumi.Resource:
        """Create the model store `store` describes (directory, ZFS dataset, NFS export, claim)."""

    # ------------------------------------------------------------------ workloads
    def run(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource:
        """A long-running service, with its config files delivered and its password applied."""

    def agent(self, name: str, spec: ServiceSpec, parent: pulumi.Resource, *, gpu_nodes: bool = False,
              api_read: Sequence[dict] = ()) -> pulumi.Resource:
        """A collector. With gpu_nodes it runs on every GPU node and watches the GPUs without taking
        one from the workloads; with api_read it may read those platform API objects (RBAC rules)."""

    # ------------------------------------------------------------------ models
    def prepare_models(self, name: str, parent: pulumi.Resource, *, image: str, models: Sequence[str],
                       mount: MountSpec | None, env: dict[str, str],
                       depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource | None:
        """Put Ollama models into a shared store before any server starts (None: not done that way here)."""

    def load_models(self, name: str, parent: pulumi.Resource, *, service: str, models: Sequence[str],
                    depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource | None:
        """Pull Ollama models into a running server (None: not done that way here)."""

    # ------------------------------------------------------------------ telemetry
    def telemetry(self) -> NodeTelemetry:
        """What collects metrics and logs here: the monitoring stack starts those agents."""

    # ------------------------------------------------------------------ scheduled work
    def schedule(self, name: str, parent: pulumi.Resource, job: ScheduledJob,
                 depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource:
        """Run `job.script` on its schedule, from now until the resource is deleted (which removes the
        schedule, never what the job wrote): a systemd timer or cron entry on a host, a CronJob on Kubernetes."""
