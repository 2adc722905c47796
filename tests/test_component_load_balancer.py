"""LoadBalancer on a FakePlatform: the Traefik routing file, basic auth, and where each port is published."""

from __future__ import annotations

import yaml

from components.config.schema import Limits, LoadBalancerConfig
from components.services.load_balancer import LoadBalancer, LoadBalancerArgs
from fakes import FakePlatform, host_config, is_secret, resolve, run_component

BACKENDS = ["http://10.0.0.5:11434", "http://10.0.0.5:11435", "http://10.0.0.6:11434"]
USERS = "alice:$2y$05$abc\n\n  bob:$2y$05$def  \n"


def lb(**kw) -> LoadBalancerConfig:
    base = dict(host="edge", network="ai", port=8088, metrics_port=18082, rule="Host(`llm.lan`)",
                health_path="/api/tags", health_interval_s=7, health_timeout_s=2, limits=Limits(cpus=0.5, memory_gb=0.25))
    base.update(kw)
    return LoadBalancerConfig(**base)


def deploy(cfg: LoadBalancerConfig, platform: FakePlatform | None = None, name="load-balancer", **kw):
    p = platform or FakePlatform("edge", host_config(address="10.0.0.2", publish_address="10.0.0.2",
                                                     llm_publish_address="10.0.0.3"))
    out = run_component(lambda: LoadBalancer(name, LoadBalancerArgs(config=cfg, platform=p, backends=BACKENDS, **kw)))
    return out.value, p


def files(p: FakePlatform) -> dict:
    return {f.name: f for f in p.runs()["traefik"].spec.files}


def test_every_backend_is_balanced_and_health_checked_as_configured():
    cfg = lb()
    _, p = deploy(cfg)
    doc = yaml.safe_load(resolve(files(p)["dynamic/ollama.yml"].content))
    svc = doc["http"]["services"]["ollama"]["loadBalancer"]
    assert [s["url"] for s in svc["servers"]] == BACKENDS
    assert svc["healthCheck"] == {"path": cfg.health_path, "interval": f"{cfg.health_interval_s}s",
                                  "timeout": f"{cfg.health_timeout_s}s"}
    router = doc["http"]["routers"]["ollama"]
    assert router["rule"] == cfg.rule and router["service"] == "ollama"
    assert "middlewares" not in router
    assert set(files(p)) == {"dynamic/ollama.yml"}


def test_basic_auth_routes_through_a_secret_users_file():
    _, p = deploy(lb(basic_auth=True), users=USERS)
    f = files(p)
    router = yaml.safe_load(resolve(f["dynamic/ollama.yml"].content))["http"]["routers"]["ollama"]
    (mw,) = router["middlewares"]
    auth = f["dynamic/auth.yml"].content
    assert is_secret(auth), "the users file must stay secret"
    doc = yaml.safe_load(resolve(auth))
    assert doc["http"]["middlewares"][mw]["basicAuth"]["users"] == ["alice:$2y$05$abc", "bob:$2y$05$def"]


def test_the_api_port_is_on_the_llm_interface_and_metrics_on_the_host_s():
    cfg = lb()
    balancer, p = deploy(cfg)
    spec = p.runs()["traefik"].spec
    published = {x.name: (x.host, x.bind) for x in spec.ports}
    assert published == {"ollama": (cfg.port, "10.0.0.3"), "metrics": (cfg.metrics_port, "10.0.0.2")}
    assert next(x for x in spec.ports if x.name == "metrics").metrics_path == "/metrics"
    assert not any("dashboard" in c for c in spec.command)
    assert balancer.url == f"http://10.0.0.2:{cfg.port}"
    assert spec.network == cfg.network and (spec.cpus, spec.memory_gb) == (cfg.limits.cpus, cfg.limits.memory_gb)


def test_the_dashboard_is_published_only_when_configured():
    cfg = lb(dashboard_port=18080)
    _, p = deploy(cfg)
    spec = p.runs()["traefik"].spec
    dash = [x for x in spec.ports if x.name == "dashboard"]
    assert [(x.host, x.bind) for x in dash] == [(18080, "10.0.0.2")]
    assert "--api.dashboard=true" in spec.command
    # every entry point the command opens is a port the spec publishes
    opened = {int(c.rsplit(":", 1)[1]) for c in spec.command if c.startswith("--entrypoints.") and ".address=:" in c}
    assert opened == {x.container for x in spec.ports}


def test_a_changed_backend_list_rewrites_the_watched_file():
    _, p = deploy(lb())
    spec = p.runs()["traefik"].spec
    assert "--providers.file.watch=true" in spec.command
    watched = next(c.split("=", 1)[1] for c in spec.command if c.startswith("--providers.file.directory="))
    assert watched.endswith("/dynamic") and all(f.name.startswith("dynamic/") for f in spec.files)


def test_two_balancers_on_one_platform_have_distinct_children():
    p = FakePlatform("edge")

    def build():
        return (LoadBalancer("load-balancer", LoadBalancerArgs(config=lb(), platform=p, backends=BACKENDS)),
                LoadBalancer("internal-lb", LoadBalancerArgs(config=lb(port=9099), platform=p, backends=BACKENDS[:1])))
    run_component(build)
    assert [c.name for c in p.called("run")] == ["load-balancer-traefik", "internal-lb-traefik"]
