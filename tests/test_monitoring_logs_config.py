"""The log pipeline's generated files on every real stack: each Docker host's and the Kubernetes `config.alloy`,
and the central `loki.yml` (files taken as tests/test_monitoring_promtool.py takes them).

No Loki or Alloy binary runs here. `config.alloy` is checked by tools/alloycheck: Alloy's own syntax module
(github.com/grafana/alloy/syntax v0.1.0) parses it and decodes every component into the arguments and exports
Alloy v1.5.0's component reference documents. `loki.yml` is validated by the `check-jsonschema` CLI against
tests/schemas/loki-2.9.schema.json, a mirror of Loki 2.9's configuration reference, and by the rules of Loki 2.9's
documentation that a schema cannot state (`loki_rules`). Each check is shown failing on a broken copy.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import monitoring_tools as mt
from test_monitoring_promtool import deployments  # noqa: F401  (the fixture: every stack's generated files)

ROOT = Path(__file__).resolve().parent.parent
ALLOYCHECK = ROOT / "tools" / "alloycheck"
LOKI_SCHEMA = ROOT / "tests" / "schemas" / "loki-2.9.schema.json"
STACKS = mt.MONITORED_STACKS


# ------------------------------------------------------------------ the tools

@pytest.fixture(scope="session")
def alloycheck() -> str:
    """tools/alloycheck built into the Go cache's neighbourhood (outside the checkout), once per source change."""
    go = shutil.which("go")
    if go is None:
        mt.unavailable("go is not installed (it builds tools/alloycheck, the config.alloy checker)")
    gocache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode())
    for path in sorted(ALLOYCHECK.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            digest.update(str(path.relative_to(ALLOYCHECK)).encode() + b"\0" + path.read_bytes())
    out_dir = Path(gocache).parent / "octollm-alloycheck"
    binary = out_dir / f"alloycheck-{digest.hexdigest()[:16]}"
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(binary.name + f".{os.getpid()}")
        built = subprocess.run([go, "build", "-buildvcs=false", "-mod=readonly", "-o", str(partial), "."],
                               cwd=ALLOYCHECK, capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, f"go build of tools/alloycheck failed:\n{built.stderr}"
        partial.replace(binary)  # atomic: a concurrent run sees a whole binary or none
    return str(binary)


def check_alloy(binary: str, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *map(str, files)], capture_output=True, text=True, timeout=60)


def check_loki(path: Path) -> subprocess.CompletedProcess:
    tool = mt.find_tool("check-jsonschema")
    if tool is None:
        mt.unavailable("check-jsonschema is not installed (PyPI package check-jsonschema, requirements-dev.txt)")
    return subprocess.run([tool, "--schemafile", str(LOKI_SCHEMA), str(path)],
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ the files

def alloy_agents(dep: mt.Deployment) -> list[mt.Workload]:
    agents = dep.named("alloy")
    assert agents, f"{dep.stack}: no Alloy agent"
    return agents


def place(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def loki_file(dep: mt.Deployment) -> tuple[mt.Workload, str]:
    w = dep.one("loki")
    return w, w.file(mt.config_flag(w, "-config.file"))


def _hours(duration: str) -> float:
    return mt.go_duration_s(duration) / 3600


def loki_rules(cfg: dict, today: datetime.date | None = None) -> list[str]:
    """What Loki 2.9's documentation requires of the settings this program relies on, beyond key names and types:
    configure/_index.md (limits_config.retention_period "only applies if retention_enabled is true"),
    operations/storage/retention.md (retention needs a 24h index period; the minimum retention period is 24h),
    operations/storage/schema/_index.md (index period "must be 24h"; `from` of a new install is a date in the
    past; a period is active until a later `from` starts the next one)."""
    today = today or datetime.date.today()
    out = []
    periods = cfg["schema_config"]["configs"]
    retention = cfg.get("limits_config", {}).get("retention_period", "0s")
    enabled = cfg.get("compactor", {}).get("retention_enabled", False)
    if _hours(retention) > 0 and not enabled:
        out.append(f"limits_config.retention_period {retention} has no effect: compactor.retention_enabled is not true")
    if enabled and 0 < _hours(retention) < 24:
        out.append(f"limits_config.retention_period {retention} is below the 24h minimum")
    for i, p in enumerate(periods):
        if p["index"]["period"] != "24h":
            out.append(f"schema_config.configs[{i}].index.period is {p['index']['period']}, must be 24h")
    froms = [datetime.date.fromisoformat(str(p["from"])) for p in periods]
    if froms != sorted(set(froms)):
        out.append(f"schema_config.configs `from` dates are not distinct and increasing: {froms}")
    if froms and froms[0] > today:
        out.append(f"schema_config.configs[0].from {froms[0]} is in the future: nothing before it could be stored")
    return out


# ------------------------------------------------------------------ every real stack

def test_every_kind_of_agent_config_is_checked(deployments):  # noqa: F811
    """Docker hosts' and the Kubernetes agent's config.alloy both come from the real stacks (not one kind only)."""
    kinds = {w.kind for s in STACKS for w in alloy_agents(deployments[s])}
    assert kinds == {"docker", "kubernetes"}, kinds


@pytest.mark.parametrize("stack", STACKS)
def test_alloycheck_accepts_every_config_alloy(deployments, stack, alloycheck, tmp_path):  # noqa: F811
    agents = alloy_agents(deployments[stack])
    files = [place(tmp_path, f"{w.resource}/config.alloy", w.file("config.alloy")) for w in agents]
    out = check_alloy(alloycheck, *files)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [f"{f}: ok" for f in files]


@pytest.mark.parametrize("stack", STACKS)
def test_every_agent_pushes_to_the_loki_that_is_deployed(deployments, stack):  # noqa: F811
    """The loki.write URL of every agent reaches the Loki workload, on the port loki.yml makes it listen on."""
    dep = deployments[stack]
    loki, text = loki_file(dep)
    listen = yaml.safe_load(text)["server"]["http_listen_port"]
    assert listen in loki.ports, f"loki.yml listens on {listen}, the workload has ports {sorted(loki.ports)}"
    for w in alloy_agents(dep):
        urls = re.findall(r'^\s*url\s*=\s*"([^"]+)"', w.file("config.alloy"), re.M)
        assert urls, f"{w.resource}: no loki.write endpoint url"
        for url in urls:
            assert url.endswith("/loki/api/v1/push"), url
            reached = dep.resolve(url, on_host=w.host)
            assert [r.service for r in reached] == ["loki"], f"{w.resource}: {url} reaches {reached}"
            if dep.cfg.platform == "kubernetes" or url.startswith("http://loki:"):
                assert f":{listen}/" in url, f"{w.resource}: {url} is not Loki's listen port {listen}"


@pytest.mark.parametrize("stack", STACKS)
def test_loki_yml_matches_the_loki_2_9_schema(deployments, stack, tmp_path):  # noqa: F811
    _, text = loki_file(deployments[stack])
    out = check_loki(place(tmp_path, "loki.yml", text))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok -- validation done" in out.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_loki_yml_follows_the_documented_rules(deployments, stack):  # noqa: F811
    _, text = loki_file(deployments[stack])
    assert loki_rules(yaml.safe_load(text)) == []


# ------------------------------------------------------------------ each check refuses a broken file

ALLOY_BREAKS = {
    # name: (stack, old text, new text, what the refusal must say)
    "attribute typo": ("unraid", "relabel_rules =", "relabel_rulez =",
                       r':\d+:3: loki\.source\.docker\.containers: unrecognized attribute name "relabel_rulez"'),
    "nested block typo": ("gke", "  namespaces {", "  namespace {", r'unrecognized block name "namespace"'),
    "wrong type": ("unraid", 'host = "unix:///var/run/docker.sock"', 'host = ["unix:///var/run/docker.sock"]',
                   r":\d+:\d+: discovery\.docker\.containers: \[.*\] should be string, got array"),
    "targets given as receivers": ("gke", "forward_to = [loki.write.default.receiver]",
                                   "forward_to = discovery.kubernetes.pods.targets", r"should be capsule, got object"),
    "missing required argument": ("gke", '  role = "pod"\n', "",
                                  r'discovery\.kubernetes\.pods: missing required attribute "role"'),
    "undocumented value": ("gke", 'role = "pod"', 'role = "pods"', r'role "pods" is not one of'),
    "undefined component": ("unraid", "loki.write.default.receiver", "loki.write.central.receiver",
                            r":\d+:\d+: loki\.write\.central\.receiver refers to a component that is not declared"),
    "undefined export": ("gke", "discovery.relabel.pods.output", "discovery.relabel.pods.targets",
                         r'discovery\.relabel\.pods has no export "targets" \(exports: output, rules\)'),
    "unknown component": ("unraid", 'loki.source.docker "containers"', 'loki.source.dockerd "containers"',
                          r'unknown component "loki\.source\.dockerd"'),
    "syntax error": ("gke", "  rule {", "  rule {{", r":\d+:\d+: expected identifier, got \{"),
    "not a URL": ("unraid", 'url = "http://', 'url = "', r'endpoint: url ".*" is not a full http\(s\) URL'),
}


@pytest.mark.parametrize("name", ALLOY_BREAKS)
def test_alloycheck_refuses_a_broken_config_alloy(deployments, name, alloycheck, tmp_path):  # noqa: F811
    stack, old, new, want = ALLOY_BREAKS[name]
    text = alloy_agents(deployments[stack])[0].file("config.alloy")
    assert old in text, f"{stack}: {old!r} is no longer generated; update the break"
    broken = place(tmp_path, "config.alloy", text.replace(old, new, 1))
    out = check_alloy(alloycheck, broken)
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(re.escape(str(broken)) + r".*" + want, out.stdout), out.stdout


LOKI_BREAKS = {
    # name: (edit of the parsed loki.yml, what check-jsonschema must name)
    "top-level typo": (lambda c: c.update(limit_config=c.pop("limits_config")), "'limit_config' was unexpected"),
    "key typo in a block": (lambda c: c["compactor"].update(retention_enabeld=c["compactor"].pop("retention_enabled")),
                            "'retention_enabeld' was unexpected"),
    "nested key typo": (lambda c: c["common"]["storage"]["filesystem"].update(chunk_directory="/loki/chunks"),
                        "'chunk_directory' was unexpected"),
    "wrong type": (lambda c: c["server"].update(http_listen_port="3100"), "'3100' is not of type 'integer'"),
    "not a duration": (lambda c: c["limits_config"].update(retention_period="30 days"),
                       "'30 days' does not match"),
    "unknown kvstore": (lambda c: c["common"]["ring"]["kvstore"].update(store="in-memory"),
                        "'in-memory' is not one of"),
    "unknown schema version": (lambda c: c["schema_config"]["configs"][0].update(schema="v31"), "'v31' is not one of"),
    "period without a store": (lambda c: c["schema_config"]["configs"][0].pop("store"),
                               "'store' is a required property"),
}


@pytest.mark.parametrize("name", LOKI_BREAKS)
def test_the_loki_schema_refuses_a_broken_loki_yml(deployments, name, tmp_path):  # noqa: F811
    edit, want = LOKI_BREAKS[name]
    cfg = yaml.safe_load(loki_file(deployments["unraid"])[1])
    edit(cfg)
    out = check_loki(place(tmp_path, "loki.yml", yaml.safe_dump(cfg, sort_keys=False)))
    assert out.returncode == 1, out.stdout + out.stderr
    assert want in out.stdout, out.stdout


RULE_BREAKS = {
    "retention without the compactor's retention": (
        lambda c: c["compactor"].update(retention_enabled=False), "has no effect: compactor.retention_enabled"),
    "retention below 24h": (lambda c: c["limits_config"].update(retention_period="12h"), "below the 24h minimum"),
    "index period not 24h": (lambda c: c["schema_config"]["configs"][0]["index"].update(period="168h"), "must be 24h"),
    "schema starting in the future": (lambda c: c["schema_config"]["configs"][0].update({"from": "2999-01-01"}),
                                      "in the future"),
}


@pytest.mark.parametrize("name", RULE_BREAKS)
def test_the_documented_loki_rules_refuse_a_broken_loki_yml(deployments, name):  # noqa: F811
    edit, want = RULE_BREAKS[name]
    cfg = yaml.safe_load(loki_file(deployments["unraid"])[1])
    edit(cfg)
    assert any(want in p for p in loki_rules(cfg)), loki_rules(cfg)
