"""The one schema of a stack's configuration.

`load_stack_config(raw, secret_keys)` turns the `octollm-infra:*` keys of a stack into a
validated `StackConfig`, or raises `ConfigError` listing every problem with its key path.
Structural problems (types, unknown keys, ranges) are reported together first; once the
structure is sound, every cross-field rule runs and all of its problems are reported together.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.config import catalog
from components.platforms.forms import cpus_round_trips, docker_cpus
from components.config.values import (BindAddress, Cidr, DataPath, GpuDeviceId, HostAddress, HttpUrl, ImageRef,
                                      Ipv4Address, KubeContext, KubernetesName, KubernetesSubdomain, LabelValue,
                                      LocalFile, ModelName, NfsOptions, PgIdentifier, Registry, RegistryUser,
                                      SshUser, StoreRelativePath, UrlPath, ZfsDataset,
                                      GpuModel, Description, TraefikRule, RotationMarker)

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _cpus_stored_exactly(v: float) -> float:
    if not cpus_round_trips(v):
        raise ValueError(f"{v:g} CPUs cannot be stored exactly by the Docker provider (it reads it back as "
                         f"{docker_cpus(v)}, and every `up` would replace the container); use at most two "
                         f"decimals that survive, e.g. {docker_cpus(v)}")
    return v


Cpus = Annotated[float, Field(gt=0, le=512), AfterValidator(_cpus_stored_exactly)]
MemoryGb = Annotated[float, Field(gt=0, le=16384)]


def _not_latest(v: str) -> str:
    if v == "latest":
        raise ValueError("'latest' is not a pinned tag; use a version (e.g. 0.1.0, or the tag CI pushed) so a "
                         "deploy is repeatable")
    return v


PinnedTag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"), AfterValidator(_not_latest)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Problem(BaseModel):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"the stack configuration has {len(self.problems)} problem(s):"]
        lines += [f"  - octollm-infra:{p}" for p in self.problems]
        return "\n".join(lines)


# --------------------------------------------------------------------------- hosts


class SshConfig(Model):
    user: SshUser
    port: Port = 22
    identity_file: LocalFile | None = Field(
        default=None, description="private key used by both the docker CLI and pulumi-command"
    )
    # Checked below: '<type> <base64>', and only those two words are kept.
    host_key: str | None = Field(
        default=None, description="the host's public key line, e.g. 'ssh-ed25519 AAAA…'"
    )
    insecure_skip_host_key_check: bool = False

    @field_validator("host_key")
    @classmethod
    def _host_key_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split()
        allowed = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                   "ecdsa-sha2-nistp521", "ssh-rsa")
        if len(parts) < 2 or parts[0] not in allowed or not re.fullmatch(r"[A-Za-z0-9+/=]+", parts[1]):
            raise ValueError(
                f"{v!r} is not a public host key line; expected '<type> <base64>' with type one of "
                f"{', '.join(allowed)} (copy it from /etc/ssh/ssh_host_ed25519_key.pub on the host)"
            )
        return " ".join(parts[:2])


class GpuConfig(Model):
    model: GpuModel
    vram_gb: MemoryGb
    compute_capability: str | None = None  # checked below: major.minor
    driver_version: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+){0,2}$")

    @field_validator("model")
    @classmethod
    def _known_or_described(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _capability(self) -> "GpuConfig":
        if self.compute_capability is None and self.model not in catalog.GPUS:
            raise ValueError(
                f"GPU model {self.model!r} is not in the catalogue ({', '.join(sorted(catalog.GPUS))}); "
                "set computeCapability for it"
            )
        if self.compute_capability is not None and not re.fullmatch(r"[0-9]+\.[0-9]+", self.compute_capability):
            raise ValueError(f"computeCapability {self.compute_capability!r} must look like '8.6'")
        return self

    @property
    def capability(self) -> tuple[int, int]:
        cc = self.compute_capability or catalog.GPUS[self.model].compute_capability
        major, minor = cc.split(".")
        return int(major), int(minor)


class NetworkConfig(Model):
    subnet: str  # checked below: an IPv4 network
    gateway: str  # checked below: an IPv4 address
    internal: bool = False
    reserved: dict[Name, Ipv4Address] = Field(
        default={}, description="addresses kept for clients outside this stack (Docker never hands them out)")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as exc:
            raise ValueError(f"{v!r} is not an IPv4 subnet in CIDR form like 172.20.0.0/16 ({exc})") from None
        if net.prefixlen > 29:
            raise ValueError(f"{v!r} is too small for containers; use a /29 or larger")
        return str(net)

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str) -> str:
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address") from None


class ExporterPorts(Model):
    node_exporter: Port = 9100
    cadvisor: Port = 8080
    gpu_exporter: Literal["dcgm", "nvidia-smi", "none"] = "dcgm"
    gpu_exporter_port: Port = 9400


class HostConfig(Model):
    kind: Literal["ssh", "local", "kubernetes"] = "ssh"
    address: HostAddress = "127.0.0.1"
    ssh: SshConfig | None = None
    publish_address: BindAddress = Field(
        default="0.0.0.0", description="host interface that published ports bind to"
    )
    llm_publish_address: BindAddress | None = Field(
        default=None, description="interface LLM API ports bind to; defaults to publishAddress"
    )
    cpu_threads: Cpus
    memory_gb: MemoryGb
    gpus: list[GpuConfig] = []
    appdata_root: DataPath = "/opt/octollm"
    data_owner: str = Field(default="99:100", pattern=r"^[0-9]+:[0-9]+$")
    unraid: bool = False
    container_prefix: str = Field(default="octollm-", pattern=r"^([a-z0-9][a-z0-9_.-]*)?$")
    networks: dict[Name, NetworkConfig] = {}
    exporters: ExporterPorts = ExporterPorts()
    allow_cpu_fallback: bool = Field(
        default=False, description="run GPU engines on the CPU when the GPU check fails"
    )
    min_docker_version: str = Field(default="20.10", pattern=r"^[0-9]+\.[0-9]+$")
    swap_limit: bool = Field(
        default=True, description="the engine has cgroup swap accounting (docker info: SwapLimit); "
        "false: containers get memorySwap -1 (swap not limited), the one value such an engine keeps")

    @model_validator(mode="after")
    def _ssh_needed(self) -> "HostConfig":
        if self.kind == "ssh" and self.ssh is None:
            raise ValueError("an ssh host needs an `ssh` block (user, port, identityFile, hostKey)")
        if self.kind == "ssh" and self.ssh is not None:
            if self.ssh.host_key is None and not self.ssh.insecure_skip_host_key_check:
                raise ValueError(
                    "ssh.hostKey is missing: give the host's public key (ssh-keyscan -t ed25519 "
                    f"{self.address}) so the connection is verified, or set "
                    "ssh.insecureSkipHostKeyCheck: true to accept any key (not recommended)"
                )
        if self.kind in ("local", "kubernetes") and self.ssh is not None:
            raise ValueError(f"a {self.kind} host is not reached over SSH; remove its `ssh` block")
        return self

    @property
    def llm_bind(self) -> str:
        return self.llm_publish_address or self.publish_address

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


# --------------------------------------------------------------------------- workloads


class Limits(Model):
    cpus: Cpus
    memory_gb: MemoryGb


class GpuRequest(Model):
    count: int | Literal["all"] | None = None
    device_ids: list[GpuDeviceId] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> "GpuRequest":
        if (self.count is None) == (self.device_ids is None):
            raise ValueError("give exactly one of gpu.count or gpu.deviceIds")
        if isinstance(self.count, int) and self.count < 1:
            raise ValueError("gpu.count must be at least 1 (remove `gpu` for a CPU-only engine)")
        return self


class ModelStoreConfig(Model):
    host: Name
    kind: Literal["hostPath", "zfs", "nfs", "pvc"] = "hostPath"
    path: DataPath = "/opt/octollm/models"
    owner: str | None = Field(default=None, pattern=r"^[0-9]+:[0-9]+$")
    # zfs
    dataset: ZfsDataset | None = None
    recordsize: Literal["4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M", "4M", "8M", "16M"] | None = None
    compression: Literal["off", "on", "lz4", "gzip", "zstd", "zle", "lzjb"] | None = None
    # nfs
    clients: list[Name] = []
    client_cidr: Cidr | None = None
    export_options: NfsOptions = "rw,sync,no_subtree_check,no_root_squash"
    mount_options: NfsOptions = "nfsvers=4.1,hard,timeo=600"
    # kubernetes
    storage_class: KubernetesSubdomain | None = None
    size_gb: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _kind_fields(self) -> "ModelStoreConfig":
        if self.kind == "zfs" and (not self.dataset or not self.recordsize or not self.compression):
            raise ValueError("a zfs store needs dataset, recordsize and compression")
        if self.kind != "zfs" and (self.dataset or self.recordsize or self.compression):
            raise ValueError(f"dataset/recordsize/compression only apply to kind zfs, not {self.kind}")
        if self.kind == "pvc" and (not self.storage_class or not self.size_gb):
            raise ValueError("a pvc store needs storageClass (ReadWriteMany, e.g. Filestore) and sizeGb")
        if self.kind == "nfs" and not self.client_cidr:
            raise ValueError("an nfs store needs clientCidr (the network allowed to mount the export)")
        if self.kind != "nfs" and self.clients:
            raise ValueError(f"clients only apply to kind nfs, not {self.kind}")
        return self


Engine = Literal["ollama", "vllm", "llamacpp"]


class ModelCatalogEntry(Model):
    """A model the built-in catalogue does not know, described so budgets can count it."""

    engine: Literal["ollama", "hf", "gguf"] = Field(
        default="ollama", description="ollama: an Ollama tag; hf: a HuggingFace id (vLLM); gguf: a llama.cpp file")
    size_gb: float = Field(gt=0, le=2000, description="bytes on disk, in GB (what the model store must hold)")
    vram_gb: float = Field(gt=0, le=2000, description="VRAM it occupies loaded with the default context, in GB")
    description: Description = ""


class InferenceConfig(Model):
    host: Name
    engine: Engine = "ollama"
    network: Name | None = None
    ipv4_address: Ipv4Address | None = None
    port: Port
    container_port: Port | None = None
    gpu: GpuRequest | None = None
    models: list[ModelName] = []
    num_parallel: int = Field(default=4, ge=1, le=64)
    limits: Limits
    vram_gb: MemoryGb | None = Field(
        default=None, description="VRAM this engine holds on its GPU; derived from the models when absent"
    )
    model_store: Name | None = None
    temp_store: Name | None = Field(default=None, description="store mounted at /tmp (scratch space)")
    image: ImageRef | None = None
    cuda_version: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+$")
    replicas: int = Field(default=0, ge=0, le=16, description="read-only Ollama replicas on the same host")
    replica_port_start: Port | None = None
    read_only: bool = Field(default=False, description="mount the store read-only (an NFS client)")
    # vLLM
    quantization: Literal["awq", "gptq", "fp8", "squeezellm", "bitsandbytes"] | None = None
    max_model_len: int | None = Field(default=None, ge=128)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1, le=8)
    shm_size_gb: int = Field(default=16, ge=1)
    # llama.cpp
    model_path: StoreRelativePath | None = None
    context_size: int = Field(default=4096, ge=128)
    gpu_layers: int = Field(default=-1, ge=-1)

    # The stack's modelCatalog, set by StackConfig: what this node looks models up in besides the catalogue.
    _extra_models: dict = PrivateAttr(default_factory=dict)

    def model_info(self, name: str) -> catalog.ModelInfo | None:
        """What is known of a model: the stack's modelCatalog first, then the built-in catalogue."""
        return self._extra_models.get(name) or catalog.MODELS.get(name)

    @model_validator(mode="after")
    def _engine_fields(self) -> "InferenceConfig":
        if self.engine == "ollama":
            for m in self.models:
                info = catalog.MODELS.get(m)
                if info is not None and info.engine != "ollama":
                    raise ValueError(f"{m!r} is a {info.engine} model, not an Ollama tag; serve it with "
                                     f"engine: {'vllm' if info.engine == 'hf' else 'llamacpp'}")
            if len(set(self.models)) != len(self.models):
                raise ValueError("models lists a model twice")
        if self.engine == "vllm":
            if len(self.models) != 1:
                raise ValueError("a vLLM engine serves exactly one model: set models to one HuggingFace id")
            if self.gpu is None:
                raise ValueError("vLLM needs a GPU: add gpu.count or gpu.deviceIds")
        if self.engine == "llamacpp" and not self.model_path:
            raise ValueError("a llama.cpp engine needs modelPath (the GGUF file inside the model store)")
        if self.replicas and self.engine != "ollama":
            raise ValueError("replicas are only supported for the ollama engine")
        return self

    @property
    def internal_port(self) -> int:
        return self.container_port or {"ollama": 11434, "vllm": 8000, "llamacpp": 8000}[self.engine]


