"""tooling/verify.py against a real estate on a real dockerd, reached through a real sshd on loopback.

The estate is one stand-in container per container the program deploys for a small stack (one SSH host
at 127.0.0.1 with the loopback sshd's port and pinned host key; an Ollama node with two models,
PostgreSQL, Redis, Qdrant, the orchestrator, the reflex layer and one arm, the monitoring stack and
Traefik), named and labelled as the program names and labels them. The stand-ins are one busybox + bash
image (tests/loopback.import_busybox_image) with the scripts of tests/verify_estate/: they answer Ollama's
/api/tags, Prometheus's /api/v1/targets, Grafana's datasources and their health (behind the admin
password), Traefik's services and metrics, Qdrant's /collections (behind the API key), the health
endpoints, and `pg_isready`, `psql` and `redis-cli` (which check the password the "server" was started
with). The clean estate verifies with exit status 0; each breakage turns into exactly its failed row.

Without Docker, sshd, busybox-static or bash-static these tests are skipped with the reason, and fail
instead under OCTOLLM_REQUIRE_REAL_HOST=1. Every container they start carries the label
org.octollm.test=verify and is removed by it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from loopback import free_port, import_busybox_image
from test_real_host import docker, dockerd, sshd, unavailable  # noqa: F401 (fixtures)
from tooling import verify
from components.config.schema import load_stack_config

ROOT = Path(__file__).resolve().parent.parent
ESTATE = Path(__file__).resolve().parent / "verify_estate"
STACK = "verifytest"
# Names and labels of this run's own: another run of the suite on the same engine keeps its estate.
RUN = uuid.uuid4().hex[:8]
PREFIX = f"vt{RUN}-"
TEST_LABEL = f"org.octollm.test=verify-{RUN}"
MODELS = ["qwen2.5:0.5b", "llama3.2:1b"]
STATEFUL = {"ollama", "prometheus", "grafana", "traefik", "postgres", "redis"}  # what /standin/reset restores
SECRETS = {"postgres": "pg-Secret-4711", "redis": "redis-Secret-0815", "qdrant": "qdrant-Key-1234",
           "grafana": "grafana-Admin-2718"}


# ---- the stack and its estate ------------------------------------------------------------------------

def ports() -> dict[str, int]:
    names = ["ollama", "postgres", "redis", "qdrant_http", "qdrant_grpc", "orchestrator", "reflex", "arm",
             "prometheus", "grafana", "loki", "blackbox", "node_exporter", "cadvisor", "lb", "lb_metrics",
             "lb_dashboard"]
    out: dict[str, int] = {}
    while len(out) < len(names):
        p = free_port()
        if p not in out.values() and p not in (9121, 9187):
            out[names[len(out)]] = p
    return out


def stack_doc(sshd, p: dict[str, int], host_key: str | None = None, dashboard: bool = True) -> dict:
    limits = {"cpus": 0.5, "memoryGb": 0.5}
    lb = {"host": "box", "network": "vnet", "port": p["lb"], "metricsPort": p["lb_metrics"], "limits": limits}
    if dashboard:
        lb["dashboardPort"] = p["lb_dashboard"]
    return {
        "platform": "docker",
        "hosts": {"box": {
            "kind": "ssh", "address": "127.0.0.1", "publishAddress": "127.0.0.1",
            "ssh": {"user": sshd["user"], "port": sshd["port"], "identityFile": sshd["identity"],
                    "hostKey": host_key or sshd["host_key"]},
            "cpuThreads": 64, "memoryGb": 256, "appdataRoot": "/var/tmp/octollm-verifytest",
            "dataOwner": f"{os.getuid()}:{os.getgid()}", "containerPrefix": PREFIX,
            "networks": {"vnet": {"subnet": "172.31.250.0/24", "gateway": "172.31.250.1"}},
            "exporters": {"nodeExporter": p["node_exporter"], "cadvisor": p["cadvisor"], "gpuExporter": "none"},
        }},
        "inference": {"ollama": {"host": "box", "engine": "ollama", "network": "vnet", "port": p["ollama"],
                                 "models": MODELS, "limits": {"cpus": 1, "memoryGb": 1}}},
        "dataServices": {"host": "box", "network": "vnet", "postgres": {"port": p["postgres"], "limits": limits},
                         "redis": {"port": p["redis"], "limits": limits},
                         "qdrant": {"httpPort": p["qdrant_http"], "grpcPort": p["qdrant_grpc"], "limits": limits}},
        "octollm": {"host": "box", "network": "vnet", "imageRegistry": "ghcr.io/octollm", "imageTag": "0.1.0",
                    "llmEndpoint": "ollama", "orchestrator": {"port": p["orchestrator"], "limits": limits},
                    "reflex": {"port": p["reflex"], "limits": limits},
                    "arms": {"coder": {"port": p["arm"], "limits": limits}}},
        "monitoring": {"host": "box", "network": "vnet", "prometheusPort": p["prometheus"],
                       "grafanaPort": p["grafana"], "lokiPort": p["loki"], "blackboxPort": p["blackbox"]},
        "loadBalancer": lb,
    }


def write_stack(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump({"config": {f"octollm-infra:{k}": v for k, v in doc.items()}}))
    return path


def scrape_targets(p: dict[str, int]) -> list[tuple[str, str]]:
    """What Prometheus scrapes for this stack, written out by hand (verify derives it from the config)."""
    return [
        ("ollama", "http://ollama:11434/api/version"), ("inference-latency", "http://ollama:11434/api/generate"),
        ("qdrant", "http://qdrant:6333/healthz"),
        ("octollm", f"orchestrator:{p['orchestrator']}"), ("octollm", f"reflex-layer:{p['reflex']}"),
        ("octollm", f"arm-coder:{p['arm']}"), ("traefik", f"127.0.0.1:{p['lb_metrics']}"),
        ("node-exporter", "node-exporter:9100"), ("cadvisor", "cadvisor:8080"),
        ("redis-exporter", "redis-exporter:9121"), ("postgres-exporter", "postgres-exporter:9187"),
        ("prometheus", "prometheus:9090"), ("grafana", "grafana:3000"), ("loki", "loki:3100"),
        ("blackbox-exporter", "blackbox-exporter:9115"),
    ]


def services(p: dict[str, int]) -> dict[str, dict]:
    """Every container of the stack: the stand-in's role, the ports it listens on, what it publishes, env."""
    def octo(name: str, port: int) -> dict:
        return {"role": "octollm", "listen": [port], "publish": {port: port}, "env": {"PORT": str(port),
                                                                                        "SERVICE_NAME": name}}
    return {
        "ollama": {"role": "ollama", "listen": [11434], "publish": {p["ollama"]: 11434},
                   "env": {"STANDIN_MODELS": ",".join(MODELS)}},
        "postgres": {"role": "postgres", "listen": [5432], "env": {
            "POSTGRES_DB": "octollm", "POSTGRES_USER": "octollm", "POSTGRES_PASSWORD": SECRETS["postgres"]}},
        "redis": {"role": "redis", "listen": [6379], "env": {"REDISCLI_AUTH": SECRETS["redis"]}},
        "qdrant": {"role": "qdrant", "listen": [6333, 6334], "env": {"QDRANT__SERVICE__API_KEY": SECRETS["qdrant"]}},
        "orchestrator": octo("orchestrator", p["orchestrator"]),
        "reflex-layer": octo("reflex-layer", p["reflex"]),
        "arm-coder": octo("arm-coder", p["arm"]),
        "traefik": {"role": "traefik", "listen": [8000, 8082, 8080],
                    "publish": {p["lb"]: 8000, p["lb_metrics"]: 8082, p["lb_dashboard"]: 8080},
                    "env": {"STANDIN_BACKENDS": f"http://127.0.0.1:{p['ollama']}"}},
        "prometheus": {"role": "prometheus", "listen": [9090], "publish": {p["prometheus"]: 9090},
                       "env": {"STANDIN_TARGETS": ",".join(f"{j}={i}" for j, i in scrape_targets(p))}},
        "grafana": {"role": "grafana", "listen": [3000], "publish": {p["grafana"]: 3000},
                    "env": {"GF_SECURITY_ADMIN_USER": "admin", "GF_SECURITY_ADMIN_PASSWORD": SECRETS["grafana"]}},
        "loki": {"role": "loki", "listen": [3100]},
        "blackbox-exporter": {"role": "blackbox-exporter", "listen": [9115]},
        "node-exporter": {"role": "node-exporter", "listen": [9100]},
        "cadvisor": {"role": "cadvisor", "listen": [8080]},
        "alloy": {"role": "alloy", "listen": [12345]},
        "redis-exporter": {"role": "redis-exporter", "listen": [9121]},
        "postgres-exporter": {"role": "postgres-exporter", "listen": [9187]},
    }


