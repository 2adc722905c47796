"""GpuInferenceNode: Ollama, vLLM or llama.cpp on one host, on its GPU or on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi

from components.config.rules import inference_instances
from components.config.schema import InferenceConfig
from components.platforms.base import Platform
from components.services.shared_model_store import SharedModelStore
from components.platforms.workload import GRACE_SERVICE, GpuSpec, PortSpec, ServiceSpec, http_health

MODELS_DIR = "/models"


@dataclass
class GpuInferenceNodeArgs:
    config: InferenceConfig
    platform: Platform
    image: str
    store: SharedModelStore | None = None
    temp_store: SharedModelStore | None = None  # scratch space mounted at /tmp
    labels: dict[str, str] = field(default_factory=dict)
    # Read-only instances start only after the store's writer has pulled its models.
    wait_for: Sequence[pulumi.Resource] = ()


class GpuInferenceNode(pulumi.ComponentResource):
    endpoints: dict[str, str]
    internal_url: str
    models: list[str]
    on_gpu: bool

    def __init__(self, name: str, args: GpuInferenceNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:GpuInferenceNode", name, None, opts)
        cfg, host = args.config, args.platform
        self.name = name
        self.cfg = cfg
        self.on_gpu = cfg.gpu is not None and host.cfg.has_gpu
        self.models = list(cfg.models) if cfg.engine != "llamacpp" else [cfg.model_path or ""]
        self.containers = {}
        self.endpoints = {}
        self.pull = None
        gpu = None
        if self.on_gpu:
            g = cfg.gpu
            gpu = GpuSpec(count=-1 if g.count == "all" else g.count, device_ids=tuple(g.device_ids or ()))
        store_deps = [s.ready for s in (args.store, args.temp_store) if s is not None]
        port = cfg.internal_port
        primary_deps = [*store_deps, *args.wait_for]
        if cfg.engine == "ollama" and cfg.models:
            # Where the platform fills a shared store before any server starts (Kubernetes: a Job).
            self.pull = host.prepare_models(
                f"{name}-pull-models", self, image=args.image, models=list(cfg.models),
                mount=args.store.mount(host.name, MODELS_DIR, False) if args.store else None,
                env={"OLLAMA_MODELS": f"{MODELS_DIR}/models", "OLLAMA_HOST": "127.0.0.1:11434"},
                depends_on=store_deps)
            if self.pull is not None:
                primary_deps.append(self.pull)

        for svc, host_port, primary in inference_instances(name, cfg):
            read_only = cfg.read_only or not primary
            mounts = (args.store.mount(host.name, MODELS_DIR, read_only),) if args.store else ()
            if args.temp_store:
                mounts += (args.temp_store.mount(host.name, "/tmp", False),)
            spec = ServiceSpec(
                name=svc, image=args.image, cpus=cfg.limits.cpus, memory_gb=cfg.limits.memory_gb,
                ports=(PortSpec(port, host_port, host.cfg.llm_bind, name="http",
                                metrics_path="/metrics" if cfg.engine != "ollama" else None),),
                mounts=mounts, gpu=gpu, network=cfg.network,
                ipv4_address=cfg.ipv4_address if primary else None,
                labels=args.labels, wait_healthy=(cfg.engine == "ollama"),
                needs_root=True,  # the engine images run as root and keep their state under /root
                # One GPU cannot serve the old and the new container at once.
                single_gpu=self.on_gpu,
                stop_grace_s=GRACE_SERVICE,  # in-flight generations finish, the model unloads from VRAM
                **self._engine(cfg, port, read_only),
            )
            deps = primary_deps if primary else [*store_deps, *args.wait_for, *( [self.pull] if self.pull else [])]
            container = host.run(f"{name}-{svc}", spec, self, depends_on=deps)
            self.containers[svc] = container
            self.endpoints[svc] = host.url(svc, host_port, port)
            if primary and cfg.engine == "ollama" and cfg.models and not read_only and self.pull is None:
                # Where the server pulls into its own store (Docker: `ollama pull` in the container).
                self.pull = host.load_models(f"{name}-pull-models", self, service=svc, models=list(cfg.models),
                                             depends_on=[container])
        self.internal_url = f"http://{name}:{port}"
        self.register_outputs({"endpoints": self.endpoints, "internalUrl": self.internal_url,
                               "models": self.models, "onGpu": self.on_gpu})

    def _engine(self, cfg: InferenceConfig, port: int, read_only: bool) -> dict:
        if cfg.engine == "ollama":
            env = {"OLLAMA_HOST": f"0.0.0.0:{port}", "OLLAMA_NUM_PARALLEL": str(cfg.num_parallel),
                   "OLLAMA_MODELS": f"{MODELS_DIR}/models"}
            if read_only:
                # A read-only replica must not prune or write blobs in the shared store.
                env["OLLAMA_NOPRUNE"] = "1"
            return {"env": env, "health": http_health(port, "/api/version", tool="bash", start_period_s=60)}
        if cfg.engine == "vllm":
            cmd = ["--model", cfg.models[0], "--host", "0.0.0.0", "--port", str(port),
                   "--gpu-memory-utilization", f"{cfg.gpu_memory_utilization:g}",
                   "--tensor-parallel-size", str(cfg.tensor_parallel_size),
                   "--download-dir", f"{MODELS_DIR}/hf"]
            if cfg.quantization:
                cmd += ["--quantization", cfg.quantization]
            if cfg.max_model_len:
                cmd += ["--max-model-len", str(cfg.max_model_len)]
            env = {"HF_HOME": f"{MODELS_DIR}/hf-home"}
            if read_only:
                env["HF_HUB_OFFLINE"] = "1"
            return {"command": tuple(cmd), "env": env, "shm_size_gb": cfg.shm_size_gb,
                    "health": http_health(port, "/health", tool="python", start_period_s=600)}
        layers = cfg.gpu_layers if self.on_gpu else 0
        env = {"LLAMA_ARG_MODEL": f"{MODELS_DIR}/{cfg.model_path}", "LLAMA_ARG_CTX_SIZE": str(cfg.context_size),
               "LLAMA_ARG_N_GPU_LAYERS": str(layers), "LLAMA_ARG_HOST": "0.0.0.0", "LLAMA_ARG_PORT": str(port),
               "LLAMA_ARG_ENDPOINT_METRICS": "1", "LLAMA_ARG_N_PARALLEL": str(cfg.num_parallel)}
        return {"env": env, "health": http_health(port, "/health", tool="curl", start_period_s=300)}