class PostgresConfig(Model):
    port: Port = 3010
    database: PgIdentifier = "octollm"
    user: PgIdentifier = "octollm"
    limits: Limits = Limits(cpus=4, memory_gb=4)


class RedisConfig(Model):
    port: Port | None = 3011  # null: reachable only on its (internal) network
    limits: Limits = Limits(cpus=2, memory_gb=2)


class QdrantConfig(Model):
    http_port: Port = 3012
    grpc_port: Port = 3013
    limits: Limits = Limits(cpus=4, memory_gb=4)


class ExternalDataConfig(Model):
    """Managed services (Cloud SQL, Memorystore, Qdrant Cloud); credentials come from secret config."""

    qdrant_url: HttpUrl


class DataServicesConfig(Model):
    host: Name
    network: Name | None = None
    external: ExternalDataConfig | None = Field(
        default=None, description="use managed services: nothing is deployed for postgres/redis/qdrant")
    postgres: PostgresConfig | None = PostgresConfig()
    redis: RedisConfig | None = RedisConfig()
    qdrant: QdrantConfig | None = QdrantConfig()


class ServicePlacement(Model):
    port: Port
    limits: Limits


DEFAULT_ARMS: dict[str, ServicePlacement] = {
    name: ServicePlacement(port=6001 + i, limits=Limits(cpus=2, memory_gb=2))
    for i, name in enumerate(["planner", "executor", "retriever", "coder", "judge", "safety-guardian"])
}


