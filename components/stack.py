"""The stack layer: build the platforms the config names, then compose every component once.

`deploy()` is the one composition path for every platform: Docker hosts (local socket or SSH) and a
Kubernetes namespace alike get the same stores, inference nodes, data services, OctoLLM, apps,
monitoring and outputs. Components see only the `Platform` protocol; what differs between platforms
lives in their adapters (components/platforms), which only this module builds.
"""

from __future__ import annotations


import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.config import rules
from components.config.inventory import preflight_spec
from components.config.loading import load  # noqa: F401 - __main__ calls stack.load()
from components.config.schema import StackConfig
from components.platforms.base import Platform
from components.platforms.docker_host import DockerHost, DockerHostArgs, docker_host_url, docker_ssh_opts
from components.platforms.workload import EVERY_POD, Flow
from components.services import monitoring_stack as ms
from components.services.apps import (PROBED_NOT_HEALTHCHECKED, HomelabAi, HomelabAiArgs, OpenWebUi, OpenWebUiArgs,
                                      Portainer, PortainerArgs, WorkerInfra, WorkerInfraArgs)
from components.services import backups as backups_
from components.services.backups import Backups, BackupsArgs, backup_spec
from components.services.data_services import DataServices, DataServicesArgs
from components.services.gpu_inference_node import GpuInferenceNode, GpuInferenceNodeArgs
from components.services.load_balancer import LoadBalancer, LoadBalancerArgs
from components.services.monitoring_stack import MonitoringStack, MonitoringStackArgs, ScrapeJob
from components.services.octo_arm_service import OctoArmService, OctoArmServiceArgs
from components.services.shared_model_store import SharedModelStore, SharedModelStoreArgs

PROJECT = "octollm-infra"

UNRAID_ICONS = {
    "grafana": "https://raw.githubusercontent.com/grafana/grafana/main/public/img/grafana_icon.svg",
    "prometheus": "https://raw.githubusercontent.com/prometheus/docs/main/static/prometheus_logo.png",
    "qdrant": "https://raw.githubusercontent.com/qdrant/qdrant/master/docs/logo.svg",
    "ollama": "https://raw.githubusercontent.com/ollama/ollama/main/app/assets/app.png",
    "orchestrator": "https://raw.githubusercontent.com/doublegate/OctoLLM/main/docs/assets/octollm.png",
}
UNRAID_WEBUI = {"grafana": "/", "prometheus": "/graph", "qdrant": "/dashboard", "orchestrator": "/docs"}


def unraid_labels(cfg: StackConfig, host: str, service: str, port: int | None) -> dict[str, str]:
    if not cfg.hosts[host].unraid:
        return {}
    out = {}
    if service in UNRAID_ICONS:
        out["net.unraid.docker.icon"] = UNRAID_ICONS[service]
    if service in UNRAID_WEBUI and port:
        out["net.unraid.docker.webui"] = f"http://[IP]:[PORT:{port}]{UNRAID_WEBUI[service]}"
    return out


def build_platforms(cfg: StackConfig, stack: str) -> dict[str, Platform]:
    """One platform per configured host: a Docker host, or the Kubernetes namespace."""
    platforms: dict[str, Platform] = {}
    for name, hc in sorted(cfg.hosts.items()):
        if hc.kind == "kubernetes":
            platforms[name] = kubernetes_platform(cfg, stack, name)
            continue
        auth = None
        ha = cfg.homelab_ai
        if ha is not None and ha.host == name and cfg.registry_password is not None:
            # Private-registry credentials live on this host's provider only, as a secret.
            auth = [docker.ProviderRegistryAuthArgs(
                address=ha.registry.split("/", 1)[0], username=ha.registry_username or "",
                password=pulumi.Output.secret(cfg.registry_password.get_secret_value()))]
        dprov = docker.Provider(
            f"{name}-docker", host=docker_host_url(hc),
            ssh_opts=docker_ssh_opts(name, hc) if hc.kind == "ssh" else None, registry_auth=auth)
        # The remote commands authenticate through ssh-agent (SSH_AUTH_SOCK, see loading.require_ssh_agent),
        # never with a key among their inputs: the read-only preview key and the write key then give the
        # same inputs, a rotated key re-runs nothing, and no key reaches the state.
        cprov = command.Provider(f"{name}-command")
        platforms[name] = DockerHost(name, DockerHostArgs(
            host_name=name, config=hc, stack=stack, docker_provider=dprov, command_provider=cprov,
            images=dict(cfg.images), preflight=preflight_spec(cfg, name, stack)))
    return platforms


