"""Cross-field rules over a structurally valid StackConfig.

`inventory(cfg)` lists every container the program will place, with its host, published
ports, limits, VRAM and static address. The rules check that inventory; the capacity stack
output is computed from it; and the program tests check that what the components register
matches it, so the validator cannot drift from what is deployed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from components.config import catalog
from components.config.schema import WORKER_LLM_SERVER, HostConfig, InferenceConfig, Problem, StackConfig
from components.config.values import allowed_root_problem


@dataclass(frozen=True)
class PublishedPort:
    port: int
    bind: str
    protocol: str = "tcp"


@dataclass
class Placement:
    host: str
    service: str  # unique per host; also the container's DNS alias
    path: str  # config key the placement comes from, for messages
    cpus: float
    memory_gb: float
    ports: list[PublishedPort] = field(default_factory=list)
    network: str | None = None
    ipv4_address: str | None = None
    vram_gb: float = 0.0
    gpu_indices: tuple[int, ...] = ()


def node_path(cfg: StackConfig, name: str) -> str:
    """Config key of an inference node (the worker's LLM server lives under workers.servers)."""
    if name == WORKER_LLM_SERVER and cfg.workers is not None and name not in cfg.inference:
        return f"workers.servers.{cfg.workers.backend}"
    return f"inference.{name}"


def _gpu_indices(host: HostConfig, node: InferenceConfig) -> tuple[int, ...]:
    if node.gpu is None or not host.gpus:
        return ()
    if node.gpu.device_ids is not None:
        # Out-of-range or UUID ids are reported by the GPU rules; here they place nothing.
        return tuple(int(d) for d in node.gpu.device_ids if d.isdigit() and int(d) < len(host.gpus))
    count = len(host.gpus) if node.gpu.count == "all" else node.gpu.count
    return tuple(range(min(count, len(host.gpus))))


def node_vram_gb(host: HostConfig, node: InferenceConfig) -> float:
    """VRAM an inference engine holds on each GPU it uses."""
    if node.vram_gb is not None:
        return node.vram_gb
    idx = _gpu_indices(host, node)
    if not idx:
        return 0.0
    usable = [host.gpus[i].vram_gb for i in idx if i < len(host.gpus)]
    if not usable:
        return 0.0  # no such GPU on the host: the GPU rules report it
    gpu_vram = min(usable)
    if node.engine == "vllm":
        # vLLM pre-allocates this fraction of every GPU it is given, whatever the model.
        return round(gpu_vram * node.gpu_memory_utilization, 2)
    if node.engine == "llamacpp":
        info = node.model_info((node.model_path or "").rsplit("/", 1)[-1])
        return min(info.vram_gb, gpu_vram) if info else 0.0
    # A model nobody sized counts as nothing here; check_rules warns about it.
    largest = max((info.vram_gb for m in node.models if (info := node.model_info(m))), default=0.0)
    return min(largest, gpu_vram)


def inference_instances(name: str, node: InferenceConfig) -> list[tuple[str, int, bool]]:
    """(service name, host port, is_primary) of an inference node and its read-only replicas."""
    out = [(name, node.port, True)]
    start = node.replica_port_start or node.port + 1
    out += [(f"{name}-{i + 1}", start + i, False) for i in range(node.replicas)]
    return out


_INVENTORIES: dict[int, tuple[StackConfig, list[Placement]]] = {}


def inventory(cfg: StackConfig) -> list[Placement]:
    """Every container the config places, computed once per (immutable) config."""
    hit = _INVENTORIES.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    places = _inventory(cfg)
    _INVENTORIES[id(cfg)] = (cfg, places)
    return places


def _inventory(cfg: StackConfig) -> list[Placement]:
    out: list[Placement] = []

    # Rules run on configs whose references may not resolve yet; an unknown host binds nowhere special.
    def bind_of(host: str) -> str:
        return cfg.hosts[host].publish_address if host in cfg.hosts else "0.0.0.0"

    def llm_bind_of(host: str) -> str:
        return cfg.hosts[host].llm_bind if host in cfg.hosts else "0.0.0.0"

    for name, node in sorted(cfg.all_inference.items()):
        host = cfg.hosts.get(node.host)
        bind = llm_bind_of(node.host)
        vram = node_vram_gb(host, node) if host else 0.0
        gpus = _gpu_indices(host, node) if host else ()
        for svc, port, primary in inference_instances(name, node):
            out.append(Placement(
                node.host, svc, node_path(cfg, name), node.limits.cpus, node.limits.memory_gb,
                [PublishedPort(port, bind)], node.network,
                node.ipv4_address if primary else None, vram, gpus,
            ))
    ds = cfg.data_services if cfg.data_services and cfg.data_services.external is None else None
    if ds:
        bind = bind_of(ds.host)
        if ds.postgres:
            out.append(Placement(ds.host, "postgres", "dataServices.postgres", ds.postgres.limits.cpus,
                                 ds.postgres.limits.memory_gb, [PublishedPort(ds.postgres.port, bind)], ds.network))
        if ds.redis:
            out.append(Placement(ds.host, "redis", "dataServices.redis", ds.redis.limits.cpus,
                                 ds.redis.limits.memory_gb, [PublishedPort(ds.redis.port, bind)], ds.network))
        if ds.qdrant:
            out.append(Placement(ds.host, "qdrant", "dataServices.qdrant", ds.qdrant.limits.cpus,
                                 ds.qdrant.limits.memory_gb,
                                 [PublishedPort(ds.qdrant.http_port, bind), PublishedPort(ds.qdrant.grpc_port, bind)],
                                 ds.network))
    o = cfg.octollm
    if o:
        bind = bind_of(o.host)
        for svc, key, p in [("orchestrator", "octollm.orchestrator", o.orchestrator),
                            ("reflex-layer", "octollm.reflex", o.reflex)] + [
                (f"arm-{a}", f"octollm.arms.{a}", p) for a, p in sorted(o.arms.items())]:
            out.append(Placement(o.host, svc, key, p.limits.cpus, p.limits.memory_gb,
                                 [PublishedPort(p.port, bind)], o.network))
    w = cfg.workers
    if w:
        ports = [PublishedPort(w.redis.port, bind_of(w.host))] if w.redis.port else []
        out.append(Placement(w.host, "worker-redis", "workers.redis", w.redis.limits.cpus,
                             w.redis.limits.memory_gb, ports, w.network))
    lb = cfg.load_balancer
    if lb:
        ports = [PublishedPort(lb.port, llm_bind_of(lb.host)), PublishedPort(lb.metrics_port, bind_of(lb.host))]
        if lb.dashboard_port:
            ports.append(PublishedPort(lb.dashboard_port, bind_of(lb.host)))
        out.append(Placement(lb.host, "traefik", "loadBalancer", lb.limits.cpus, lb.limits.memory_gb, ports,
                             lb.network))
    ow = cfg.open_webui
    if ow:
        out.append(Placement(ow.host, "open-webui", "openWebui", ow.limits.cpus, ow.limits.memory_gb,
                             [PublishedPort(ow.port, bind_of(ow.host))], ow.network, ow.ipv4_address))
    pt = cfg.portainer
    if pt:
        out.append(Placement(pt.host, "portainer", "portainer", pt.limits.cpus, pt.limits.memory_gb,
                             [PublishedPort(pt.port, bind_of(pt.host))], pt.network))
    ha = cfg.homelab_ai
    if ha:
        for svc, port in (("llm-router", ha.router_port), ("llm-manager", ha.manager_port),
                          ("dashboard", ha.dashboard_port)):
            out.append(Placement(ha.host, svc, f"homelabAi.{svc}", ha.limits.cpus, ha.limits.memory_gb,
                                 [PublishedPort(port, bind_of(ha.host))], ha.network))
    m = cfg.monitoring
    if m:
        lim = m.limits
        bind = bind_of(m.host)
        for svc, port, limits in [("prometheus", m.prometheus_port, lim.prometheus),
                                  ("grafana", m.grafana_port, lim.grafana),
                                  ("loki", m.loki_port, lim.loki),
                                  ("blackbox-exporter", m.blackbox_port, lim.blackbox)]:
            out.append(Placement(m.host, svc, f"monitoring.{svc}", limits.cpus, limits.memory_gb,
                                 [PublishedPort(port, bind)], m.network))
        for h in monitored_hosts(cfg):
            host = cfg.hosts[h]
            ex = host.exporters
            b = host.publish_address
            out.append(Placement(h, "node-exporter", f"hosts.{h}.exporters.nodeExporter", lim.node_exporter.cpus,
                                 lim.node_exporter.memory_gb, [PublishedPort(ex.node_exporter, b)]))
            out.append(Placement(h, "cadvisor", f"hosts.{h}.exporters.cadvisor", lim.cadvisor.cpus,
                                 lim.cadvisor.memory_gb, [PublishedPort(ex.cadvisor, b)]))
            out.append(Placement(h, "alloy", "monitoring.limits.alloy", lim.alloy.cpus, lim.alloy.memory_gb))
            if host.gpus and ex.gpu_exporter != "none":
                out.append(Placement(h, "gpu-exporter", f"hosts.{h}.exporters.gpuExporterPort",
                                     lim.gpu_exporter.cpus, lim.gpu_exporter.memory_gb,
                                     [PublishedPort(ex.gpu_exporter_port, b)]))
        if ds and ds.redis:
            out.append(Placement(ds.host, "redis-exporter", "monitoring.limits.redisExporter",
                                 lim.redis_exporter.cpus, lim.redis_exporter.memory_gb,
                                 [PublishedPort(9121, bind)], ds.network))
        if ds and ds.postgres:
            out.append(Placement(ds.host, "postgres-exporter", "monitoring.limits.postgresExporter",
                                 lim.postgres_exporter.cpus, lim.postgres_exporter.memory_gb,
                                 [PublishedPort(9187, bind)], ds.network))
    return out


def monitored_hosts(cfg: StackConfig) -> list[str]:
    if not cfg.monitoring:
        return []
    if cfg.monitoring.scrape_hosts is not None:
        return [h for h in cfg.monitoring.scrape_hosts if h in cfg.hosts]
    return sorted(cfg.hosts)


def capacity(cfg: StackConfig) -> dict:
    """Allocated vs declared CPU, memory and VRAM per host."""
    places = inventory(cfg)
    out = {}
    for name, host in sorted(cfg.hosts.items()):
        mine = [p for p in places if p.host == name]
        vram_alloc = _vram_by_gpu(host, name, mine)
        out[name] = {
            "cpus": {"allocated": round(sum(p.cpus for p in mine), 3), "declared": host.cpu_threads},
            "memoryGb": {"allocated": round(sum(p.memory_gb for p in mine), 3), "declared": host.memory_gb},
            "vramGb": {"allocated": round(sum(vram_alloc.values()), 3),
                       "declared": round(sum(g.vram_gb for g in host.gpus), 3)},
        }
    return out


def _vram_by_gpu(host: HostConfig, name: str, places: list[Placement]) -> dict[int, float]:
    used: dict[int, float] = {}
    for p in places:
        for i in p.gpu_indices:
            used[i] = used.get(i, 0.0) + p.vram_gb
    return used


# --------------------------------------------------------------------------- rules


def _models(cfg: StackConfig) -> tuple[list[Problem], list[str]]:
    """A model outside the catalogue is allowed; without its size in modelCatalog, budgets cannot count it."""
    problems, warnings = [], []
    for name, node in sorted(cfg.all_inference.items()):
        if node.engine != "ollama":
            continue
        for i, m in enumerate(node.models):
            info = node.model_info(m)
            if info is None:
                warnings.append(
                    f"{node_path(cfg, name)}.models: {m} is not in the catalogue, so its disk and VRAM are "
                    f"counted as 0 GB; add modelCatalog.{m} with sizeGb and vramGb (the Ollama library page gives "
                    "both) so the budgets count it")
            elif info.engine != "ollama":
                problems.append(Problem(path=f"{node_path(cfg, name)}.models[{i}]", message=(
                    f"{m} is described in modelCatalog as a {info.engine} model, but this node runs Ollama; "
                    "set modelCatalog." + m + ".engine: ollama, or serve it with another engine")))
    return problems, warnings


def check_rules(cfg: StackConfig) -> tuple[list[Problem], list[str]]:
    problems: list[Problem] = []
    warnings: list[str] = []
    problems += _platform(cfg)
    problems += _references(cfg)
    problems += _data_paths(cfg)
    problems += _backups(cfg)
    if problems:
        # The remaining rules assume references resolve; report what is broken first.
        return problems, warnings
    problems += _networks(cfg)
    problems += _ports(cfg)
    p, w = _models(cfg)
    problems += p
    warnings += w
    problems += _budgets(cfg)
    p, w = _gpus(cfg)
    problems += p
    warnings += w
    problems += _stores(cfg)
    problems += _names_and_secrets(cfg)
    return problems, warnings


def _names_and_secrets(cfg: StackConfig) -> list[Problem]:
    """Rules that would otherwise only surface after resources were registered, or never."""
    out: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    for p in inventory(cfg):
        key = (p.host, p.service)
        if key in seen and seen[key] != p.path:
            out.append(Problem(path=p.path, message=(
                f"places a container named {p.service} on {p.host}, as {seen[key]} does; two containers of one "
                "host cannot share a name (rename the inference node)")))
        seen.setdefault(key, p.path)
    for name, node in sorted(cfg.all_inference.items()):
        path = node_path(cfg, name)
        last = max(port for _, port, _ in inference_instances(name, node))
        if last > 65535:
            out.append(Problem(path=f"{path}.replicas", message=(
                f"{node.replicas} replicas from port {node.replica_port_start or node.port + 1} reach port {last}, "
                "beyond 65535; lower the replicas or start them at a lower port (replicaPortStart)")))
        if node.engine == "vllm" and node.gpu is not None:
            given = len(node.gpu.device_ids) if node.gpu.device_ids is not None else (
                len(cfg.hosts[node.host].gpus) if node.gpu.count == "all" else node.gpu.count)
            if node.tensor_parallel_size > given:
                out.append(Problem(path=f"{path}.tensorParallelSize", message=(
                    f"{node.tensor_parallel_size} shards need as many GPUs, but the node is given {given}; "
                    "lower tensorParallelSize or give it more GPUs")))
    mc = cfg.monitoring
    if mc is not None and mc.probe_model is not None:
        served = {m for n in cfg.all_inference.values() if n.engine == "ollama" for m in n.models}
        if mc.probe_model not in served:
            out.append(Problem(path="monitoring.probeModel", message=(
                f"{mc.probe_model!r} is served by no Ollama node of this stack "
                f"(served: {', '.join(sorted(served)) or 'none'}); the latency probe would always fail")))
    lb = cfg.load_balancer
    if lb is not None and lb.basic_auth and cfg.load_balancer_users is None:
        out.append(Problem(path="loadBalancer.basicAuth", message=(
            "is true but the secret loadBalancerUsers is not set "
            "(pulumi config set --secret loadBalancerUsers \"$(htpasswd -nbB user pw)\")")))
    return out


def _platform(cfg: StackConfig) -> list[Problem]:
    out = []
    if cfg.platform == "docker" and not cfg.hosts:
        out.append(Problem(path="hosts", message="the docker platform needs at least one host"))
    kube = [n for n, h in cfg.hosts.items() if h.kind == "kubernetes"]
    if cfg.platform == "docker" and kube:
        out.append(Problem(path=f"hosts.{kube[0]}.kind", message="kubernetes hosts need platform: kubernetes"))
    if cfg.platform == "kubernetes":
        if len(kube) != 1 or len(cfg.hosts) != 1:
            out.append(Problem(path="hosts", message=(
                "the kubernetes platform needs exactly one host, of kind kubernetes, that declares the "
                "cluster's schedulable CPU, memory and GPUs")))
        if cfg.kubernetes is None:
            out.append(Problem(path="kubernetes", message="is required on the kubernetes platform "
                                                          "(namespace, version, accelerator, ingress)"))
        for sname, store in cfg.model_stores.items():
            if store.kind != "pvc":
                out.append(Problem(path=f"modelStores.{sname}.kind",
                                   message=f"{store.kind!r} needs a Docker host; use pvc on Kubernetes"))
    elif cfg.kubernetes is not None:
        out.append(Problem(path="kubernetes", message="only applies to platform: kubernetes"))
    for sname, store in cfg.model_stores.items():
        if cfg.platform == "docker" and store.kind == "pvc":
            out.append(Problem(path=f"modelStores.{sname}.kind", message="pvc stores need platform: kubernetes"))
    for name, host in cfg.hosts.items():
        if host.kind == "ssh" and host.ssh and host.ssh.identity_file is None:
            out.append(Problem(path=f"hosts.{name}.ssh.identityFile",
                               message="is required for an ssh host (the private key both providers use)"))
    return out


def _need_host(cfg: StackConfig, path: str, host: str) -> list[Problem]:
    if host not in cfg.hosts:
        return [Problem(path=path, message=f"host {host!r} is not defined; defined hosts: "
                                           f"{', '.join(sorted(cfg.hosts)) or 'none'}")]
    return []


def _need_network(cfg: StackConfig, path: str, host: str, network: str | None) -> list[Problem]:
    if host in cfg.hosts and cfg.hosts[host].kind == "kubernetes":
        if network is not None:
            return [Problem(path=path, message="Kubernetes services reach each other through Services; "
                                               "remove the Docker network")]
        return []
    if network is None:
        return [Problem(path=path, message="is required on a Docker host (services reach each other by name on it)")]
    if host in cfg.hosts and network not in cfg.hosts[host].networks:
        have = ", ".join(sorted(cfg.hosts[host].networks)) or "none"
        return [Problem(path=path, message=f"network {network!r} is not defined on host {host!r} "
                                           f"(hosts.{host}.networks has: {have})")]
    return []


def _references(cfg: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    for name, node in cfg.all_inference.items():
        path = node_path(cfg, name)
        out += _need_host(cfg, f"{path}.host", node.host)
        out += _need_network(cfg, f"{path}.network", node.host, node.network)
        for key, store in (("modelStore", node.model_store), ("tempStore", node.temp_store)):
            if store is not None and store not in cfg.model_stores:
                out.append(Problem(path=f"{path}.{key}",
                                   message=f"store {store!r} is not defined under modelStores; defined: "
                                           f"{', '.join(sorted(cfg.model_stores)) or 'none'}"))
    if cfg.workers is not None and WORKER_LLM_SERVER in cfg.inference:
        out.append(Problem(path=f"inference.{WORKER_LLM_SERVER}",
                           message="this name is taken by the worker's LLM server (workers.backend); rename the node"))
    for name, store in cfg.model_stores.items():
        out += _need_host(cfg, f"modelStores.{name}.host", store.host)
        for i, c in enumerate(store.clients):
            out += _need_host(cfg, f"modelStores.{name}.clients[{i}]", c)
    for key, section in (("dataServices", cfg.data_services), ("octollm", cfg.octollm),
                         ("monitoring", cfg.monitoring), ("loadBalancer", cfg.load_balancer),
                         ("openWebui", cfg.open_webui), ("portainer", cfg.portainer),
                         ("workers", cfg.workers), ("homelabAi", cfg.homelab_ai)):
        if section is not None:
            out += _need_host(cfg, f"{key}.host", section.host)
            out += _need_network(cfg, f"{key}.network", section.host, section.network)
    if cfg.octollm:
        if cfg.octollm.llm_endpoint not in cfg.all_inference:
            out.append(Problem(path="octollm.llmEndpoint",
                               message=f"{cfg.octollm.llm_endpoint!r} is not an inference node; defined: "
                                       f"{', '.join(sorted(cfg.all_inference)) or 'none'}"))
        if cfg.data_services is None or (cfg.data_services.external is None and not all(
                (cfg.data_services.postgres, cfg.data_services.redis, cfg.data_services.qdrant))):
            out.append(Problem(path="octollm", message="OctoLLM needs dataServices with postgres, redis and qdrant"))
        elif cfg.data_services.host != cfg.octollm.host or cfg.data_services.network != cfg.octollm.network:
            out.append(Problem(path="octollm.network", message=(
                "the arms reach PostgreSQL, Redis and Qdrant by container name, so octollm must share "
                f"host and network with dataServices ({cfg.data_services.host}/{cfg.data_services.network})")))
    for key, section in (("openWebui", cfg.open_webui), ("portainer", cfg.portainer)):
        if section is not None and section.data_store is not None:
            store = cfg.model_stores.get(section.data_store)
            if store is None:
                out.append(Problem(path=f"{key}.dataStore", message=f"store {section.data_store!r} is not defined "
                                                                    "under modelStores"))
            elif store.host != section.host:
                out.append(Problem(path=f"{key}.dataStore", message=(
                    f"store {section.data_store!r} is on {store.host}, but {key} runs on {section.host}")))
    ds = cfg.data_services
    if ds is not None and ds.external is not None:
        for key, val in (("postgresUrl", cfg.postgres_url), ("redisUrl", cfg.redis_url),
                         ("qdrantApiKey", cfg.qdrant_api_key)):
            if val is None:
                out.append(Problem(path=key, message=(
                    "is required when dataServices.external is set (the managed service's connection secret); "
                    f"set it with `pulumi config set --secret {key} …`")))
    if cfg.homelab_ai and cfg.homelab_ai.backend not in cfg.all_inference:
        out.append(Problem(path="homelabAi.backend",
                           message=f"{cfg.homelab_ai.backend!r} is not an inference node; defined: "
                                   f"{', '.join(sorted(cfg.all_inference)) or 'none'}"))
    if (cfg.load_balancer or cfg.open_webui) and not any(
            n.engine == "ollama" for n in cfg.all_inference.values()):
        out.append(Problem(path="loadBalancer" if cfg.load_balancer else "openWebui",
                           message="needs at least one ollama inference node to send requests to"))
    if cfg.monitoring and cfg.monitoring.scrape_hosts:
        for i, h in enumerate(cfg.monitoring.scrape_hosts):
            out += _need_host(cfg, f"monitoring.scrapeHosts[{i}]", h)
    return out


def _data_paths(cfg: StackConfig) -> list[Problem]:
    """A host data directory outside the fixed roots (values.DATA_ROOTS) may only be inside the mount of a
    ZFS pool that a zfs store of the same host uses: there the pool is the host's data disk, and the program
    knows it is one. Anywhere else a top-level directory may be anything (a system mount, another tool's)."""
    paths: list[tuple[str, str, str]] = [(f"hosts.{h}.appdataRoot", h, hc.appdata_root) for h, hc in cfg.hosts.items()]
    paths += [(f"modelStores.{n}.path", s.host, s.path) for n, s in cfg.model_stores.items()]
    if cfg.workers is not None and cfg.workers.redis_data_path:
        paths.append(("workers.redisDataPath", cfg.workers.host, cfg.workers.redis_data_path))
    if cfg.backups is not None and cfg.backups.store is None:
        paths.append(("backups.target", cfg.backups.host, cfg.backups.target))
    out: list[Problem] = []
    for key, host, path in sorted(paths):
        # On Kubernetes nothing is written to a host path; _platform and _backups refuse the keys that give one.
        if host not in cfg.hosts or cfg.hosts[host].kind == "kubernetes":
            continue
        pools = sorted({s.dataset.split("/")[0] for s in cfg.model_stores.values()
                        if s.host == host and s.kind == "zfs" and s.dataset})
        why = allowed_root_problem(path, pools)
        if why is not None:
            out.append(Problem(path=key, message=why))
    return out


def _networks(cfg: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    for hname, host in sorted(cfg.hosts.items()):
        nets = {n: ipaddress.IPv4Network(c.subnet) for n, c in host.networks.items()}
        for n, c in sorted(host.networks.items()):
            gw = ipaddress.IPv4Address(c.gateway)
            if gw not in nets[n] or gw in (nets[n].network_address, nets[n].broadcast_address):
                out.append(Problem(path=f"hosts.{hname}.networks.{n}.gateway",
                                   message=f"{c.gateway} is not a usable address of subnet {c.subnet}"))
        names = sorted(nets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if nets[a].overlaps(nets[b]):
                    out.append(Problem(path=f"hosts.{hname}.networks.{b}.subnet",
                                       message=f"{nets[b]} overlaps network {a} ({nets[a]}) on the same host"))
    taken: dict[tuple[str, str, str], str] = {}
    for hname, host in sorted(cfg.hosts.items()):
        for n, c in sorted(host.networks.items()):
            subnet = ipaddress.IPv4Network(c.subnet)
            for who, addr in sorted(c.reserved.items()):
                path = f"hosts.{hname}.networks.{n}.reserved.{who}"
                try:
                    ip = ipaddress.IPv4Address(addr)
                except ValueError:
                    out.append(Problem(path=path, message=f"{addr!r} is not an IPv4 address"))
                    continue
                if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address) \
                        or str(ip) == c.gateway:
                    out.append(Problem(path=path, message=f"{ip} is not a usable address of {n} ({subnet})"))
                elif (hname, n, str(ip)) in taken:
                    out.append(Problem(path=path, message=f"{ip} is reserved twice on {n}"))
                taken[(hname, n, str(ip))] = path
    for p in inventory(cfg):
        if p.ipv4_address is None or p.network is None:
            continue
        net_cfg = cfg.hosts[p.host].networks[p.network]
        subnet = ipaddress.IPv4Network(net_cfg.subnet)
        try:
            ip = ipaddress.IPv4Address(p.ipv4_address)
        except ValueError:
            out.append(Problem(path=f"{p.path}.ipv4Address", message=f"{p.ipv4_address!r} is not an IPv4 address"))
            continue
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            out.append(Problem(path=f"{p.path}.ipv4Address",
                               message=f"{ip} is outside network {p.network} ({subnet}); pick a host address in it"))
        elif str(ip) == net_cfg.gateway:
            out.append(Problem(path=f"{p.path}.ipv4Address", message=f"{ip} is the gateway of {p.network}"))
        key = (p.host, p.network, str(ip))
        if key in taken:
            out.append(Problem(path=f"{p.path}.ipv4Address",
                               message=f"{ip} on {p.host}/{p.network} is already given to {taken[key]}"))
        taken.setdefault(key, p.path)
    return out


def _ports(cfg: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[tuple[str, int, str], str] = {}
    for p in inventory(cfg):
        if cfg.hosts[p.host].kind == "kubernetes":
            continue  # every Service has its own address
        if p.ports and p.network and cfg.hosts[p.host].networks[p.network].internal:
            out.append(Problem(path=p.path, message=(
                f"publishes port {p.ports[0].port} but network {p.network} is internal, and Docker does not "
                "publish ports of containers on an internal network; set its port to null or use another network")))
        for port in p.ports:
            key = (p.host, port.port, port.protocol)
            if key in seen and seen[key] != p.path:
                out.append(Problem(path=p.path, message=(
                    f"host port {port.port} on {p.host} is already used by {seen[key]}; each published "
                    "port must be unique per host")))
            elif key in seen:
                out.append(Problem(path=p.path, message=f"host port {port.port} on {p.host} is used twice"))
            seen.setdefault(key, p.path)
    return out


def _budgets(cfg: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    for hname, cap in capacity(cfg).items():
        for key, unit in (("cpus", "cores"), ("memoryGb", "GB")):
            a, d = cap[key]["allocated"], cap[key]["declared"]
            if a > d:
                declared_key = "cpuThreads" if key == "cpus" else "memoryGb"
                out.append(Problem(path=f"hosts.{hname}.{declared_key}", message=(
                    f"the services placed on {hname} are limited to {a:g} {unit} in total, more than the "
                    f"{d:g} {unit} the host declares; lower some limits or move services to another host")))
    return out


def _gpus(cfg: StackConfig) -> tuple[list[Problem], list[str]]:
    out: list[Problem] = []
    warn: list[str] = []
    for hname, host in sorted(cfg.hosts.items()):
        for i, gpu in enumerate(host.gpus):
            info = catalog.GPUS.get(gpu.model)
            if info and gpu.driver_version and catalog.driver_tuple(gpu.driver_version)[0] < info.min_driver:
                out.append(Problem(path=f"hosts.{hname}.gpus[{i}].driverVersion", message=(
                    f"{gpu.model} ({info.architecture}) needs driver {info.min_driver} or newer; "
                    f"{gpu.driver_version} cannot initialise it (RmInitAdapter failed)")))
    for name, node in sorted(cfg.all_inference.items()):
        host = cfg.hosts[node.host]
        path = node_path(cfg, name)
        if node.gpu is not None and not host.gpus:
            if node.engine == "vllm":
                out.append(Problem(path=f"{path}.gpu", message=f"vLLM needs a GPU but host {node.host} declares none"))
            elif host.allow_cpu_fallback:
                warn.append(f"{path}: host {node.host} declares no GPU; {node.engine} will run on the CPU")
            else:
                out.append(Problem(path=f"{path}.gpu", message=(
                    f"asks for a GPU but host {node.host} declares none; add the GPU under hosts.{node.host}.gpus, "
                    f"remove {path}.gpu to run on the CPU, or set hosts.{node.host}.allowCpuFallback: true")))
            continue
        if node.gpu is not None:
            if node.gpu.device_ids is not None:
                for i, d in enumerate(node.gpu.device_ids):
                    if not d.isdigit() or int(d) >= len(host.gpus):
                        out.append(Problem(path=f"{path}.gpu.deviceIds[{i}]", message=(
                            f"{d!r} is not a GPU index of {node.host}, which has GPUs 0..{len(host.gpus) - 1}")))
            elif node.gpu.count != "all" and node.gpu.count > len(host.gpus):
                out.append(Problem(path=f"{path}.gpu.count", message=(
                    f"asks for {node.gpu.count} GPUs but {node.host} declares {len(host.gpus)}")))
        idx = _gpu_indices(host, node) if node.gpu is not None else ()
        for i in idx:
            gpu = host.gpus[i]
            gpath = f"hosts.{node.host}.gpus[{i}]"
            if node.engine == "vllm" and gpu.capability < catalog.VLLM_MIN_COMPUTE_CAPABILITY:
                out.append(Problem(path=f"{path}.engine", message=(
                    f"vLLM needs compute capability 7.0 or newer; the {gpu.model} on {node.host} is "
                    f"{gpu.capability[0]}.{gpu.capability[1]}. Use engine ollama or llamacpp on this GPU")))
            if gpu.driver_version is None:
                if node.engine == "vllm":
                    out.append(Problem(path=f"{gpath}.driverVersion", message=(
                        "is required for GPU engines so the image's CUDA version can be checked against it")))
                continue
            cuda = image_cuda(cfg, node)
            if cuda and not catalog.driver_supports_cuda(gpu.driver_version, cuda):
                most = catalog.max_cuda_for_driver(gpu.driver_version) or "none in the table"
                out.append(Problem(path=f"{path}.image", message=(
                    f"the image is built on CUDA {cuda} but driver {gpu.driver_version} on {node.host} supports "
                    f"CUDA up to {most}; the container would fail with 'Error 804: forward compatibility was "
                    "attempted on non supported HW'. Upgrade the driver or pin an image built on an older CUDA")))
        if node.engine == "ollama" and idx:
            vram = min(host.gpus[i].vram_gb for i in idx) * (len(idx) if node.gpu and node.gpu.count != 1 else 1)
            gpu_name = host.gpus[idx[0]].model
            for m in node.models:
                info = node.model_info(m)
                if info is not None and info.vram_gb > vram:
                    on_gpu = max(0, min(100, int(100 * vram / info.vram_gb)))
                    warn.append(
                        f"{path}.models: {m} needs about {info.vram_gb:g} GB of VRAM but the {gpu_name} on "
                        f"{node.host} has {vram:g} GB; Ollama will keep about {on_gpu}% of its layers on the GPU "
                        "and run the rest on the CPU, several times slower")
    # VRAM budget per GPU across every engine placed on it
    for hname, host in sorted(cfg.hosts.items()):
        mine = [p for p in inventory(cfg) if p.host == hname]
        for i, used in sorted(_vram_by_gpu(host, hname, mine).items()):
            if i < len(host.gpus) and used > host.gpus[i].vram_gb + 1e-9:
                users = ", ".join(p.path for p in mine if i in p.gpu_indices)
                out.append(Problem(path=f"hosts.{hname}.gpus[{i}].vramGb", message=(
                    f"engines placed on this {host.gpus[i].model} ({users}) need {used:g} GB of VRAM but it has "
                    f"{host.gpus[i].vram_gb:g} GB; lower their vramGb/gpuMemoryUtilization or move one")))
    return out, warn


def image_cuda(cfg: StackConfig, node: InferenceConfig) -> str | None:
    if node.cuda_version:
        return node.cuda_version
    ref = node.image or cfg.image(engine_image_key(node, gpu=node.gpu is not None))
    for info in catalog.IMAGES.values():
        if info.ref == ref:
            return info.cuda
    return None


def engine_image_key(node: InferenceConfig, gpu: bool) -> str:
    if node.engine == "llamacpp":
        return "llamacpp-cuda" if gpu else "llamacpp"
    return node.engine


def _stores(cfg: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    for name, node in sorted(cfg.all_inference.items()):
        if node.model_store is None:
            continue
        store = cfg.model_stores[node.model_store]
        if store.kind != "nfs" and node.host != store.host:
            out.append(Problem(path=f"{node_path(cfg, name)}.modelStore", message=(
                f"store {node.model_store!r} is a {store.kind} store on {store.host}; {name} runs on {node.host}. "
                "Use an nfs store to share models across hosts")))
        if store.kind == "nfs" and node.host not in [store.host, *store.clients]:
            out.append(Problem(path=f"{node_path(cfg, name)}.modelStore", message=(
                f"host {node.host} is neither the NFS server ({store.host}) nor a client of store {node.model_store!r}")))
    for sname, store in sorted(cfg.model_stores.items()):
        writers = [n for n, node in sorted(cfg.all_inference.items())
                   if node.model_store == sname and not node.read_only]
        if store.kind == "nfs" and len(writers) > 1:
            out.append(Problem(path=f"modelStores.{sname}", message=(
                f"{len(writers)} inference nodes mount it read-write ({', '.join(writers)}); exactly one may "
                "write (pull models), set readOnly: true on the others")))
        if store.kind == "nfs":
            for n in writers:
                if cfg.all_inference[n].host != store.host:
                    out.append(Problem(path=f"{node_path(cfg, n)}.readOnly", message=(
                        f"only the NFS server host {store.host} may mount {sname} read-write; set readOnly: true")))
    return out


def _backups(cfg: StackConfig) -> list[Problem]:
    """backups: the job runs on one Docker host, copies only what runs there, and writes outside every data
    directory it copies (a target inside one would copy its own backups; one holding them, prune beside them)."""
    import posixpath

    from components.config.schema import BACKUP_SERVICES

    b = cfg.backups
    if b is None:
        return []
    out = _need_host(cfg, "backups.host", b.host)
    if out:
        return out
    host = cfg.hosts[b.host]
    if host.kind == "kubernetes":
        return _backups_kubernetes(cfg)
    deployed = b.deployed(cfg)
    if b.services is None and not deployed:
        where = sorted({h for h in ((cfg.data_services.host if cfg.data_services and cfg.data_services.external is None
                                      else None), (cfg.workers.host if cfg.workers else None),
                                     (cfg.monitoring.host if cfg.monitoring else None)) if h})
        out.append(Problem(path="backups.host", message=(
            f"{b.host} runs none of {', '.join(BACKUP_SERVICES)}, so there is nothing to back up there"
            + (f"; they run on {', '.join(where)}" if where else "; this stack deploys none of them"))))
    for i, s in enumerate(b.services or []):
        if s in (b.services or [])[:i]:
            out.append(Problem(path=f"backups.services[{i}]", message=f"{s} is listed twice"))
        elif s not in deployed:
            there = ", ".join(deployed) or "none of " + ", ".join(BACKUP_SERVICES)
            out.append(Problem(path=f"backups.services[{i}]", message=(
                f"{s} is not deployed on {b.host} (deployed there: {there}); the job copies the containers of its "
                "own host")))
    target = b.target
    if b.store is not None:
        store = cfg.model_stores.get(b.store)
        if store is None:
            return out + [Problem(path="backups.target.store", message=(
                f"store {b.store!r} is not defined under modelStores (defined: "
                f"{', '.join(sorted(cfg.model_stores)) or 'none'})"))]
        if store.kind not in ("hostPath", "zfs", "nfs"):
            out.append(Problem(path="backups.target.store", message=(
                f"store {b.store!r} is a {store.kind} store; allowed: a hostPath, zfs or nfs store")))
        elif store.host != b.host:
            out.append(Problem(path="backups.target.store", message=(
                f"store {b.store!r} is on {store.host}, but backups run on {b.host}; give a store of {b.host} "
                "(for an nfs store, the host that serves it)")))
        target = store.path
    for s in b.chosen(cfg):
        data = b.data_dir(cfg, s)
        if target == data or target.startswith(data + "/") or data.startswith(target.rstrip("/") + "/"):
            out.append(Problem(path="backups.target", message=(
                f"{target} overlaps {s}'s data directory {data}; give a directory outside every data directory "
                f"(e.g. {posixpath.join(posixpath.dirname(host.appdata_root.rstrip('/')) or '/', 'octollm-backups')})")))
            break
    return out


def _backups_kubernetes(cfg: StackConfig) -> list[Problem]:
    """backups on Kubernetes: a CronJob in the namespace copies PostgreSQL, Redis and Qdrant over the cluster
    network into a pvc store; Grafana's database is in its own ReadWriteOnce claim, out of reach."""
    b = cfg.backups
    allowed = b.KUBERNETES_SERVICES
    deployed = [s for s in b.deployed(cfg) if s in allowed]
    out: list[Problem] = []
    if b.services is None and not deployed:
        out.append(Problem(path="backups.host", message=(
            f"{b.host} runs none of {', '.join(allowed)} (what a backup copies on Kubernetes), so there is nothing "
            "to back up there")))
    for i, s in enumerate(b.services or []):
        if s in (b.services or [])[:i]:
            out.append(Problem(path=f"backups.services[{i}]", message=f"{s} is listed twice"))
        elif s == "grafana":
            out.append(Problem(path=f"backups.services[{i}]", message=(
                "grafana is not backed up on Kubernetes: its SQLite database is in Grafana's ReadWriteOnce claim, "
                "which the backup pod cannot mount while Grafana runs; allowed: " + ", ".join(allowed))))
        elif s not in allowed:
            out.append(Problem(path=f"backups.services[{i}]", message=(
                f"{s} is not backed up on Kubernetes; allowed: {', '.join(allowed)}")))
        elif s not in deployed:
            out.append(Problem(path=f"backups.services[{i}]", message=(
                f"{s} is not deployed in {b.host} (deployed there: {', '.join(deployed) or 'none of ' + ', '.join(allowed)})")))
    if b.store is None:
        out.append(Problem(path="backups.target", message=(
            f"{b.host} is a Kubernetes namespace: a directory path means nothing there; give {{store: <modelStores "
            "name>} of a store of kind pvc (the claim the backup pod writes into)")))
        return out
    store = cfg.model_stores.get(b.store)
    if store is None:
        return out + [Problem(path="backups.target.store", message=(
            f"store {b.store!r} is not defined under modelStores (defined: "
            f"{', '.join(sorted(cfg.model_stores)) or 'none'})"))]
    if store.kind != "pvc":
        out.append(Problem(path="backups.target.store", message=(
            f"store {b.store!r} is a {store.kind} store; allowed on Kubernetes: a pvc store")))
    elif store.host != b.host:
        out.append(Problem(path="backups.target.store", message=(
            f"store {b.store!r} is in {store.host}, but backups run in {b.host}; give a pvc store of {b.host}")))
    else:
        users = [n for n, nc in cfg.all_inference.items() if b.store in (nc.model_store, nc.temp_store)]
        users += [n for n, app in (("openWebui", cfg.open_webui), ("portainer", cfg.portainer))
                  if app is not None and app.data_store == b.store]
        if users:
            out.append(Problem(path="backups.target.store", message=(
                f"store {b.store!r} holds the models of {', '.join(sorted(users))}; give the backups a pvc store "
                "of their own")))
    return out