class AutoscalingConfig(Model):
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=6, ge=1)
    cpu_utilization: int = Field(default=70, ge=10, le=100)

    @model_validator(mode="after")
    def _order(self) -> "AutoscalingConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"maxReplicas {self.max_replicas} is below minReplicas {self.min_replicas}")
        return self


class OctoLlmConfig(Model):
    host: Name
    network: Name | None = None
    autoscaling: AutoscalingConfig = AutoscalingConfig()  # Kubernetes only
    image_registry: Registry
    image_tag: PinnedTag
    llm_endpoint: Name = Field(description="name of the inference node the arms call")
    orchestrator: ServicePlacement = ServicePlacement(port=3000, limits=Limits(cpus=4, memory_gb=4))
    reflex: ServicePlacement = ServicePlacement(port=3001, limits=Limits(cpus=4, memory_gb=2))
    arms: dict[Name, ServicePlacement] = DEFAULT_ARMS


class MonitoringLimits(Model):
    prometheus: Limits = Limits(cpus=1.0, memory_gb=1.25)
    grafana: Limits = Limits(cpus=0.5, memory_gb=0.5)
    loki: Limits = Limits(cpus=0.75, memory_gb=0.75)
    alloy: Limits = Limits(cpus=0.25, memory_gb=0.25)
    blackbox: Limits = Limits(cpus=0.25, memory_gb=0.125)
    node_exporter: Limits = Limits(cpus=0.25, memory_gb=0.125)
    cadvisor: Limits = Limits(cpus=0.5, memory_gb=0.5)
    gpu_exporter: Limits = Limits(cpus=0.25, memory_gb=0.25)
    redis_exporter: Limits = Limits(cpus=0.125, memory_gb=0.125)
    postgres_exporter: Limits = Limits(cpus=0.125, memory_gb=0.125)


