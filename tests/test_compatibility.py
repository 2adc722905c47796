"""Engine/GPU compatibility rules, checked before any resource is created."""

import copy

import pytest

from components.config.schema import ConfigError, load_stack_config
from harness import stack_config

HOMELAB = stack_config("homelab")
UNRAID = stack_config("unraid")


def problems(raw):
    with pytest.raises(ConfigError) as exc:
        load_stack_config(raw)
    return [str(p) for p in exc.value.problems]


def test_vllm_on_a_pascal_p40_is_rejected():
    raw = copy.deepcopy(UNRAID)
    raw["inference"]["vllm"] = {"host": "unraid", "engine": "vllm", "network": "octollm-net", "port": 8000,
                                "gpu": {"count": 1}, "models": ["Qwen/Qwen2.5-7B-Instruct-AWQ"],
                                "limits": {"cpus": 2, "memoryGb": 8}, "vramGb": 0.1}
    raw["inference"]["ollama"]["vramGb"] = 20
    [p] = [p for p in problems(raw) if "compute capability" in p]
    assert p.startswith("inference.vllm.engine") and "6.1" in p and "Tesla P40" in p


def test_cuda_image_newer_than_the_driver_is_rejected_with_error_804():
    raw = copy.deepcopy(HOMELAB)
    raw["inference"]["vllm-qwen"]["image"] = "vllm/vllm-openai:v0.10.1"
    raw["inference"]["vllm-qwen"]["cudaVersion"] = "12.8"
    [p] = [p for p in problems(raw) if "Error 804" in p]
    assert p.startswith("inference.vllm-qwen.image") and "535.247.01" in p and "12.2" in p and "12.8" in p


def test_catalogue_knows_the_cuda_of_pinned_images():
    raw = copy.deepcopy(HOMELAB)
    raw["hosts"]["server3070"]["gpus"][0]["driverVersion"] = "470.82.01"
    del raw["inference"]["vllm-qwen"]["image"]
    del raw["inference"]["vllm-qwen"]["cudaVersion"]
    assert any("CUDA 12.4" in p and "Error 804" in p for p in problems(raw))


def test_blackwell_needs_driver_575():
    raw = copy.deepcopy(HOMELAB)
    raw["hosts"]["zfs-ai"]["gpus"][0]["driverVersion"] = "570.86.16"
    [p] = [p for p in problems(raw) if "575" in p and "RmInitAdapter" in p]
    assert p.startswith("hosts.zfs-ai.gpus[0].driverVersion")


def test_vram_is_accounted_across_every_engine_on_a_gpu():
    raw = copy.deepcopy(HOMELAB)
    raw["workers"]["backend"] = "vllm"
    raw["workers"]["servers"]["vllm"]["gpuMemoryUtilization"] = 0.9  # 14.4 GB + Ollama's 6.2 GB > 16 GB
    [p] = [p for p in problems(raw) if "VRAM" in p]
    assert p.startswith("hosts.zfs-ai.gpus[0].vramGb")
    assert "inference.ollama-ai" in p and "workers.servers.vllm" in p and "20.6 GB" in p


def test_switching_the_worker_backend_is_one_value():
    raw = copy.deepcopy(HOMELAB)
    raw["workers"]["backend"] = "vllm"
    cfg, _ = load_stack_config(raw)
    assert cfg.all_inference["llm-server"].engine == "vllm"


def test_nfs_store_with_two_writers_is_rejected():
    raw = copy.deepcopy(HOMELAB)
    raw["inference"]["ollama-84"]["readOnly"] = False
    ps = problems(raw)
    assert any(p.startswith("modelStores.ollama-models") and "exactly one may write" in p for p in ps)
    assert any(p.startswith("inference.ollama-84.readOnly") and "server80" in p for p in ps)


def test_vllm_without_a_gpu_is_rejected():
    raw = copy.deepcopy(HOMELAB)
    raw["inference"]["vllm-qwen"]["host"] = "server84"
    raw["inference"]["vllm-qwen"]["network"] = "ollama-net"
    raw["inference"]["vllm-qwen"]["port"] = 8001
    raw["inference"]["vllm-qwen"]["modelStore"] = "ollama-models"
    raw["inference"]["vllm-qwen"]["readOnly"] = True
    raw["homelabAi"]["host"] = "server84"
    raw["homelabAi"]["network"] = "ollama-net"
    assert any(p.startswith("inference.vllm-qwen.gpu") and "declares none" in p for p in problems(raw))


def test_llamacpp_runs_on_the_cpu_where_the_host_has_no_gpu(run):
    raw = copy.deepcopy(HOMELAB)
    srv = raw["workers"]["servers"]["llamacpp"]
    del srv["gpu"]
    r = run("homelab", config=raw)
    assert r.error is None, r.error
    llm = r.by_name("llm-server-llm-server").inputs
    assert "deviceRequests" not in llm
    assert "LLAMA_ARG_N_GPU_LAYERS=0" in llm["envs"]
    assert llm["image"].startswith("ghcr.io/ggml-org/llama.cpp:server-b")


def test_published_port_on_an_internal_network_is_rejected():
    raw = copy.deepcopy(HOMELAB)
    raw["workers"]["redis"]["port"] = 6379
    assert any(p.startswith("workers.redis") and "internal" in p for p in problems(raw))


def test_reserved_address_outside_the_subnet_is_rejected():
    raw = copy.deepcopy(HOMELAB)
    raw["hosts"]["zfs-ai"]["networks"]["ai-network"]["reserved"]["continue-dev"] = "172.21.0.12"
    assert any(p.startswith("hosts.zfs-ai.networks.ai-network.reserved.continue-dev") for p in problems(raw))


def test_static_ip_on_a_reserved_address_is_rejected():
    raw = copy.deepcopy(HOMELAB)
    raw["openWebui"]["ipv4Address"] = "172.20.0.12"
    assert any(p.startswith("openWebui.ipv4Address") and "already given" in p for p in problems(raw))
