"""Config schema and cross-field rules, without Pulumi."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.config.schema import ConfigError, load_stack_config
from components.config.rules import capacity, inventory
from harness import stack_config

UNRAID = stack_config("unraid")


def problems_of(raw, secret_keys=()):
    with pytest.raises(ConfigError) as exc:
        load_stack_config(raw, set(secret_keys))
    return exc.value.problems


def test_unraid_stack_is_valid_and_matches_the_adr_budget():
    cfg, warnings = load_stack_config(UNRAID)
    cap = capacity(cfg)["unraid"]
    # The ADR's table: 4+2+4+4+4+12+8+4 cores (its "38" total is an arithmetic slip), 48 GB, 24 GB VRAM.
    assert cap["cpus"] == {"allocated": 42.0, "declared": 64.0}
    assert cap["memoryGb"] == {"allocated": 48.0, "declared": 504.0}
    assert cap["vramGb"] == {"allocated": 24.0, "declared": 24.0}


def test_mixtral_on_a_p40_is_a_warning_that_says_what_happens():
    _, warnings = load_stack_config(UNRAID)
    [w] = [w for w in warnings if "mixtral" in w]
    assert "inference.ollama.models" in w and "26 GB" in w and "24 GB" in w and "CPU" in w


def test_dev_stack_is_valid():
    cfg, warnings = load_stack_config(stack_config("dev"))
    assert cfg.hosts["local"].kind == "local" and not cfg.hosts["local"].gpus
    assert warnings == []


def mutate(fn):
    raw = copy.deepcopy(UNRAID)
    fn(raw)
    return raw


def _set(path, value):
    def fn(raw):
        node = raw
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return fn


def _del(path):
    def fn(raw):
        node = raw
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
    return fn


INVALID = {
    "typo in a key": (_set(["hosts", "unraid", "memoryGB"], 504), "hosts.unraid.memoryGB", "unknown key"),
    "typo in a top-level key": (_set(["monitorng"], {}), "monitorng", "unknown key"),
    "port clash": (_set(["octollm", "arms", "judge", "port"], 3010), "octollm.arms.judge", "3010"),
    "exporter port clash": (_set(["monitoring", "grafanaPort"], 9090), "monitoring", "9090"),
    "static ip outside subnet": (_set(["inference", "ollama", "ipv4Address"], "10.0.0.10"),
                                 "inference.ollama.ipv4Address", "outside network octollm-net"),
    "static ip is the gateway": (_set(["inference", "ollama", "ipv4Address"], "172.20.0.1"),
                                 "inference.ollama.ipv4Address", "gateway"),
    "gateway outside subnet": (_set(["hosts", "unraid", "networks", "octollm-net", "gateway"], "172.21.0.1"),
                               "hosts.unraid.networks.octollm-net.gateway", "not a usable address"),
    "malformed subnet": (_set(["hosts", "unraid", "networks", "octollm-net", "subnet"], "172.20.0.0/33"),
                         "hosts.unraid.networks.octollm-net.subnet", "CIDR"),
    "over-allocated RAM": (_set(["hosts", "unraid", "memoryGb"], 32), "hosts.unraid.memoryGb", "48 GB"),
    "over-allocated CPU": (_set(["hosts", "unraid", "cpuThreads"], 16), "hosts.unraid.cpuThreads", "42 cores"),
    "over-allocated VRAM": (_set(["inference", "ollama", "vramGb"], 30), "hosts.unraid.gpus[0].vramGb", "30 GB"),
    "vLLM model on an Ollama node": (_set(["inference", "ollama", "models"], ["llama3.1:8b", "Qwen/Qwen2.5-7B-Instruct-AWQ"]),
                                     "inference.ollama", "not an Ollama tag"),
    "missing host key": (_del(["hosts", "unraid", "ssh", "hostKey"]), "hosts.unraid", "hostKey"),
    "malformed host key": (_set(["hosts", "unraid", "ssh", "hostKey"], "AAAAC3Nza"), "hosts.unraid.ssh.hostKey",
                           "ssh-ed25519"),
    "unknown host": (_set(["inference", "ollama", "host"], "tower"), "inference.ollama.host", "tower"),
    "unknown network": (_set(["dataServices", "network"], "bridge0"), "dataServices.network", "bridge0"),
    "wrong engine name": (_set(["inference", "ollama", "engine"], "olama"), "inference.ollama.engine", "'olama'"),
    "latest tag": (_set(["octollm", "imageTag"], "latest"), "octollm.imageTag", "latest"),
    "unpinned image override": (_set(["images"], {"grafana": "grafana/grafana"}), "images", "no tag"),
    "port out of range": (_set(["octollm", "orchestrator", "port"], 70000), "octollm.orchestrator.port", "65535"),
    "gpu on a gpu-less host": (_set(["hosts", "unraid", "gpus"], []), "inference.ollama.gpu", "declares none"),
    "llm endpoint missing": (_set(["octollm", "llmEndpoint"], "vllm"), "octollm.llmEndpoint", "'vllm'"),
    "missing identity file": (_del(["hosts", "unraid", "ssh", "identityFile"]), "hosts.unraid.ssh.identityFile",
                              "required"),
    "bad data owner": (_set(["hosts", "unraid", "dataOwner"], "nobody"), "hosts.unraid.dataOwner", "'nobody'"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_config_is_rejected_with_its_key(case):
    fn, path, fragment = INVALID[case]
    problems = problems_of(mutate(fn))
    hits = [p for p in problems if p.path.startswith(path) and fragment in p.message + p.path]
    assert hits, f"expected a problem at {path} mentioning {fragment!r}, got {[str(p) for p in problems]}"


def test_all_structural_problems_are_reported_together():
    raw = mutate(lambda r: (_set(["hosts", "unraid", "memoryGB"], 1)(r),
                            _set(["octollm", "imageTag"], "latest")(r),
                            _set(["inference", "ollama", "engine"], "olama")(r)))
    paths = {p.path for p in problems_of(raw)}
    assert {"hosts.unraid.memoryGB", "octollm.imageTag", "inference.ollama.engine"} <= paths


def test_all_cross_field_problems_are_reported_together():
    raw = mutate(lambda r: (_set(["octollm", "arms", "judge", "port"], 3010)(r),
                            _set(["hosts", "unraid", "memoryGb"], 32)(r),
                            _set(["inference", "ollama", "ipv4Address"], "10.0.0.10")(r)))
    paths = {p.path for p in problems_of(raw)}
    assert {"octollm.arms.judge", "hosts.unraid.memoryGb", "inference.ollama.ipv4Address"} <= paths


def test_secret_given_in_plain_text_is_refused():
    raw = {**UNRAID, "postgresPassword": "hunter2"}
    [p] = [p for p in problems_of(raw) if p.path == "postgresPassword"]
    assert "--secret" in p.message
    cfg, _ = load_stack_config(raw, {"postgresPassword"})
    assert cfg.postgres_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg)


def test_error_text_names_the_project_key():
    with pytest.raises(ConfigError) as exc:
        load_stack_config(mutate(_set(["hosts", "unraid", "memoryGB"], 1)))
    assert "octollm-infra:hosts.unraid.memoryGB: unknown key" in str(exc.value)


def test_insecure_host_key_needs_an_explicit_flag():
    raw = mutate(lambda r: (_del(["hosts", "unraid", "ssh", "hostKey"])(r),
                            _set(["hosts", "unraid", "ssh", "insecureSkipHostKeyCheck"], True)(r)))
    cfg, _ = load_stack_config(raw)
    assert cfg.hosts["unraid"].ssh.insecure_skip_host_key_check


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=6001, max_value=6010), min_size=6, max_size=6))
def test_arm_ports_are_accepted_exactly_when_unique(ports):
    names = ["planner", "executor", "retriever", "coder", "judge", "safety-guardian"]
    raw = copy.deepcopy(UNRAID)
    for name, port in zip(names, ports):
        raw["octollm"]["arms"][name]["port"] = port
    if len(set(ports)) == len(ports):
        cfg, _ = load_stack_config(raw)
        published = [p.port for pl in inventory(cfg) for p in pl.ports]
        assert len(published) == len(set(published))
    else:
        assert any("already used" in p.message for p in problems_of(raw))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_static_ip_accepted_exactly_when_a_usable_address_of_the_subnet(n):
    import ipaddress
    ip = str(ipaddress.IPv4Address(n))
    raw = mutate(_set(["inference", "ollama", "ipv4Address"], ip))
    net = ipaddress.IPv4Network("172.20.0.0/16")
    usable = ipaddress.IPv4Address(ip) in net and ip not in ("172.20.0.0", "172.20.255.255", "172.20.0.1")
    if usable:
        load_stack_config(raw)
    else:
        assert any(p.path == "inference.ollama.ipv4Address" for p in problems_of(raw))