def estate_image(root: Path) -> str:
    """The stand-in image: busybox and its applets, a static bash, and tests/verify_estate/."""
    bash = next((p for p in ("/bin/bash-static", "/usr/bin/bash-static") if os.path.exists(p)), None)
    if bash is None:
        unavailable("a static bash is not installed (Debian package bash-static)")
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("busybox is not installed (Debian package busybox-static)")
    files = {p.relative_to(ESTATE).as_posix(): p.read_text() for p in sorted(ESTATE.rglob("*")) if p.is_file()}
    ref = f"octollm-test/verify-estate:{RUN}"
    (root / "bin").mkdir(parents=True)
    shutil.copy(bash, root / "bin" / "bash")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a not in ("busybox", "bash") and "/" not in a:
            (root / "bin" / a).symlink_to("busybox")
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    import_busybox_image(ref, root, files, changes=(
        "ENV PATH=/usr/local/bin:/bin", "ENV LC_ALL=C", 'ENTRYPOINT ["/standin/entrypoint"]', "WORKDIR /"))
    return ref


class Estate:
    def __init__(self, image: str, p: dict[str, int], stack_file: Path, workdir: Path):
        self.image, self.ports, self.stack_file, self.dir = image, p, stack_file, workdir
        self.services = services(p)

    def run(self, service: str, health_interval: str = "1s") -> None:
        s = self.services[service]
        name = PREFIX + service
        docker("rm", "-f", name, check=False)
        args = ["run", "-d", "--name", name, "--label", f"org.octollm.managed-by=pulumi/{STACK}",
                "--label", f"org.octollm.service={service}", "--label", TEST_LABEL,
                "-e", f"STANDIN_ROLE={s['role']}", "-e", f"STANDIN_PORTS={','.join(map(str, s['listen']))}",
                "--health-cmd", f"wget -q -O /dev/null http://127.0.0.1:{s['listen'][0]}/health",
                "--health-interval", health_interval, "--health-timeout", "5s", "--health-retries", "3",
                "--stop-timeout", "5"]
        for k, v in s.get("env", {}).items():
            args += ["-e", f"{k}={v}"]
        for host_port, container_port in s.get("publish", {}).items():
            args += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        docker(*args, self.image)

    def wait_healthy(self, timeout: float = 60) -> None:
        names = [PREFIX + s for s in self.services]
        deadline = time.monotonic() + timeout
        while True:
            out = docker("inspect", "--format", "{{.Name}} {{.State.Status}} {{.State.Health.Status}}", *names,
                         check=False).stdout.split("\n")
            bad = [l for l in out if l.strip() and not l.endswith(" running healthy")]
            if not bad:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"stand-ins not healthy: {bad}")
            time.sleep(0.5)

    def reset(self) -> None:
        """Every container running, healthy and reporting the clean state, after whatever a test broke."""
        names = [PREFIX + s for s in self.services]
        fmt = "{{.Name}} {{.State.Running}} {{index .Config.Labels \"org.octollm.managed-by\"}} " \
              "{{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval}}{{end}}"
        found = {}
        for line in docker("inspect", "--format", fmt, *names, check=False).stdout.splitlines():
            name, *rest = line.split()
            found[name.lstrip("/")] = rest
        for service, s in self.services.items():
            if found.get(PREFIX + service) != ["true", f"pulumi/{STACK}", "1s"]:
                self.run(service)
            elif s["role"] in STATEFUL:
                docker("exec", PREFIX + service, "/standin/reset")
        self.wait_healthy()

    def exec(self, service: str, *cmd: str) -> str:
        return docker("exec", PREFIX + service, *cmd).stdout


