"""The real program against the real Pulumi.homelab.yaml."""

import copy
import json

import pytest
import yaml

from components.config.schema import load_stack_config
from components.config.rules import inventory
from harness import stack_config

CONTAINER = "docker:index/container:Container"
SECRETS = {"registryPassword": "harbor-robot-token", "workerRedisPassword": "worker-redis-pw"}


@pytest.fixture(scope="module")
def homelab(run):
    r = run("homelab", secrets=SECRETS)
    assert r.error is None, r.error
    return r


def c(r, logical):
    return r.by_name(logical).inputs


def env_of(inputs):
    return dict(e.split("=", 1) for e in inputs.get("envs", []))


def test_every_resource_uses_its_own_hosts_providers(homelab):
    cfg, _ = load_stack_config(stack_config("homelab"))
    provider_host = {}
    for h in cfg.hosts:
        provider_host[homelab.urn_of(f"{h}-docker")] = h
        provider_host[homelab.urn_of(f"{h}-command")] = h
    placed = {(p.host, p.service) for p in inventory(cfg)}
    containers = homelab.of_type(CONTAINER)
    service = {r.urn: {l["label"]: l["value"] for l in r.inputs["labels"]}["org.octollm.service"] for r in containers}
    assert {(provider_host[r.provider.rsplit("::", 1)[0]], service[r.urn]) for r in containers} == placed
    for r in homelab.registrations:
        if not r.provider or r.type.startswith("random:"):
            continue
        host = provider_host[r.provider.rsplit("::", 1)[0]]
        if r.name in placed:
            assert placed[r.name] == host, r.name
        if r.type == "command:remote:Command":
            assert r.inputs["connection"]["host"] == cfg.hosts[host].address, r.name
            assert r.inputs["connection"]["port"] == cfg.hosts[host].ssh.port, r.name
    assert c(homelab, "server3070-docker")["host"] == "ssh://unarmedpuppy@192.168.86.47:4242"


def test_preflight_gates_every_resource_on_its_host(homelab):
    for host in ("server80", "server84", "zfs-ai", "server3070"):
        pre = homelab.urn_of(f"{host}-preflight")
        mine = [r for r in homelab.registrations if r.name.startswith(f"{host}-") and r.type.startswith("docker:index/")
                and r.type != "pulumi:providers:docker"]
        assert mine
        for r in mine:
            assert pre in r.dependencies, r.name
    for store in ("ollama-models-export", "ai-models-dataset", "hf-models-dir"):
        r = homelab.by_name(store)
        assert any(d.endswith("-preflight") for d in r.dependencies), store


def test_nfs_store_has_one_writer_and_read_only_clients(homelab):
    export = c(homelab, "ollama-models-export")["create"]
    assert "line=/opt/ollama-models 10.0.0.0/24(rw,sync,no_subtree_check,no_root_squash)" in \
        export.replace("'", "")
    assert "exportfs -ra" in export
    assert homelab.by_name("ollama-models-export").protect
    writer = {m["target"]: m for m in c(homelab, "ollama-ollama")["mounts"]}["/models"]
    assert writer == {"type": "bind", "source": "/opt/ollama-models", "target": "/models", "readOnly": False}
    vol = c(homelab, "server84-volume-ollama-models-nfs-ro")
    assert vol["driver"] == "local"
    assert vol["driverOpts"]["type"] == "nfs" and vol["driverOpts"]["device"] == ":/opt/ollama-models"
    assert vol["driverOpts"]["o"].startswith("addr=10.0.0.80,ro,")
    for svc in ("ollama-84", "ollama-84-1", "ollama-84-2"):
        m = {m["target"]: m for m in c(homelab, f"ollama-84-{svc}")["mounts"]}["/models"]
        assert m["type"] == "volume" and m["source"] == "ollama-models-nfs-ro" and m["readOnly"] is True
        assert env_of(c(homelab, f"ollama-84-{svc}"))["OLLAMA_NOPRUNE"] == "1"
    writers = [r.name for r in homelab.of_type(CONTAINER)
               if any(m["target"] == "/models" and not m.get("readOnly") and "ollama-models" in m["source"]
                      for m in r.inputs.get("mounts", []))]
    assert writers == ["ollama-ollama"]
    # only writers pull: server80's ollama on the NFS store, and the GPU node on its own dataset
    assert sorted(r.name for r in homelab.registrations if r.name.endswith("-pull-models")) == \
        ["ollama-ai-pull-models", "ollama-pull-models"]


