"""The apps (Open WebUI, Portainer, worker infra, homelab-ai) on a FakePlatform."""

from __future__ import annotations

import pytest

from components.config.schema import (HomelabAiConfig, InferenceConfig, Limits, ModelStoreConfig, OpenWebUiConfig,
                                      PortainerConfig, RedisConfig, WorkerConfig)
from components.services.apps import (PROBED_NOT_HEALTHCHECKED, HomelabAi, HomelabAiArgs, OpenWebUi, OpenWebUiArgs,
                                      Portainer, PortainerArgs, WorkerInfra, WorkerInfraArgs)
from components.services.shared_model_store import SharedModelStore, SharedModelStoreArgs
from fakes import FakePlatform, host_config, is_secret, resolve, run_component


def platform(**kw) -> FakePlatform:
    return FakePlatform("apps", host_config(address="10.3.0.1", publish_address="10.3.0.1",
                                            appdata_root="/mnt/app", data_owner="99:100", **kw))


def with_store(p: FakePlatform, path: str, make):
    """make(store) under the mock engine, with a store on p at `path`."""
    def build():
        st = SharedModelStore("app-data", SharedModelStoreArgs(ModelStoreConfig(host=p.name, path=path), p))
        return st, make(st)
    return run_component(build).value


# ---------------------------------------------------------------------- Open WebUI

OW = OpenWebUiConfig(host="apps", network="ai", ipv4_address="172.31.0.30", port=13080,
                     limits=Limits(cpus=1.5, memory_gb=3))


def test_open_webui_talks_to_the_given_ollama_url_and_keeps_its_data_in_appdata():
    p = platform()
    ui = run_component(lambda: OpenWebUi("open-webui", OpenWebUiArgs(config=OW, platform=p,
                                                                     ollama_url="http://10.3.0.1:8088"))).value
    call = p.runs()["open-webui"]
    spec = call.spec
    assert call.name == "open-webui-open-webui"
    assert spec.env["OLLAMA_BASE_URL"] == "http://10.3.0.1:8088"
    assert spec.env["ENABLE_SIGNUP"] == "False" and spec.env["WEBUI_AUTH"] == "True"
    (dirs,) = p.called("ensure_dirs")
    assert dirs.kwargs["paths"] == ["/mnt/app/open-webui"] and dirs.kwargs["owner"] == "99:100"
    assert [(m.target, m.source) for m in spec.mounts] == [("/app/backend/data", "/mnt/app/open-webui")]
    assert dirs.result in call.depends_on
    assert [(x.container, x.host, x.bind) for x in spec.ports] == [(8080, OW.port, "10.3.0.1")]
    assert (spec.network, spec.ipv4_address) == (OW.network, OW.ipv4_address)
    assert ui.url == f"http://10.3.0.1:{OW.port}"


def test_open_webui_on_a_store_uses_it_and_waits_for_it():
    p = platform()
    st, _ = with_store(p, "/tank/webui", lambda st: OpenWebUi("open-webui", OpenWebUiArgs(
        config=OW, platform=p, ollama_url="http://x:1", store=st)))
    call = p.runs()["open-webui"]
    assert [m.source for m in call.spec.mounts] == ["/tank/webui"]
    assert st.ready in call.depends_on
    assert not p.called("ensure_dirs")


def test_open_webui_session_key_is_secret_generated_once_and_rotatable():
    p = platform()
    out = run_component(lambda: OpenWebUi("open-webui", OpenWebUiArgs(config=OW, platform=p, ollama_url="http://x:1",
                                                                      rotation="r2")))
    (pw,) = out.of_type("random:index/randomPassword:RandomPassword")
    assert pw.name == "open-webui-secret-key" and pw.inputs["length"] == 48
    assert pw.inputs["keepers"] == {"rotation": "r2"}
    key = p.runs()["open-webui"].spec.secret_env["WEBUI_SECRET_KEY"]
    assert is_secret(key) and "WEBUI_SECRET_KEY" not in p.runs()["open-webui"].spec.env
    p2 = platform()
    run_component(lambda: OpenWebUi("open-webui", OpenWebUiArgs(config=OW, platform=p2, ollama_url="http://x:1",
                                                                secret_key="given")))
    assert resolve(p2.runs()["open-webui"].spec.secret_env["WEBUI_SECRET_KEY"]) == "given"


# ---------------------------------------------------------------------- Portainer

PT = PortainerConfig(host="apps", network="ai", port=19000, limits=Limits(cpus=0.5, memory_gb=0.5))


def test_portainer_manages_the_engine_and_keeps_root_owned_data():
    p = platform()
    pt = run_component(lambda: Portainer("portainer", PortainerArgs(config=PT, platform=p))).value
    call = p.runs()["portainer"]
    assert call.name == "portainer-portainer"
    assert call.spec.docker_socket is True
    (dirs,) = p.called("ensure_dirs")
    assert dirs.kwargs["paths"] == ["/mnt/app/portainer"] and dirs.kwargs["owner"] == "0:0"
    assert [(m.target, m.source) for m in call.spec.mounts] == [("/data", "/mnt/app/portainer")]
    assert [(x.container, x.host) for x in call.spec.ports] == [(9000, PT.port)]
    assert pt.url == f"http://10.3.0.1:{PT.port}"


