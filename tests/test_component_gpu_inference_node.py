"""GpuInferenceNode on a FakePlatform: what each instance mounts, pulls, waits for and is named."""

from __future__ import annotations

import pytest

from components.config.rules import inference_instances
from components.config.schema import (GpuConfig, GpuRequest, HostConfig, InferenceConfig, Limits, ModelStoreConfig,
                                      StackConfig)
from components.services.gpu_inference_node import MODELS_DIR, GpuInferenceNode, GpuInferenceNodeArgs
from components.services.shared_model_store import SharedModelStore, SharedModelStoreArgs
from fakes import FakePlatform, Stand, host_config, run_component

IMAGE = "ollama/ollama:test"
GPU_HOST = dict(gpus=[GpuConfig(model="RTX 4090", vram_gb=24, driver_version="575.64")])


def node(**kw) -> InferenceConfig:
    base = dict(host="server", port=11500, models=["llama3.1:8b", "nomic-embed-text"],
                limits=Limits(cpus=4, memory_gb=8))
    base.update(kw)
    return InferenceConfig(**base)


def build(platform: FakePlatform, cfg: InferenceConfig, *, name: str = "ollama", store: bool = True,
          store_cfg: ModelStoreConfig | None = None, store_platform: FakePlatform | None = None, **kw):
    """A store (on store_platform, default the node's platform) and the node, under the mock engine."""
    def make():
        st = None
        if store:
            st = SharedModelStore("models", SharedModelStoreArgs(
                store_cfg or ModelStoreConfig(host=(store_platform or platform).name, path="/srv/models"),
                store_platform or platform))
        return st, GpuInferenceNode(name, GpuInferenceNodeArgs(config=cfg, platform=platform, image=IMAGE,
                                                               store=st, **kw))
    return run_component(make).value


def store_mount(call):
    return next(m for m in call.spec.mounts if m.target == MODELS_DIR)


# ---------------------------------------------------------------------- the shared store


@pytest.mark.parametrize("pulls", ["load", "prepare"])
def test_writer_replicas_mount_the_store_read_only_and_never_prune(pulls):
    p = FakePlatform("server", pulls=pulls)
    cfg = node(replicas=2)
    build(p, cfg)
    runs = p.runs()
    primary, *replicas = [svc for svc, _, _ in inference_instances("ollama", cfg)]
    assert set(runs) == {primary, *replicas} and len(replicas) == cfg.replicas
    writer = runs[primary].spec
    assert store_mount(runs[primary]).read_only is False
    assert "OLLAMA_NOPRUNE" not in writer.env
    for svc in replicas:
        m = store_mount(runs[svc])
        assert m.read_only is True, f"{svc} may write the shared store"
        assert m.source == "/srv/models"
        assert runs[svc].spec.env.get("OLLAMA_NOPRUNE") == "1", f"{svc} may prune blobs of the shared store"
        assert runs[svc].spec.env["OLLAMA_MODELS"] == writer.env["OLLAMA_MODELS"]  # same store, same layout


def test_only_the_primary_pulls_where_the_server_pulls_into_its_store():
    p = FakePlatform("server", pulls="load")
    cfg = node(replicas=2)
    _, n = build(p, cfg)
    runs = p.runs()
    loads = p.called("load_models")
    assert len(loads) == 1, [c.name for c in loads]
    pull = loads[0]
    assert pull.kwargs["service"] == "ollama" and pull.kwargs["models"] == cfg.models
    assert pull.depends_on == (runs["ollama"].result,)  # into the running server
    assert n.pull is pull.result
    assert not p.called("prepare_models") or all(c.result is None for c in p.called("prepare_models"))
    # Replicas read what the primary pulled: they start after the pull, the primary before it.
    for svc in ("ollama-1", "ollama-2"):
        assert pull.result in runs[svc].depends_on, svc
    assert pull.result not in runs["ollama"].depends_on