def test_replicas_on_consecutive_ports_start_after_the_primary_pulled(homelab):
    pull = homelab.urn_of("ollama-pull-models")
    for svc, port in (("ollama-84", 11434), ("ollama-84-1", 11435), ("ollama-84-2", 11436)):
        i = c(homelab, f"ollama-84-{svc}")
        assert i["ports"] == [{"internal": 11434, "external": port, "ip": "10.0.0.84", "protocol": "tcp"}]
        assert i["memory"] == 16 * 1024
        assert "/api/version" in " ".join(i["healthcheck"]["tests"])
        assert pull in homelab.by_name(f"ollama-84-{svc}").dependencies


def test_traefik_balances_every_ollama_instance(homelab):
    dyn = yaml.safe_load(c(homelab, "load-balancer-traefik-file-dynamic-ollama-yml")["stdin"])
    svc = dyn["http"]["services"]["ollama"]["loadBalancer"]
    backends = [s["url"] for s in svc["servers"]]
    cfg, _ = load_stack_config(stack_config("homelab"))
    expected = sorted(f"http://{cfg.hosts[p.host].address}:{p.ports[0].port}" for p in inventory(cfg)
                      if p.path.startswith("inference.") and cfg.all_inference[p.path.split(".")[1]].engine == "ollama")
    assert sorted(backends) == expected and len(backends) == 5
    assert svc["healthCheck"] == {"path": "/api/version", "interval": "10s", "timeout": "3s"}
    assert dyn["http"]["routers"]["ollama"]["rule"] == "Host(`ollama.local`) || PathPrefix(`/api`)"
    assert "middlewares" not in dyn["http"]["routers"]["ollama"]


def test_traefik_basic_auth_keeps_users_secret(run):
    cfg = copy.deepcopy(stack_config("homelab"))
    cfg["loadBalancer"]["basicAuth"] = True
    users = "admin:$2y$05$abcdefghijklmnopqrstuuH7vH5n9X2n6R0yq4mQ4X1WcB7mJ8n6e"
    r = run("homelab", config=cfg, secrets={"loadBalancerUsers": users})
    assert r.error is None, r.error
    auth = r.by_name("load-balancer-traefik-file-dynamic-auth-yml")
    assert auth.is_secret("stdin")
    assert yaml.safe_load(auth.inputs["stdin"])["http"]["middlewares"]["ollama-auth"]["basicAuth"]["users"] == [users]
    assert users not in "\n".join(r.plain_strings())
    dyn = yaml.safe_load(r.by_name("load-balancer-traefik-file-dynamic-ollama-yml").inputs["stdin"])
    assert dyn["http"]["routers"]["ollama"]["middlewares"] == ["ollama-auth"]
    missing = run("homelab", config=cfg)
    assert "loadBalancerUsers" in str(missing.error)


def test_gpu_containers_use_device_requests_and_never_runtime(homelab):
    gpu = {r.name: r.inputs["deviceRequests"] for r in homelab.of_type(CONTAINER) if r.inputs.get("deviceRequests")}
    assert sorted(gpu) == sorted(["monitoring-server3070-gpu-exporter", "vllm-qwen-vllm-qwen",
                                  "monitoring-zfs-ai-gpu-exporter", "llm-server-llm-server", "ollama-ai-ollama-ai"])
    for name, req in gpu.items():
        assert req[0]["driver"] == "nvidia" and req[0]["capabilities"] == ["gpu"], name
    for r in homelab.of_type(CONTAINER):
        assert "runtime" not in r.inputs, r.name
    for cpu_only in ("ollama-ollama", "ollama-84-ollama-84", "ollama-84-ollama-84-1"):
        assert "deviceRequests" not in c(homelab, cpu_only)


def test_vllm_on_the_3070(homelab):
    v = c(homelab, "vllm-qwen-vllm-qwen")
    cmd = v["command"]
    assert cmd[cmd.index("--model") + 1] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    assert cmd[cmd.index("--quantization") + 1] == "awq"
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.9"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
    assert v["shmSize"] == 16 * 1024
    assert "/health" in " ".join(v["healthcheck"]["tests"])
    assert v["image"].startswith("harbor.server.unarmedpuppy.com/docker-hub/vllm/vllm-openai:v0.4.0")


