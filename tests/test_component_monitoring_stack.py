"""MonitoringStack on FakePlatforms: every config knob that reaches a generated file, the agents per host,
and the names of its children.

The generated files are read back the way their programs read them (YAML, JSON), and every expected
value is computed from the config the test built, never copied from the component.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from components.config.schema import GpuConfig, Limits, MonitoringConfig, MonitoringLimits
from components.platforms.base import NodeTelemetry
from components.services.monitoring_stack import MonitoringStack, MonitoringStackArgs, ScrapeJob
from fakes import FakePlatform, host_config, is_secret, resolve, run_component

GPU = [GpuConfig(model="RTX 4090", vram_gb=24, driver_version="575.64")]
TELEMETRY_K8S = NodeTelemetry(node_metrics=False, gpu_exporter=None, log_discovery="kubernetes", namespace="octo")


def mcfg(**kw) -> MonitoringConfig:
    base = dict(host="central")
    base.update(kw)
    return MonitoringConfig(**base)


def deploy(cfg: MonitoringConfig, central: FakePlatform | None = None, hosts: dict | None = None,
           jobs=(), name="monitoring", **kw):
    gpu = kw.pop("gpu", False)
    central = central or FakePlatform("central", host_config(**({"gpus": GPU} if gpu else {})))
    hosts = hosts if hosts is not None else {central.name: central}
    ran = run_component(lambda: MonitoringStack(name, MonitoringStackArgs(
        config=cfg, central=central, hosts=hosts, jobs=list(jobs), **kw)))
    return ran.value, central, ran


def file_of(call, name: str) -> str:
    (f,) = [f for f in call.spec.files if f.name == name]
    return resolve(f.content)


def all_rules(central: FakePlatform) -> list[dict]:
    doc = yaml.safe_load(file_of(central.runs()["prometheus"], "alerts.yml"))
    return [r for g in doc["groups"] for r in g["rules"]]


def rules_of(central: FakePlatform) -> dict[str, dict]:
    """The rules by alert name (the last one of a name)."""
    return {r["alert"]: r for r in all_rules(central)}


def threshold(expr: str) -> float:
    """The number an alert expression compares against (`... > 10`, `... >= 2.5`)."""
    m = re.search(r"(?:>=|>)\s*([0-9][0-9.e+-]*)\s*$", expr)
    assert m, f"no threshold at the end of {expr!r}"
    return float(m.group(1))


# Where a stack's inference latency is measured: the generate probe of an Ollama node.
LATENCY_JOBS = [ScrapeJob("inference-latency", ("http://ollama:11434/api/generate",), probe_module="ollama_generate",
                          interval_s=60)]


def seconds(duration: str) -> int:
    """A Prometheus duration ("2m", "1h30m", "90s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a Prometheus duration: {duration!r}"
    return int(sum(int(n) * units[u] for n, u in parts))


HOURS = {"h": 1, "d": 24, "w": 24 * 7, "y": 24 * 365}


# ---------------------------------------------------------------------- retention


@pytest.mark.parametrize("retention", ["36h", "5d", "3w", "1y"])
def test_retention_reaches_prometheus_and_loki(retention):
    _, central, _ = deploy(mcfg(retention=retention))
    runs = central.runs()
    assert f"--storage.tsdb.retention.time={retention}" in runs["prometheus"].spec.command
    loki = yaml.safe_load(file_of(runs["loki"], "loki.yml"))
    want = int(retention[:-1]) * HOURS[retention[-1]]
    assert seconds(loki["limits_config"]["retention_period"]) == want * 3600
    # Loki deletes nothing unless its compactor applies retention.
    assert loki["compactor"]["retention_enabled"] is True


def test_loki_retention_follows_a_change_of_the_setting():
    a = yaml.safe_load(file_of(deploy(mcfg(retention="7d"))[1].runs()["loki"], "loki.yml"))
    b = yaml.safe_load(file_of(deploy(mcfg(retention="30d"))[1].runs()["loki"], "loki.yml"))
    assert a["limits_config"]["retention_period"] != b["limits_config"]["retention_period"]


# ---------------------------------------------------------------------- alert rules


@pytest.mark.parametrize("latency", [2.5, 10, 45])
def test_the_latency_threshold_reaches_the_rule(latency):
    _, central, _ = deploy(mcfg(inference_latency_alert_s=latency), jobs=LATENCY_JOBS)
    rules = [r for r in all_rules(central) if r["alert"] == "InferenceLatencyHigh"]
    assert rules, "no latency alert although the stack measures the latency"
    for rule in rules:
        assert threshold(rule["expr"]) == latency, rule["expr"]
        assert "inference-latency" in rule["expr"]  # the job that measures it
        assert f"{latency:g}s" in rule["annotations"]["summary"]


@pytest.mark.parametrize("exporter,metric", [("dcgm", "DCGM_FI_DEV_GPU_TEMP"),
                                             ("nvidia-smi", "nvidia_smi_temperature_gpu")])
@pytest.mark.parametrize("celsius", [65, 87])
def test_the_gpu_temperature_threshold_reaches_the_rule_of_the_exporter_in_use(exporter, metric, celsius):
    central = FakePlatform("central", host_config(gpus=GPU, exporters={"gpu_exporter": exporter}))
    _, central, _ = deploy(mcfg(gpu_temperature_alert_c=celsius), central=central)
    rule = rules_of(central)["GpuTemperatureHigh"]
    assert rule["expr"].startswith(metric) and threshold(rule["expr"]) == celsius, rule["expr"]
    assert f"{celsius} C" in rule["annotations"]["summary"]


def test_no_gpu_rule_where_no_platform_exports_gpu_metrics():
    _, central, _ = deploy(mcfg())
    assert "GpuTemperatureHigh" not in rules_of(central)


def test_alerts_wait_long_enough_to_skip_one_missed_scrape_and_short_enough_to_matter():
    """`for:` is how long a condition holds before anyone is told. No config key sets it; what a user
    relies on: a target that is down, or a probe that fails, is reported within five minutes, and not
    before two scrapes have missed it. A latency or temperature alert still fires within ten minutes."""
    _, central, _ = deploy(mcfg(), gpu=True, jobs=LATENCY_JOBS)
    rules = rules_of(central)
    prom = yaml.safe_load(file_of(central.runs()["prometheus"], "prometheus.yml"))
    interval = seconds(prom["global"]["evaluation_interval"])
    assert set(rules) >= {"TargetDown", "ProbeFailed", "InferenceLatencyHigh", "GpuTemperatureHigh"}
    for name in ("TargetDown", "ProbeFailed"):
        wait = seconds(rules[name]["for"])
        assert 2 * interval <= wait <= 5 * 60, f"{name} waits {rules[name]['for']}"
        assert rules[name]["labels"]["severity"] == "critical"
    for name in ("InferenceLatencyHigh", "GpuTemperatureHigh"):
        assert interval <= seconds(rules[name]["for"]) <= 10 * 60, f"{name} waits {rules[name]['for']}"


def test_the_rule_file_is_the_one_prometheus_loads_and_reloads():
    _, central, _ = deploy(mcfg())
    prom_run = central.runs()["prometheus"]
    prom = yaml.safe_load(file_of(prom_run, "prometheus.yml"))
    assert prom["rule_files"] == ["/etc/octollm/alerts.yml"]
    (alerts,) = [f for f in prom_run.spec.files if f.name == "alerts.yml"]
    assert alerts.reload_signal == "HUP"  # a changed threshold is picked up without a restart


# ---------------------------------------------------------------------- probes and scrape jobs


def test_the_probe_model_reaches_the_blackbox_module():
    _, central, _ = deploy(mcfg(), probe_model="qwen2.5:0.5b")
    bb = yaml.safe_load(file_of(central.runs()["blackbox-exporter"], "blackbox.yml"))
    gen = bb["modules"]["ollama_generate"]
    body = json.loads(gen["http"]["body"])
    assert body["model"] == "qwen2.5:0.5b" and body["stream"] is False
    assert gen["http"]["method"] == "POST"
    assert "http_2xx" in bb["modules"]


def test_without_a_probe_model_there_is_no_generate_probe():
    _, central, _ = deploy(mcfg(), probe_model=None)
    bb = yaml.safe_load(file_of(central.runs()["blackbox-exporter"], "blackbox.yml"))
    assert set(bb["modules"]) == {"http_2xx"}


def test_given_jobs_are_scraped_and_probes_go_through_the_blackbox_exporter():
    jobs = [ScrapeJob("ollama", ("http://ollama:11434/api/version",), probe_module="http_2xx"),
            ScrapeJob("vllm", ("10.0.0.7:8000",), interval_s=30),
            ScrapeJob("octollm", ("orchestrator:3000",), metrics_path="/internal/metrics")]
    m, central, _ = deploy(mcfg(blackbox_port=19115), jobs=jobs)
    prom = yaml.safe_load(file_of(central.runs()["prometheus"], "prometheus.yml"))
    by = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert by["ollama"]["metrics_path"] == "/probe" and by["ollama"]["params"] == {"module": ["http_2xx"]}
    assert {"target_label": "__address__", "replacement": "blackbox-exporter:9115"} in by["ollama"]["relabel_configs"]
    assert by["ollama"]["static_configs"][0]["targets"] == ["http://ollama:11434/api/version"]
    assert by["vllm"]["scrape_interval"] == "30s" and by["vllm"]["static_configs"][0]["targets"] == ["10.0.0.7:8000"]
    assert by["octollm"]["metrics_path"] == "/internal/metrics"
    assert {"prometheus", "grafana", "loki", "blackbox-exporter"} <= set(by)
    assert sorted(by) == m.scrape_jobs


def test_exporters_are_scraped_by_name_on_the_central_host_and_by_address_elsewhere():
    central = FakePlatform("central")
    remote = FakePlatform("gpu-box", host_config(address="10.0.0.9", gpus=GPU,
                                                 exporters={"node_exporter": 19100, "cadvisor": 18080,
                                                            "gpu_exporter": "dcgm", "gpu_exporter_port": 19400}))
    _, central, _ = deploy(mcfg(), central=central, hosts={"central": central, "gpu-box": remote})
    prom = yaml.safe_load(file_of(central.runs()["prometheus"], "prometheus.yml"))
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets["node-exporter"] == ["node-exporter:9100", "10.0.0.9:19100"]
    assert targets["cadvisor"] == ["cadvisor:8080", "10.0.0.9:18080"]
    assert targets["gpu-dcgm"] == ["10.0.0.9:19400"]


# ---------------------------------------------------------------------- agents


def test_every_monitored_docker_host_runs_its_collectors_named_from_the_stack_and_host():
    central = FakePlatform("central")
    remote = FakePlatform("gpu-box", host_config(address="10.0.0.9", gpus=GPU,
                                                 exporters={"node_exporter": 19100, "gpu_exporter_port": 19400}))
    _, central, _ = deploy(mcfg(loki_port=13100), central=central, hosts={"central": central, "gpu-box": remote})
    assert set(central.agents()) == {"monitoring-central-node-exporter", "monitoring-central-cadvisor",
                                     "monitoring-central-alloy"}
    agents = remote.agents()
    assert set(agents) == {"monitoring-gpu-box-node-exporter", "monitoring-gpu-box-cadvisor",
                           "monitoring-gpu-box-alloy", "monitoring-gpu-box-gpu-exporter"}
    gpu = agents["monitoring-gpu-box-gpu-exporter"]
    assert gpu.kwargs["gpu_nodes"] is True
    assert [(x.container, x.host) for x in gpu.spec.ports] == [(9400, 19400)]
    assert [(x.container, x.host) for x in agents["monitoring-gpu-box-node-exporter"].spec.ports] == [(9100, 19100)]
    # Logs from another host are pushed to the central Loki's published port.
    alloy = file_of(agents["monitoring-gpu-box-alloy"], "config.alloy")
    assert f'url = "http://{central.cfg.address}:13100/loki/api/v1/push"' in alloy
    assert 'host = "gpu-box"' in alloy
    local = file_of(central.agents()["monitoring-central-alloy"], "config.alloy")
    assert 'url = "http://loki:3100/loki/api/v1/push"' in local
    assert agents["monitoring-gpu-box-alloy"].spec.docker_socket is True


def test_a_platform_that_lists_pods_through_its_api_gets_a_log_reader_only():
    k8s = FakePlatform("gke", telemetry=TELEMETRY_K8S)
    _, _, _ = deploy(mcfg(host="gke"), central=k8s, hosts={"gke": k8s})
    agents = k8s.agents()
    assert set(agents) == {"monitoring-gke-alloy"}  # node metrics are the platform's own
    alloy = agents["monitoring-gke-alloy"]
    assert alloy.spec.docker_socket is False and alloy.spec.service_account
    (rule,) = alloy.kwargs["api_read"]
    assert set(rule["verbs"]) == {"get", "list", "watch"} and set(rule["resources"]) == {"pods", "pods/log"}
    assert 'names = ["octo"]' in file_of(alloy, "config.alloy")


# ---------------------------------------------------------------------- the central services


def test_ports_limits_and_data_of_the_central_services_come_from_the_config():
    limits = MonitoringLimits(prometheus=Limits(cpus=2, memory_gb=3), grafana=Limits(cpus=0.75, memory_gb=1),
                              loki=Limits(cpus=1.25, memory_gb=2), blackbox=Limits(cpus=0.5, memory_gb=0.25))
    cfg = mcfg(prometheus_port=19090, grafana_port=13030, loki_port=13100, blackbox_port=19115, limits=limits)
    central = FakePlatform("central", host_config(appdata_root="/mnt/app", publish_address="10.0.0.5"))
    m, central, _ = deploy(cfg, central=central)
    runs = central.runs()
    for svc, container, port, lim in (("prometheus", 9090, 19090, limits.prometheus),
                                      ("grafana", 3000, 13030, limits.grafana),
                                      ("loki", 3100, 13100, limits.loki),
                                      ("blackbox-exporter", 9115, 19115, limits.blackbox)):
        spec = runs[svc].spec
        assert [(x.container, x.host, x.bind) for x in spec.ports] == [(container, port, "10.0.0.5")], svc
        assert (spec.cpus, spec.memory_gb) == (lim.cpus, lim.memory_gb), svc
    (dirs,) = central.called("ensure_dirs")
    assert sorted(dirs.kwargs["paths"]) == ["/mnt/app/grafana", "/mnt/app/loki", "/mnt/app/prometheus"]
    for svc in ("prometheus", "grafana", "loki"):
        assert dirs.result in runs[svc].depends_on, svc
        assert any(x.source == f"/mnt/app/{svc}" for x in runs[svc].spec.mounts), svc
    assert m.grafana_url == "http://10.0.0.5:13030" and m.prometheus_url == "http://10.0.0.5:19090"


def test_the_grafana_password_is_applied_after_a_change_and_nothing_else_is():
    m, central, ran = deploy(mcfg(), grafana_admin_password="gf-pw")
    runs = central.runs()
    pa = runs["grafana"].spec.password_apply
    assert pa is not None and pa.service == "grafana" and pa.env in runs["grafana"].spec.secret_env
    assert resolve(runs["grafana"].spec.secret_env[pa.env]) == "gf-pw" and is_secret(m.grafana_admin_password)
    assert [s for s, c in runs.items() if c.spec.password_apply is not None] == ["grafana"]


def test_a_generated_grafana_password_rotates_on_request():
    _, _, ran = deploy(mcfg(), rotate="2026-07")
    (pw,) = ran.of_type("random:index/randomPassword:RandomPassword")
    assert pw.name == "monitoring-grafana-admin-password" and pw.inputs["keepers"] == {"rotation": "2026-07"}


def test_database_exporters_run_on_the_data_host_only_when_they_can_log_in():
    central, data = FakePlatform("central"), FakePlatform("db")
    _, central, _ = deploy(mcfg(), central=central, data_host=data, data_network="backend",
                           redis_password="r-pw", postgres_dsn="postgresql://u:p@postgres:5432/db")
    runs = data.runs()
    assert set(runs) == {"redis-exporter", "postgres-exporter"}
    assert resolve(runs["redis-exporter"].spec.secret_env["REDIS_PASSWORD"]) == "r-pw"
    assert resolve(runs["postgres-exporter"].spec.secret_env["DATA_SOURCE_NAME"]).startswith("postgresql://")
    assert all(c.spec.network == "backend" for c in runs.values())
    prom = yaml.safe_load(file_of(central.runs()["prometheus"], "prometheus.yml"))
    assert {"redis-exporter", "postgres-exporter"} <= {j["job_name"] for j in prom["scrape_configs"]}
    alone = FakePlatform("db")
    deploy(mcfg(), data_host=alone)  # no password, no DSN: nothing could log in
    assert not alone.runs()


def test_two_stacks_on_one_platform_have_distinct_children():
    central = FakePlatform("central")

    def build():
        return (MonitoringStack("monitoring", MonitoringStackArgs(config=mcfg(), central=central,
                                                                  hosts={"central": central}, jobs=[])),
                MonitoringStack("staging", MonitoringStackArgs(config=mcfg(), central=central,
                                                               hosts={"central": central}, jobs=[])))
    a, b = run_component(build).value
    names = central.resource_names()
    assert len(names) == len(set(names)), names
    for comp, prefix in ((a, "monitoring-"), (b, "staging-")):
        mine = [c.name for c in central.calls if c.result is not None and c.parent is comp]
        assert mine and all(n.startswith(prefix) for n in mine), mine