def test_a_store_filled_before_the_servers_start():
    p = FakePlatform("server", pulls="prepare")
    cfg = node(replicas=1)
    st, n = build(p, cfg)
    prep = p.called("prepare_models")
    assert len(prep) == 1
    job = prep[0]
    assert job.kwargs["models"] == cfg.models and job.kwargs["image"] == IMAGE
    assert job.kwargs["mount"].source == "/srv/models" and job.kwargs["mount"].read_only is False
    assert job.kwargs["env"]["OLLAMA_MODELS"] == f"{MODELS_DIR}/models"
    assert st.ready in job.depends_on
    assert n.pull is job.result
    assert all(c.result is None for c in p.called("load_models")), "pulled twice"
    for svc, call in p.runs().items():
        assert job.result in call.depends_on and st.ready in call.depends_on, svc


def test_a_read_only_node_never_pulls_into_the_store():
    p = FakePlatform("server", pulls="load")
    build(p, node(read_only=True, replicas=1))
    assert not p.called("load_models")
    for svc, call in p.runs().items():
        assert store_mount(call).read_only is True, svc
        assert call.spec.env["OLLAMA_NOPRUNE"] == "1", svc


def test_an_nfs_client_mounts_the_export_read_only():
    server, client = FakePlatform("nas"), FakePlatform("gpu-box")
    nfs = ModelStoreConfig(host="nas", kind="nfs", path="/export/models", client_cidr="10.0.0.0/24",
                           clients=["gpu-box"], mount_options="nfsvers=4.2,hard")
    build(client, node(host="gpu-box", read_only=True), store_cfg=nfs, store_platform=server)
    m = store_mount(client.runs()["ollama"])
    assert m.kind == "nfs" and m.read_only is True
    assert m.nfs.server == server.cfg.address and m.nfs.export == "/export/models"
    assert m.nfs.options.split(",")[:2] == [f"addr={server.cfg.address}", "ro"]
    assert m.nfs.options.endswith("nfsvers=4.2,hard")  # the configured mount options
    assert server.called("provision_store") and not client.called("provision_store")


def test_the_store_is_ready_before_any_instance_starts_and_wait_for_reaches_all():
    p = FakePlatform("server", pulls="load")
    sentinel = []

    def make():
        gate = Stand("Gate", "writer-pull", None)
        sentinel.append(gate)
        st = SharedModelStore("models", SharedModelStoreArgs(ModelStoreConfig(host="server"), p))
        return GpuInferenceNode("reader", GpuInferenceNodeArgs(config=node(read_only=True, replicas=2), platform=p,
                                                               image=IMAGE, store=st, wait_for=[gate]))
    run_component(make)
    ready = p.called("provision_store")[0].result
    for svc, call in p.runs().items():
        assert ready in call.depends_on and sentinel[0] in call.depends_on, svc


def test_a_temp_store_is_scratch_space_at_tmp():
    p = FakePlatform("server")

    def make():
        st = SharedModelStore("models", SharedModelStoreArgs(ModelStoreConfig(host="server"), p))
        tmp = SharedModelStore("scratch", SharedModelStoreArgs(ModelStoreConfig(host="server", path="/fast/tmp"), p))
        return GpuInferenceNode("ollama", GpuInferenceNodeArgs(config=node(replicas=1), platform=p, image=IMAGE,
                                                               store=st, temp_store=tmp))
    run_component(make)
    for svc, call in p.runs().items():
        tmp = [m for m in call.spec.mounts if m.target == "/tmp"]
        assert len(tmp) == 1 and tmp[0].source == "/fast/tmp" and tmp[0].read_only is False, svc


# ---------------------------------------------------------------------- ports, names, GPUs