def test_portainer_is_probed_because_it_cannot_be_health_checked():
    p = platform()
    run_component(lambda: Portainer("portainer", PortainerArgs(config=PT, platform=p)))
    assert p.runs()["portainer"].spec.health is None
    assert PROBED_NOT_HEALTHCHECKED["portainer"].startswith("/")


def test_portainer_on_a_store_uses_it():
    p = platform()
    st, _ = with_store(p, "/tank/portainer", lambda st: Portainer("portainer", PortainerArgs(config=PT, platform=p,
                                                                                             store=st)))
    call = p.runs()["portainer"]
    assert [m.source for m in call.spec.mounts] == ["/tank/portainer"] and st.ready in call.depends_on


# ---------------------------------------------------------------------- worker infra

SERVER = InferenceConfig(host="apps", engine="llamacpp", port=8000, model_path="m.gguf", limits=Limits(cpus=2, memory_gb=2))


@pytest.mark.parametrize("data_path", [None, "/mnt/fast/queue"])
def test_worker_redis_keeps_its_queue_where_configured(data_path):
    cfg = WorkerConfig(host="apps", network="ai", backend="llamacpp", servers={"llamacpp": SERVER},
                       redis=RedisConfig(port=16380, limits=Limits(cpus=0.5, memory_gb=1)), redis_data_path=data_path)
    p = platform()
    run_component(lambda: WorkerInfra("workers", WorkerInfraArgs(config=cfg, platform=p, redis_password="q-pw")))
    call = p.runs()["worker-redis"]
    assert call.name == "workers-redis"
    want = data_path or "/mnt/app/worker-redis"
    (dirs,) = p.called("ensure_dirs")
    assert dirs.kwargs["paths"] == [want] and dirs.result in call.depends_on
    assert [(m.target, m.source) for m in call.spec.mounts] == [("/data", want)]
    assert [(x.container, x.host) for x in call.spec.ports] == [(6379, 16380)]
    assert resolve(call.spec.secret_env["REDISCLI_AUTH"]) == "q-pw"
    assert not any("q-pw" in c for c in call.spec.command)
    assert call.spec.password_apply is None


# ---------------------------------------------------------------------- homelab-ai

HA = HomelabAiConfig(host="apps", network="ai", registry="registry.lan:5000/homelab", image_tag="2.0.1",
                     router_port=18012, manager_port=18015, dashboard_port=18090, backend="vllm",
                     limits=Limits(cpus=1, memory_gb=2))


def test_homelab_ai_wires_router_manager_and_dashboard():
    p = FakePlatform("apps", host_config(address="10.3.0.1"), network_names={"ai": "octollm-ai-net"})
    ha = run_component(lambda: HomelabAi("homelab-ai", HomelabAiArgs(config=HA, platform=p,
                                                                     backend_url="http://vllm:8000",
                                                                     vllm_image="vllm/vllm-openai:v9"))).value
    runs = p.runs()
    assert {c.name for c in runs.values()} == {"homelab-ai-llm-router", "homelab-ai-llm-manager", "homelab-ai-dashboard"}
    for svc, image, port in (("llm-router", "llm-router", HA.router_port), ("llm-manager", "llm-manager", HA.manager_port),
                             ("dashboard", "local-ai-dashboard", HA.dashboard_port)):
        spec = runs[svc].spec
        assert spec.image == f"{HA.registry}/{image}:{HA.image_tag}", svc
        assert [(x.container, x.host) for x in spec.ports] == [(port, port)], svc
        assert spec.env["PORT"] == str(port) and spec.network == HA.network
        assert ha.urls[svc] == f"http://10.3.0.1:{port}"
    router, manager = runs["llm-router"].spec, runs["llm-manager"].spec
    assert router.env["BACKEND_URL"] == "http://vllm:8000"
    assert router.env["MANAGER_URL"] == f"http://llm-manager:{HA.manager_port}"
    assert runs["dashboard"].spec.env["ROUTER_URL"] == f"http://llm-router:{HA.router_port}"
    # The manager starts vLLM containers on the network it is attached to, by the engine's name of it.
    assert manager.env["DOCKER_NETWORK"] == "octollm-ai-net" and manager.env["VLLM_IMAGE"] == "vllm/vllm-openai:v9"
    assert manager.docker_socket is True and not router.docker_socket and not runs["dashboard"].spec.docker_socket


def test_two_app_sets_on_one_platform_have_distinct_children():
    p = platform()

    def build():
        OpenWebUi("open-webui", OpenWebUiArgs(config=OW, platform=p, ollama_url="http://x:1"))
        OpenWebUi("open-webui-lab", OpenWebUiArgs(config=OW, platform=p, ollama_url="http://x:1"))
        Portainer("portainer", PortainerArgs(config=PT, platform=p))
        Portainer("portainer-lab", PortainerArgs(config=PT, platform=p))
    out = run_component(build)
    names = p.resource_names()
    assert len(names) == len(set(names)), names
    secrets = [r.name for r in out.of_type("random:index/randomPassword:RandomPassword")]
    assert sorted(secrets) == ["open-webui-lab-secret-key", "open-webui-secret-key"]
