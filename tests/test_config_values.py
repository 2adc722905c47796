"""Values that could run as code, reach a system path or break a generated file are refused before
anything is registered, with the key path and the allowed form, and never as a traceback.

Each case changes one value of a real stack file, runs the real program under the mock engine, and
asserts the error names the key, says what is wrong, and that not one resource was registered.
"""

from __future__ import annotations

import copy
import os

import pytest

from harness import stack_config

PAYLOAD = "$(touch /tmp/octollm-pwned)"


def _set(path: str, value):
    """A mutation setting `a.b[0].c` (dots, [index]) of a stack config to `value`."""
    def apply(cfg: dict) -> None:
        node, parts = cfg, path.replace("]", "").replace("[", ".").split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return apply


CASES = [
    # host addresses and SSH
    ("unraid", "hosts.unraid.address", "-oProxyCommand=touch /tmp/x", "neither an IP address nor a DNS name"),
    ("unraid", "hosts.unraid.address", "", "an address is required"),
    ("unraid", "hosts.unraid.address", "192.168.1.100; rm -rf /", "neither an IP address nor a DNS name"),
    ("homelab", "hosts.server84.address", "-v", "neither an IP address nor a DNS name"),
    ("unraid", "hosts.unraid.address", "host name", "neither an IP address nor a DNS name"),
    ("unraid", "hosts.unraid.ssh.user", "-oProxyCommand=x", "is not a login name"),
    ("unraid", "hosts.unraid.ssh.user", f"root{PAYLOAD}", "is not a login name"),
    # paths: code, system directories, climbing out
    ("unraid", "hosts.unraid.appdataRoot", f"/mnt/user/appdata/{PAYLOAD}", "holds characters outside"),
    ("unraid", "hosts.unraid.appdataRoot", "/mnt/user/appdata/octollm`id`", "holds characters outside"),
    ("unraid", "hosts.unraid.appdataRoot", "/", "is a system directory"),
    ("unraid", "hosts.unraid.appdataRoot", "/etc", "belongs to the system"),
    ("unraid", "hosts.unraid.appdataRoot", "/mnt/user/appdata/../../../etc", "climbs with"),
    ("unraid", "hosts.unraid.appdataRoot", "relative/appdata", "is not an absolute path"),
    ("unraid", "hosts.unraid.appdataRoot", "/mnt/user/appdata//octollm", "is not normalised"),
    ("unraid", "modelStores.ollama-models.path", "/etc/ollama", "belongs to the system"),
    ("unraid", "modelStores.ollama-models.path", "/var/lib/docker/volumes/models", "belongs to the system"),
    ("unraid", "modelStores.ollama-models.path", "/usr", "belongs to the system"),
    ("unraid", "modelStores.ollama-models.path", "/mnt/user", "is a system directory"),
    ("homelab", "modelStores.ai-models.path", "/service-pool/ai models", "holds characters outside"),
    ("homelab", "workers.redisDataPath", "/", "is a system directory"),
    ("homelab", "workers.servers.llamacpp.modelPath", "../../etc/shadow", "must stay inside the model store"),
    ("homelab", "workers.servers.llamacpp.modelPath", "/etc/shadow", "relative to the model store"),
    # ZFS
    ("homelab", "modelStores.ai-models.dataset", "service-pool", "is a pool root"),
    ("homelab", "modelStores.ai-models.dataset", "service-pool/-rf", "is not a ZFS dataset name"),
    ("homelab", "modelStores.ai-models.dataset", f"service-pool/{PAYLOAD}", "is not a ZFS dataset name"),
    # NFS exports
    ("homelab", "modelStores.ollama-models.clientCidr", "10.0.0.0/24\n/ *(rw,no_root_squash)",
     "is not a network in CIDR form"),
    ("homelab", "modelStores.ollama-models.clientCidr", "*", "is not a network in CIDR form"),
    ("homelab", "modelStores.ollama-models.clientCidr", "10.0.0.1/24", "is not a network in CIDR form"),
    ("homelab", "modelStores.ollama-models.clientCidr", "0.0.0.0/0", "is every address"),
    ("homelab", "modelStores.ollama-models.exportOptions", "rw,no_root_squash\n/ *(rw)", "NFS options"),
    ("homelab", "modelStores.ollama-models.mountOptions", "nfsvers=4.1,hard;touch /tmp/x", "NFS options"),
    # images
    ("unraid", "inference.ollama.image", "ollama/ollama:latest", "uses 'latest'"),
    ("homelab", "inference.ollama-80.image", "ollama/ollama", "has no tag or digest"),
    ("unraid", "inference.ollama.image", f"ollama/ollama:0.1{PAYLOAD}", "is not an image reference"),
    ("unraid", "images.grafana", "grafana/grafana", "has no tag or digest"),
    ("unraid", "images.grafana", "Grafana/Grafana:11.3.1", "is not an image reference"),
    # models
    ("unraid", "inference.ollama.models[0]", "llama3.1:8b; rm -rf /", "is not a model name"),
    ("unraid", "inference.ollama.models[0]", "../etc/passwd", "is not a model name"),
    ("homelab", "inference.vllm-qwen.models[0]", "Qwen/Qwen2.5 7B", "is not a model name"),
    ("unraid", "monitoring.probeModel", "phi3:mini", "is served by no Ollama node"),
    # SQL identifiers
    ("unraid", "dataServices.postgres.user", "octo-llm", "is not a plain PostgreSQL identifier"),
    ("unraid", "dataServices.postgres.database", "db;DROP", "is not a plain PostgreSQL identifier"),
    # GPUs
    ("homelab", "inference.vllm-qwen.gpu", {"deviceIds": ["\u00b2"]}, "is not a GPU index"),
    ("homelab", "inference.vllm-qwen.gpu", {"deviceIds": ["7"]}, "is not a GPU index of server3070"),
    ("homelab", "inference.vllm-qwen.gpu", {"deviceIds": []}, "at least 1 item"),
    ("homelab", "inference.vllm-qwen.tensorParallelSize", 4, "4 shards need as many GPUs"),
    # ports and names
    ("homelab", "inference.ollama-84.port", 65535, "beyond 65535"),
    ("unraid", "inference.postgres", {"host": "unraid", "engine": "ollama", "network": "octollm-net", "port": 3999,
                                      "models": ["nomic-embed-text"], "limits": {"cpus": 1, "memoryGb": 1}},
     "two containers of one host cannot share a name"),
    ("homelab", "loadBalancer.basicAuth", True, "the secret loadBalancerUsers is not set"),
    # Kubernetes names and label values
    ("gke", "kubernetes.namespace", "Octo_LLM", "should match pattern"),
    ("gke", "kubernetes.accelerator", "nvidia l4;x", "is not a Kubernetes label value"),
    ("gke", "kubernetes.storageClass", "-rwo", "should match pattern"),
]


