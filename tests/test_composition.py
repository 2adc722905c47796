"""One composition path over one platform interface.

The estate used to be composed twice (Docker and Kubernetes), and the copies drifted. Each test here
is a defect of that time, run through the one path now; and the structure that prevents the next one.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

from harness import ROOT, stack_config

CONTAINER = "docker:index/container:Container"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet")
GKE_SECRETS = {"openaiApiKey": "sk-openai-gke"}
EXTERNAL = {"postgresUrl": "postgresql://u:p@db.example.com:5432/octollm", "redisUrl": "redis://:p@cache.example.com:6379/0",
            "qdrantApiKey": "qk"}


def pod(reg) -> dict:
    return reg.inputs["spec"]["template"]["spec"]


def test_gke_mounts_the_temp_store_it_creates(run):
    """A tempStore on gke was accepted and its claim created, but never mounted."""
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["modelStores"]["scratch"] = {"host": "gke", "kind": "pvc", "storageClass": "standard-rwo", "sizeGb": 50}
    cfg["inference"]["ollama"]["tempStore"] = "scratch"
    r = run("gke", config=cfg, secrets=GKE_SECRETS)
    assert r.error is None, r.error
    claim = r.by_name("scratch-claim")
    assert claim.inputs["metadata"]["name"] == "scratch"
    spec = pod(r.by_name("ollama-ollama"))
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/tmp"] == "scratch"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["scratch"]["persistentVolumeClaim"] == {"claimName": "scratch"}
    assert claim.urn in r.by_name("ollama-ollama").dependencies


def test_external_data_services_deploy_nothing_on_docker(run):
    """dataServices.external on a Docker stack still deployed PostgreSQL, Redis and Qdrant."""
    cfg = copy.deepcopy(stack_config("unraid"))
    cfg["dataServices"]["external"] = {"qdrantUrl": "https://xyz.cloud.qdrant.io:6333"}
    r = run("unraid", config=cfg, secrets=EXTERNAL)
    assert r.error is None, r.error
    services = {l["value"] for c in r.of_type(CONTAINER) for l in c.inputs["labels"]
                if l["label"] == "org.octollm.service"}
    assert not services & {"postgres", "redis", "qdrant", "postgres-exporter", "redis-exporter"}, services
    assert "orchestrator" in services
    orch = r.by_name("octollm-orchestrator")
    assert "DATABASE_URL=postgresql://u:p@db.example.com:5432/octollm" in orch.inputs["envs"]
    assert not any("db.example.com" in s for s in r.plain_strings())  # the managed DSN stays secret
    assert "postgresPassword" not in r.outputs


def test_password_rotation_reaches_postgres_and_grafana_on_gke(run):
    """A rotation changes the Secret, the checksum rolls the pods, and the start hook applies it."""
    base = run("gke", secrets=GKE_SECRETS)
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["rotate"] = {"postgres": "2026-12", "grafana": "2026-12"}
    rotated = run("gke", config=cfg, secrets=GKE_SECRETS)
    assert base.error is None and rotated.error is None
    for name in ("data-postgres", "monitoring-grafana"):
        before, after = base.by_name(name), rotated.by_name(name)
        assert "postStart" in pod(after)["containers"][0]["lifecycle"], name
        a = before.inputs["spec"]["template"]["metadata"]["annotations"]
        b = after.inputs["spec"]["template"]["metadata"]["annotations"]
        assert a != b, f"{name}: a rotated password must roll the pods"


def test_gke_probes_inference_latency(run):
    """The only Ollama node on gke reads a shared store, so no probe model was chosen: the latency alert
    and panel selected a job that did not exist."""
    r = run("gke", secrets=GKE_SECRETS)
    assert r.error is None, r.error
    files = r.by_name("monitoring-prometheus-files").inputs["data"]
    prom = next(v for k, v in files.items() if k.startswith("prometheus"))
    assert "job_name: inference-latency" in prom
    assert "ollama.octollm.svc.cluster.local:11434/api/generate" in prom or "ollama:11434/api/generate" in prom
    rules = next(v for k, v in files.items() if k.startswith("alerts"))
    assert 'job="inference-latency"' in rules
    blackbox = next(iter(r.by_name("monitoring-blackbox-exporter-files").inputs["data"].values()))
    assert "ollama_generate" in blackbox and "llama3.1:8b" in blackbox


# ---------------------------------------------------------------------- structure

SERVICES = ROOT / "components" / "services"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_components_depend_on_the_platform_protocol_only():
    for f in sorted(SERVICES.glob("*.py")):
        imports = _imports(f)
        assert not {"components.platforms.docker_host", "components.platforms.kubernetes",
                    "components.platforms.kubernetes_network", "pulumi_docker", "pulumi_kubernetes",
                    "pulumi_command"} & imports, f.name
        text = f.read_text()
        for name in ("DockerHost", "KubernetesPlatform", ".kind ==", '.kind != "', "isinstance("):
            if name == ".kind ==" or name == '.kind != "':
                # a store's kind (hostPath, zfs, nfs, pvc) is config; a platform's kind must not be asked
                for line in text.splitlines():
                    if name in line:
                        assert "self.kind" in line or "cfg.kind" in line, f"{f.name}: {line.strip()}"
                continue
            assert name not in text, f"{f.name} uses {name}"


def test_no_private_sdk_names_or_plan_switches_in_the_program():
    for f in sorted((ROOT / "components").rglob("*.py")) + [ROOT / "__main__.py"]:
        text = f.read_text()
        for bad in (r"runtime_config\.CONFIG", r"(?<![A-Z])_SECRET_KEYS", "OCTOLLM_OFFLINE_PLAN", r"\btooling\b",
                    "mock_engine"):
            assert not re.search(bad, text), f"{f.relative_to(ROOT)} uses {bad}"


def test_both_adapters_implement_the_protocol():
    from components.platforms.base import Platform
    from components.platforms.docker_host import DockerHost
    from components.platforms.kubernetes import KubernetesPlatform

    wanted = {n for n in vars(Platform) if not n.startswith("_") and callable(getattr(Platform, n))}
    for adapter in (DockerHost, KubernetesPlatform):
        missing = {n for n in wanted if not callable(getattr(adapter, n, None))}
        assert not missing, f"{adapter.__name__} lacks {sorted(missing)}"


def test_one_composition_path():
    tree = ast.parse((ROOT / "components" / "stack.py").read_text())
    made = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "GpuInferenceNode", "DataServices", "OctoArmService", "MonitoringStack", "SharedModelStore"):
            made.append(node.func.id)
    assert sorted(made) == sorted(["GpuInferenceNode", "DataServices", "OctoArmService", "MonitoringStack",
                                   "SharedModelStore"]), made