def kubernetes_platform(cfg: StackConfig, stack: str, name: str) -> Platform:
    import pulumi_kubernetes as k8s

    from components.platforms.kubernetes import (KubernetesPlatform, KubernetesPlatformArgs,
                                                 default_model_pull_timeout_minutes)

    kc = cfg.kubernetes
    provider = k8s.Provider(
        f"{name}-kubernetes",
        # No kubeconfig in config: the ambient context (KUBECONFIG / ~/.kube/config), as kubectl.
        # upsertExistingObjects stays unset (false): a create never silently takes over an object that
        # already exists (see KubernetesPlatform, and kubernetes.adoptNamespace for the namespace).
        kubeconfig=pulumi.Output.secret(cfg.kubeconfig.get_secret_value()) if cfg.kubeconfig else None,
        context=kc.context, namespace=kc.namespace)
    # Each inference node's pull Job (or, for engines that fetch their own weights, its GPU pods)
    # downloads its models within one await.
    extra = {m: info for m in cfg.model_catalog if (info := cfg.model_info(m))}
    pull_minutes = kc.model_pull_timeout_minutes or default_model_pull_timeout_minutes(
        [list(nc.models) for nc in cfg.all_inference.values()], extra)
    return KubernetesPlatform(name, KubernetesPlatformArgs(
        host_name=name, config=cfg.hosts[name], kube=kc, stack=stack, provider=provider, images=dict(cfg.images),
        model_pull_timeout_minutes=pull_minutes))