def test_instances_publish_their_ports_on_the_llm_interface():
    p = FakePlatform("server", host_config(llm_publish_address="10.0.0.9", publish_address="10.0.0.5",
                                           networks={"ai": {"subnet": "172.30.0.0/24", "gateway": "172.30.0.1"}}))
    cfg = node(replicas=2, replica_port_start=12000, network="ai", ipv4_address="172.30.0.20", container_port=11435)
    _, n = build(p, cfg)
    runs = p.runs()
    for svc, port, primary in inference_instances("ollama", cfg):
        (pp,) = runs[svc].spec.ports
        assert (pp.container, pp.host, pp.bind) == (11435, port, "10.0.0.9"), svc
        assert runs[svc].spec.ipv4_address == (cfg.ipv4_address if primary else None), svc
        assert runs[svc].spec.network == "ai"
        assert n.endpoints[svc] == f"http://{p.cfg.address}:{port}"
        assert runs[svc].spec.env["OLLAMA_HOST"] == "0.0.0.0:11435"
    assert [runs[s].spec.ports[0].host for s in ("ollama-1", "ollama-2")] == [12000, 12001]
    assert n.internal_url == "http://ollama:11435"


def test_children_are_named_from_the_node():
    p = FakePlatform("server", pulls="load")

    def make():
        st = SharedModelStore("models", SharedModelStoreArgs(ModelStoreConfig(host="server"), p))
        a = GpuInferenceNode("chat", GpuInferenceNodeArgs(config=node(replicas=1), platform=p, image=IMAGE, store=st))
        b = GpuInferenceNode("code", GpuInferenceNodeArgs(config=node(port=11600, replicas=1, read_only=True),
                                                          platform=p, image=IMAGE, store=st))
        return a, b
    a, b = run_component(make).value
    names = [n for n in p.resource_names() if n != "models"]
    assert len(names) == len(set(names)), names
    made = [c for c in p.calls if c.result is not None]
    chat = {c.name for c in made if c.parent is a}
    code = {c.name for c in made if c.parent is b}
    assert chat == {"chat-chat", "chat-chat-1", "chat-pull-models"}
    assert code == {"code-code", "code-code-1"}


@pytest.mark.parametrize("request_,count,ids", [
    (GpuRequest(count="all"), -1, ()),
    (GpuRequest(count=1), 1, ()),
    (GpuRequest(device_ids=["1"]), None, ("1",)),
])
def test_a_gpu_node_gets_the_gpus_it_asks_for(request_, count, ids):
    p = FakePlatform("server", host_config(gpus=[GpuConfig(model="RTX 4090", vram_gb=24, driver_version="575.64")] * 2))
    _, n = build(p, node(gpu=request_), store=False)
    spec = p.runs()["ollama"].spec
    assert n.on_gpu and spec.gpu is not None
    assert (spec.gpu.count, spec.gpu.device_ids) == (count, ids)
    assert spec.single_gpu is True  # one GPU cannot hold the old and the new container at once


def test_a_gpu_node_on_a_host_without_gpu_runs_on_the_cpu():
    p = FakePlatform("server", host_config(allow_cpu_fallback=True))
    _, n = build(p, node(gpu=GpuRequest(count=1)), store=False)
    spec = p.runs()["ollama"].spec
    assert n.on_gpu is False and spec.gpu is None and spec.single_gpu is False


@pytest.mark.parametrize("gpu_host,layers", [(True, 33), (False, 0)])
def test_llamacpp_offloads_the_configured_layers_only_on_a_gpu(gpu_host, layers):
    p = FakePlatform("server", host_config(**(GPU_HOST if gpu_host else {"allow_cpu_fallback": True})))
    cfg = node(engine="llamacpp", models=[], model_path="gguf/llama-2-7b-chat.Q4_K_M.gguf", gpu=GpuRequest(count=1),
               gpu_layers=33, context_size=8192, num_parallel=3)
    _, n = build(p, cfg)
    env = p.runs()["ollama"].spec.env
    assert env["LLAMA_ARG_N_GPU_LAYERS"] == str(layers)
    assert env["LLAMA_ARG_MODEL"] == f"{MODELS_DIR}/{cfg.model_path}"
    assert env["LLAMA_ARG_CTX_SIZE"] == str(cfg.context_size) and env["LLAMA_ARG_N_PARALLEL"] == str(cfg.num_parallel)
    assert n.models == [cfg.model_path]
    assert not p.called("load_models") and not p.called("prepare_models")  # Ollama pulls only


