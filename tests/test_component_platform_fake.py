"""The FakePlatform the component tests use is a Platform: every method of the protocol, same parameters."""

from __future__ import annotations

import inspect

import pytest

from components.config.schema import ModelStoreConfig
from components.platforms.base import NodeTelemetry, Platform
from components.platforms.workload import ServiceSpec
from fakes import FakePlatform, Stand, host_config, run_component

METHODS = sorted(n for n, v in vars(Platform).items() if not n.startswith("_") and callable(v))


def test_the_fake_is_a_platform():
    assert isinstance(FakePlatform(), Platform)


@pytest.mark.parametrize("method", METHODS)
def test_each_protocol_method_has_the_protocol_s_parameters(method):
    want = inspect.signature(getattr(Platform, method)).parameters
    have = inspect.signature(getattr(FakePlatform, method)).parameters
    assert [(p.name, p.kind, p.default) for p in have.values()] == \
           [(p.name, p.kind, p.default) for p in want.values()], method


def test_resources_are_stand_ins_parented_to_the_component_and_recorded():
    p = FakePlatform("h")
    spec = ServiceSpec(name="svc", image="img", cpus=1, memory_gb=1)

    def build():
        parent = Stand("Parent", "comp", None)
        dirs = p.ensure_dirs("comp-dirs", parent, ["/x"])
        run = p.run("comp-svc", spec, parent, depends_on=[dirs])
        return parent, dirs, run
    r = run_component(build)
    parent, dirs, run = r.value
    call = p.by_name("comp-svc")
    assert call.spec is spec and call.parent is parent and call.depends_on == (dirs,) and call.result is run
    assert r.by_name("comp-svc").parent == r.urn_of("comp")


def test_a_name_used_twice_is_refused():
    p = FakePlatform("h")
    spec = ServiceSpec(name="svc", image="img", cpus=1, memory_gb=1)

    def build():
        parent = Stand("Parent", "comp", None)
        p.run("comp-svc", spec, parent)
        p.agent("comp-svc", spec, parent)
    with pytest.raises(ValueError, match="already used"):
        run_component(build)


@pytest.mark.parametrize("pulls,prepared,loaded", [("load", False, True), ("prepare", True, False),
                                                   ("none", False, False)])
def test_the_pull_mode_plays_either_platform_s_way(pulls, prepared, loaded):
    p = FakePlatform("h", pulls=pulls)

    def build():
        parent = Stand("Parent", "comp", None)
        return (p.prepare_models("a", parent, image="i", models=["m"], mount=None, env={}),
                p.load_models("b", parent, service="s", models=["m"]))
    prep, load = run_component(build).value
    assert (prep is not None, load is not None) == (prepared, loaded)


def test_telemetry_and_host_config_are_configurable():
    tel = NodeTelemetry(node_metrics=False, gpu_exporter=None, log_discovery="kubernetes", namespace="n")
    assert FakePlatform(telemetry=tel).telemetry() is tel
    cfg = host_config(gpus=[{"model": "L4", "vram_gb": 24}])
    assert FakePlatform(cfg=cfg).telemetry().gpu_exporter == "dcgm"
    assert FakePlatform().telemetry().gpu_exporter is None
    st = ModelStoreConfig(host="h")

    def build():
        return FakePlatform("h", cfg).provision_store("models", Stand("Parent", "c", None), st, "1:1")
    assert run_component(build).value is not None
