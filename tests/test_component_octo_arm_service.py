"""OctoArmService on a FakePlatform: one service per configured arm, who gets which secret, and names."""

from __future__ import annotations

from components.config.schema import AutoscalingConfig, Limits, OctoLlmConfig, ServicePlacement
from components.services.octo_arm_service import OctoArmService, OctoArmServiceArgs
from fakes import FakePlatform, Stand, host_config, is_secret, resolve, run_component

CFG = OctoLlmConfig(
    host="app", image_registry="registry.example.com/octo", image_tag="1.4.2", llm_endpoint="ollama",
    orchestrator=ServicePlacement(port=7000, limits=Limits(cpus=3, memory_gb=3)),
    reflex=ServicePlacement(port=7001, limits=Limits(cpus=1, memory_gb=1)),
    arms={"planner": ServicePlacement(port=7101, limits=Limits(cpus=1.5, memory_gb=2)),
          "judge": ServicePlacement(port=7102, limits=Limits(cpus=0.5, memory_gb=1))},
    autoscaling=AutoscalingConfig(min_replicas=3, max_replicas=9, cpu_utilization=55))


def args(platform, cfg=CFG, **kw) -> OctoArmServiceArgs:
    base = dict(config=cfg, platform=platform, llm_url="http://ollama:11434", database_url="postgresql://u:pw@pg/db",
                redis_url="redis://:rpw@redis:6379/0", qdrant_url="http://qdrant:6333", qdrant_api_key="qk")
    base.update(kw)
    return OctoArmServiceArgs(**base)


def deploy(platform, name="octollm", depends_on=None, **kw) -> OctoArmService:
    return run_component(lambda: OctoArmService(name, args(platform, **kw), depends_on=depends_on)).value


def test_one_service_per_configured_arm_with_its_port_limits_and_image():
    p = FakePlatform("app", host_config(publish_address="10.2.0.1", address="10.2.0.1"))
    o = deploy(p)
    runs = p.runs()
    assert set(runs) == {"orchestrator", "reflex-layer", "arm-planner", "arm-judge"}
    placements = {"orchestrator": CFG.orchestrator, "reflex-layer": CFG.reflex,
                  **{f"arm-{a}": pl for a, pl in CFG.arms.items()}}
    for svc, pl in placements.items():
        spec = runs[svc].spec
        assert [(x.container, x.host, x.bind) for x in spec.ports] == [(pl.port, pl.port, "10.2.0.1")], svc
        assert (spec.cpus, spec.memory_gb) == (pl.limits.cpus, pl.limits.memory_gb), svc
        assert spec.image == f"{CFG.image_registry}/{svc}:{CFG.image_tag}", svc
        assert spec.env["PORT"] == str(pl.port) and spec.env["SERVICE_NAME"] == svc
        assert spec.autoscale == (3, 9, 55), svc
        assert o.urls[svc] == f"http://10.2.0.1:{pl.port}"
    assert o.services == [s.name for s in o.specs]


def test_arms_find_the_orchestrator_and_the_llm():
    p = FakePlatform("app")
    deploy(p)
    runs = p.runs()
    for arm, pl in CFG.arms.items():
        env = runs[f"arm-{arm}"].spec.env
        assert env["ORCHESTRATOR_URL"] == f"http://orchestrator:{CFG.orchestrator.port}"
        assert env["ARM_NAME"] == arm and env["ARM_URL"] == f"http://arm-{arm}:{pl.port}"
        assert env["LLM_BASE_URL"] == "http://ollama:11434"
    assert runs["orchestrator"].spec.env["REFLEX_URL"] == f"http://reflex-layer:{CFG.reflex.port}"


def test_cloud_keys_reach_the_orchestrator_only():
    p = FakePlatform("app")
    deploy(p, openai_api_key="sk-o", anthropic_api_key="sk-a")
    runs = p.runs()
    orch = runs["orchestrator"].spec
    assert resolve(orch.secret_env["OPENAI_API_KEY"]) == "sk-o"
    assert resolve(orch.secret_env["ANTHROPIC_API_KEY"]) == "sk-a"
    assert orch.env["LLM_FALLBACK"] == "openai,anthropic"
    for svc, call in runs.items():
        if svc != "orchestrator":
            assert not {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DATABASE_URL"} & set(call.spec.secret_env), svc


def test_without_cloud_keys_there_is_no_fallback():
    p = FakePlatform("app")
    deploy(p)
    assert p.runs()["orchestrator"].spec.env["LLM_FALLBACK"] == "none"


def test_connection_strings_are_secret_and_never_plain_env():
    p = FakePlatform("app")
    deploy(p)
    runs = p.runs()
    orch = runs["orchestrator"].spec.secret_env
    assert resolve(orch["DATABASE_URL"]) == "postgresql://u:pw@pg/db" and is_secret(orch["DATABASE_URL"])
    for svc, call in runs.items():
        redis = call.spec.secret_env["REDIS_URL"]
        assert resolve(redis) == "redis://:rpw@redis:6379/0" and is_secret(redis), svc
        assert not any("pw" in str(v) for v in call.spec.env.values()), svc
    assert "QDRANT_API_KEY" not in runs["reflex-layer"].spec.secret_env  # the reflex layer never calls Qdrant


def test_every_service_waits_for_the_given_dependencies():
    p = FakePlatform("app")
    gates = []

    def build():
        gates.append(Stand("Gate", "data", None))
        return OctoArmService("octollm", args(p), depends_on=gates)
    run_component(build)
    for svc, call in p.runs().items():
        assert gates[0] in call.depends_on, svc


def test_two_instances_on_one_platform_have_distinct_children():
    p = FakePlatform("app")

    def build():
        return (OctoArmService("octollm", args(p)),
                OctoArmService("staging", args(p, cfg=CFG.model_copy(update={"arms": {}}))))
    a, b = run_component(build).value
    names = p.resource_names()
    assert len(names) == len(set(names)), names
    assert {c.name for c in p.called("run") if c.parent is a} == {
        "octollm-orchestrator", "octollm-reflex-layer", "octollm-arm-planner", "octollm-arm-judge"}
    assert {c.name for c in p.called("run") if c.parent is b} == {"staging-orchestrator", "staging-reflex-layer"}


def test_two_instances_on_one_docker_host_have_distinct_urns():
    from components.config.schema import HostConfig, StackConfig
    from components.stack import build_platforms

    cfg = StackConfig(platform="docker", hosts={"app": HostConfig(kind="local", cpu_threads=64, memory_gb=256)})

    def build():
        host = build_platforms(cfg, "test")["app"]
        return (OctoArmService("octollm", args(host)),
                OctoArmService("staging", args(host, cfg=CFG.model_copy(update={"arms": {}}))))
    r = run_component(build)
    urns = [x.urn for x in r.registrations]
    assert len(urns) == len(set(urns)), sorted(u for u in urns if urns.count(u) > 1)
    for c in r.of_type("docker:index/container:Container"):
        assert c.name.startswith(r.name_of_urn(c.parent) + "-"), c.name
    assert {c.name for c in r.of_type("docker:index/container:Container")} >= {"octollm-orchestrator",
                                                                              "staging-orchestrator"}
