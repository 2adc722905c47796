"""The real program against the real Pulumi.gke.yaml: Kubernetes objects, real schemas, checkov."""

import base64
import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import k8s_manifests
from harness import ROOT, stack_config

TOOLS = ROOT / ".venv-tools" / "bin"
SECRETS = {"openaiApiKey": "sk-openai-gke"}


@pytest.fixture(scope="module")
def gke(run):
    r = run("gke", secrets=SECRETS)
    assert r.error is None, r.error
    return r


def kinds(r, kind):
    return {m["metadata"]["name"]: m for m in k8s_manifests.manifests(r) if m["kind"] == kind}


def pod(m):
    return m["spec"]["template"]["spec"]


def secret_values(reg) -> dict[str, str]:
    """A Secret's values: the program writes them as `data`, base64, the form the provider stores."""
    return {k: base64.b64decode(v).decode() for k, v in reg.inputs["data"].items()}


def tool(name):
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (requirements-tools.txt)")
    return str(path)


def test_every_object_passes_strict_schema_validation(gke, tmp_path):
    files = k8s_manifests.write(gke, tmp_path)
    version = stack_config("gke")["kubernetes"]["version"]
    out = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *map(str, files)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(files) == len(k8s_manifests.manifests(gke)) > 100


def test_schema_validation_can_fail(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                                   "spec": {"replicas": "two", "selector": {}, "template": {}, "strategi": {}}}))
    out = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.31.0", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode != 0


def checkov(directory: Path) -> dict:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    out = subprocess.run([tool("checkov"), "-d", str(directory), "--framework", "kubernetes", "--quiet",
                          "--compact", "--skip-download", "-o", "json"], capture_output=True, text=True, env=env,
                         cwd=directory)
    doc = json.loads(out.stdout) if out.stdout.strip() else {}
    return doc


def test_checkov_finds_nothing_beyond_the_waivers(gke, tmp_path):
    k8s_manifests.write(gke, tmp_path)
    doc = checkov(tmp_path)
    assert doc["summary"]["parsing_errors"] == 0 and doc["summary"]["passed"] > 1000
    waivers = yaml.safe_load((ROOT / "policy" / "checkov-waivers.yaml").read_text())
    for w in waivers:
        assert w["reason"].strip(), w
    used = set()
    unwaived = []
    for f in doc["results"].get("failed_checks", []):
        hit = [i for i, w in enumerate(waivers) if w["check"] == f["check_id"]
               and (w["resources"] == "*" or f["resource"] in w["resources"])]
        if hit:
            used.update(hit)
        else:
            unwaived.append(f"{f['check_id']} {f['resource']}: {f['check_name']}")
    assert not unwaived, "\n".join(unwaived)
    assert used == set(range(len(waivers))), "stale waivers: " + str([waivers[i]["check"] for i in
                                                                    set(range(len(waivers))) - used])