class MonitoringConfig(Model):
    host: Name
    network: Name | None = None
    prometheus_port: Port = 9090
    grafana_port: Port = 3030
    loki_port: Port = 3100
    blackbox_port: Port = 9115
    retention: str = Field(default="15d", pattern=r"^[0-9]+[hdwy]$")
    gpu_temperature_alert_c: int = Field(default=80, ge=40, le=100)
    inference_latency_alert_s: float = Field(default=10, gt=0)
    probe_model: ModelName | None = Field(
        default=None, description="model used by the synthetic inference-latency probe"
    )
    scrape_hosts: list[Name] | None = Field(default=None, description="hosts whose exporters run and are scraped; all when absent")
    limits: MonitoringLimits = MonitoringLimits()


class LoadBalancerConfig(Model):
    """Traefik in front of every Ollama instance of the stack."""

    host: Name
    network: Name
    port: Port = 80
    dashboard_port: Port | None = None
    metrics_port: Port = 8082
    rule: TraefikRule = "Host(`ollama.local`) || PathPrefix(`/api`)"
    health_path: UrlPath = "/api/version"
    health_interval_s: int = Field(default=10, ge=1)
    health_timeout_s: int = Field(default=3, ge=1)
    basic_auth: bool = Field(default=False, description="require the users in secret config loadBalancerUsers")
    limits: Limits = Limits(cpus=1, memory_gb=0.5)


