"""OctoArmService: the OctoLLM orchestrator, reflex layer and arms."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.config.schema import OctoLlmConfig, ServicePlacement
from components.platforms.base import Platform
from components.platforms.workload import GRACE_SERVICE, PortSpec, ServiceSpec, http_health


@dataclass
class OctoArmServiceArgs:
    config: OctoLlmConfig
    platform: Platform
    llm_url: str  # internal URL of the inference endpoint
    database_url: pulumi.Input[str]  # secret: in-cluster/in-host PostgreSQL or a managed one
    redis_url: pulumi.Input[str]  # secret
    qdrant_url: str
    qdrant_api_key: pulumi.Input[str]
    openai_api_key: pulumi.Input[str] | None = None
    anthropic_api_key: pulumi.Input[str] | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)


def service_specs(args: OctoArmServiceArgs) -> list[ServiceSpec]:
    """The orchestrator, reflex layer and every arm as platform-neutral specs."""
    cfg = args.config
    bind = args.platform.cfg.publish_address
    redis_url = pulumi.Output.secret(args.redis_url)
    common_env = {"QDRANT_URL": args.qdrant_url, "LLM_BASE_URL": args.llm_url,
                  "OLLAMA_BASE_URL": args.llm_url, "LOG_FORMAT": "json"}
    common_secret = {"REDIS_URL": redis_url, "QDRANT_API_KEY": args.qdrant_api_key}
    scale = cfg.autoscaling
    # Used where the platform scales replicas (Kubernetes: an HPA and a disruption budget per service).
    autoscale = (scale.min_replicas, scale.max_replicas, scale.cpu_utilization)

    def spec(service: str, image: str, p: ServicePlacement, env: dict, secret: dict) -> ServiceSpec:
        return ServiceSpec(
            name=service, image=f"{cfg.image_registry}/{image}:{cfg.image_tag}",
            cpus=p.limits.cpus, memory_gb=p.limits.memory_gb,
            env={**env, "PORT": str(p.port), "SERVICE_NAME": service},
            secret_env=secret,
            ports=(PortSpec(p.port, p.port, bind, name="http", metrics_path="/metrics"),),
            health=http_health(p.port, "/health", tool="curl"),
            network=cfg.network, labels=args.labels.get(service, {}), autoscale=autoscale,
            stop_grace_s=GRACE_SERVICE,  # requests in flight (some wait on an LLM) complete
        )

    orch_secret = {
        **common_secret,
        "DATABASE_URL": pulumi.Output.secret(args.database_url),
    }
    fallback = []
    # Cloud keys reach the orchestrator only: it alone decides when to fall back to a cloud API.
    if args.openai_api_key is not None:
        orch_secret["OPENAI_API_KEY"] = args.openai_api_key
        fallback.append("openai")
    if args.anthropic_api_key is not None:
        orch_secret["ANTHROPIC_API_KEY"] = args.anthropic_api_key
        fallback.append("anthropic")
    # Arms register themselves with the orchestrator (ARM_NAME, ARM_URL): adding an arm does not
    # touch the orchestrator's inputs, so it is not restarted.
    orch_env = {**common_env, "REFLEX_URL": f"http://reflex-layer:{cfg.reflex.port}",
                "LLM_FALLBACK": ",".join(fallback) or "none", "LLM_MAX_PARALLEL": "4"}
    orchestrator_url = f"http://orchestrator:{cfg.orchestrator.port}"
    out = [
        spec("orchestrator", "orchestrator", cfg.orchestrator, orch_env, orch_secret),
        spec("reflex-layer", "reflex-layer", cfg.reflex,
             {"ORCHESTRATOR_URL": orchestrator_url}, {"REDIS_URL": redis_url}),
    ]
    for arm, p in sorted(cfg.arms.items()):
        out.append(spec(f"arm-{arm}", f"arm-{arm}", p,
                        {**common_env, "ORCHESTRATOR_URL": orchestrator_url, "ARM_NAME": arm,
                         "ARM_URL": f"http://arm-{arm}:{p.port}"}, common_secret))
    return out


class OctoArmService(pulumi.ComponentResource):
    urls: dict[str, str]
    services: list[str]

    def __init__(self, name: str, args: OctoArmServiceArgs, opts: pulumi.ResourceOptions | None = None,
                 depends_on: list[pulumi.Resource] | None = None):
        super().__init__("octollm:index:OctoArmService", name, None, opts)
        host = args.platform
        self.containers = {}
        self.urls = {}
        self.specs = service_specs(args)
        for spec in self.specs:
            self.containers[spec.name] = host.run(f"{name}-{spec.name}", spec, self, depends_on=depends_on or [])
            self.urls[spec.name] = host.url(spec.name, spec.ports[0].host, spec.ports[0].container)
        self.services = [s.name for s in self.specs]
        self.register_outputs({"urls": self.urls, "services": self.services})