# Where the message points when the rule is about a neighbouring key.
REPORTED_AT = {
    "inference.ollama-84.port": "inference.ollama-84.replicas",
    "inference.postgres": "dataServices.postgres",
    "inference.vllm-qwen.gpu": "inference.vllm-qwen.gpu",
}


@pytest.mark.parametrize("stack,path,value,fragment", CASES, ids=[f"{c[1]}={c[2]!r}"[:60] for c in CASES])
def test_bad_value_is_refused_before_anything_is_registered(run, stack, path, value, fragment):
    cfg = copy.deepcopy(stack_config(stack))
    _set(path, value)(cfg)
    r = run(stack, config=cfg)
    assert r.error is not None, f"{path}={value!r} was accepted"
    text = str(r.error)
    assert "Traceback" not in text and type(r.error).__name__ == "RunError", text
    where = REPORTED_AT.get(path, path)
    assert f"octollm-infra:{where}" in text, text
    assert fragment in text, text
    assert r.registrations == []
    assert not os.path.exists("/tmp/octollm-pwned")


def test_at_least_forty_classes_of_bad_value():
    assert len(CASES) >= 40


def test_identity_file_that_is_not_a_key_is_refused(run, ssh_home, tmp_path):
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("shopping list\n")
    not_a_key.chmod(0o600)
    cfg = copy.deepcopy(stack_config("unraid"))
    cfg["hosts"]["unraid"]["ssh"]["identityFile"] = str(not_a_key)
    r = run("unraid", config=cfg)
    assert "hosts.unraid.ssh.identityFile" in str(r.error) and "is not a private key file" in str(r.error)
    assert r.registrations == []


def test_identity_file_readable_by_others_is_refused(run, tmp_path):
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o644)
    cfg = copy.deepcopy(stack_config("unraid"))
    cfg["hosts"]["unraid"]["ssh"]["identityFile"] = str(key)
    r = run("unraid", config=cfg)
    assert "readable by other users (mode 644)" in str(r.error) and "chmod 600" in str(r.error)
    assert r.registrations == []


@pytest.mark.parametrize("value", ["server-80.lan", "10.0.0.80", "fd00::80", "unraid"])
def test_legitimate_addresses_are_accepted(value):
    from components.config.values import _host_address

    assert _host_address(value) == value


@pytest.mark.parametrize("value", ["/mnt/user/appdata/octollm", "/var/tmp/octollm-dev", "/opt/octollm/models",
                                   "/service-pool/ai-models", "/srv/octollm"])
def test_legitimate_data_paths_are_accepted(value):
    from components.config.values import _safe_dir

    assert _safe_dir(value) == value