def deploy(cfg: StackConfig) -> None:
    stack = pulumi.get_stack()
    platforms = build_platforms(cfg, stack)
    secret = configured_secrets(cfg)

    stores = {name: SharedModelStore(name, SharedModelStoreArgs(config=sc, server=platforms[sc.host]))
              for name, sc in sorted(cfg.model_stores.items())}

    nodes: dict[str, GpuInferenceNode] = {}
    # Writers first: read-only nodes on a shared store wait for the writer's model pull.
    for name, nc in sorted(cfg.all_inference.items(), key=lambda kv: (kv[1].read_only, kv[0])):
        store = stores.get(nc.model_store) if nc.model_store else None
        wait = []
        if nc.read_only and store is not None:
            wait = [n.pull for n in nodes.values() if n.cfg.model_store == nc.model_store and n.pull]
        key = rules.engine_image_key(nc, gpu=nc.gpu is not None and cfg.hosts[nc.host].has_gpu)
        nodes[name] = GpuInferenceNode(name, GpuInferenceNodeArgs(
            config=nc, platform=platforms[nc.host], image=nc.image or cfg.image(key), store=store,
            temp_store=stores.get(nc.temp_store) if nc.temp_store else None,
            labels=unraid_labels(cfg, nc.host, "ollama", None) if nc.engine == "ollama" else {},
            wait_for=wait))

    ds = cfg.data_services
    data = None
    if ds is not None and ds.external is None:
        data = DataServices("data", DataServicesArgs(
            config=ds, platform=platforms[ds.host], postgres_password=secret["postgres"],
            redis_password=secret["redis"], qdrant_api_key=secret["qdrant"], rotate=dict(cfg.rotate),
            labels={"qdrant": unraid_labels(cfg, ds.host, "qdrant", ds.qdrant.http_port if ds.qdrant else None)}))

    if cfg.backups is not None:  # consistent copies of the data services, on a schedule on their host
        bh = platforms[cfg.backups.host]
        job = None
        if cfg.hosts[cfg.backups.host].kind == "kubernetes":  # a CronJob writing into a pvc store
            job = backups_.kubernetes_job(cfg, stack, bh.image_ref, bh.JOB_RUN_DIR)
        pulumi.export("backups", Backups("backups", BackupsArgs(
            config=cfg.backups, platform=bh, stack=stack, store=stores.get(cfg.backups.store or ""),
            spec=backup_spec(cfg, stack, bh.container_name, bh.appdata), job=job)).target)

    octo = None
    if cfg.octollm:
        oc = cfg.octollm
        octo = OctoArmService("octollm", OctoArmServiceArgs(
            config=oc, platform=platforms[oc.host], llm_url=nodes[oc.llm_endpoint].internal_url,
            **data_connections(cfg, data),
            openai_api_key=secret["openai"], anthropic_api_key=secret["anthropic"],
            labels={"orchestrator": unraid_labels(cfg, oc.host, "orchestrator", oc.orchestrator.port)}))

    apps = deploy_apps(cfg, platforms, nodes, stores, secret)

    monitoring = None
    jobs: list[ScrapeJob] = []
    if cfg.monitoring:
        mc = cfg.monitoring
        probe_model = mc.probe_model or _default_probe_model(cfg)
        monitoring = MonitoringStack("monitoring", MonitoringStackArgs(
            config=mc, central=platforms[mc.host], hosts={h: platforms[h] for h in rules.monitored_hosts(cfg)},
            jobs=scrape_jobs(cfg, nodes, octo, probe_model) + app_jobs(cfg, apps),
            grafana_admin_password=secret["grafana"], probe_modules=probe_modules(cfg, probe_model),
            redis_password=data.redis_password if data else None,
            postgres_dsn=postgres_dsn(cfg, data, "?sslmode=disable"),
            data_host=platforms[ds.host] if data else None,
            data_network=ds.network if data else None, rotate=cfg.rotate.get("grafana"),
            labels={s: unraid_labels(cfg, mc.host, s, p) for s, p in
                    (("grafana", mc.grafana_port), ("prometheus", mc.prometheus_port))}))
        jobs = monitoring.jobs

    # What may talk to what, from what is deployed; a platform that enforces it per connection does.
    flows = service_flows(cfg, nodes, octo, jobs, secret) + backups_.flows(cfg, stack)
    routes = {"orchestrator": ("orchestrator", cfg.octollm.orchestrator.port)} if octo else {}
    if monitoring:
        routes["grafana"] = ("grafana", 3000)
    public: dict[str, str] = {}
    for name, platform in sorted(platforms.items()):
        published = platform.connect("network", flows, routes)
        if published is not None:
            public.update(published)
            pulumi.export("ingressHosts", published)

    urls = service_urls(nodes, data, octo)
    if data:
        pulumi.export("postgresPassword", data.postgres_password)
        pulumi.export("redisPassword", data.redis_password)
        pulumi.export("qdrantApiKey", data.qdrant_api_key)
    if monitoring:
        pulumi.export("grafanaUrl", public.get("grafana", monitoring.grafana_url))
        pulumi.export("grafanaAdminPassword", monitoring.grafana_admin_password)
        urls.update({"grafana": monitoring.grafana_url, "prometheus": monitoring.prometheus_url})
    for key, app in apps.items():
        if hasattr(app, "urls"):
            urls.update(app.urls)
        elif hasattr(app, "url"):
            urls[key] = app.url
    pulumi.export("urls", dict(sorted(urls.items())))
    pulumi.export("models", {name: n.models for name, n in sorted(nodes.items())})
    pulumi.export("capacity", rules.capacity(cfg))


def _default_probe_model(cfg: StackConfig) -> str | None:
    """The stack's probe model when monitoring.probeModel is not set: the first chat model listed on an Ollama
    node, writers first. Listed order, not size: adding a model later moves no probe, so it changes the
    node's pull step and nothing in monitoring."""
    nodes = sorted(cfg.all_inference.items(), key=lambda kv: (kv[1].read_only, kv[0]))
    for name, nc in nodes:
        if nc.engine == "ollama":
            chat = [m for m in served_models(cfg, name) if _chat_model(m)]
            if chat:
                return chat[0]
    return None


def _chat_model(model: str) -> bool:
    return "embed" not in model  # an embedding model answers no /api/generate