def test_homelab_ai_services(homelab):
    mgr = c(homelab, "homelab-ai-llm-manager")
    assert env_of(mgr)["DOCKER_NETWORK"] == "my-network"
    assert mgr["networksAdvanced"][0]["name"] == "my-network"
    assert {m["target"] for m in mgr["mounts"]} == {"/var/run/docker.sock"}
    router = c(homelab, "homelab-ai-llm-router")
    assert env_of(router)["BACKEND_URL"] == "http://vllm-qwen:8000"
    for svc, image in (("llm-router", "llm-router"), ("llm-manager", "llm-manager"),
                       ("dashboard", "local-ai-dashboard")):
        assert c(homelab, f"homelab-ai-{svc}")["image"].startswith(
            f"harbor.server.unarmedpuppy.com/library/{image}:2025.01.02")
    prov = homelab.by_name("server3070-docker")
    auth = json.loads(prov.inputs["registryAuth"]) if isinstance(prov.inputs["registryAuth"], str) \
        else prov.inputs["registryAuth"]
    assert auth[0]["address"] == "harbor.server.unarmedpuppy.com" and auth[0]["password"] == "harbor-robot-token"
    assert "harbor-robot-token" not in "\n".join(homelab.plain_strings())
    assert "registryAuth" not in homelab.by_name("server80-docker").inputs


def test_docker_network_follows_the_network_it_is_attached_to(run):
    cfg = copy.deepcopy(stack_config("homelab"))
    nets = cfg["hosts"]["server3070"]["networks"]
    nets["ai-net"] = nets.pop("my-network")
    cfg["homelabAi"]["network"] = "ai-net"
    cfg["inference"]["vllm-qwen"]["network"] = "ai-net"
    r = run("homelab", config=cfg)
    assert env_of(r.by_name("homelab-ai-llm-manager").inputs)["DOCKER_NETWORK"] == "ai-net"


def test_ai_network_static_ips_and_reserved_address(homelab):
    net = c(homelab, "zfs-ai-net-ai-network")
    assert net["ipamConfigs"] == [{"subnet": "172.20.0.0/24", "gateway": "172.20.0.1",
                                   "auxAddress": {"continue-dev": "172.20.0.12"}}]
    assert c(homelab, "ollama-ai-ollama-ai")["networksAdvanced"][0]["ipv4Address"] == "172.20.0.10"
    assert c(homelab, "open-webui-open-webui")["networksAdvanced"][0]["ipv4Address"] == "172.20.0.11"
    assert c(homelab, "zfs-ai-net-worker-data")["internal"] is True


def test_llm_ports_bind_only_the_configured_interface(homelab):
    cfg, _ = load_stack_config(stack_config("homelab"))
    for name, node in cfg.all_inference.items():
        for r in homelab.of_type(CONTAINER):
            if r.name.startswith(f"{node.host}-{name}"):
                assert {p["ip"] for p in r.inputs["ports"]} == {cfg.hosts[node.host].llm_publish_address}
    assert c(homelab, "load-balancer-traefik")["ports"][0]["ip"] == "10.0.0.80"


def test_open_webui_points_at_the_load_balancer_with_auth(homelab):
    ow = homelab.by_name("open-webui-open-webui")
    env = env_of(ow.inputs)
    assert env["OLLAMA_BASE_URL"] == "http://10.0.0.80:80"
    assert env["WEBUI_AUTH"] == "True"
    assert any(isinstance(e, dict) and "WEBUI_SECRET_KEY=" in e["value"] for e in ow.raw["envs"])


