"""A synthetic homelab of N hosts with the same mix of services on each, for scaling measurements.

Host 0 is the NFS server (Ollama writer), the monitoring host and the load balancer; every host runs
a read-only Ollama pair over NFS, node-exporter, cAdvisor and Alloy; every fifth host has a GPU and a
llama.cpp server on it. The host key is a fixed example key: nothing is contacted.
"""

from __future__ import annotations

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINYcwxsWOuy453/7g3seJTxioREle31qz8g5CfNHObEH"


def synthetic_homelab(n: int) -> dict:
    hosts, inference = {}, {}
    for i in range(n):
        name = f"host{i:03d}"
        host = {
            "address": f"10.1.{i // 250}.{i % 250 + 1}",
            "ssh": {"user": "ops", "port": 22, "identityFile": "~/.ssh/homelab_ed25519", "hostKey": HOST_KEY},
            "cpuThreads": 32, "memoryGb": 128, "appdataRoot": "/opt/octollm", "dataOwner": "1000:1000",
            "containerPrefix": "", "networks": {"llm": {"subnet": "172.21.0.0/24", "gateway": "172.21.0.1"}},
            "exporters": {"gpuExporter": "nvidia-smi", "gpuExporterPort": 9105},
        }
        if i % 5 == 4:
            host["gpus"] = [{"model": "RTX 3090", "vramGb": 24, "driverVersion": "575.64.03"}]
            inference[f"llama-{i:03d}"] = {
                "host": name, "engine": "llamacpp", "network": "llm", "port": 8000, "gpu": {"count": 1},
                "modelPath": "gguf/mistral-7b-instruct-v0.2.Q4_K_M.gguf", "readOnly": True,
                "limits": {"cpus": 4, "memoryGb": 8}, "modelStore": "models"}
        hosts[name] = host
        inference[f"ollama-{i:03d}"] = {
            "host": name, "engine": "ollama", "network": "llm", "port": 11434,
            "limits": {"cpus": 4, "memoryGb": 16}, "modelStore": "models",
            **({"models": ["llama3.1:8b", "nomic-embed-text"]} if i == 0 else {"readOnly": True, "replicas": 1}),
        }
    return {
        "platform": "docker",
        "hosts": hosts,
        "modelStores": {"models": {"host": "host000", "kind": "nfs", "path": "/opt/ollama-models",
                                   "clients": [h for h in hosts if h != "host000"], "clientCidr": "10.1.0.0/16"}},
        "inference": inference,
        "loadBalancer": {"host": "host000", "network": "llm", "port": 80},
        "monitoring": {"host": "host000", "network": "llm"},
    }