def test_checkov_can_fail(tmp_path):
    (tmp_path / "priv.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x"},
        "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "busybox",
                                                       "securityContext": {"privileged": True}}]}}))
    failed = {f["check_id"] for f in checkov(tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_19"} <= failed


def test_gpu_scheduling(gke):
    ollama = pod(kinds(gke, "Deployment")["ollama"])
    c = ollama["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert ollama["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert ollama["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert kinds(gke, "Deployment")["ollama"]["spec"]["strategy"] == {"type": "Recreate"}
    for name, d in kinds(gke, "Deployment").items():
        if name != "ollama":
            assert "nvidia.com/gpu" not in pod(d)["containers"][0]["resources"]["limits"], name
    dcgm = pod(kinds(gke, "DaemonSet")["gpu-exporter"])
    assert dcgm["nodeSelector"] == ollama["nodeSelector"] and "nvidia.com/gpu" not in \
        dcgm["containers"][0]["resources"]["limits"]


def test_model_store_is_filled_by_a_job_before_inference_mounts_it_read_only(gke):
    pvc = kinds(gke, "PersistentVolumeClaim")["models"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == "enterprise-rwx"
    assert gke.by_name("models-claim").protect
    job = kinds(gke, "Job")["ollama-pull-models"]
    jp = pod(job)
    assert jp["restartPolicy"] == "Never"
    script = jp["containers"][0]["args"][0]
    for m in ("llama3.1:8b", "codellama:13b", "nomic-embed-text"):
        assert m in script
    assert jp["containers"][0]["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]  # read-write
    dep = gke.by_name("ollama-ollama")
    assert gke.urn_of("ollama-pull-models") in dep.dependencies
    mounts = pod(kinds(gke, "Deployment")["ollama"])["containers"][0]["volumeMounts"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in mounts


def test_probes_requests_and_limits(gke):
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for name, m in kinds(gke, kind).items():
            c = pod(m)["containers"][0]
            assert "readinessProbe" in c and "livenessProbe" in c, name
            assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"], name
    ollama = pod(kinds(gke, "Deployment")["ollama"])["containers"][0]
    assert ollama["startupProbe"]["httpGet"] == {"path": "/api/version", "port": 11434}
    assert ollama["startupProbe"]["failureThreshold"] * ollama["startupProbe"]["periodSeconds"] >= 60
    orch = pod(kinds(gke, "Deployment")["orchestrator"])["containers"][0]
    assert orch["readinessProbe"]["httpGet"] == {"path": "/health", "port": 3000}


def test_stateful_services_are_statefulsets_with_claims(gke):
    sts = kinds(gke, "StatefulSet")
    assert set(sts) == {"postgres", "redis", "qdrant", "prometheus", "grafana", "loki"}
    for name, m in sts.items():
        [claim] = m["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["storageClassName"] == "standard-rwo", name


def test_arms_autoscale_with_disruption_budgets(gke):
    hpas = kinds(gke, "HorizontalPodAutoscaler")
    expected = {"orchestrator", "reflex-layer", "arm-planner", "arm-executor", "arm-retriever", "arm-coder",
                "arm-judge", "arm-safety-guardian"}
    assert set(hpas) == expected == set(kinds(gke, "PodDisruptionBudget"))
    for name, h in hpas.items():
        assert h["apiVersion"] == "autoscaling/v2"
        assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 6)
        assert h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
        # the HPA owns the replica count: the Deployment it scales sets none
        assert "replicas" not in kinds(gke, "Deployment")[name]["spec"], name


def test_ingress_with_tls_from_cert_manager(gke):
    ing = kinds(gke, "Ingress")["octollm"]
    assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}
    assert ing["spec"]["tls"] == [{"hosts": ["grafana.octollm.example.com", "api.octollm.example.com"],
                                   "secretName": "octollm-tls"}]
    backends = {r["host"]: r["http"]["paths"][0]["backend"]["service"] for r in ing["spec"]["rules"]}
    assert backends == {"api.octollm.example.com": {"name": "orchestrator", "port": {"number": 3000}},
                        "grafana.octollm.example.com": {"name": "grafana", "port": {"number": 3000}}}
    assert gke.outputs["ingressHosts"] == {"orchestrator": "https://api.octollm.example.com",
                                           "grafana": "https://grafana.octollm.example.com"}
    assert gke.outputs["grafanaUrl"] == "https://grafana.octollm.example.com"


def test_no_plain_secrets_in_pod_specs(gke):
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for name, m in kinds(gke, kind).items():
            for e in pod(m)["containers"][0].get("env", []):
                if re.search(r"PASSWORD|API_KEY|DATABASE_URL|REDIS_URL|DATA_SOURCE_NAME|AUTH|SECRET", e["name"]):
                    assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == f"{name}-env", (name, e)
    plain = "\n".join(gke.plain_strings())
    assert SECRETS["openaiApiKey"] not in plain and "generated-data-postgres-password" not in plain
    for s in gke.of_type("kubernetes:core/v1:Secret"):
        assert s.is_secret("data") and "stringData" not in s.inputs, s.name
    orch = secret_values(gke.by_name("octollm-orchestrator-env"))
    assert orch["OPENAI_API_KEY"] == SECRETS["openaiApiKey"]
    assert orch["DATABASE_URL"].startswith("postgresql://octollm:generated-data-postgres-password@postgres:5432/")


def _allowed(policies: dict, src: str, dst: str, port: int) -> bool:
    def selects(spec_sel, name):
        ml = spec_sel.get("matchLabels")
        return ml is None or ml.get("app.kubernetes.io/name") == name

    def port_ok(rule):
        return any(p["port"] == port for p in rule.get("ports", []))

    egress = any(selects(p["spec"]["podSelector"], src) and any(
        port_ok(r) and any("podSelector" in t and selects(t["podSelector"], dst) for t in r["to"])
        for r in p["spec"].get("egress", [])) for p in policies.values())
    ingress = any(selects(p["spec"]["podSelector"], dst) and any(
        port_ok(r) and any("podSelector" in f and (f["podSelector"] == {} or selects(f["podSelector"], src))
                           for f in r["from"]) for r in p["spec"].get("ingress", [])) for p in policies.values())
    return egress and ingress


URL = re.compile(r"^[a-z]+://(?:[^@/]*@)?([a-z0-9-]+):(\d+)")


def test_network_policies_allow_exactly_the_paths_in_use(gke):
    policies = kinds(gke, "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    secrets = {s.inputs["metadata"]["name"]: secret_values(s) for s in gke.of_type("kubernetes:core/v1:Secret")}
    checked = 0
    for kind in ("Deployment", "StatefulSet"):
        for name, m in kinds(gke, kind).items():
            values = [e["value"] for e in pod(m)["containers"][0].get("env", []) if "value" in e]
            values += list(secrets.get(f"{name}-env", {}).values())
            for v in values:
                hit = URL.match(v)
                # (an arm's ARM_URL is its own advertised address, not a connection it makes)
                if hit and hit.group(1) in kinds(gke, "Service") and hit.group(1) != name:
                    assert _allowed(policies, name, hit.group(1), int(hit.group(2))), (name, v)
                    checked += 1
    assert checked > 30
    prom = yaml.safe_load(kinds(gke, "ConfigMap")["prometheus-files"]["data"]["prometheus.yml"])
    for job in prom["scrape_configs"]:
        if "params" in job:
            continue
        for t in job["static_configs"][0]["targets"]:
            svc, port = t.split(":")
            assert _allowed(policies, "prometheus", svc, int(port)), t
    # nothing reaches postgres but the orchestrator, its exporter and the backup job
    pg = policies["ingress-postgres"]["spec"]["ingress"]
    assert sorted(r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for r in pg) == \
        ["octollm-backup-gke", "orchestrator", "postgres-exporter"]
    assert not _allowed(policies, "arm-coder", "postgres", 5432)
    ctrl = policies["ingress-orchestrator"]["spec"]["ingress"]
    assert {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "ports": [{"protocol": "TCP", "port": 3000}]} in ctrl
    assert policies["ingress-ollama"]["spec"]["ingress"] == [{"from": [{"podSelector": {}}],
                                                              "ports": [{"protocol": "TCP", "port": 11434}]}]


def test_external_data_services_create_nothing_in_cluster(run):
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["dataServices"]["external"] = {"qdrantUrl": "https://xyz.cloud.qdrant.io:6333"}
    # Managed data services have their own backups: nothing in the namespace to copy.
    cfg.pop("backups")
    cfg["modelStores"].pop("backups")
    secrets = {"postgresUrl": "postgresql://octollm:pw@10.1.2.3:5432/octollm",
               "redisUrl": "redis://:pw@10.1.2.4:6379/0", "qdrantApiKey": "qk"}
    r = run("gke", config=cfg, secrets=secrets)
    assert r.error is None, r.error
    names = set(kinds(r, "StatefulSet"))
    assert not names & {"postgres", "redis", "qdrant"}
    orch = secret_values(r.by_name("octollm-orchestrator-env"))
    assert orch["DATABASE_URL"] == secrets["postgresUrl"] and orch["REDIS_URL"] == secrets["redisUrl"]
    env = {e["name"]: e.get("value") for e in pod(kinds(r, "Deployment")["orchestrator"])["containers"][0].get("env", [])}
    assert env["QDRANT_URL"] == "https://xyz.cloud.qdrant.io:6333"
    assert "ingress-postgres" not in kinds(r, "NetworkPolicy")
    missing = run("gke", config=cfg)
    assert "postgresUrl: is required when dataServices.external is set" in str(missing.error)


def test_managed_dcgm_drops_the_daemonset(run):
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["kubernetes"]["managedDcgm"] = True
    r = run("gke", config=cfg)
    assert "gpu-exporter" not in kinds(r, "DaemonSet")


def test_kubeconfig_from_secret_config_or_ambient(run, gke):
    prov = gke.by_name("gke-kubernetes")
    assert "kubeconfig" not in prov.inputs  # ambient context
    r = run("gke", secrets={"kubeconfig": "apiVersion: v1\nkind: Config\n"})
    p = r.by_name("gke-kubernetes")
    assert p.is_secret("kubeconfig") or "apiVersion: v1" not in "\n".join(r.plain_strings())
    for reg in gke.registrations:
        if reg.type.startswith("kubernetes:") and not reg.type.startswith("pulumi:"):
            assert reg.provider.startswith(prov.urn), reg.name
            if reg.type != "kubernetes:core/v1:Namespace":
                assert reg.inputs["metadata"]["namespace"] == "octollm", reg.name


def test_two_runs_register_byte_identical_inputs(run, gke):
    assert run("gke", secrets=SECRETS).fingerprint() == gke.fingerprint()