def test_worker_infra(homelab):
    redis = homelab.by_name("workers-redis")
    i = redis.inputs
    assert "ports" not in i  # an internal network cannot publish
    assert i["networksAdvanced"][0]["name"] == "worker-data"
    assert "--appendonly yes" in " ".join(i["command"])
    assert i["healthcheck"]["tests"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    assert env_of(i)["REDISCLI_AUTH"] == SECRETS["workerRedisPassword"]
    assert any(isinstance(e, dict) for e in redis.raw["envs"])
    llm = c(homelab, "llm-server-llm-server")
    env = env_of(llm)
    assert env["LLAMA_ARG_MODEL"] == "/models/gguf/llama-2-7b-chat.Q4_K_M.gguf"
    assert env["LLAMA_ARG_CTX_SIZE"] == "4096" and env["LLAMA_ARG_N_GPU_LAYERS"] == "-1"
    assert {m["target"]: m["readOnly"] for m in llm["mounts"]}["/models"] is True


def test_worker_backend_switch_changes_only_the_llm_server(run, homelab):
    cfg = copy.deepcopy(stack_config("homelab"))
    cfg["workers"]["backend"] = "vllm"
    r = run("homelab", config=cfg, secrets=SECRETS)
    assert r.error is None, r.error
    llm = r.by_name("llm-server-llm-server").inputs
    assert "--model" in llm["command"] and llm["shmSize"] == 16 * 1024
    assert env_of(llm)["HF_HUB_OFFLINE"] == "1"
    before = {x.name: x.raw for x in homelab.registrations}
    after = {x.name: x.raw for x in r.registrations}
    changed = {n for n in set(before) | set(after) if before.get(n) != after.get(n)}
    # the server itself, its image pull, the host's preflight (new CUDA image to check) and the
    # scrape config (vLLM exposes /metrics where llama.cpp was scraped too)
    assert "llm-server-llm-server" in changed
    assert not any(n.startswith(("ollama-ollama", "server84-", "server3070-")) for n in changed), changed


def test_zfs_datasets_tuned_per_workload_and_kept(homelab):
    expect = {"ai-models": ("service-pool/ai-models", "1M", "lz4"),
              "portainer-data": ("service-pool/portainer", "64K", "gzip"),
              "ai-temp": ("staging-pool/ai-temp", "128K", "off"),
              "ai-datasets": ("media-pool/ai-datasets", "2M", "zstd")}
    for store, (ds, rs, comp) in expect.items():
        r = homelab.by_name(f"{store}-dataset")
        script = r.inputs["create"]
        assert f"ds={ds}" in script and f"recordsize={rs}" in script and f"compression={comp}" in script
        assert r.protect and r.retain_on_delete and not r.inputs.get("delete")
    ollama = {m["target"]: m["source"] for m in c(homelab, "ollama-ai-ollama-ai")["mounts"]}
    assert ollama == {"/models": "/service-pool/ai-models", "/tmp": "/staging-pool/ai-temp"}
    assert {m["target"]: m["source"] for m in c(homelab, "portainer-portainer")["mounts"]}["/data"] == \
        "/service-pool/portainer"


def test_monitoring_scrapes_every_host(homelab):
    prom = yaml.safe_load(c(homelab, "monitoring-prometheus-file-prometheus-yml")["stdin"])
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in prom["scrape_configs"]}
    assert sorted(jobs["node-exporter"]) == ["10.0.0.84:9100", "192.168.0.99:9100", "192.168.86.47:9100",
                                             "node-exporter:9100"]
    assert sorted(jobs["cadvisor"]) == ["10.0.0.84:9103", "192.168.0.99:9103", "192.168.86.47:9103", "cadvisor:8080"]
    assert sorted(jobs["gpu-nvidia-smi"]) == ["192.168.0.99:9105", "192.168.86.47:9105"]
    assert jobs["vllm"] == ["192.168.86.47:8000"]
    assert jobs["traefik"] == ["10.0.0.80:8082"]
    assert c(homelab, "monitoring-zfs-ai-cadvisor")["ports"][0]["external"] == 9103
    alloy = c(homelab, "monitoring-server84-alloy-file-config-alloy")["stdin"]
    assert "http://10.0.0.80:3100/loki/api/v1/push" in alloy
    rules = yaml.safe_load(c(homelab, "monitoring-prometheus-file-alerts-yml")["stdin"])
    exprs = [r["expr"] for r in rules["groups"][0]["rules"]]
    assert "nvidia_smi_temperature_gpu >= 80" in exprs


def test_two_runs_register_byte_identical_inputs(run, homelab):
    assert run("homelab", secrets=SECRETS).fingerprint() == homelab.fingerprint()
