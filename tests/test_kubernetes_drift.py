"""A second `pulumi up` on Kubernetes changes nothing, and the changes that must roll pods do.

- every object the gke stack registers is in the form the API server and the provider read back
  (tests/readback_kubernetes.py), so neither a refresh nor the next `up` finds a difference;
- Deployments an HPA scales set no replica count;
- the model pull and the GPU workloads wait as long as a model download takes;
- a changed Secret or ConfigMap rolls the pods that read it, through a keyed checksum;
- a rotated PostgreSQL password reaches the existing database (postStart hook, proven against a real
  PostgreSQL below);
- a namespace the program creates carries the stack's marks the preflight looks for
  (tests/test_preflight_kubernetes.py refuses one without them), is adopted on request, and is never
  deleted by `destroy`: deleting it would delete every data claim in it;
- a rotated PostgreSQL password never reaches the server log, here nor on Docker.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopback import free_port as _free_port

import readback_kubernetes as rk
from components.platforms import kubernetes as kp
from components.config.schema import ConfigError, KubernetesConfig, load_stack_config
from components.platforms.workload import MountSpec, PortSpec, ServiceSpec
from harness import stack_config

SECRETS = {"openaiApiKey": "sk-openai-gke"}
REQUIRED = os.environ.get("OCTOLLM_REQUIRE_REAL_HOST") == "1"
SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
             "kubernetes:batch/v1:Job")


@pytest.fixture(scope="module")
def gke(run):
    r = run("gke", secrets=SECRETS)
    assert r.error is None, r.error
    return r


def k8s_objects(result):
    return [r for r in result.registrations if r.type.startswith("kubernetes:")]


def by_kind(result, type_token) -> dict:
    return {r.inputs["metadata"]["name"]: r for r in result.of_type(type_token)}


def pod(reg) -> dict:
    return reg.inputs["spec"]["template"]["spec"]


def template_annotations(reg) -> dict:
    return reg.inputs["spec"]["template"]["metadata"].get("annotations", {})


def drift(result) -> dict:
    out = {}
    for r in k8s_objects(result):
        back = rk.RULES[r.type](r.inputs)
        if back != r.inputs:
            out[r.name] = {k: (r.inputs.get(k), back.get(k)) for k in set(r.inputs) | set(back)
                           if r.inputs.get(k) != back.get(k)}
    return out


def gke_config(**kube) -> dict:
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["kubernetes"].update(kube)
    return cfg


# ====================================================================== 6. read-back

def test_every_object_of_the_gke_stack_reads_back_as_registered(gke):
    objects = k8s_objects(gke)
    assert len(objects) > 100
    assert {r.type for r in objects} <= set(rk.RULES), "a Kubernetes type without a read-back rule"
    assert drift(gke) == {}


@pytest.mark.parametrize("variant", ["adopted namespace", "external data services", "managed dcgm"])
def test_variants_read_back_as_registered(run, variant):
    cfg = copy.deepcopy(stack_config("gke"))
    secrets = dict(SECRETS)
    if variant == "adopted namespace":
        cfg["kubernetes"]["adoptNamespace"] = True
    elif variant == "external data services":
        cfg["dataServices"]["external"] = {"qdrantUrl": "https://xyz.cloud.qdrant.io:6333"}
        cfg.pop("backups")  # nothing of ours to copy: the managed services keep their own backups
        secrets.update({"postgresUrl": "postgresql://u:p@10.1.2.3:5432/octollm", "redisUrl": "redis://:p@10.1.2.4:6379/0",
                        "qdrantApiKey": "qk"})
    else:
        cfg["kubernetes"]["managedDcgm"] = True
    r = run("gke", config=cfg, secrets=secrets)
    assert r.error is None, r.error
    assert drift(r) == {}


# The program's old forms, one at a time: each must show up as drift, or the sweep proves nothing.
OLD_FORMS = {
    "cpu in millicores": ("cpu_quantity", lambda cpus: f"{int(round(cpus * 1000))}m", "spec"),
    "memory in MiB": ("memory_quantity", lambda gb: f"{int(round(gb * 1024))}Mi", "spec"),
    "storage in GiB": ("storage_quantity", lambda gb: f"{gb * 1024}Mi", "spec"),
}


@pytest.mark.parametrize("label", sorted(OLD_FORMS))
def test_a_non_canonical_quantity_shows_as_drift(run, monkeypatch, label):
    attr, old, field = OLD_FORMS[label]
    monkeypatch.setattr(kp, attr, old)
    found = drift(run("gke", secrets=SECRETS))
    assert found and all(field in d for d in found.values()), label


def test_fields_the_api_server_drops_show_as_drift(gke):
    job = gke.by_name("ollama-pull-models")
    inputs = copy.deepcopy(job.inputs)
    inputs["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] = False
    assert rk.RULES[job.type](inputs) != inputs
    inputs = copy.deepcopy(job.inputs)
    inputs["spec"]["template"]["spec"]["containers"][0]["ports"] = []
    assert rk.RULES[job.type](inputs) != inputs
    secret = gke.by_name("data-postgres-env")
    as_string_data = {k: v for k, v in secret.inputs.items() if k != "data"}
    as_string_data["stringData"] = {"POSTGRES_PASSWORD": "x"}
    assert rk.RULES[secret.type](as_string_data) != as_string_data
    assert rk.RULES[secret.type](as_string_data)["data"] == {"POSTGRES_PASSWORD": "eA=="}


def test_an_unmodelled_field_is_an_error_not_a_pass(gke):
    dep = gke.by_name("octollm-orchestrator")
    inputs = copy.deepcopy(dep.inputs)
    inputs["spec"]["template"]["spec"]["containers"][0]["stdin"] = True
    with pytest.raises(KeyError, match="stdin"):
        rk.RULES[dep.type](inputs)


# Expected strings: resource.MustParse(x).String() in k8s.io/apimachinery (canonical form, or the
# input kept as written where ParseQuantity finds it already canonical).
@pytest.mark.parametrize("given,back", [
    ("1000m", "1"), ("8000m", "8"), ("500m", "500m"), ("1500m", "1500m"), ("1.5", "1500m"), ("0.5", "500m"),
    ("100m", "100m"), ("0.1m", "100u"), ("1", "1"), ("1000", "1k"), ("1500", "1500"), ("2000", "2k"),
    ("1024", "1024"), ("2048Mi", "2Gi"), ("16384Mi", "16Gi"), ("512Mi", "512Mi"), ("1536Mi", "1536Mi"),
    ("1.5Gi", "1536Mi"), ("1024Gi", "1Ti"), ("1025Mi", "1025Mi"), ("0.5Ki", "512"), ("1Ki", "1Ki"),
    ("0", "0"), ("0Mi", "0"), ("12e6", "12e6"), ("1.5e-3", "1500e-6"), ("5e-10", "1e-9"), ("1k", "1k"),
    ("1000k", "1M"), ("100Gi", "100Gi"), ("20Gi", "20Gi"), ("1M", "1M"), ("0.001", "1m"),
])
def test_quantities_read_back_in_canonical_form(given, back):
    assert rk.canonical_quantity(given) == back


@pytest.mark.parametrize("bad", ["", "1.5.5", "1Qi", "abc", "1e"])
def test_malformed_quantities_are_refused(bad):
    with pytest.raises(rk.QuantityError):
        rk.canonical_quantity(bad)


@pytest.mark.parametrize("cpus", [0.1, 0.25, 0.5, 1, 1.5, 2, 4, 8, 10, 12, 16, 64, 100, 512])
def test_program_cpu_form_is_canonical_and_exact(cpus):
    q = kp.cpu_quantity(cpus)
    assert rk.canonical_quantity(q) == q and rk.parse_quantity(q).value == rk.Fraction(str(cpus))


@pytest.mark.parametrize("gb", [0.25, 0.5, 1, 1.5, 2, 4, 6, 16, 64, 100, 224, 1024, 0.1])
def test_program_memory_form_is_canonical_and_exact(gb):
    q = kp.memory_quantity(gb)
    assert rk.canonical_quantity(q) == q
    assert rk.parse_quantity(q).value == round(gb * 1024) * 2**20


@pytest.mark.parametrize("gb", [1, 16, 20, 100, 1000, 1024, 2048, 3000])
def test_program_storage_form_is_canonical_and_exact(gb):
    q = kp.storage_quantity(gb)
    assert rk.canonical_quantity(q) == q and rk.parse_quantity(q).value == gb * 2**30


def test_gpu_count_and_quantities_in_the_manifests(gke):
    ollama = pod(gke.by_name("ollama-ollama"))["containers"][0]["resources"]
    assert ollama == {"requests": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"},
                      "limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}}
    assert gke.by_name("models-claim").inputs["spec"]["resources"]["requests"]["storage"] == "100Gi"


# ====================================================================== 1. HPA-managed Deployments

def test_deployments_an_hpa_scales_set_no_replicas(gke):
    hpas = {r.inputs["spec"]["scaleTargetRef"]["name"] for r in gke.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")}
    deployments = by_kind(gke, "kubernetes:apps/v1:Deployment")
    assert len(hpas) == 8 and hpas <= set(deployments)
    for name, d in deployments.items():
        if name in hpas:
            assert "replicas" not in d.inputs["spec"], name
        else:
            assert d.inputs["spec"]["replicas"] == 1, name


# ====================================================================== 2. await timeouts

def test_the_pull_job_and_gpu_workloads_wait_for_a_model_download(gke):
    expected = str(kp.default_model_pull_timeout_minutes([["llama3.1:8b", "codellama:13b", "nomic-embed-text"]]) * 60)
    assert expected == "2400"  # 12.6 GB of models: 40 minutes, not the provider's 10
    job = gke.by_name("ollama-pull-models")
    assert job.inputs["metadata"]["annotations"] == {kp.TIMEOUT_ANNOTATION: expected}
    timed = {r.inputs["metadata"]["name"] for r in k8s_objects(gke)
             if kp.TIMEOUT_ANNOTATION in r.inputs.get("metadata", {}).get("annotations", {})}
    gpu = {r.inputs["metadata"]["name"] for r in gke.registrations if r.type in WORKLOADS
           and "nvidia.com/gpu" in pod(r)["containers"][0]["resources"]["limits"]}
    assert gpu == {"ollama"}
    # the DCGM exporter claims no GPU, but its pods wait for a GPU node and its driver just the same
    on_gpu_nodes = {r.inputs["metadata"]["name"] for r in gke.of_type("kubernetes:apps/v1:DaemonSet")
                    if pod(r).get("nodeSelector", {}).get(kp.GKE_ACCELERATOR)}
    assert on_gpu_nodes == {"gpu-exporter"}
    assert timed == gpu | on_gpu_nodes | {"ollama-pull-models"}
    for name in ("ollama-ollama", "monitoring-gke-gpu-exporter"):
        assert gke.by_name(name).inputs["metadata"]["annotations"][kp.TIMEOUT_ANNOTATION] == expected, name


def test_the_pull_timeout_is_configurable(run):
    r = run("gke", config=gke_config(modelPullTimeoutMinutes=90), secrets=SECRETS)
    assert r.error is None, r.error
    for name in ("ollama-pull-models", "ollama-ollama", "monitoring-gke-gpu-exporter"):
        assert r.by_name(name).inputs["metadata"]["annotations"][kp.TIMEOUT_ANNOTATION] == "5400"


@pytest.mark.parametrize("bad", [5, 0, 2000])
def test_a_pull_timeout_out_of_range_is_refused_by_key(bad):
    with pytest.raises(ConfigError) as exc:
        load_stack_config(gke_config(modelPullTimeoutMinutes=bad))
    text = exc.value.render()
    assert "kubernetes.modelPullTimeoutMinutes" in text and "10" in text and "1440" in text


def test_the_default_timeout_grows_with_the_models():
    assert kp.default_model_pull_timeout_minutes([]) == kp.PULL_FLOOR_MIN
    assert kp.default_model_pull_timeout_minutes([["qwen2.5:0.5b"]]) == kp.PULL_FLOOR_MIN
    small = kp.default_model_pull_timeout_minutes([["llama3.1:8b"]])
    big = kp.default_model_pull_timeout_minutes([["llama3.1:8b"], ["mixtral:8x7b", "llama3.1:8b"]])
    assert big > small and big == 70  # 30.9 GB at 10 MB/s: 51.5 min + 15
    # a model the catalogue does not know counts as the largest one it does
    assert kp.default_model_pull_timeout_minutes([["somebody/unknown:70b"]]) == \
        kp.default_model_pull_timeout_minutes([["mixtral:8x7b"]])


# ====================================================================== 3. Secret and ConfigMap changes roll pods

def _referenced(reg) -> tuple[set[str], set[str]]:
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for c in pod(reg)["containers"] for e in c.get("env", [])
               if "valueFrom" in e}
    maps = {v["configMap"]["name"] for v in pod(reg).get("volumes", []) if "configMap" in v}
    return secrets, maps


def test_every_pod_that_reads_a_secret_or_configmap_carries_its_checksum(gke):
    checked = 0
    for reg in gke.registrations:
        if reg.type not in WORKLOADS:
            continue
        secrets, maps = _referenced(reg)
        ann = template_annotations(reg)
        assert (kp.ENV_CHECKSUM in ann) == bool(secrets), reg.name
        assert (kp.FILES_CHECKSUM in ann) == bool(maps), reg.name
        for name in secrets | maps:  # every object a pod reads is created by the program
            assert [r for r in gke.registrations if r.type in ("kubernetes:core/v1:Secret", "kubernetes:core/v1:ConfigMap")
                    and r.inputs["metadata"]["name"] == name], name
        checked += bool(secrets or maps)
    assert checked >= 15


def _checksums(result) -> dict[str, dict]:
    return {r.inputs["metadata"]["name"]: template_annotations(r) for r in result.registrations if r.type in WORKLOADS}


def test_a_rotated_password_rolls_exactly_the_pods_that_read_it(run, gke):
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["rotate"] = {"postgres": "2026-11"}
    rotated = run("gke", config=cfg, secrets=SECRETS)
    assert rotated.error is None, rotated.error
    before, after = _checksums(gke), _checksums(rotated)
    changed = {n for n in before if before[n] != after[n]}
    # postgres itself, the orchestrator (DATABASE_URL) and the exporter (its DSN)
    assert changed == {"postgres", "orchestrator", "postgres-exporter"}
    assert before["postgres"][kp.ENV_CHECKSUM] != after["postgres"][kp.ENV_CHECKSUM]


def test_a_changed_config_file_rolls_its_pods(run, gke):
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["monitoring"]["retention"] = "30d"
    r = run("gke", config=cfg, secrets=SECRETS)
    assert r.error is None, r.error
    before, after = _checksums(gke), _checksums(r)
    # retention is in loki.yml; Prometheus takes it as an argument, and its files are unchanged
    assert before["loki"][kp.FILES_CHECKSUM] != after["loki"][kp.FILES_CHECKSUM]
    assert before["prometheus"] == after["prometheus"]
    assert before["grafana"] == after["grafana"] and before["orchestrator"] == after["orchestrator"]


def test_checksums_are_keyed_plain_and_reveal_nothing(gke):
    pg = gke.by_name("data-postgres")
    value = template_annotations(pg)[kp.ENV_CHECKSUM]
    password = base64.b64decode(gke.by_name("data-postgres-env").inputs["data"]["POSTGRES_PASSWORD"]).decode()
    body = json.dumps({"POSTGRES_PASSWORD": password}, sort_keys=True, separators=(",", ":"))
    # not a bare hash of the content, which anyone allowed to read Deployments could test guesses against
    assert value not in {hashlib.sha256(body.encode()).hexdigest(), hashlib.sha256(password.encode()).hexdigest()}
    assert len(value) == 64 and int(value, 16) >= 0
    assert value in gke.plain_strings()  # shown in a preview diff, unlike the secret it covers
    assert password not in "\n".join(gke.plain_strings())
    key = gke.by_name("gke-checksum-key")
    assert key.type == "random:index/randomPassword:RandomPassword"


def test_checksums_are_stable_across_runs(run, gke):
    assert _checksums(run("gke", secrets=SECRETS)) == _checksums(gke)


# ====================================================================== 4. password rotation reaches PostgreSQL

def test_postgres_applies_its_password_on_every_start(gke):
    pg = pod(gke.by_name("data-postgres"))["containers"][0]
    assert pg["lifecycle"] == {"postStart": {"exec": {"command": ["sh", "-c", kp.postgres_password_on_start()]}}}
    env = {e["name"]: e for e in pg["env"]}
    assert env["POSTGRES_PASSWORD"] == {"name": "POSTGRES_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "postgres-env", "key": "POSTGRES_PASSWORD"}}}
    assert {"POSTGRES_USER", "POSTGRES_DB"} <= set(env)
    script = kp.postgres_password_on_start()
    password = base64.b64decode(gke.by_name("data-postgres-env").inputs["data"]["POSTGRES_PASSWORD"]).decode()
    assert password not in script and "$POSTGRES_PASSWORD" not in script  # read by psql, not by the shell
    # only the two services that keep a password in their own data have a start hook
    hooked = sorted(r.name for r in gke.registrations if r.type in WORKLOADS and "lifecycle" in pod(r)["containers"][0])
    assert hooked == ["data-postgres", "monitoring-grafana"]


def test_grafana_applies_its_admin_password_on_every_start(gke, run):
    """GF_SECURITY_ADMIN_PASSWORD only sets the password of a new database: a rotation must reach it."""
    graf = pod(gke.by_name("monitoring-grafana"))["containers"][0]
    assert graf["lifecycle"] == {"postStart": {"exec": {"command": ["sh", "-c", kp.grafana_admin_password_on_start()]}}}
    script = kp.grafana_admin_password_on_start()
    assert "--password-from-stdin" in script and '"$GF_SECURITY_ADMIN_PASSWORD"' in script
    password = base64.b64decode(gke.by_name("monitoring-grafana-env").inputs["data"]["GF_SECURITY_ADMIN_PASSWORD"]).decode()
    assert password not in script
    # a rotation changes the Secret and, through its checksum, the pod template: new pods run the hook
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["rotate"] = {"grafana": "2026-12"}
    rotated = run("gke", config=cfg, secrets=SECRETS)
    before, after = template_annotations(gke.by_name("monitoring-grafana")), template_annotations(rotated.by_name("monitoring-grafana"))
    assert before[kp.ENV_CHECKSUM] != after[kp.ENV_CHECKSUM]


def test_no_hook_when_postgres_is_managed_elsewhere(run):
    cfg = copy.deepcopy(stack_config("gke"))
    cfg["dataServices"]["external"] = {"qdrantUrl": "https://xyz.cloud.qdrant.io:6333"}
    cfg.pop("backups")
    r = run("gke", config=cfg, secrets={"postgresUrl": "postgresql://u:p@h:5432/d", "redisUrl": "redis://:p@h:6379/0",
                                        "qdrantApiKey": "qk"})
    assert r.error is None, r.error
    hooked = [x.name for x in r.registrations if x.type in WORKLOADS and "lifecycle" in pod(x)["containers"][0]]
    assert hooked == ["monitoring-grafana"]


def test_the_hook_passes_shellcheck_as_posix_sh(tmp_path):
    # postgres:15-alpine has no bash: the hook runs under busybox sh.
    f = tmp_path / "hook.sh"
    f.write_text(kp.postgres_password_on_start())
    out = subprocess.run([SHELLCHECK, "--shell=sh", "--severity=style", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_pod_grace_period_is_the_services_stop_grace():
    fake = SimpleNamespace(kube=KubernetesConfig.model_validate(stack_config("gke")["kubernetes"]),
                           args=SimpleNamespace(start_hooks={}))
    spec = ServiceSpec(name="x", image="x:1", cpus=1, memory_gb=1, stop_grace_s=77,
                       ports=(PortSpec(80),), mounts=(MountSpec("/m", "models", "claim", False),))
    p, _ = kp.KubernetesPlatform.pod_spec(fake, spec)
    assert p["terminationGracePeriodSeconds"] == 77
    assert p["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    assert "env" not in p["containers"][0]


# --- the hook against a real PostgreSQL ---------------------------------------------------------

def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"the real-PostgreSQL test is required here but cannot run: {reason}")
    pytest.skip(f"real PostgreSQL unavailable: {reason}")


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found or shutil.which("psql") is None:
        unavailable("PostgreSQL is not installed (Debian package postgresql)")
    return found[-1].parent


@pytest.fixture
def real_postgres():
    """A throwaway cluster: superuser octollm with password old-pass, local socket trust (as the image's
    initdb leaves it), scram over TCP on 127.0.0.1, every statement logged."""
    bindir = _pg_bin()
    as_pg: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            unavailable("running as root without runuser to drop to the postgres user")
        as_pg = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="octollm-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    pwfile = root / "pw"
    pwfile.write_text("old-pass\n")
    if as_pg:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    os.chmod(root, 0o755)
    os.chmod(sock, 0o777)
    port = _free_port()

    def pg(*args, check=True):
        return subprocess.run([*as_pg, *args], capture_output=True, text=True, timeout=120, check=check)

    try:
        init = pg(str(bindir / "initdb"), "-D", str(data), "-U", "octollm", f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", check=False)
        if init.returncode != 0:
            unavailable(f"initdb failed: {init.stderr.strip()}")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sock} -c log_statement=all"
        env = SimpleNamespace(bindir=bindir, sock=str(sock), port=port, log=log, root=root,
                              start=lambda: pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log),
                                               "-w", "start", check=False))
        started = env.start()
        if started.returncode != 0:
            unavailable(f"postgres did not start: {started.stderr.strip()} {log.read_text() if log.exists() else ''}")
        pg("psql", "-h", str(sock), "-p", str(port), "-U", "octollm", "-d", "postgres", "-c", "CREATE DATABASE octollm")
        env.stop = lambda: pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        yield env
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def _hook_env(pgenv, password: str) -> dict:
    return {"PATH": os.environ["PATH"], "PGHOST": pgenv.sock, "PGPORT": str(pgenv.port),
            "POSTGRES_USER": "octollm", "POSTGRES_DB": "octollm", "POSTGRES_PASSWORD": password}


def _login(pgenv, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(pgenv.port), "-U", "octollm", "-d", "octollm",
                           "-tAc", "SELECT 1"], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"})


def test_the_hook_applies_a_rotated_password_to_a_real_postgres(real_postgres):
    new = "rotated-Pw'with\"quotes; DROP ROLE octollm;--"
    assert _login(real_postgres, "old-pass").stdout.strip() == "1"
    hook = kp.postgres_password_on_start(wait_seconds=60)
    out = subprocess.run(["sh", "-c", hook], capture_output=True, text=True, timeout=90,
                         env=_hook_env(real_postgres, new))
    assert out.returncode == 0, out.stderr
    assert _login(real_postgres, new).stdout.strip() == "1"
    assert _login(real_postgres, "old-pass").returncode != 0
    # idempotent: the next container start applies the same password again
    assert subprocess.run(["sh", "-c", hook], capture_output=True, text=True, timeout=90,
                          env=_hook_env(real_postgres, new)).returncode == 0
    log = real_postgres.log.read_text()
    assert "CREATE DATABASE" in log  # statements are being logged...
    assert "rotated-Pw" not in log and new not in out.stdout + out.stderr  # ...but never the password


def test_the_hook_waits_for_the_server(real_postgres):
    assert real_postgres.stop().returncode == 0
    hook = subprocess.Popen(["sh", "-c", kp.postgres_password_on_start(wait_seconds=60)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_hook_env(real_postgres, "after-restart"))
    time.sleep(4)
    assert hook.poll() is None, "the hook gave up while the server was still starting"
    assert real_postgres.start().returncode == 0
    assert hook.wait(timeout=60) == 0
    assert _login(real_postgres, "after-restart").stdout.strip() == "1"


def test_the_hook_fails_when_the_server_never_answers(real_postgres):
    assert real_postgres.stop().returncode == 0
    out = subprocess.run(["sh", "-c", kp.postgres_password_on_start(wait_seconds=3)], capture_output=True,
                         text=True, timeout=30, env=_hook_env(real_postgres, "never-applied"))
    assert out.returncode == 1 and "could not be applied" in out.stderr
    assert "never-applied" not in out.stdout + out.stderr


# ====================================================================== 5. an existing namespace

def test_the_namespace_is_created_with_the_stacks_marks_and_kept_on_destroy(gke):
    [ns] = gke.of_type("kubernetes:core/v1:Namespace")
    assert ns.inputs["metadata"]["name"] == "octollm"
    # what tooling/preflight_kubernetes.py takes for this stack's own namespace
    assert ns.inputs["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "octollm", "app.kubernetes.io/managed-by": "pulumi", kp.STACK_LABEL: "gke",
        "kubernetes.io/metadata.name": "octollm"}
    # destroy deletes every object in it one by one, and leaves the namespace with the data claims
    assert ns.retain_on_delete and not ns.protect
    assert not gke.of_type("kubernetes:core/v1:NamespacePatch")
    for r in k8s_objects(gke):
        if r is not ns:  # nothing is created before the namespace is there
            assert ns.urn in r.dependencies, r.name


def test_an_adopted_namespace_is_patched_and_never_deleted(run):
    r = run("gke", config=gke_config(adoptNamespace=True), secrets=SECRETS)
    assert r.error is None, r.error
    assert not r.of_type("kubernetes:core/v1:Namespace")
    [patch] = r.of_type("kubernetes:core/v1:NamespacePatch")
    assert patch.inputs["metadata"]["name"] == "octollm" and patch.retain_on_delete
    # no stack mark on a namespace it did not create: it would outlive the stack and claim it
    assert kp.STACK_LABEL not in patch.inputs["metadata"]["labels"]
    assert "pulumi.com/patchForce" not in patch.inputs["metadata"].get("annotations", {})
    # everything in it waits for it, as it waits for a created namespace
    workloads = [x for x in r.registrations if x.type in WORKLOADS]
    assert workloads and all(patch.urn in x.dependencies for x in workloads)


def test_adopt_namespace_must_be_a_boolean():
    with pytest.raises(ConfigError) as exc:
        load_stack_config(gke_config(adoptNamespace="sometimes"))
    assert "kubernetes.adoptNamespace" in exc.value.render()
