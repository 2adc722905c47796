"""The real __main__.py against the real Pulumi.unraid.yaml, under a recording mock."""

import copy
import json
import re

import pytest
from pulumi import RunError

from components.config.schema import load_stack_config
from components.config.rules import inventory
from harness import stack_config

CONTAINER = "docker:index/container:Container"
REMOTE_CMD = "command:remote:Command"

# ADR-007 port map: container name -> {published: internal}
ADR_PORTS = {
    "orchestrator": {3000: 3000}, "reflex-layer": {3001: 3001},
    "postgres": {3010: 5432}, "redis": {3011: 6379}, "qdrant": {3012: 6333, 3013: 6334}, "ollama": {3014: 11434},
    "arm-planner": {6001: 6001}, "arm-executor": {6002: 6002}, "arm-retriever": {6003: 6003},
    "arm-coder": {6004: 6004}, "arm-judge": {6005: 6005}, "arm-safety-guardian": {6006: 6006},
    "grafana": {3030: 3000}, "loki": {3100: 3100}, "cadvisor": {8080: 8080}, "prometheus": {9090: 9090},
    "node-exporter": {9100: 9100}, "redis-exporter": {9121: 9121}, "postgres-exporter": {9187: 9187},
    "gpu-exporter": {9400: 9400},
}
# ADR-007 resource table (cores, GB)
ADR_LIMITS = {"postgres": (4, 4), "redis": (2, 2), "qdrant": (4, 4), "orchestrator": (4, 4),
              "reflex-layer": (4, 2), "ollama": (8, 16), **{f"arm-{a}": (2, 2) for a in
              ["planner", "executor", "retriever", "coder", "judge", "safety-guardian"]}}
SECRETS = {"openaiApiKey": "sk-test-openai-123", "anthropicApiKey": "sk-ant-test-456"}


@pytest.fixture(scope="module")
def unraid(run):
    r = run("unraid", secrets=SECRETS)
    assert r.error is None, r.error
    return r


def containers(r):
    return {name.removeprefix("octollm-"): reg for name, reg in r.containers().items()}


def env_of(reg):
    return dict(e.split("=", 1) for e in reg.inputs.get("envs", []))


def test_every_adr_service_exists_with_its_ports(unraid):
    cs = containers(unraid)
    for svc, ports in ADR_PORTS.items():
        assert svc in cs, f"{svc} missing"
        published = {p["external"]: p["internal"] for p in cs[svc].inputs.get("ports", [])}
        assert published == ports, svc


def test_limits_follow_the_adr_table(unraid):
    cs = containers(unraid)
    for svc, (cpus, gb) in ADR_LIMITS.items():
        assert float(cs[svc].inputs["cpus"]) == cpus, svc
        assert cs[svc].inputs["memory"] == gb * 1024, svc
    monitoring = [s for s in cs if s not in ADR_LIMITS]
    assert round(sum(float(cs[s].inputs["cpus"]) for s in monitoring), 3) == 4.0
    assert round(sum(cs[s].inputs["memory"] for s in monitoring) / 1024, 3) == 4.0


def test_registered_containers_match_the_validated_inventory(unraid):
    cfg, _ = load_stack_config(stack_config("unraid"))
    cs = containers(unraid)
    places = inventory(cfg)
    assert {p.service for p in places} == set(cs)
    for p in places:
        reg = cs[p.service]
        assert float(reg.inputs["cpus"]) == p.cpus and reg.inputs["memory"] == round(p.memory_gb * 1024)
        assert sorted(x["external"] for x in reg.inputs.get("ports", [])) == sorted(x.port for x in p.ports)


def test_every_container_is_on_octollm_net_with_its_dns_alias(unraid):
    net = unraid.by_name("unraid-net-octollm-net").inputs
    assert net["name"] == "octollm-net"
    assert net["ipamConfigs"] == [{"subnet": "172.20.0.0/16", "gateway": "172.20.0.1"}]
    for svc, reg in containers(unraid).items():
        [attach] = reg.inputs["networksAdvanced"]
        assert attach["name"] == "octollm-net" and attach["aliases"] == [svc]


def test_restart_logs_health_and_replacement_order(unraid):
    for svc, reg in containers(unraid).items():
        i = reg.inputs
        assert i["restart"] == "unless-stopped", svc
        assert i["logDriver"] == "json-file" and i["logOpts"] == {"max-file": "3", "max-size": "10m"}, svc
        assert i["healthcheck"]["tests"][0] in ("CMD", "CMD-SHELL"), svc
        assert reg.delete_before_replace, f"{svc}: fixed name and ports need delete-before-replace"
        assert "runtime" not in i, svc
        assert ":latest" not in reg.inputs["image"]


