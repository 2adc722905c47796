"""Applications of the homelab seeds: Open WebUI, Portainer, homelab-ai (seed 004), worker infra (seed 002)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.config.schema import HomelabAiConfig, OpenWebUiConfig, PortainerConfig, WorkerConfig
from components.services.data_services import redis_spec, secret_or_generated
from components.platforms.base import Platform
from components.services.shared_model_store import SharedModelStore
from components.platforms.workload import GRACE_SERVICE, MountSpec, PortSpec, ServiceSpec, http_health

# Images with no shell and no HTTP client cannot run a Docker health check; Prometheus probes
# them over HTTP instead (the blackbox `http_2xx` module), which also raises ProbeFailed.
PROBED_NOT_HEALTHCHECKED = {"portainer": "/api/system/status"}


def _data_dir(name: str, parent: pulumi.Resource, host: Platform, service: str,
              store: SharedModelStore | None, owner: str) -> tuple[str, pulumi.Resource]:
    """The service's data directory: its store (a dataset) when given, else one under appdata."""
    if store is not None:
        return store.path, store.ready
    path = host.appdata(service)
    return path, host.ensure_dirs(f"{name}-data-dir", parent, [path], owner=owner)


@dataclass
class OpenWebUiArgs:
    config: OpenWebUiConfig
    platform: Platform
    ollama_url: str  # the load balancer, or the single Ollama node
    secret_key: pulumi.Input[str] | None = None
    store: SharedModelStore | None = None
    rotation: str | None = None


class OpenWebUi(pulumi.ComponentResource):
    url: str

    def __init__(self, name: str, args: OpenWebUiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:OpenWebUi", name, None, opts)
        cfg, host = args.config, args.platform
        # Open WebUI signs sessions with this key: generated once and kept, so logins survive restarts.
        self.secret_key = secret_or_generated(self, f"{name}-secret-key", args.secret_key, length=48,
                                              rotation=args.rotation)
        data, dirs = _data_dir(name, self, host, "open-webui", args.store, host.cfg.data_owner)
        self.container = host.run(f"{name}-open-webui", ServiceSpec(
            name="open-webui", image=host.image_ref("open-webui"),
            cpus=cfg.limits.cpus, memory_gb=cfg.limits.memory_gb,
            env={"OLLAMA_BASE_URL": args.ollama_url, "WEBUI_AUTH": "True", "ENABLE_SIGNUP": "False",
                 "ANONYMIZED_TELEMETRY": "False"},
            secret_env={"WEBUI_SECRET_KEY": self.secret_key},
            ports=(PortSpec(8080, cfg.port, host.cfg.publish_address),),
            mounts=(MountSpec("/app/backend/data", data),),
            health=http_health(8080, "/health", tool="curl", start_period_s=120),
            network=cfg.network, ipv4_address=cfg.ipv4_address, stateful=True, stop_grace_s=GRACE_SERVICE,
        ), self, depends_on=[dirs])
        self.url = f"http://{host.cfg.address}:{cfg.port}"
        self.register_outputs({"url": self.url})


@dataclass
class PortainerArgs:
    config: PortainerConfig
    platform: Platform
    store: SharedModelStore | None = None


class Portainer(pulumi.ComponentResource):
    url: str

    def __init__(self, name: str, args: PortainerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:Portainer", name, None, opts)
        cfg, host = args.config, args.platform
        data, dirs = _data_dir(name, self, host, "portainer", args.store, "0:0")
        self.container = host.run(f"{name}-portainer", ServiceSpec(
            name="portainer", image=host.image_ref("portainer"), cpus=cfg.limits.cpus,
            memory_gb=cfg.limits.memory_gb,
            ports=(PortSpec(9000, cfg.port, host.cfg.publish_address),),
            mounts=(MountSpec("/data", data),), docker_socket=True,
            health=None, network=cfg.network, stateful=True, stop_grace_s=GRACE_SERVICE,
        ), self, depends_on=[dirs])
        self.url = f"http://{host.cfg.address}:{cfg.port}"
        self.register_outputs({"url": self.url})


@dataclass
class WorkerInfraArgs:
    config: WorkerConfig
    platform: Platform
    redis_password: pulumi.Input[str] | None = None
    rotation: str | None = None


class WorkerInfra(pulumi.ComponentResource):
    """Seed 002: Redis (AOF, password) for the task queue. Its LLM server is an inference node."""

    redis_password: pulumi.Output[str]

    def __init__(self, name: str, args: WorkerInfraArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:WorkerInfra", name, None, opts)
        cfg, host = args.config, args.platform
        self.redis_password = secret_or_generated(self, f"{name}-redis-password", args.redis_password,
                                                  rotation=args.rotation)
        data = cfg.redis_data_path or host.appdata("worker-redis")
        dirs = host.ensure_dirs(f"{name}-data-dir", self, [data])
        self.redis = host.run(f"{name}-redis", redis_spec(
            "worker-redis", host.image_ref("redis"), cfg.redis, host.cfg.publish_address, data,
            host.cfg.data_owner, cfg.network, self.redis_password, {}), self, depends_on=[dirs])
        self.register_outputs({"redis": "redis://worker-redis:6379"})


@dataclass
class HomelabAiArgs:
    config: HomelabAiConfig
    platform: Platform
    backend_url: str
    vllm_image: str


class HomelabAi(pulumi.ComponentResource):
    """Seed 004: llm-router (API gateway), llm-manager (spawns vLLM containers) and the dashboard."""

    urls: dict[str, str]

    def __init__(self, name: str, args: HomelabAiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:HomelabAi", name, None, opts)
        cfg, host = args.config, args.platform
        bind = host.cfg.publish_address
        # llm-manager starts vLLM containers on the network it is itself attached to; the name
        # comes from that network resource, so the two cannot drift apart (seed 004).
        network_name = host.network_name(cfg.network)

        def spec(svc: str, image: str, port: int, env: dict, **kw) -> ServiceSpec:
            return ServiceSpec(
                name=svc, image=f"{cfg.registry}/{image}:{cfg.image_tag}",
                cpus=cfg.limits.cpus, memory_gb=cfg.limits.memory_gb, env={**env, "PORT": str(port)},
                ports=(PortSpec(port, port, bind, metrics_path=None),),
                health=http_health(port, "/health", tool="curl"), network=cfg.network,
                stop_grace_s=GRACE_SERVICE, **kw)

        self.containers = {
            "llm-router": host.run(f"{name}-llm-router", spec("llm-router", "llm-router", cfg.router_port,
                                        {"BACKEND_URL": args.backend_url,
                                         "MANAGER_URL": f"http://llm-manager:{cfg.manager_port}"}), self),
            "dashboard": host.run(f"{name}-dashboard", spec("dashboard", "local-ai-dashboard", cfg.dashboard_port,
                                       {"ROUTER_URL": f"http://llm-router:{cfg.router_port}"}), self),
        }
        self.containers["llm-manager"] = host.run(f"{name}-llm-manager", spec(
            "llm-manager", "llm-manager", cfg.manager_port,
            {"VLLM_IMAGE": args.vllm_image, "DOCKER_NETWORK": network_name}, docker_socket=True), self)
        self.urls = {svc: f"http://{host.cfg.address}:{port}" for svc, port in
                     (("llm-router", cfg.router_port), ("llm-manager", cfg.manager_port),
                      ("dashboard", cfg.dashboard_port))}
        self.register_outputs({"urls": self.urls, "dockerNetwork": network_name})
