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
    """A mutation setting `a.b[0].c` (dots, [index]) of a stack config to `value`. Only a top-level section
    may be missing (it is created): a case naming a node the stack does not have fails, rather than
    testing a node of its own making."""
    def apply(cfg: dict) -> None:
        node, parts = cfg, path.replace("]", "").replace("[", ".").split(".")
        for i, p in enumerate(parts[:-1]):
            node = node[int(p)] if p.isdigit() else (node.setdefault(p, {}) if i == 0 else node[p])
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
    ("homelab", "inference.ollama.image", "ollama/ollama", "has no tag or digest"),
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
    ("gke", "kubernetes.namespace", "Octo_LLM", "is not a Kubernetes name"),
    ("gke", "kubernetes.accelerator", "nvidia l4;x", "is not a Kubernetes label value"),
    ("gke", "kubernetes.storageClass", "-rwo", "is not a Kubernetes object name"),
    # a leading '//' is '/' to the host (posixpath keeps it)
    ("unraid", "hosts.unraid.appdataRoot", "//etc", "'/etc' is inside /etc"),
    ("unraid", "hosts.unraid.appdataRoot", "///etc/octollm", "'/etc/octollm' is inside /etc"),
    ("unraid", "hosts.unraid.appdataRoot", "//", "'/' is a system directory"),
    ("homelab", "modelStores.ollama-models.path", "//etc", "'/etc' is inside /etc"),
    ("homelab", "modelStores.ai-models.path", "//usr/share/models", "is inside /usr"),
    ("homelab", "workers.redisDataPath", "//", "'/' is a system directory"),
    ("homelab", "workers.redisDataPath", "///etc", "'/etc' is inside /etc"),
    # a final newline (re.match with '$' accepts one) and other control characters
    ("homelab", "hosts.server80.address", "server80\n", "holds the control character '\\n'"),
    ("homelab", "hosts.server80.address", "10.0.0.80\n", "holds the control character"),
    ("unraid", "inference.ollama.models[0]", "mistral:7b\n", "is not a model name"),
    ("homelab", "inference.vllm-qwen.models[0]", "Qwen/Qwen2.5-7B-Instruct-AWQ\n", "is not a model name"),
    ("homelab", "inference.vllm-qwen.image", "vllm/vllm-openai:v0.4.0\n", "holds the control character"),
    ("unraid", "images.grafana", "grafana/grafana:11.3.1\x1b[2J", "holds the control character"),
    ("homelab", "modelStores.ollama-models.path", "/opt/ollama-models\n", "holds characters outside"),
    ("homelab", "workers.servers.llamacpp.modelPath", "gguf/llama-2-7b-chat.Q4_K_M.gguf\n",
     "relative to the model store"),
    ("homelab", "modelStores.ai-models.dataset", "service-pool/ai-models\n", "is not a ZFS dataset name"),
    ("unraid", "hosts.unraid.ssh.user", "root\n", "is not a login name"),
    ("unraid", "dataServices.postgres.user", "octollm\n", "is not a plain PostgreSQL identifier"),
    ("gke", "kubernetes.namespace", "octollm\n", "is not a Kubernetes name"),
    ("unraid", "inference.ollama.ipv4Address", "172.20.0.10\n", "holds the control character"),
    ("unraid", "hosts.unraid.dataOwner", "99:100\n", "is not allowed"),
    ("unraid", "hosts.unraid.dataOwner", "\u0669\u0669:100", "is not allowed"),  # Arabic-Indic digits
    ("unraid", "hosts.unraid.ssh.identityFile", "~/.ssh/id_ed25519\n-oProxyCommand=x", "holds the control character"),
    # IPv6 and zone IDs: URLs and ssh destinations are built host:port, unbracketed
    ("homelab", "hosts.server80.address", "fd00::80", "IPv6 is not supported"),
    ("homelab", "hosts.server80.address", "fe80::1%$(id)", "IPv6 is not supported"),
    ("homelab", "hosts.server80.llmPublishAddress", "fe80::1%eth0,nolock,port=1", "IPv6 is not supported"),
    ("unraid", "hosts.unraid.publishAddress", "::", "IPv6 is not supported"),
    ("homelab", "modelStores.ollama-models.clientCidr", "fd00::/64", "IPv6 is not supported"),
    ("homelab", "hosts.zfs-ai.networks.ai-network.reserved.continue-dev", "fd00::12", "IPv6 is not supported"),
    ("homelab", "inference.ollama-ai.ipv4Address", "fe80::1%eth0", "IPv6 is not supported"),
    ("homelab", "homelabAi.registry", "[fd00::5]:5000", "is not a registry address"),
    # names and free text that had no type
    ("gke", "kubernetes.ingress.className", "nginx class", "is not a Kubernetes object name"),
    ("gke", "kubernetes.ingress.issuer", "letsencrypt-prod\n", "is not a Kubernetes object name"),
    ("gke", "kubernetes.ingress.controllerNamespace", "ingress_nginx", "is not a Kubernetes name"),
    ("gke", "modelStores.models.storageClass", "Enterprise RWX", "is not a Kubernetes object name"),
    ("gke", "kubernetes.context", "gke-ctx --token=x", "is not a kubeconfig context name"),
    ("gke", "kubernetes.context", "-oProxyCommand=x", "is not a kubeconfig context name"),
    ("homelab", "homelabAi.registryUsername", "robot$homelab\n", "is not a registry user name"),
    ("homelab", "homelabAi.registryUsername", "robot'$(id)'", "is not a registry user name"),
    ("homelab", "homelabAi.registryUsername", "robot homelab", "is not a registry user name"),
    ("homelab", "homelabAi.registry", "-harbor.lan", "is not a registry address"),
    ("unraid", "octollm.imageRegistry", "ghcr.io/octollm\n", "holds the control character"),
    ("homelab", "hosts.zfs-ai.gpus[0].model", "RTX 5070 Ti\n", "holds the control character"),
    ("homelab", "hosts.zfs-ai.gpus[0].model", "R" * 300, "is at most 64"),
    ("homelab", "loadBalancer.healthPath", "/api/version\n", "is not a URL path"),
    ("homelab", "loadBalancer.rule", "Host(`a`)\n  middlewares: [x]", "holds the control character"),
    ("unraid", "rotate.postgres", "2026-11\n", "holds the control character"),
    ("gke", "dataServices.external", {"qdrantUrl": "https://u:pw@xyz.cloud.qdrant.io:6333"}, "no credentials"),
    ("gke", "dataServices.external", {"qdrantUrl": "https://[fd00::1]:6333"}, "IPv6 is not supported"),
    ("gke", "dataServices.external", {"qdrantUrl": "https://xyz.cloud.qdrant.io:6333\n"}, "holds the control character"),
    # data paths: only under the allowed roots, never a shared root itself, never a hidden directory
    ("unraid", "hosts.unraid.appdataRoot", "/mnt/user/appdata", "is a system directory or a shared root"),
    ("unraid", "hosts.unraid.appdataRoot", "/mnt/user/system/octollm", "is inside /mnt/user/system"),
    ("unraid", "hosts.unraid.appdataRoot", "/home/alice", "is a system directory or a shared root"),
    ("unraid", "hosts.unraid.appdataRoot", "/home/alice/.ssh", "has a hidden component"),
    ("unraid", "modelStores.ollama-models.path", "/opt/octollm/.cache/models", "has a hidden component"),
    ("unraid", "hosts.unraid.appdataRoot", "/var/spool/octollm", "is inside /var/spool"),
    ("unraid", "hosts.unraid.appdataRoot", "/var/log/octollm", "is inside /var/log"),
    ("homelab", "modelStores.ollama-models.path", "/var/lib/kubelet/models", "is inside /var/lib/kubelet"),
    ("unraid", "hosts.unraid.appdataRoot", "/var/lib/mysql", "is not under an allowed root"),
    ("unraid", "hosts.unraid.appdataRoot", "/octollm", "is not under an allowed root"),
    ("unraid", "hosts.unraid.appdataRoot", "/service-pool/appdata", "is the mount of no ZFS pool"),
    ("homelab", "hosts.server80.appdataRoot", "/service-pool/appdata", "is the mount of no ZFS pool"),
    ("homelab", "workers.redisDataPath", "/tank/queue", "is the mount of no ZFS pool"),
    ("unraid", "backups.target", "/mnt/user/backups", "is a system directory or a shared root"),
    ("unraid", "backups.target", "/srv/.backups", "has a hidden component"),
    ("homelab", "modelStores.ai-models.path", "/", "is a system directory"),
    ("homelab", "modelStores.ai-models.path", "/service-pool", "is not under an allowed root"),
    ("homelab", "modelStores.ai-models.path", "/service-pool/../etc", "climbs with"),
    ("homelab", "modelStores.ollama-models.path", "/opt/ollama-models/../../root", "climbs with"),
    ("homelab", "workers.servers.llamacpp.modelPath", ".hidden/model.gguf", "has a component starting with '.'"),
    # an unpinned image on every stack
    ("dev", "inference.ollama.image", "ollama/ollama:latest", "uses 'latest'"),
    ("dev", "inference.ollama.image", "ollama/ollama", "has no tag or digest"),
    ("unraid", "inference.ollama.image", "ollama/ollama", "has no tag or digest"),
    ("homelab", "inference.ollama.image", "ollama/ollama:latest", "uses 'latest'"),
    ("homelab", "images.vllm", "vllm/vllm-openai", "has no tag or digest"),
    ("gke", "inference.ollama.image", "ollama/ollama:latest", "uses 'latest'"),
    ("gke", "inference.ollama.image", "ollama/ollama", "has no tag or digest"),
]