def served_models(cfg: StackConfig, name: str) -> list[str]:
    """The models an Ollama node serves: its own, and on a read-only node those its store's writers pull."""
    nc = cfg.all_inference[name]
    models = list(nc.models)
    if nc.read_only and nc.model_store:
        for other, oc in sorted(cfg.all_inference.items()):
            if oc.engine == "ollama" and not oc.read_only and oc.model_store == nc.model_store:
                models += [m for m in oc.models if m not in models]
    return models


def probe_models(cfg: StackConfig, probe_model: str | None) -> dict[str, str]:
    """Ollama node -> the model its generation probe asks for: `probe_model` (monitoring.probeModel, else
    _default_probe_model) where the node serves it, else the first chat model it serves. A read-only node
    whose store's models this config does not list gets `probe_model`; a node serving only embedding models
    gets none (the `ollama` job still probes its API)."""
    out = {}
    for name, nc in sorted(cfg.all_inference.items()):
        if nc.engine != "ollama":
            continue
        served = served_models(cfg, name)
        chat = [m for m in served if _chat_model(m)]
        if probe_model and (probe_model in served or (nc.read_only and not served)):
            out[name] = probe_model
        elif chat:
            out[name] = chat[0]
    return out


def probe_modules(cfg: StackConfig, probe_model: str | None) -> dict[str, dict]:
    """The blackbox modules the generation probes of scrape_jobs use, by name."""
    names = ms.ollama_generate_module_names(probe_models(cfg, probe_model).values())
    out = {names[m]: ms.ollama_generate_module(m) for m in sorted(names)}
    if any(nc.engine == "llamacpp" for nc in cfg.all_inference.values()):
        out[ms.LLAMACPP_COMPLETION_MODULE] = ms.llamacpp_completion_module()
    return out


def scrape_jobs(cfg: StackConfig, nodes: dict[str, GpuInferenceNode], octo: OctoArmService | None,
                probe_model: str | None) -> list[ScrapeJob]:
    """What Prometheus scrapes, derived from what this program deploys.

    probe_model: monitoring.probeModel, else _default_probe_model (see probe_models)."""
    mc = cfg.monitoring
    jobs: list[ScrapeJob] = []

    def reach(host: str, network: str | None, service: str, internal: int, published: int | None) -> str:
        if host == mc.host and network == mc.network:
            return f"{service}:{internal}"
        return f"{cfg.hosts[host].address}:{published}"

    probed = probe_models(cfg, probe_model)
    modules = ms.ollama_generate_module_names(probed.values())
    version, metrics = [], {}
    latency: list[tuple[str, tuple[tuple[str, str], ...]]] = []  # (URL, its labels) of every generation probe
    for name, node in sorted(nodes.items()):
        nc = node.cfg
        for svc, port, _ in rules.inference_instances(name, nc):
            addr = reach(nc.host, nc.network, svc, nc.internal_port, port)
            if nc.engine == "ollama":
                version.append(f"http://{addr}/api/version")
                if name in probed:
                    latency.append((f"http://{addr}/api/generate", (
                        (ms.PARAM_MODULE, modules[probed[name]]), ("model", probed[name]), ("node", name))))
            else:
                metrics.setdefault(nc.engine, []).append(addr)
                if nc.engine == "llamacpp":
                    latency.append((f"http://{addr}/completion", (
                        (ms.PARAM_MODULE, ms.LLAMACPP_COMPLETION_MODULE), ("model", nc.model_path or ""),
                        ("node", name))))
    if version:
        jobs.append(ScrapeJob("ollama", tuple(version), probe_module="http_2xx"))
    if latency:
        # Each target names its own module (probe_module: the first target's).
        jobs.append(ScrapeJob(ms.PROBE_LATENCY_JOB, tuple(u for u, _ in latency), probe_module=latency[0][1][0][1],
                              interval_s=60, target_labels=tuple(lab for _, lab in latency)))
    for engine, targets in sorted(metrics.items()):
        jobs.append(ScrapeJob(engine, tuple(targets)))
    if cfg.data_services and cfg.data_services.qdrant:
        ds = cfg.data_services
        jobs.append(ScrapeJob("qdrant", (f"http://{reach(ds.host, ds.network, 'qdrant', 6333, ds.qdrant.http_port)}"
                                         "/healthz",), probe_module="http_2xx"))
    if octo is not None:
        oc = cfg.octollm
        jobs.append(ScrapeJob("octollm", tuple(
            reach(oc.host, oc.network, s.name, s.ports[0].container, s.ports[0].host) for s in octo.specs)))
    return jobs


