"""LoadBalancer: Traefik in front of every Ollama instance of the stack, on every host."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import yaml

from components.config.schema import LoadBalancerConfig
from components.platforms.base import Platform
from components.platforms.workload import GRACE_SERVICE, ConfigFileSpec, HealthSpec, PortSpec, ServiceSpec

ENTRYPOINT_PORT = 8000
METRICS_PORT = 8082
DASHBOARD_PORT = 8080


def dynamic_config(cfg: LoadBalancerConfig, backends: list[str]) -> str:
    """Traefik file-provider config: one router and one health-checked service over `backends`."""
    router = {"rule": cfg.rule, "service": "ollama", "entryPoints": ["ollama"]}
    if cfg.basic_auth:
        router["middlewares"] = ["ollama-auth"]
    return yaml.safe_dump({"http": {
        "routers": {"ollama": router},
        "services": {"ollama": {"loadBalancer": {
            "servers": [{"url": b} for b in backends],
            "healthCheck": {"path": cfg.health_path, "interval": f"{cfg.health_interval_s}s",
                            "timeout": f"{cfg.health_timeout_s}s"},
        }}},
    }}, sort_keys=False)


def auth_config(users: str) -> str:
    lines = [u.strip() for u in users.splitlines() if u.strip()]
    return yaml.safe_dump({"http": {"middlewares": {"ollama-auth": {"basicAuth": {"users": lines}}}}})


@dataclass
class LoadBalancerArgs:
    config: LoadBalancerConfig
    platform: Platform
    backends: list[str]  # URLs of every Ollama instance
    users: pulumi.Input[str] | None = None  # htpasswd lines, secret
    # The inference latency target (seconds): a histogram bucket, so the P95 alert can see it crossed.
    latency_target_s: float | None = None


# Traefik's default buckets (0.1, 0.3, 1.2, 5 s) cap any quantile at 5 s: generations take longer.
LATENCY_BUCKETS_S = (0.1, 0.3, 1.2, 2.5, 5, 10, 20, 30, 60, 120)


class LoadBalancer(pulumi.ComponentResource):
    url: str
    backends: list[str]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:LoadBalancer", name, None, opts)
        cfg, host = args.config, args.platform
        self.backends = list(args.backends)
        files = [ConfigFileSpec("dynamic/ollama.yml", dynamic_config(cfg, self.backends))]
        if cfg.basic_auth:
            # A separate file, so the users stay secret while the routing stays readable in diffs.
            files.append(ConfigFileSpec("dynamic/auth.yml", pulumi.Output.secret(args.users).apply(auth_config)))
        command = [
            f"--entrypoints.ollama.address=:{ENTRYPOINT_PORT}",
            f"--entrypoints.metrics.address=:{METRICS_PORT}",
            "--metrics.prometheus=true", "--metrics.prometheus.entrypoint=metrics",
            "--metrics.prometheus.buckets=" + ",".join(
                f"{b:g}" for b in sorted({*LATENCY_BUCKETS_S, *([args.latency_target_s] if args.latency_target_s else [])})),
            "--ping=true", "--ping.entrypoint=metrics",
            # The file provider watches the directory, so a changed backend list is picked up
            # without restarting the container.
            "--providers.file.directory=/etc/octollm/dynamic", "--providers.file.watch=true",
            "--accesslog=true", "--log.level=INFO",
        ]
        ports = [PortSpec(ENTRYPOINT_PORT, cfg.port, host.cfg.llm_bind, name="ollama"),
                 PortSpec(METRICS_PORT, cfg.metrics_port, host.cfg.publish_address, name="metrics",
                          metrics_path="/metrics")]
        if cfg.dashboard_port:
            command += ["--api.dashboard=true", "--api.insecure=true",
                        f"--entrypoints.traefik.address=:{DASHBOARD_PORT}"]
            ports.append(PortSpec(DASHBOARD_PORT, cfg.dashboard_port, host.cfg.publish_address, name="dashboard"))
        self.container = host.run(f"{name}-traefik", ServiceSpec(
            name="traefik", image=host.image_ref("traefik"), cpus=cfg.limits.cpus, memory_gb=cfg.limits.memory_gb,
            command=tuple(command), ports=tuple(ports), files=tuple(files),
            health=HealthSpec(("CMD", "traefik", "healthcheck", "--ping", "--ping.entrypoint=metrics",
                               f"--entrypoints.metrics.address=:{METRICS_PORT}"), http_path="/ping",
                              port=METRICS_PORT),
            network=cfg.network,
            # Longer than Traefik's own 10 s entry-point grace, so open connections drain first.
            stop_grace_s=GRACE_SERVICE,
        ), self)
        self.url = f"http://{host.cfg.address}:{cfg.port}"
        self.register_outputs({"url": self.url, "backends": self.backends})