class OpenWebUiConfig(Model):
    host: Name
    network: Name
    ipv4_address: Ipv4Address | None = None
    port: Port = 3080
    data_store: Name | None = Field(default=None, description="store holding its data; appdata when absent")
    limits: Limits = Limits(cpus=2, memory_gb=2)


class PortainerConfig(Model):
    host: Name
    network: Name
    port: Port = 9000
    data_store: Name | None = Field(default=None, description="store holding its data; appdata when absent")
    limits: Limits = Limits(cpus=1, memory_gb=0.5)


class WorkerConfig(Model):
    """Seed 002: Redis for the task queue and one LLM server, llama.cpp or vLLM, chosen by `backend`."""

    host: Name
    network: Name
    redis: RedisConfig = RedisConfig(port=6379, limits=Limits(cpus=1, memory_gb=1))
    redis_data_path: DataPath | None = None
    backend: Literal["llamacpp", "vllm"]
    servers: dict[Literal["llamacpp", "vllm"], InferenceConfig]

    @model_validator(mode="after")
    def _backend_defined(self) -> "WorkerConfig":
        if self.backend not in self.servers:
            raise ValueError(f"backend {self.backend!r} has no entry under servers "
                             f"(defined: {', '.join(sorted(self.servers)) or 'none'})")
        for key, server in self.servers.items():
            if server.engine != key:
                raise ValueError(f"servers.{key} must use engine {key}, not {server.engine}")
        return self


class HomelabAiConfig(Model):
    """Seed 004: llm-router, llm-manager and dashboard from a private registry."""

    host: Name
    network: Name
    registry: Registry
    registry_username: RegistryUser | None = None
    image_tag: PinnedTag
    router_port: Port = 8012
    manager_port: Port = 8015
    dashboard_port: Port = 8090
    backend: Name = Field(description="inference node the router sends requests to")
    limits: Limits = Limits(cpus=1, memory_gb=1)


class IngressConfig(Model):
    class_name: KubernetesSubdomain = "nginx"
    issuer: KubernetesSubdomain = Field(description="cert-manager ClusterIssuer that signs the TLS certificates")
    hosts: dict[Literal["orchestrator", "grafana"], str]  # checked below: DNS names
    controller_namespace: KubernetesName = "ingress-nginx"

    @field_validator("hosts")
    @classmethod
    def _dns(cls, v: dict[str, str]) -> dict[str, str]:
        for k, h in v.items():
            if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+", h):
                raise ValueError(f"ingress host {h!r} for {k} is not a DNS name")
        return v


class KubernetesConfig(Model):
    namespace: KubernetesName = "octollm"
    version: str = Field(default="1.31.0", pattern=r"^1\.[0-9]+\.[0-9]+$", description="for schema validation")
    context: KubeContext | None = Field(default=None, description="kubeconfig context; the ambient one when absent")
    accelerator: LabelValue = Field(default="nvidia-l4", description="cloud.google.com/gke-accelerator node label")
    storage_class: KubernetesSubdomain = "standard-rwo"
    data_size_gb: int = Field(default=20, ge=1)
    managed_dcgm: bool = Field(default=False, description="GKE's managed DCGM metrics instead of a DaemonSet")
    ingress: IngressConfig
    adopt_namespace: bool = Field(default=False, description=(
        "use the namespace if it already exists (created if not) and never delete it on destroy; when false the "
        "program creates it, and the preflight (doctor -s <stack>) refuses an existing one that is not this stack's"))
    model_pull_timeout_minutes: int | None = Field(default=None, description=(
        "how long `up` waits for the model-pull Job and for GPU workloads to become ready; absent: sized from "
        "the configured models (kubernetes_platform.default_model_pull_timeout_minutes)"))

    @field_validator("model_pull_timeout_minutes")
    @classmethod
    def _pull_timeout(cls, v: int | None) -> int | None:
        if v is not None and not 10 <= v <= 1440:
            raise ValueError(f"modelPullTimeoutMinutes {v} is out of range; allowed: 10 (the provider's own "
                             "default await) to 1440 minutes, or leave it out to size it from the models")
        return v


# --------------------------------------------------------------------------- backups
# (imports of this section kept with it)
from typing import ClassVar  # noqa: E402

from pydantic import Discriminator, Tag  # noqa: E402

# worker-redis: the workers' Redis (seed 002's task queue, `workers.redis`), backed up like `redis`.
BACKUP_SERVICES = ("postgres", "redis", "worker-redis", "qdrant", "grafana")