def remove_test_containers() -> None:
    ids = docker("ps", "-aq", "--filter", f"label={TEST_LABEL}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


@pytest.fixture(scope="module")
def estate(dockerd, sshd, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("verify")
    remove_test_containers()
    image = estate_image(workdir / "rootfs")
    p = ports()
    e = Estate(image, p, write_stack(workdir / f"Pulumi.{STACK}.yaml", stack_doc(sshd, p)), workdir)
    try:
        for service in e.services:
            e.run(service)
        e.wait_healthy()
        yield e
    finally:
        remove_test_containers()
        docker("image", "rm", image, check=False)


@pytest.fixture
def clean(estate):
    yield estate
    estate.reset()


def fake_pulumi(d: Path, password: str | None) -> Path:
    """A pulumi CLI that has the admin password as a stack output only (or nowhere)."""
    f = d / ("pulumi-with-output" if password else "pulumi-without")
    out = f"printf '%s\\n' '{password}'" if password else \
        "echo \"error: current stack does not have output property 'grafanaAdminPassword'\" >&2; exit 255"
    f.write_text("#!/bin/sh\n"
                 "case \"$1 $2\" in\n"
                 f"  'stack output') {out} ;;\n"
                 "  *) echo \"error: configuration key 'octollm-infra:grafanaAdminPassword' not found\" >&2;"
                 " exit 255 ;;\n"
                 "esac\n")
    f.chmod(0o755)
    return f


def run_verify(estate: Estate, *args: str, stack_file: Path | None = None, password: str | None = SECRETS["grafana"],
               timeout: float = 120) -> tuple[int, str, str, list[tuple[str, str, str, str]]]:
    env = {**os.environ, "PULUMI": str(fake_pulumi(estate.dir, password))}
    out = subprocess.run([sys.executable, "-m", "tooling.verify", "--file", str(stack_file or estate.stack_file),
                          "--timeout", "20", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    return out.returncode, out.stdout, out.stderr, table(out.stdout)


def table(text: str) -> list[tuple[str, str, str, str]]:
    lines = text.splitlines()
    assert lines and lines[0].split() == ["HOST", "SERVICE", "CHECK", "RESULT"], text
    rows = []
    for line in lines[1:]:
        if not line.strip():
            break
        host, service, check, result = re.split(r"\s{2,}", line, maxsplit=3)
        rows.append((host, service, check, result))
    return rows


def failures(rows):
    return [r for r in rows if r[3].startswith("FAILED")]


EXPECTED_ROWS = {("-", "docker-api")} | {(s, "container") for s in services(ports())} | {
    ("ollama", "models"), ("postgres", "query"), ("redis", "ping"), ("qdrant", "api"),
    ("orchestrator", "health"), ("reflex-layer", "health"), ("arm-coder", "health"),
    ("prometheus", "targets"), ("grafana", "datasources"), ("traefik", "backends")}


# ---- the clean estate ------------------------------------------------------------------------------------

def test_clean_estate_verifies(clean):
    code, out, err, rows = run_verify(clean)
    assert code == 0, out + err
    assert {(s, c) for _, s, c, _ in rows} == EXPECTED_ROWS
    assert len(rows) == len(EXPECTED_ROWS)
    assert all(host == "box" and result.startswith("ok") for host, _, _, result in rows), out
    by = {(s, c): r for _, s, c, r in rows}
    assert by[("-", "docker-api")].startswith("ok (API 1.")
    assert by[("ollama", "models")] == "ok (qwen2.5:0.5b, llama3.2:1b)"
    assert by[("prometheus", "targets")] == "ok (15 targets of 13 jobs up)"
    assert by[("grafana", "datasources")] == "ok (Prometheus OK, Loki OK)"
    assert by[("traefik", "backends")] == "ok (1 of 1 backends UP (API))"
    assert by[("postgres", "query")] == "ok (accepting connections, select 1 as octollm)"
    assert by[("redis", "ping")] == "ok (PONG to an authenticated PING)"
    assert by[("qdrant", "api")] == "ok (GET /collections with the API key: 200)"
    assert by[("arm-coder", "health")] == f"ok (200 on :{clean.ports['arm']}/health)"
    assert by[("grafana", "container")] == "ok (running, healthy)"
    assert out.rstrip().endswith(f"{len(rows)} checks: {len(rows)} ok, 0 failed")
    (clean.dir / "README-verify.txt").write_text(out)


def test_no_password_reaches_a_command_line(clean):
    """verify's execs in the data services carry no secret in their command lines (as the engine records
    them in its exec_create events, and as the stand-ins' CLIs saw their arguments); yet each authenticated."""
    watch = subprocess.Popen(["docker", "events", "--filter", "event=exec_create",
                              *(a for s in ("postgres", "redis", "qdrant") for a in ("--filter", f"container={PREFIX}{s}")),
                              "--format", "{{.Actor.Attributes.name}} {{.Action}}"],
                             stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)  # subscribed before the first exec
        code, out, err, rows = run_verify(clean)
        time.sleep(1)
    finally:
        watch.terminate()
        events = watch.communicate(timeout=30)[0]
    assert code == 0, out + err
    seen = events.splitlines()
    for service in ("postgres", "redis"):
        seen += clean.exec(service, "cat", "/state/argv.log").splitlines()
    for start in (f"{PREFIX}postgres exec_create: pg_isready -h 127.0.0.1", f"{PREFIX}postgres exec_create: sh -c PGPASSWORD=",
                  f"{PREFIX}redis exec_create: redis-cli -h 127.0.0.1", f"{PREFIX}qdrant exec_create: bash -c exec 3<>/dev/tcp",
                  "psql -h 127.0.0.1", "redis-cli -h 127.0.0.1"):
        assert any(l.startswith(start) for l in seen), (start, events)
    for secret in SECRETS.values():
        assert not any(secret in l for l in seen), secret


# ---- each breakage is exactly its row ----------------------------------------------------------------------

def test_stopped_container_is_one_failed_row(clean):
    docker("stop", PREFIX + "arm-coder")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [(
        "box", "arm-coder", "container",
        f"FAILED: arm-coder on box is exited (exit code 0): `docker start {PREFIX}arm-coder` "
        f"(its logs: `docker logs {PREFIX}arm-coder`), or run `pulumi up` again")], out
    assert ("box", "arm-coder", "health", "not checked: the container is not running") in rows
    assert out.rstrip().endswith("1 failed, 1 not checked")


def test_missing_model_is_named_with_the_pull_that_fixes_it(clean):
    clean.exec("ollama", "ollama", "rm", "llama3.2:1b")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    hint = f"docker exec {PREFIX}ollama ollama pull llama3.2:1b"
    assert failures(rows) == [(
        "box", "ollama", "models",
        f"FAILED: ollama on box lists qwen2.5:0.5b but not llama3.2:1b: run `pulumi up` again or `{hint}`")], out
    # The hint is the fix.
    docker(*hint.split()[1:])
    code, out, err, rows = run_verify(clean)
    assert code == 0, out


def test_model_the_config_does_not_name_is_reported(clean):
    clean.exec("ollama", "ollama", "pull", "mistral:7b")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [(
        "box", "ollama", "models",
        "FAILED: ollama on box lists mistral:7b as well, which inference.ollama.models does not name: "
        f"add it to inference.ollama.models, or `docker exec {PREFIX}ollama ollama rm mistral:7b`")], out


def test_prometheus_target_down_names_the_job(clean):
    arm = f"arm-coder:{clean.ports['arm']}"
    error = f'Get "http://{arm}/metrics": dial tcp 172.31.250.7:{clean.ports["arm"]}: connect: connection refused'
    clean.exec("prometheus", "/standin/set", "target", "octollm", arm, "down", error)
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [(
        "box", "prometheus", "targets",
        f"FAILED: prometheus on box reports 1 of 13 jobs down: octollm ({arm}: {error}): check those services "
        f"(their rows above, `docker logs`); Prometheus's view: http://127.0.0.1:{clean.ports['prometheus']}/targets")], out


def test_target_not_scraped_yet_is_not_up(clean):
    clean.exec("prometheus", "/standin/set", "target", "loki", "loki:3100", "unknown")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    [(host, service, check, result)] = failures(rows)
    assert (host, service, check) == ("box", "prometheus", "targets")
    assert result.startswith("FAILED: prometheus on box has not scraped loki yet: a first scrape takes up to")


def test_broken_grafana_datasource_names_it(clean):
    clean.exec("grafana", "/standin/set", "datasource", "loki", "ERROR", "Unable to connect with Loki. Bad Gateway")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [(
        "box", "grafana", "datasources",
        "FAILED: grafana on box: datasource Loki (loki) fails its health check (Unable to connect with Loki. Bad "
        "Gateway): check loki (their rows above, `docker logs`)")], out


def test_grafana_without_the_admin_password_is_skipped(clean):
    code, out, err, rows = run_verify(clean, password=None)
    assert code == 0, out + err
    [grafana] = [r for r in rows if r[1:3] == ("grafana", "datasources")]
    assert grafana[3].startswith("skipped: needs grafanaAdminPassword (secret config: error: configuration key")
    assert "stack output: error: current stack does not have output property 'grafanaAdminPassword'" in grafana[3]
    assert not failures(rows)


def test_grafana_refuses_a_wrong_password(clean):
    code, out, err, rows = run_verify(clean, password="not-the-password")
    assert code == 1
    assert failures(rows) == [(
        "box", "grafana", "datasources",
        "FAILED: grafana on box refuses the stack's admin password (401): a rotated password that did not reach "
        "Grafana? run `pulumi up` again (it applies the password with `grafana cli admin reset-admin-password`)")]


def test_traefik_backend_down(clean):
    clean.exec("traefik", "/standin/set", "backend", f"http://127.0.0.1:{clean.ports['ollama']}", "DOWN")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [(
        "box", "traefik", "backends",
        f"FAILED: traefik on box reports 1 of 1 Ollama backends down: http://127.0.0.1:{clean.ports['ollama']} "
        "(DOWN): check those Ollama instances (their rows above); Traefik's health check GETs /api/version every 10s")]


def test_traefik_without_its_api_is_read_from_its_metrics(clean, sshd):
    (clean.dir / "nodash").mkdir(exist_ok=True)
    f = write_stack(clean.dir / "nodash" / f"Pulumi.{STACK}.yaml", stack_doc(sshd, clean.ports, dashboard=False))
    code, out, err, rows = run_verify(clean, stack_file=f)
    assert code == 0, out + err
    assert ("box", "traefik", "backends", "ok (1 of 1 backends UP (metrics))") in rows
    clean.exec("traefik", "/standin/set", "backend", f"http://127.0.0.1:{clean.ports['ollama']}", "DOWN")
    code, out, err, rows = run_verify(clean, stack_file=f)
    assert code == 1
    assert [r[:3] for r in failures(rows)] == [("box", "traefik", "backends")]


def test_wrong_password_in_a_data_service_is_refused(clean):
    # The "server" was started with another password than the container's environment now holds.
    clean.exec("postgres", "sh", "-c", "printf other > /state/password")
    code, out, err, rows = run_verify(clean)
    assert code == 1
    [(host, service, check, result)] = failures(rows)
    assert (host, service, check) == ("box", "postgres", "query")
    assert result.startswith("FAILED: postgres on box refuses an authenticated `select 1` as octollm (psql: error: "
                             "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password "
                             "authentication failed for user \"octollm\")")


def test_starting_health_check_is_not_healthy_yet(clean):
    clean.run("loki", health_interval="1h")  # the first health check runs an hour after the start
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [(
        "box", "loki", "container",
        "FAILED: loki on box is running but not healthy yet (health: starting): it may still be starting: run "
        "verify again in a minute, or with `--wait 180`; see `docker inspect --format '{{json .State.Health}}' "
        f"{PREFIX}loki`")], out


def test_wait_checks_again_until_the_estate_has_settled(clean):
    clean.run("loki", health_interval="15s")  # healthy 15 s after the start: verify checks before that
    started = time.monotonic()
    code, out, err, rows = run_verify(clean, "--wait", "60")
    assert code == 0, out + err
    assert time.monotonic() - started > 5
    assert "verify: 1 checks not passing yet (loki container); again in 5s" in err


def test_missing_container_and_a_foreign_one(clean):
    docker("rm", "-f", PREFIX + "loki")
    docker("rm", "-f", PREFIX + "alloy")  # and in its place, a container of the same name that is not the stack's
    docker("run", "-d", "--name", PREFIX + "alloy", "--label", TEST_LABEL, "-e", "STANDIN_ROLE=alloy",
           clean.image)
    code, out, err, rows = run_verify(clean)
    assert code == 1
    assert failures(rows) == [
        ("box", "loki", "container", f"FAILED: loki on box: no container named {PREFIX}loki: run `pulumi up` again "
                                     "(it creates it)"),
        ("box", "alloy", "container", f"FAILED: alloy on box: container {PREFIX}alloy is not this stack's "
                                      "(org.octollm.managed-by=(unset), expected pulumi/verifytest): remove or "
                                      "rename that container, then run `pulumi up`"),
    ], out


def test_wrong_host_key_fails_every_row_of_the_host(clean, sshd):
    f = write_stack(clean.dir / "Pulumi.wrongkey.yaml", stack_doc(sshd, clean.ports, host_key=sshd["other_key"]))
    started = time.monotonic()
    code, out, err, rows = run_verify(clean, "--wait", "60", stack_file=f)
    assert code == 1
    assert time.monotonic() - started < 30, "a host key mismatch cannot heal: no waiting for it"
    assert {(s, c) for _, s, c, _ in rows} == EXPECTED_ROWS
    for host, service, check, result in rows:
        assert host == "box" and result.startswith("FAILED: "), (service, check, result)
        assert "cannot reach box: Host key verification failed (the key 127.0.0.1:" in result
        assert "pin its new key (`ssh-keyscan -t ed25519 -p" in result


def test_hosts_filter_and_an_unknown_host(clean):
    code, out, err, rows = run_verify(clean, "--hosts", "box")
    assert code == 0, out + err
    out = subprocess.run([sys.executable, "-m", "tooling.verify", "--file", str(clean.stack_file), "--hosts",
                          "nosuch"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no host named nosuch" in out.stderr


# ---- without a host ----------------------------------------------------------------------------------------

def test_a_kubernetes_stack_is_checked_through_its_cluster(capsys, monkeypatch, tmp_path):
    """gke goes to tooling/verify_kubernetes.py (tests/test_verify_kubernetes.py checks it against a stand-in
    API server); here without a kubeconfig, which fails its first row and exits 1."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert verify.main(["-s", "gke"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^gke\s+-\s+kubernetes-api\s+FAILED: cannot load the kubeconfig", out, re.M), out
    assert re.search(r"^gke\s+ollama\s+models\s+not checked: the API server cannot be reached", out, re.M), out


def test_invalid_config_exits_2(tmp_path, capsys):
    f = write_stack(tmp_path / "Pulumi.bad.yaml", {"platform": "docker", "hosts": {"box": {"kind": "ssh", "cpuThreads": 2, "memoryGb": 4}}})
    assert verify.main(["--file", str(f)]) == 2
    assert "ssh" in capsys.readouterr().err


@pytest.mark.parametrize("stack", ["unraid", "homelab", "dev"])
def test_what_verify_expects_is_what_the_program_deploys(run, stack):
    """The containers, scrape targets and Traefik backends verify derives from the config are exactly those
    the program registers for the stack (under the mock engine)."""
    from harness import stack_config

    cfg, _ = load_stack_config(stack_config(stack))
    r = run(stack)
    assert r.error is None, r.error
    registered = sorted((c.provider.split("::")[-1].split("-docker")[0], c.inputs["name"])
                        for c in r.of_type("docker:index/container:Container"))
    ctx = verify.Context(cfg, stack, None, "")
    assert sorted((s.host, s.container) for s in verify.plan(ctx, sorted(cfg.hosts))) == registered
    if cfg.monitoring:
        prom = yaml.safe_load(r.by_name("monitoring-prometheus-file-prometheus-yml").inputs["stdin"])
        jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in prom["scrape_configs"]}
        assert verify.expected_scrape_targets(cfg) == jobs
    if cfg.load_balancer:
        dyn = yaml.safe_load(r.by_name("load-balancer-traefik-file-dynamic-ollama-yml").inputs["stdin"])
        servers = [s["url"] for s in dyn["http"]["services"]["ollama"]["loadBalancer"]["servers"]]
        assert verify.ollama_backends(cfg) == servers


def test_read_only_nodes_expect_the_models_their_writer_pulls():
    from harness import stack_config

    cfg, _ = load_stack_config(stack_config("homelab"))
    assert verify.expected_ollama_models(cfg, "ollama-84") == (["mistral:7b", "llama2:7b", "codellama:7b"], "ollama")
    assert verify.expected_ollama_models(cfg, "ollama-ai") == (["llama3.1:8b", "nomic-embed-text"], "ollama-ai")
    assert verify.normalise_model("nomic-embed-text") == "nomic-embed-text:latest"


# ---- wired in --------------------------------------------------------------------------------------------

def test_make_up_verifies_after_pulumi_up_and_make_verify_runs_it(tmp_path):
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "up", "STACK=homelab", "PULUMI=pulumi"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    up = next(i for i, l in enumerate(lines) if l.startswith("pulumi up --stack homelab --plan"))
    assert re.search(r"-m tooling.verify -s homelab --wait \d+$", lines[up + 1]), lines[up + 1]
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "verify", "STACK=unraid", "PULUMI=pulumi"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^PULUMI=pulumi \S+/python -m tooling.verify -s unraid --wait \d+$", out.stdout, re.M), out.stdout


def test_deploy_workflow_verifies_after_up_and_fails_with_a_summary():
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    steps = doc["jobs"]["apply"]["steps"]
    names = [s.get("name", "") for s in steps]
    up = names.index("Apply exactly the previewed plan")
    step = steps[up + 1]
    assert "tooling.verify -s \"$STACK\"" in step["run"]
    assert "GITHUB_STEP_SUMMARY" in step["run"] and "exit 1" in step["run"]


# ---- vLLM and llama.cpp: the model each serves (one judgement, both platforms) ----------------------------

def _answers(table: dict[str, tuple[int, object]]):
    def answer(path: str):
        status, body = table[path]
        return verify.Response(status, {}, body if isinstance(body, bytes) else json.dumps(body).encode())
    return answer


@pytest.mark.parametrize("node,table,want", [
    ("vllm-qwen", {"/v1/models": (200, {"data": [{"id": "Qwen/Qwen2.5-7B-Instruct-AWQ"}]})},
     "ok: Qwen/Qwen2.5-7B-Instruct-AWQ"),
    ("vllm-qwen", {"/v1/models": (200, {"data": [{"id": "Qwen/Qwen2.5-0.5B"}]})},
     "FAILED: vllm-qwen serves Qwen/Qwen2.5-0.5B, not Qwen/Qwen2.5-7B-Instruct-AWQ"),
    ("vllm-qwen", {"/v1/models": (200, {"data": [{"id": "Qwen/Qwen2.5-7B-Instruct-AWQ"}, {"id": "other"}]})},
     "FAILED: vllm-qwen serves Qwen/Qwen2.5-7B-Instruct-AWQ, other, not Qwen/Qwen2.5-7B-Instruct-AWQ"),
    ("vllm-qwen", {"/v1/models": (200, b"<html>")}, "FAILED: vllm-qwen answers /v1/models with something"),
    ("llm-server", {"/health": (503, {"error": "Loading model"})}, "FAILED: llm-server answers /health with 503"),
    ("llm-server", {"/health": (200, {"status": "ok"}),
                  "/v1/models": (200, {"data": [{"id": "/models/gguf/llama-2-7b-chat.Q4_K_M.gguf"}]})},
     "ok: /models/gguf/llama-2-7b-chat.Q4_K_M.gguf"),
    ("llm-server", {"/health": (200, {"status": "ok"}), "/v1/models": (200, {"data": [{"id": "/models/other.gguf"}]})},
     "FAILED: llm-server serves /models/other.gguf, not gguf/llama-2-7b-chat.Q4_K_M.gguf"),
])
def test_an_openai_compatible_node_serves_exactly_its_model(node, table, want):
    from harness import stack_config

    cfg, _ = load_stack_config(stack_config("homelab"))
    out = verify.openai_models(cfg.all_inference[node], node, "see its logs", _answers(table))
    assert f"{out.status}: {out.detail}".startswith(want), out