def test_data_lives_under_appdata_owned_by_nobody_users(unraid):
    cs = containers(unraid)
    expect = {"postgres": "/var/lib/postgresql/data", "redis": "/data", "qdrant": "/qdrant/storage",
              "prometheus": "/prometheus", "grafana": "/var/lib/grafana", "loki": "/loki"}
    for svc, target in expect.items():
        mounts = {m["target"]: m for m in cs[svc].inputs["mounts"]}
        assert mounts[target]["source"] == f"/mnt/user/appdata/octollm/{svc}"
        assert mounts[target]["type"] == "bind"
        assert cs[svc].inputs["user"] == "99:100"
    dirs = unraid.by_name("data-data-dirs")
    for svc in ("postgres", "redis", "qdrant"):
        assert f"mkdir -p -- /mnt/user/appdata/octollm/{svc}" in dirs.inputs["create"]
    assert "chown 99:100" in dirs.inputs["create"]


def test_stateful_stores_are_protected_and_retained(unraid):
    for name in ("data-data-dirs", "monitoring-data-dirs", "ollama-models-dir"):
        reg = unraid.by_name(name)
        assert reg.protect and reg.retain_on_delete, name
        assert "delete" not in reg.inputs or not reg.inputs["delete"], name
    store = unraid.by_name("ollama-models-dir").inputs["create"]
    assert "/mnt/user/appdata/octollm/ollama" in store and "chown 99:100" in store


def test_ollama_gets_the_gpu_through_a_device_request(unraid):
    o = containers(unraid)["ollama"].inputs
    assert o["deviceRequests"] == [{"driver": "nvidia", "capabilities": ["gpu"], "count": 1}]
    env = env_of(containers(unraid)["ollama"])
    assert env["OLLAMA_NUM_PARALLEL"] == "4"
    assert o["wait"] is True  # dependants (the model pull) wait for a healthy server
    assert "/api/version" in " ".join(o["healthcheck"]["tests"])
    gpu_users = [s for s, r in containers(unraid).items() if r.inputs.get("deviceRequests")]
    assert sorted(gpu_users) == ["gpu-exporter", "ollama"]


def test_models_are_pulled_after_ollama_is_healthy(unraid):
    pull = unraid.by_name("ollama-pull-models")
    assert pull.type == REMOTE_CMD
    assert unraid.urn_of("ollama-ollama") in pull.dependencies
    assert pull.inputs["triggers"] == ["llama3.1:8b", "mixtral:8x7b", "codellama:13b", "nomic-embed-text"]
    for m in pull.inputs["triggers"]:
        assert m in pull.inputs["create"]
    assert "ollama show" in pull.inputs["create"]  # idempotent: present models are skipped


def test_model_pull_changes_exactly_when_the_model_list_changes(run, unraid):
    cfg = copy.deepcopy(stack_config("unraid"))
    cfg["inference"]["ollama"]["models"].append("mistral:7b")
    changed = run("unraid", config=cfg, secrets=SECRETS)
    a = {r.name: r.raw for r in unraid.registrations}
    b = {r.name: r.raw for r in changed.registrations}
    # The pull step re-runs; the host's preflight re-checks free disk for the longer model list.
    # No container, image or other step changes.
    assert {n for n in a if a[n] != b.get(n)} == {"ollama-pull-models", "unraid-preflight"}
    assert "mistral:7b" in changed.by_name("ollama-pull-models").inputs["triggers"]


def test_arms_are_wired_by_container_dns(unraid):
    cs = containers(unraid)
    for arm in ["planner", "executor", "retriever", "coder", "judge", "safety-guardian"]:
        env = env_of(cs[f"arm-{arm}"])
        assert env["LLM_BASE_URL"] == "http://ollama:11434"
        assert env["QDRANT_URL"] == "http://qdrant:6333"
        assert env["ORCHESTRATOR_URL"] == "http://orchestrator:3000"
        assert "@redis:6379" in env["REDIS_URL"]
        assert cs[f"arm-{arm}"].inputs["image"] == f"ghcr.io/octollm/arm-{arm}:0.1.0@id"
    orch = env_of(cs["orchestrator"])
    assert "@postgres:5432/octollm" in orch["DATABASE_URL"]