def postgres_dsn(cfg: StackConfig, data: DataServices | None, query: str = "") -> pulumi.Output[str] | None:
    """The deployed PostgreSQL's connection string (secret), by its container/Service name."""
    if data is None or data.postgres_password is None:
        return None
    pg = cfg.data_services.postgres
    return pulumi.Output.concat("postgresql://", pg.user, ":", data.postgres_password,
                                f"@postgres:5432/{pg.database}{query}")


def data_connections(cfg: StackConfig, data: DataServices | None) -> dict:
    """Connection strings for OctoLLM: the deployed data services, or the managed ones from secret config."""
    ds = cfg.data_services
    if ds is not None and ds.external is not None:
        return {"database_url": pulumi.Output.secret(cfg.postgres_url.get_secret_value()),
                "redis_url": pulumi.Output.secret(cfg.redis_url.get_secret_value()),
                "qdrant_url": ds.external.qdrant_url,
                "qdrant_api_key": pulumi.Output.secret(cfg.qdrant_api_key.get_secret_value())}
    return {"database_url": postgres_dsn(cfg, data),
            "redis_url": pulumi.Output.concat("redis://:", data.redis_password, "@redis:6379/0"),
            "qdrant_url": "http://qdrant:6333", "qdrant_api_key": data.qdrant_api_key}


SECRET_CONFIG = {"postgres": "postgres_password", "redis": "redis_password", "qdrant": "qdrant_api_key",
                 "grafana": "grafana_admin_password", "openai": "openai_api_key",
                 "anthropic": "anthropic_api_key", "worker_redis_password": "worker_redis_password",
                 "load_balancer_users": "load_balancer_users", "webui_secret_key": "webui_secret_key"}


def configured_secrets(cfg: StackConfig) -> dict[str, pulumi.Output[str] | None]:
    """Every secret from config, as a secret Output (None where not set: components generate it)."""
    return {key: (pulumi.Output.secret(getattr(cfg, field).get_secret_value()) if getattr(cfg, field) else None)
            for key, field in SECRET_CONFIG.items()}


def service_urls(nodes: dict[str, GpuInferenceNode], data: DataServices | None,
                 octo: OctoArmService | None) -> dict[str, str]:
    urls: dict[str, str] = {}
    for n in nodes.values():
        urls.update(n.endpoints)
    if data:
        urls.update(data.urls)
    if octo:
        urls.update(octo.urls)
    return urls


def ollama_endpoints(nodes: dict[str, GpuInferenceNode]) -> list[str]:
    return [url for name, n in sorted(nodes.items()) if n.cfg.engine == "ollama"
            for _, url in sorted(n.endpoints.items())]


def deploy_apps(cfg: StackConfig, hosts: dict[str, Platform], nodes: dict[str, GpuInferenceNode],
                stores: dict[str, SharedModelStore], secrets: dict) -> dict:
    apps: dict = {}
    if cfg.workers:
        apps["workers"] = WorkerInfra("workers", WorkerInfraArgs(
            config=cfg.workers, platform=hosts[cfg.workers.host], redis_password=secrets["worker_redis_password"],
            rotation=cfg.rotate.get("workerRedis")))
    if cfg.load_balancer:
        lb = cfg.load_balancer
        apps["load-balancer"] = LoadBalancer("load-balancer", LoadBalancerArgs(
            config=lb, platform=hosts[lb.host], backends=ollama_endpoints(nodes),
            users=secrets["load_balancer_users"],
            latency_target_s=cfg.monitoring.inference_latency_alert_s if cfg.monitoring else None))
    if cfg.open_webui:
        ow = cfg.open_webui
        target = apps["load-balancer"].url if "load-balancer" in apps else ollama_endpoints(nodes)[0]
        apps["open-webui"] = OpenWebUi("open-webui", OpenWebUiArgs(
            config=ow, platform=hosts[ow.host], ollama_url=target, secret_key=secrets["webui_secret_key"],
            rotation=cfg.rotate.get("webuiSecretKey"),
            store=stores.get(ow.data_store) if ow.data_store else None))
    if cfg.portainer:
        pt = cfg.portainer
        apps["portainer"] = Portainer("portainer", PortainerArgs(
            config=pt, platform=hosts[pt.host], store=stores.get(pt.data_store) if pt.data_store else None))
    if cfg.homelab_ai:
        ha = cfg.homelab_ai
        backend = nodes[ha.backend]
        same = backend.cfg.host == ha.host and backend.cfg.network == ha.network
        url = backend.internal_url if same else next(iter(backend.endpoints.values()))
        apps["homelab-ai"] = HomelabAi("homelab-ai", HomelabAiArgs(
            config=ha, platform=hosts[ha.host], backend_url=url,
            vllm_image=backend.cfg.image or cfg.image("vllm")))
    return apps


