"""Facts the program reasons with: models, GPUs, drivers and pinned images.

Everything that validation or sizing needs to *know* about the outside world lives here,
so that a new model or card is one line, and config validation and the components agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """A model as an inference engine loads it.

    size_gb: bytes on disk (what the model store must hold).
    vram_gb: memory it occupies loaded with the engine's default context, weights + KV cache.
    """

    engine: str  # "ollama" | "hf" (vLLM) | "gguf" (llama.cpp)
    size_gb: float
    vram_gb: float
    description: str


# Ollama tags are the default (Q4_K_M) quantisations; sizes from the Ollama library pages.
MODELS: dict[str, ModelInfo] = {
    "llama3.1:8b": ModelInfo("ollama", 4.9, 6.2, "Llama 3.1 8B, Q4_K_M"),
    "mixtral:8x7b": ModelInfo("ollama", 26.0, 26.0, "Mixtral 8x7B, 4-bit"),
    "codellama:13b": ModelInfo("ollama", 7.4, 9.0, "CodeLlama 13B, Q4_0"),
    "codellama:7b": ModelInfo("ollama", 3.8, 5.5, "CodeLlama 7B, Q4_0"),
    "nomic-embed-text": ModelInfo("ollama", 0.27, 0.6, "Nomic embed text v1.5"),
    "llama3.2:1b": ModelInfo("ollama", 1.3, 2.0, "Llama 3.2 1B, Q8_0 (small: dev stack)"),
    "qwen2.5:0.5b": ModelInfo("ollama", 0.4, 0.9, "Qwen 2.5 0.5B (tiny: CPU-only dev)"),
    "mistral:7b": ModelInfo("ollama", 4.1, 5.5, "Mistral 7B, Q4_0"),
    "llama2:7b": ModelInfo("ollama", 3.8, 5.5, "Llama 2 7B, Q4_0"),
    "llama2:13b": ModelInfo("ollama", 7.4, 9.0, "Llama 2 13B, Q4_0"),
    "Qwen/Qwen2.5-7B-Instruct-AWQ": ModelInfo("hf", 5.6, 5.6, "Qwen 2.5 7B Instruct, AWQ 4-bit"),
    "meta-llama/Llama-3.1-8B-Instruct": ModelInfo("hf", 16.1, 16.1, "Llama 3.1 8B Instruct, bf16"),
    "llama-2-7b-chat.Q4_K_M.gguf": ModelInfo("gguf", 4.1, 5.0, "Llama 2 7B chat GGUF Q4_K_M"),
    "mistral-7b-instruct-v0.2.Q4_K_M.gguf": ModelInfo("gguf", 4.4, 5.3, "Mistral 7B instruct GGUF Q4_K_M"),
}


@dataclass(frozen=True)
class GpuInfo:
    compute_capability: str
    architecture: str
    min_driver: int  # oldest driver major version that initialises the card at all


GPUS: dict[str, GpuInfo] = {
    "Tesla P40": GpuInfo("6.1", "Pascal", 375),
    "Tesla T4": GpuInfo("7.5", "Turing", 410),
    "RTX 3070": GpuInfo("8.6", "Ampere", 455),
    "RTX 3090": GpuInfo("8.6", "Ampere", 455),
    "RTX 4090": GpuInfo("8.9", "Ada Lovelace", 520),
    "L4": GpuInfo("8.9", "Ada Lovelace", 525),
    "A100": GpuInfo("8.0", "Ampere", 450),
    # Blackwell consumer cards are not initialised by the 570 series (seed 001: RmInitAdapter failed).
    "RTX 5070 Ti": GpuInfo("12.0", "Blackwell", 575),
    "RTX 5090": GpuInfo("12.0", "Blackwell", 575),
}

# Minimum Linux driver major.minor for each CUDA toolkit version (NVIDIA CUDA release notes,
# table 3). An image built on a newer CUDA than the driver supports fails at start with
# "Error 804: forward compatibility was attempted on non supported HW" on consumer cards.
CUDA_MIN_DRIVER: dict[str, tuple[int, int]] = {
    "11.8": (520, 61),
    "12.0": (525, 60),
    "12.1": (530, 30),
    "12.2": (535, 54),
    "12.3": (545, 23),
    "12.4": (550, 54),
    "12.5": (555, 42),
    "12.6": (560, 28),
    "12.8": (570, 26),
    "12.9": (575, 51),
    "13.0": (580, 65),
}

VLLM_MIN_COMPUTE_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    cuda: str | None = None  # CUDA runtime the image is built on, where it needs one


# Pinned defaults. A stack may override any of them under `images:`; nothing uses `latest`.
IMAGES: dict[str, ImageInfo] = {
    "ollama": ImageInfo("ollama/ollama:0.12.6", cuda="12.8"),
    "vllm": ImageInfo("vllm/vllm-openai:v0.6.3", cuda="12.4"),
    "llamacpp": ImageInfo("ghcr.io/ggml-org/llama.cpp:server-b4719"),
    "llamacpp-cuda": ImageInfo("ghcr.io/ggml-org/llama.cpp:server-cuda-b4719", cuda="12.4"),
    "postgres": ImageInfo("postgres:15.10-alpine"),
    "redis": ImageInfo("redis:7.4.1-alpine"),
    "qdrant": ImageInfo("qdrant/qdrant:v1.7.4"),
    "prometheus": ImageInfo("prom/prometheus:v2.55.1"),
    "grafana": ImageInfo("grafana/grafana:11.3.1"),
    "loki": ImageInfo("grafana/loki:2.9.10"),
    "alloy": ImageInfo("grafana/alloy:v1.5.0"),
    "node-exporter": ImageInfo("prom/node-exporter:v1.8.2"),
    "cadvisor": ImageInfo("gcr.io/cadvisor/cadvisor:v0.49.1"),
    "redis-exporter": ImageInfo("oliver006/redis_exporter:v1.66.0-alpine"),
    "postgres-exporter": ImageInfo("quay.io/prometheuscommunity/postgres-exporter:v0.16.0"),
    "dcgm-exporter": ImageInfo("nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"),
    "nvidia-gpu-exporter": ImageInfo("utkuozdemir/nvidia_gpu_exporter:1.2.1"),
    "blackbox-exporter": ImageInfo("prom/blackbox-exporter:v0.25.0"),
    "traefik": ImageInfo("traefik:v3.2.1"),
    "portainer": ImageInfo("portainer/portainer-ce:2.21.4"),
    "open-webui": ImageInfo("ghcr.io/open-webui/open-webui:v0.4.8"),
    "cuda-check": ImageInfo("nvidia/cuda:12.2.2-base-ubuntu22.04", cuda="12.2"),
    # Kubernetes backups: Qdrant's snapshot API from the backup pod (the qdrant image has no curl).
    "curl": ImageInfo("curlimages/curl:8.11.0"),
}


def driver_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def max_cuda_for_driver(driver: str) -> str | None:
    """Newest CUDA version in the table that a driver supports, or None if older than all."""
    have = driver_tuple(driver)
    best = None
    for cuda, need in CUDA_MIN_DRIVER.items():
        if have >= need:
            best = cuda
    return best


def cuda_tuple(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


def driver_supports_cuda(driver: str, cuda: str) -> bool:
    """True when `driver` is at least the minimum driver of `cuda` (or of the nearest older entry)."""
    wanted = cuda_tuple(cuda)
    needs = [need for c, need in CUDA_MIN_DRIVER.items() if cuda_tuple(c) <= wanted]
    if not needs:
        return True
    return driver_tuple(driver) >= max(needs)