SECRET_NAME = re.compile(r"PASSWORD|API_KEY|SECRET|TOKEN|DATABASE_URL|REDIS_URL|DATA_SOURCE_NAME|AUTH")


def test_secrets_travel_only_as_secrets(unraid):
    for reg in unraid.of_type(CONTAINER):
        for entry in reg.raw.get("envs", []):
            if isinstance(entry, str):
                assert not SECRET_NAME.search(entry.split("=", 1)[0]), f"{reg.name}: {entry} is plain"
    plain = "\n".join(unraid.plain_strings())
    secret_values = list(SECRETS.values()) + [f"generated-data-{s}" for s in
                                               ("postgres-password", "redis-password", "qdrant-api-key")]
    secret_values.append("generated-monitoring-grafana-admin-password")
    secret_values.append("-----BEGIN OPENSSH PRIVATE KEY-----")
    for value in secret_values:
        assert value not in plain, f"{value} appears outside a secret"
    for key in ("postgresPassword", "redisPassword", "qdrantApiKey", "grafanaAdminPassword"):
        assert unraid.raw_outputs[key].get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270"


def test_cloud_api_keys_reach_only_the_orchestrator(unraid):
    holders = {svc for svc, reg in containers(unraid).items()
               if any(k in env_of(reg) for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"))}
    assert holders == {"orchestrator"}
    assert env_of(containers(unraid)["orchestrator"])["OPENAI_API_KEY"] == SECRETS["openaiApiKey"]


def test_without_cloud_keys_nothing_carries_them(run):
    r = run("unraid")
    assert not any("OPENAI_API_KEY" in e for reg in r.of_type(CONTAINER) for e in env_of(reg))


def test_ui_labels_for_the_unraid_docker_tab(unraid):
    cs = containers(unraid)
    labels = {l["label"]: l["value"] for l in cs["grafana"].inputs["labels"]}
    assert labels["net.unraid.docker.webui"] == "http://[IP]:[PORT:3030]/"
    assert labels["net.unraid.docker.icon"].startswith("https://")


def test_every_resource_on_the_host_uses_its_providers(unraid):
    docker_prov = unraid.by_name("unraid-docker")
    assert docker_prov.inputs["host"] == "ssh://root@192.168.1.100:22"
    opts = json.loads(docker_prov.inputs["sshOpts"])
    assert "StrictHostKeyChecking=yes" in opts and "IdentitiesOnly=yes" in opts
    assert any(o.startswith("KnownHostsCommand=/bin/echo octollm-unraid ssh-ed25519 ") for o in opts)
    for reg in unraid.registrations:
        if reg.type.startswith("docker:index/"):
            assert reg.provider.startswith(docker_prov.urn), reg.name
        if reg.type == REMOTE_CMD:
            assert reg.provider.startswith(unraid.urn_of("unraid-command")), reg.name
            conn = reg.inputs["connection"]
            assert conn["hostKey"].startswith("ssh-ed25519 ") and conn["host"] == "192.168.1.100"
            assert "privateKey" not in conn and "password" not in conn  # ssh-agent logs in (test_ssh_agent.py)


def test_prometheus_scrapes_what_the_stack_deploys(unraid):
    import yaml
    cfg = yaml.safe_load(unraid.by_name("monitoring-prometheus-file-prometheus-yml").inputs["stdin"])
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    targets = {t for j in jobs.values() for sc in j["static_configs"] for t in sc["targets"]}
    for svc, port in [("orchestrator", 3000), ("reflex-layer", 3001), ("arm-judge", 6005),
                      ("node-exporter", 9100), ("cadvisor", 8080), ("redis-exporter", 9121),
                      ("postgres-exporter", 9187), ("gpu-exporter", 9400)]:
        assert f"{svc}:{port}" in targets
    assert jobs["ollama"]["params"] == {"module": ["http_2xx"]}
    assert jobs["ollama"]["static_configs"][0]["targets"] == ["http://ollama:11434/api/version"]
    assert "inference-latency" in jobs


def test_alert_rules(unraid):
    import yaml
    rules = yaml.safe_load(unraid.by_name("monitoring-prometheus-file-alerts-yml").inputs["stdin"])
    exprs = {r["alert"]: r["expr"] for r in rules["groups"][0]["rules"]}
    assert exprs["GpuTemperatureHigh"] == "DCGM_FI_DEV_GPU_TEMP >= 80"
    assert exprs["TargetDown"] == "up == 0"
    assert exprs["InferenceLatencyHigh"] == \
        'quantile_over_time(0.95, probe_duration_seconds{job="inference-latency"}[15m]) >= 10'


def test_grafana_is_provisioned_with_both_datasources_and_gpu_basic_fields(unraid):
    import json, yaml
    ds = yaml.safe_load(unraid.by_name("monitoring-grafana-file-provisioning-datasources-datasources-yml")
                        .inputs["stdin"])
    assert {d["type"] for d in ds["datasources"]} == {"prometheus", "loki"}
    gpu = json.loads(unraid.by_name("monitoring-grafana-file-dashboards-gpu-dcgm-json").inputs["stdin"])
    exprs = " ".join(t["expr"] for p in gpu["panels"] for t in p["targets"])
    assert "DCGM_FI_DEV_GPU_TEMP" in exprs and "DCGM_FI_PROF" not in exprs
    env = env_of(containers(unraid)["grafana"])
    assert "GF_SECURITY_ADMIN_PASSWORD" in env
    counters = unraid.by_name("monitoring-unraid-gpu-exporter-file-counters-csv").inputs["stdin"]
    assert "DCGM_FI_PROF" not in counters and "DCGM_FI_DEV_GPU_TEMP" in counters


def test_logs_of_every_container_go_to_loki(unraid):
    alloy = unraid.by_name("monitoring-unraid-alloy-file-config-alloy").inputs["stdin"]
    assert 'loki.source.docker "containers"' in alloy and "http://loki:3100/loki/api/v1/push" in alloy
    mounts = {m["target"]: m for m in containers(unraid)["alloy"].inputs["mounts"]}
    assert mounts["/var/run/docker.sock"]["readOnly"] is True


def test_stack_outputs(unraid):
    out = unraid.outputs
    for svc in ("orchestrator", "reflex-layer", "arm-planner", "ollama", "grafana", "prometheus", "qdrant"):
        assert svc in out["urls"]
    assert out["urls"]["orchestrator"] == "http://192.168.1.100:3000"
    assert out["grafanaUrl"] == "http://192.168.1.100:3030"
    assert out["models"] == {"ollama": ["llama3.1:8b", "mixtral:8x7b", "codellama:13b", "nomic-embed-text"]}
    assert out["capacity"]["unraid"]["memoryGb"] == {"allocated": 48.0, "declared": 504.0}


def test_two_runs_register_byte_identical_inputs(run, unraid):
    again = run("unraid", secrets=SECRETS)
    assert again.fingerprint() == unraid.fingerprint()


def test_components_have_their_type_tokens(unraid):
    types = {r.type for r in unraid.registrations}
    for t in ("GpuInferenceNode", "OctoArmService", "MonitoringStack", "SharedModelStore"):
        assert f"octollm:index:{t}" in types


@pytest.mark.parametrize("case", ["port clash", "over-allocated RAM", "missing host key", "typo in a key"])
def test_bad_config_stops_the_program_before_any_resource(run, case):
    from test_config import INVALID, mutate
    fn, path, _ = INVALID[case]
    r = run("unraid", config=mutate(fn))
    assert isinstance(r.error, RunError)
    assert f"octollm-infra:{path}" in str(r.error)
    assert r.registrations == []


def test_unreadable_identity_file_is_a_config_error(run, tmp_path):
    from harness import run_stack
    r = run_stack("unraid", home=str(tmp_path))
    assert isinstance(r.error, RunError) and "hosts.unraid.ssh.identityFile: cannot read" in str(r.error)
    assert r.registrations == []


def test_insecure_host_key_logs_a_warning(run):
    cfg = copy.deepcopy(stack_config("unraid"))
    del cfg["hosts"]["unraid"]["ssh"]["hostKey"]
    cfg["hosts"]["unraid"]["ssh"]["insecureSkipHostKeyCheck"] = True
    r = run("unraid", config=cfg)
    assert r.error is None
    assert any(sev == "warning" and "insecureSkipHostKeyCheck" in msg for sev, msg in r.logs)
    assert "StrictHostKeyChecking=no" in json.loads(r.by_name("unraid-docker").inputs["sshOpts"])


def test_preflight_runs_first_on_the_host(unraid):
    pre = unraid.by_name("unraid-preflight")
    assert pre.type == REMOTE_CMD and "preflight ok on host" in pre.inputs["create"]
    for r in unraid.registrations:
        if r.type.startswith(("docker:index/", "command:")) and r.name != "unraid-preflight":
            assert pre.urn in r.dependencies, r.name