class BackupRetention(Model):
    """Which backups the job keeps: the newest of each of the last `daily` days and `weekly` ISO weeks, or
    every backup younger than `days` days. The newest backup is always kept, and nothing the job did not make."""

    daily: int | None = Field(default=None, ge=1, le=366)
    weekly: int | None = Field(default=None, ge=1, le=520)
    days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _one_policy(self) -> "BackupRetention":
        if self.days is not None and (self.daily is not None or self.weekly is not None):
            raise ValueError("give either days (keep every backup younger than that many days) or daily/weekly "
                             "(keep the newest backup of each of the last N days / ISO weeks), not both")
        if self.days is None and self.daily is None and self.weekly is None:
            raise ValueError("give daily and/or weekly (e.g. daily: 7, weekly: 4), or days (e.g. days: 14)")
        return self


class BackupStoreTarget(Model):
    """`target: {store: <name>}`: back up into a model store's directory (its dataset, on ZFS)."""

    store: Name


class BackupConfig(Model):
    """`backups:` consistent copies of the data services, made on a schedule on the host that runs them."""

    host: Name = Field(description="where the backup job runs: the host of the data services")
    # One branch is validated, chosen by the value's shape, so an error names the form that was meant.
    target: Annotated[Annotated[DataPath, Tag("Path")] | Annotated[BackupStoreTarget, Tag("Store")],
                      Discriminator(lambda v: "Store" if isinstance(v, (dict, BackupStoreTarget)) else "Path")] = Field(
        description="an absolute directory on that host, or {store: <modelStores name>} of kind zfs, nfs or hostPath "
                    "(on Kubernetes: of kind pvc)")
    schedule: str = Field(default="30 3 * * *", description=(  # checked below: five cron fields or a macro
        "a five-field cron expression (minute hour day-of-month month day-of-week, host local time) or @hourly, "
        "@daily, @weekly, @monthly; on systemd hosts it becomes the timer's OnCalendar"))
    retention: BackupRetention = BackupRetention(daily=7, weekly=4)
    services: list[Literal["postgres", "redis", "worker-redis", "qdrant", "grafana"]] | None = Field(
        default=None, min_length=1,
        description="what to back up; absent: every one of postgres, redis, worker-redis (the workers' Redis), "
                    "qdrant and grafana deployed on the host")

    MACROS: ClassVar[dict[str, str]] = {
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
    # (key, lowest, highest, names) of the five cron fields
    CRON_FIELDS: ClassVar[tuple] = (
        ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day-of-month", 1, 31, ()),
        ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
        ("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))

    @field_validator("target", mode="before")
    @classmethod
    def _target_form(cls, v):
        if isinstance(v, dict) and set(v) != {"store"}:
            raise ValueError("is an absolute directory (e.g. /mnt/user/backups/octollm) or {store: <modelStores name>}; "
                             f"got the keys {', '.join(sorted(map(str, v))) or 'none'}")
        if not isinstance(v, (str, dict)):
            raise ValueError("is an absolute directory (e.g. /mnt/user/backups/octollm) or {store: <modelStores name>}")
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        text = " ".join(v.split())
        text = cls.MACROS.get(text.lower(), text)
        sets = cls.cron_sets(text)
        if len(sets[0]) == 60:
            raise ValueError(f"{v!r} runs every minute; give the minute it starts at (e.g. '30 3 * * *' for 03:30 daily)")
        dom_all, dow_all = len(sets[2]) == 31, len(sets[4]) == 7
        if not dom_all and not dow_all:
            raise ValueError(f"{v!r} restricts both day-of-month and day-of-week, which cron ORs and a systemd timer "
                             "ANDs; restrict only one of them (the other '*')")
        return text

    @classmethod
    def cron_sets(cls, text: str) -> list[set[int]]:
        """The values each field of a five-field cron expression allows (day-of-week 7 is 0, Sunday)."""
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"{text!r} is not a cron expression: five fields (minute hour day-of-month month "
                             "day-of-week), e.g. '30 3 * * *', or one of " + ", ".join(sorted(cls.MACROS)))
        out = []
        for part, (key, lo, hi, names) in zip(parts, cls.CRON_FIELDS):
            values: set[int] = set()
            for item in part.lower().split(","):
                m = re.fullmatch(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?", item)
                if not m:
                    raise ValueError(f"{text!r}: {key} {item!r} is not '*', a number, a range a-b or a list of them, "
                                     "each optionally with a step /n")

                def num(s: str) -> int:
                    if s in names:
                        return names.index(s) + (1 if key == "month" else 0)
                    if not s.isdigit() or not lo <= int(s) <= hi:
                        allowed = f"{lo}-{hi}" + (f" or {names[0]}..{names[-1]}" if names else "")
                        raise ValueError(f"{text!r}: {key} {s!r} is out of range; allowed: {allowed}")
                    return int(s)

                base, step = m.group(1), int(m.group(2)) if m.group(2) else 1
                if step < 1:
                    raise ValueError(f"{text!r}: {key} step /{step} must be at least 1")
                if base == "*":
                    a, b = lo, hi
                elif "-" in base:
                    a, b = (num(x) for x in base.split("-"))
                    if a > b:
                        raise ValueError(f"{text!r}: {key} range {base} runs backwards")
                else:
                    a = num(base)
                    b = hi if m.group(2) else a
                values.update(range(a, b + 1, step))
            if key == "day-of-week" and 7 in values:
                values = (values - {7}) | {0}
            out.append(values)
        return out

    @property
    def on_calendar(self) -> str:
        """The schedule as a systemd OnCalendar expression (systemd.time(7)), for the same times."""
        minute, hour, dom, month, dow = self.cron_sets(self.schedule)

        def field(values: set[int], size: int) -> str:
            return "*" if len(values) == size else ",".join(f"{v:02d}" for v in sorted(values))

        days = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
        prefix = "" if len(dow) == 7 else ",".join(days[d] for d in sorted(dow)) + " "
        return f"{prefix}*-{field(month, 12)}-{field(dom, 31)} {field(hour, 24)}:{field(minute, 60)}:00"

    @property
    def store(self) -> str | None:
        return self.target.store if isinstance(self.target, BackupStoreTarget) else None

    def deployed(self, cfg: "StackConfig") -> list[str]:
        """Which of BACKUP_SERVICES the stack deploys on the backup host, in that order."""
        ds, out = cfg.data_services, []
        if ds is not None and ds.external is None and ds.host == self.host:
            out += [s for s in ("postgres", "redis") if getattr(ds, s) is not None]
        if cfg.workers is not None and cfg.workers.host == self.host:
            out.append("worker-redis")
        if ds is not None and ds.external is None and ds.host == self.host and ds.qdrant is not None:
            out.append("qdrant")
        if cfg.monitoring is not None and cfg.monitoring.host == self.host:
            out.append("grafana")
        return out

    # What a backup pod copies on Kubernetes. Not Grafana: its SQLite database is in Grafana's ReadWriteOnce
    # claim, which no other pod can mount while Grafana runs, and Grafana has no API that dumps it.
    KUBERNETES_SERVICES: ClassVar[tuple[str, ...]] = ("postgres", "redis", "qdrant")

    def chosen(self, cfg: "StackConfig") -> list[str]:
        """What each backup copies: `services`, else every one deployed on the host (on Kubernetes, of
        KUBERNETES_SERVICES)."""
        if self.services is not None:
            return [s for s in BACKUP_SERVICES if s in self.services]
        deployed = self.deployed(cfg)
        if self.host in cfg.hosts and cfg.hosts[self.host].kind == "kubernetes":
            return [s for s in deployed if s in self.KUBERNETES_SERVICES]
        return deployed

    def data_dir(self, cfg: "StackConfig", service: str) -> str:
        """The host directory a service keeps its data in on the backup host, as the program mounts it:
        the workers' Redis in `workers.redisDataPath` when set, everything else under the host's appdata."""
        if service == "worker-redis" and cfg.workers is not None and cfg.workers.redis_data_path:
            return str(cfg.workers.redis_data_path)
        return "/".join([cfg.hosts[self.host].appdata_root.rstrip("/"), service])


class StackConfig(Model):
    """Everything under `octollm-infra:` in Pulumi.<stack>.yaml."""

    platform: Literal["docker", "kubernetes"]
    hosts: dict[Name, HostConfig] = {}
    model_stores: dict[Name, ModelStoreConfig] = {}
    inference: dict[Name, InferenceConfig] = {}
    data_services: DataServicesConfig | None = None
    octollm: OctoLlmConfig | None = None
    monitoring: MonitoringConfig | None = None
    kubernetes: KubernetesConfig | None = None
    load_balancer: LoadBalancerConfig | None = None
    open_webui: OpenWebUiConfig | None = None
    portainer: PortainerConfig | None = None
    workers: WorkerConfig | None = None
    homelab_ai: HomelabAiConfig | None = None
    backups: BackupConfig | None = None
    images: dict[str, ImageRef] = {}  # keys checked below against the catalogue
    model_catalog: dict[ModelName, ModelCatalogEntry] = Field(
        default={}, description="models the built-in catalogue does not know, with their size (sizeGb, vramGb)")
    # A keeper of the random providers: it only has to differ from the last value.
    rotate: dict[Literal["postgres", "redis", "qdrant", "grafana", "workerRedis", "webuiSecretKey"],
                 RotationMarker] = Field(
        default={}, description="change a value to regenerate that generated secret, e.g. postgres: 2026-11")
    # secrets: must be set with `pulumi config set --secret`
    postgres_password: SecretStr | None = None
    redis_password: SecretStr | None = None
    qdrant_api_key: SecretStr | None = None
    grafana_admin_password: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    worker_redis_password: SecretStr | None = None
    registry_password: SecretStr | None = None
    load_balancer_users: SecretStr | None = Field(
        default=None, description="htpasswd lines (user:hash), one per line, for the load balancer's basic auth")
    webui_secret_key: SecretStr | None = None
    kubeconfig: SecretStr | None = None
    postgres_url: SecretStr | None = None
    redis_url: SecretStr | None = None

    @field_validator("images")
    @classmethod
    def _images(cls, v: dict[str, str]) -> dict[str, str]:
        for key, ref in v.items():
            if key not in catalog.IMAGES:
                raise ValueError(f"unknown image key {key!r}; allowed: {', '.join(sorted(catalog.IMAGES))}")
        return v

    def image(self, key: str) -> str:
        return self.images.get(key, catalog.IMAGES[key].ref)

    @model_validator(mode="after")
    def _share_model_catalog(self) -> "StackConfig":
        extra = {name: catalog.ModelInfo(e.engine, e.size_gb, e.vram_gb, e.description or name)
                 for name, e in self.model_catalog.items()}
        for node in self.all_inference.values():
            node._extra_models = extra
        return self

    def model_info(self, name: str) -> catalog.ModelInfo | None:
        if name in self.model_catalog:
            e = self.model_catalog[name]
            return catalog.ModelInfo(e.engine, e.size_gb, e.vram_gb, e.description or name)
        return catalog.MODELS.get(name)

    @property
    def all_inference(self) -> dict[str, InferenceConfig]:
        """Inference nodes, including the worker's LLM server for the chosen backend."""
        out = dict(self.inference)
        if self.workers is not None:
            out[WORKER_LLM_SERVER] = self.workers.servers[self.workers.backend]
        return out


WORKER_LLM_SERVER = "llm-server"


SECRET_FIELDS = (
    "postgresPassword", "redisPassword", "qdrantApiKey", "grafanaAdminPassword",
    "openaiApiKey", "anthropicApiKey", "workerRedisPassword", "registryPassword",
    "loadBalancerUsers", "webuiSecretKey", "kubeconfig", "postgresUrl", "redisUrl",
)


# --------------------------------------------------------------------------- loading


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        # Union branches and model-level "after" validators add type names to the location;
        # users know their YAML keys, not our class names.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p[:1].isupper() or "[" in p)))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against the config reference in README.md)"
        elif err["type"] == "literal_error":
            msg = f"{err.get('input')!r} is not allowed; {msg[0].lower()}{msg[1:]}"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err.get('input')!r} is not allowed; {msg[0].lower()}{msg[1:]}"
        problems.append(Problem(path=_path(loc), message=msg))
    return problems


def load_stack_config(raw: dict, secret_keys: set[str] | None = None) -> tuple[StackConfig, list[str]]:
    """Validate a stack's config. Returns the model and a list of warnings, or raises ConfigError."""
    problems: list[Problem] = []
    secret_keys = secret_keys or set()
    for key in SECRET_FIELDS:
        if key in raw and key not in secret_keys:
            problems.append(Problem(path=key, message=(
                "is stored in plain text; set it with `pulumi config set --secret "
                f"{key} <value>` so it is encrypted in the stack file")))
    try:
        cfg = StackConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems + _pydantic_problems(exc)) from None
    from components.config.rules import check_rules  # rules need the typed model

    rule_problems, warnings = check_rules(cfg)
    problems += rule_problems
    if problems:
        raise ConfigError(problems)
    return cfg, warnings