# Where the message points when the rule is about a neighbouring key.
REPORTED_AT = {
    "inference.ollama-84.port": "inference.ollama-84.replicas",
    "inference.postgres": "dataServices.postgres",
    "inference.vllm-qwen.gpu": "inference.vllm-qwen.gpu",
    "dataServices.external": "dataServices.external.qdrantUrl",
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


@pytest.mark.parametrize("value", ["server-80.lan", "10.0.0.80", "unraid", "server80.lan."])
def test_legitimate_addresses_are_accepted(value):
    from components.config.values import _host_address

    assert _host_address(value) == value


@pytest.mark.parametrize("value", ["/mnt/user/appdata/octollm", "/var/tmp/octollm-dev", "/opt/octollm/models",
                                   "/service-pool/ai-models", "/srv/octollm", "/var/lib/octollm", "/home/alice/octollm",
                                   "/mnt/disks/ssd/models", "/mnt/disk1/appdata/octollm", "/data/octollm"])
def test_legitimate_data_paths_are_accepted(value):
    from components.config.values import _safe_dir

    assert _safe_dir(value) == value


def test_a_path_outside_the_roots_is_refused_with_the_allowed_roots():
    from components.config.schema import ConfigError, load_stack_config
    from components.config.values import ALLOWED_ROOTS_TEXT

    for value in ("/var/lib/mysql", "/service-pool/appdata", "/mnt/user/appdata"):
        cfg = copy.deepcopy(stack_config("unraid"))
        cfg["hosts"]["unraid"]["appdataRoot"] = value
        with pytest.raises(ConfigError) as exc:
            load_stack_config(cfg)
        [p] = exc.value.problems
        assert p.path == "hosts.unraid.appdataRoot" and repr(value) in p.message, p
        assert ALLOWED_ROOTS_TEXT in p.message and "/mnt/user/<share>/" in p.message, p


def test_a_zfs_pool_mount_is_a_root_only_on_the_host_of_its_stores():
    from components.config.schema import load_stack_config

    # zfs-ai's stores use service-pool, staging-pool and media-pool: its other directories may live there.
    cfg = copy.deepcopy(stack_config("homelab"))
    cfg["hosts"]["zfs-ai"]["appdataRoot"] = "/media-pool/octollm"
    cfg["modelStores"]["worker-models"]["path"] = "/staging-pool/worker-models"
    loaded, _ = load_stack_config(cfg)
    assert loaded.hosts["zfs-ai"].appdata_root == "/media-pool/octollm"


@pytest.mark.parametrize("value", ["robot$homelab", "robot$homelab+ci", "octo.deployer", "deploy-bot"])
def test_registry_user_names_of_harbor_robots_are_accepted(value):
    from components.config.values import _registry_user

    assert _registry_user(value) == value


@pytest.mark.parametrize("value", ["ghcr.io/octollm", "127.0.0.1:5000/octollm", "harbor.server.lan/library",
                                   "localhost:5000"])
def test_registry_addresses_are_accepted(value):
    from components.config.values import _registry

    assert _registry(value) == value


@pytest.mark.parametrize("value", ["https://xyz.cloud.qdrant.io:6333", "http://10.0.0.5:6333", "https://qdrant.lan/"])
def test_service_urls_are_accepted(value):
    from components.config.values import _http_url

    assert _http_url(value) == value


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab", "gke"])
def test_every_real_stack_loads(stack):
    from components.config.schema import load_stack_config

    load_stack_config(stack_config(stack))