@pytest.mark.parametrize("read_only", [False, True])
def test_vllm_serves_with_the_configured_settings(read_only):
    p = FakePlatform("server", host_config(**GPU_HOST))
    cfg = node(engine="vllm", models=["Qwen/Qwen2.5-7B-Instruct-AWQ"], gpu=GpuRequest(count=1), quantization="awq",
               max_model_len=8192, gpu_memory_utilization=0.85, tensor_parallel_size=1, shm_size_gb=8,
               read_only=read_only)
    build(p, cfg)
    spec = p.runs()["ollama"].spec
    cmd = list(spec.command)

    def arg(flag):
        return cmd[cmd.index(flag) + 1]
    assert arg("--model") == cfg.models[0]
    assert arg("--gpu-memory-utilization") == f"{cfg.gpu_memory_utilization:g}"
    assert arg("--tensor-parallel-size") == str(cfg.tensor_parallel_size)
    assert arg("--quantization") == cfg.quantization and arg("--max-model-len") == str(cfg.max_model_len)
    assert arg("--port") == str(cfg.internal_port)
    assert spec.shm_size_gb == cfg.shm_size_gb
    assert store_mount(p.runs()["ollama"]).read_only is read_only
    assert (spec.env.get("HF_HUB_OFFLINE") == "1") is read_only  # a read-only store cannot take a download
    assert spec.ports[0].metrics_path == "/metrics"  # Prometheus scrapes vLLM itself


def test_limits_and_parallelism_come_from_the_config():
    p = FakePlatform("server")
    cfg = node(limits=Limits(cpus=6.5, memory_gb=12), num_parallel=7, replicas=1)
    build(p, cfg)
    for svc, call in p.runs().items():
        assert (call.spec.cpus, call.spec.memory_gb) == (6.5, 12), svc
        assert call.spec.env["OLLAMA_NUM_PARALLEL"] == "7", svc
        assert call.spec.wait_healthy is True  # dependants start once Ollama answers


# ---------------------------------------------------------------------- under the mock engine, on a real DockerHost


def test_two_nodes_on_one_docker_host_have_distinct_urns_and_containers():
    from components.stack import build_platforms

    cfg = StackConfig(
        platform="docker",
        hosts={"server": HostConfig(kind="local", cpu_threads=32, memory_gb=128, **GPU_HOST)},
        model_stores={"models": ModelStoreConfig(host="server")},
        inference={"chat": node(model_store="models", gpu=GpuRequest(count=1), replicas=1),
                   "code": node(port=11600, model_store="models", read_only=True, models=["codellama:7b"])})

    def make():
        platforms = build_platforms(cfg, "test")
        host = platforms["server"]
        st = SharedModelStore("models", SharedModelStoreArgs(cfg.model_stores["models"], host))
        return [GpuInferenceNode(n, GpuInferenceNodeArgs(config=c, platform=host, image=IMAGE, store=st))
                for n, c in sorted(cfg.inference.items())]

    r = run_component(make)
    urns = [x.urn for x in r.registrations]
    assert len(urns) == len(set(urns)), sorted(u for u in urns if urns.count(u) > 1)
    containers = r.of_type("docker:index/container:Container")
    names = sorted(c.inputs["name"] for c in containers)
    assert names == ["octollm-chat", "octollm-chat-1", "octollm-code"]
    for c in containers:
        owner = r.name_of_urn(c.parent)
        assert c.name.startswith(f"{owner}-"), (c.name, owner)
    # Former names (aliases) stay unique too: an upgrade maps each old resource to one new one.
    aliases = [a for x in r.registrations for a in x.aliases]
    assert len(aliases) == len(set(aliases)), aliases
    # The replica of the writer starts after the writer's pull; the pull after the writer runs.
    pull = r.by_name("chat-pull-models")
    assert r.urn_of("chat-chat") in pull.dependencies
    assert pull.urn in r.by_name("chat-chat-1").dependencies