def app_jobs(cfg: StackConfig, apps: dict) -> list[ScrapeJob]:
    jobs = []
    if cfg.load_balancer:
        lb = cfg.load_balancer
        jobs.append(ScrapeJob("traefik", (f"{cfg.hosts[lb.host].address}:{lb.metrics_port}",)))
    if cfg.portainer:
        pt = cfg.portainer
        jobs.append(ScrapeJob("portainer", (f"http://{cfg.hosts[pt.host].address}:{pt.port}"
                                            f"{PROBED_NOT_HEALTHCHECKED['portainer']}",), probe_module="http_2xx"))
    if cfg.open_webui:
        ow = cfg.open_webui
        jobs.append(ScrapeJob("open-webui", (f"http://{cfg.hosts[ow.host].address}:{ow.port}/health",),
                              probe_module="http_2xx"))
    return jobs


def _target_service(target: str) -> tuple[str, int]:
    hostport = target.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return host, int(port)


def service_flows(cfg: StackConfig, nodes: dict, octo, jobs: list[ScrapeJob], secret: dict) -> list[Flow]:
    """Every connection the services make, as (source, destination, ports). Anything else is denied."""
    flows: list[Flow] = []
    for name, node in sorted(nodes.items()):
        # Everything may call the LLM endpoint.
        flows.append(Flow(EVERY_POD, name, (node.cfg.internal_port,)))
        if node.pull is not None:
            flows.append(Flow(f"{name}-pull-models", "world", (443,)))  # the model registry
    ds = cfg.data_services
    external = ds is not None and ds.external is not None
    if octo is not None:
        oc = cfg.octollm
        arms = [s for s in octo.specs if s.name.startswith("arm-")]
        talkers = ["orchestrator", "reflex-layer", *(a.name for a in arms)]
        for s in ["reflex-layer", *(a.name for a in arms)]:
            flows.append(Flow(s, "orchestrator", (oc.orchestrator.port,)))
        for s in [*arms, next(x for x in octo.specs if x.name == "reflex-layer")]:
            flows.append(Flow("orchestrator", s.name, (s.ports[0].container,)))
        if external:
            flows += [Flow(s, "world", (5432, 6379, 443, 6333, 6334)) for s in talkers]
        else:
            flows += [Flow(s, "redis", (6379,)) for s in talkers]
            flows += [Flow(s, "qdrant", (6333, 6334)) for s in talkers if s != "reflex-layer"]
            flows.append(Flow("orchestrator", "postgres", (5432,)))
        if secret.get("openai") is not None or secret.get("anthropic") is not None:
            flows.append(Flow("orchestrator", "world", (443,)))  # cloud API fallback
    if cfg.monitoring:
        for job in jobs:
            for t in job.targets:
                svc, port = _target_service(t)
                if job.probe_module:
                    flows.append(Flow("blackbox-exporter", svc, (port,)))
                else:
                    flows.append(Flow("prometheus", svc, (port,)))
        flows.append(Flow("prometheus", "blackbox-exporter", (9115,)))
        flows += [Flow("grafana", "prometheus", (9090,)), Flow("grafana", "loki", (3100,)),
                  Flow("alloy", "loki", (3100,)), Flow("alloy", "world", (443,))]  # the Kubernetes API
        if not external and ds is not None:
            flows += [Flow("postgres-exporter", "postgres", (5432,)), Flow("redis-exporter", "redis", (6379,))]
    return flows
