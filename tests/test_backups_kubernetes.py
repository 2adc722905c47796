"""Backups on Kubernetes, for real: the gke stack's backup CronJob, its pod's containers run as the pod runs
them, against a real PostgreSQL 15, a real redis-server with a password and the Qdrant stand-in.

The program runs under the mock engine; each container of the CronJob's pod (init containers in order, then
the main one) runs with its own `command` and `args` and its own `env`: `value` entries as given,
`secretKeyRef` ones from the Secrets the program registered (the loopback servers get those passwords). Only
what the cluster would differ in is pointed elsewhere, through the variables the pod itself sets: the
Services' host names and ports at the loopback servers, the claim (OCTOLLM_BACKUP_DIR) and the shared
emptyDir (OCTOLLM_BACKUP_RUN) at temporary directories. An init container that fails ends the pod, as
restartPolicy Never with backoffLimit 0 does.

Then the program's own CronJob: its schedule policy, containers, Secrets and flows.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import k8s_manifests
from components.config.catalog import IMAGES
from loopback import free_port
from loopback_postgres import pg_bin, start_cluster
from test_backups_real import (REDISES, QdrantStandIn, pg_fingerprint, retention_keep, seed_postgres, seed_redis,
                               start_qdrant)
from test_real_host import unavailable
from test_secrets_real import CmdlineSampler

JOB = "octollm-backup-gke"
SERVICES = "postgres redis qdrant"


# --------------------------------------------------------------------------------------- the program

@pytest.fixture(scope="module")
def gke_run(tmp_path_factory):
    from harness import run_stack
    r = run_stack("gke", secrets={"openaiApiKey": "sk-openai-gke"}, home=str(tmp_path_factory.mktemp("home")))
    assert r.error is None, r.error
    return r


@pytest.fixture(scope="module")
def manifests(gke_run):
    return k8s_manifests.manifests(gke_run)


@pytest.fixture(scope="module")
def cronjob(manifests):
    found = [m for m in manifests if m["kind"] == "CronJob" and m["metadata"]["name"] == JOB]
    assert len(found) == 1, [m["metadata"]["name"] for m in manifests if m["kind"] == "CronJob"]
    return found[0]


@pytest.fixture(scope="module")
def secrets_data(manifests) -> dict[str, dict[str, str]]:
    return {m["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (m.get("data") or {}).items()}
            for m in manifests if m["kind"] == "Secret"}


def pod_of(cj: dict) -> dict:
    return cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(cj: dict) -> list[dict]:
    """The pod's containers in the order they run: init containers, then the main one."""
    pod = pod_of(cj)
    return [*pod.get("initContainers", []), *pod["containers"]]


def resolve_env(c: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    out = {}
    for e in c.get("env", []):
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = secrets[ref["name"]][ref["key"]]
    return out


# --------------------------------------------------------------------------------------- the servers

@dataclass
class Cluster:
    """What the backup pod would reach in the namespace, on loopback, with the program's own passwords."""
    base: Path
    pg_port: int
    pg_password: str
    redis_port: int
    redis_password: str
    qdrant: QdrantStandIn
    qdrant_port: int

    def psql(self, sql: str, db: str = "octollm") -> str:
        out = subprocess.run([pg_bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-qAt", "-h", "127.0.0.1", "-p",
                              str(self.pg_port), "-U", "octollm", "-d", db], input=sql, capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin", "PGPASSWORD": self.pg_password}, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def redis(self, *args: str, svc: str = "redis", port: int | None = None) -> str:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port or self.redis_port), *args],
                             capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": self.redis_password}, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


def start_redis(directory: Path, port: int, password: str, rdb: bool = False) -> subprocess.Popen:
    conf = directory / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\nrequirepass {password}\n"
                    f"enable-debug-command local\n" + ("appendonly no\ndbfilename dump.rdb\nsave \"\"\n" if rdb
                                                       else "appendonly yes\nappendfsync everysec\n"))
    conf.chmod(0o600)
    p = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        r = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password})
        if r.stdout.strip() == "PONG":
            return p
        time.sleep(0.1)
    p.kill()
    raise AssertionError("redis-server did not start")


@pytest.fixture(scope="module")
def cluster(secrets_data):
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        unavailable("the test needs root to run PostgreSQL as the postgres user")
    for tool in ("redis-server", "redis-cli", "curl", "sha256sum"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    base = Path(tempfile.mkdtemp(prefix="octollm-k8s-backup-"))
    base.chmod(0o755)
    pg_password = secrets_data["postgres-env"]["POSTGRES_PASSWORD"]
    redis_password = secrets_data["redis-env"]["REDISCLI_AUTH"]
    qdrant_key = secrets_data["qdrant-env"]["QDRANT__SERVICE__API_KEY"]
    pg = start_cluster(base)
    subprocess.run(pg.psql("-qX"), check=True, capture_output=True, text=True,
                   input=f"CREATE ROLE octollm LOGIN SUPERUSER PASSWORD '{pg_password}';\n"
                         "CREATE DATABASE octollm OWNER octollm;\n")
    (base / "redis").mkdir()
    redis_port = free_port()
    redis = start_redis(base / "redis", redis_port, redis_password)
    qdrant_port = free_port()
    q = start_qdrant(qdrant_port, qdrant_key)
    q.collections.update({"memory": os.urandom(70_000), "docs": b"docs-" + os.urandom(5000)})
    q.aliases.append(("current", "docs"))
    c = Cluster(base, pg.port, pg_password, redis_port, redis_password, q, qdrant_port)
    seed_postgres(c)
    seed_redis(c)
    try:
        yield c
    finally:
        q.server.shutdown()
        redis.terminate()
        redis.wait(timeout=30)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PodRun:
    rc: int
    failed: str | None  # the container that failed
    output: str
    ran: list[str]


def run_pod(cj: dict, secrets: dict, c: Cluster, claim: Path, override: dict[str, str] | None = None,
            sampler_needles: tuple[str, ...] = ()) -> PodRun:
    """The pod, container by container, each with its own command, args and env; a fresh emptyDir."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=c.base))
    where = {"OCTOLLM_BACKUP_DIR": str(claim), "OCTOLLM_BACKUP_RUN": str(run_dir),
             "PGHOST": "127.0.0.1", "PGPORT": str(c.pg_port), "REDIS_HOST": "127.0.0.1",
             "REDIS_PORT": str(c.redis_port), "QDRANT_URL": f"http://127.0.0.1:{c.qdrant_port}"}
    path = f"{os.path.dirname(pg_bin('pg_dump'))}:/usr/bin:/bin"
    out, ran = [], []
    samplers = [CmdlineSampler(n) for n in sampler_needles]
    for s in samplers:
        s.start()
    try:
        for ct in containers(cj):
            env = resolve_env(ct, secrets)
            env.update({k: v for k, v in where.items() if k in env})  # only what the pod itself sets
            env.update(override or {})
            env["PATH"] = path
            ran.append(ct["name"])
            p = subprocess.run([*ct["command"], *ct.get("args", [])], env=env, capture_output=True, text=True,
                               timeout=300, cwd=str(c.base))
            out.append(f"[{ct['name']}]\n{p.stdout}{p.stderr}")
            if p.returncode != 0:
                return PodRun(p.returncode, ct["name"], "\n".join(out), ran)
        return PodRun(0, None, "\n".join(out), ran)
    finally:
        for s in samplers:
            s.done.set()
            s.join()
        assert all(s.samples > 0 and s.seen == [] for s in samplers), [s.seen for s in samplers]


def backup_id(output: str) -> str:
    ids = [line.split()[1] for line in output.splitlines() if line.startswith("backup-id: ")]
    assert ids, output
    return ids[-1]


def fake_backup(target: Path, at: float, services: str, stack: str = "gke") -> str:
    bid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
    d = target / bid
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    (d / ".octollm-backup").write_text(f"stack={stack}\nservices={services}\nreason=seeded\n")
    return bid


# --------------------------------------------------------------------------------------- the drill

@pytest.fixture(scope="module")
def claim(cluster):
    d = cluster.base / "claim"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def first(cronjob, secrets_data, cluster, claim):
    r = run_pod(cronjob, secrets_data, cluster, claim,
                sampler_needles=(cluster.pg_password, cluster.redis_password, cluster.qdrant.key))
    assert r.rc == 0, r.output
    return backup_id(r.output), r


def test_the_pod_runs_every_container_in_order_and_completes_one_backup(first, claim, cluster):
    bid, r = first
    assert r.ran == ["begin", "postgres", "redis", "qdrant", "finish"]
    assert (claim / bid).is_dir()
    assert [p.name for p in claim.iterdir() if p.name.endswith(".partial")] == []
    out = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=claim / bid, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (claim / bid / ".octollm-backup").read_text().splitlines()[:2] == ["stack=gke", f"services={SERVICES}"]
    assert cluster.qdrant.refused == []


def test_the_manifest_lists_every_file_with_its_size_and_sha256(first, claim):
    bid, _ = first
    d = claim / bid
    m = json.loads((d / "manifest.json").read_text())
    assert m["id"] == bid and m["stack"] == "gke" and m["services"] == SERVICES.split()
    assert set(m["methods"]) == set(SERVICES.split()) and all(m["methods"].values())
    files = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - {"manifest.json", "SHA256SUMS",
                                                                             ".octollm-backup"}
    assert {f["path"] for f in m["files"]} == files
    assert {"postgres/octollm.dump", "redis/dump.rdb", "qdrant/memory.snapshot", "qdrant/docs.snapshot",
            "qdrant/collections.json", "qdrant/aliases.json"} <= files
    import hashlib
    for f in m["files"]:
        data = (d / f["path"]).read_bytes()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest(), f["path"]


def test_the_dump_restores_into_a_fresh_database_with_the_same_rows(first, claim, cluster):
    bid, _ = first
    dump = claim / bid / "postgres" / "octollm.dump"
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": cluster.pg_password}
    listed = subprocess.run([pg_bin("pg_restore"), "--list", str(dump)], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and "TABLE public items" in listed.stdout, listed.stderr
    cluster.psql("DROP DATABASE IF EXISTS fresh; CREATE DATABASE fresh OWNER octollm;")
    out = subprocess.run([pg_bin("pg_restore"), "--no-owner", "-h", "127.0.0.1", "-p", str(cluster.pg_port),
                          "-U", "octollm", "-d", "fresh", "--exit-on-error", str(dump)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr

    class Fresh:
        psql = staticmethod(lambda sql: cluster.psql(sql, db="fresh"))
    assert pg_fingerprint(Fresh) == pg_fingerprint(cluster)
    assert pg_fingerprint(cluster)["items"].startswith("5000:")


def test_the_rdb_loads_in_a_fresh_redis_with_the_same_digest(first, claim, cluster):
    bid, _ = first
    fresh = cluster.base / f"fresh-redis-{bid}"
    fresh.mkdir()
    shutil.copy(claim / bid / "redis" / "dump.rdb", fresh / "dump.rdb")
    port = free_port()
    p = start_redis(fresh, port, cluster.redis_password, rdb=True)
    try:
        assert cluster.redis("DEBUG", "DIGEST", port=port) == cluster.redis("DEBUG", "DIGEST")
        assert cluster.redis("DBSIZE", port=port) == str(REDISES["redis"].strings + 150)
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_the_qdrant_snapshots_are_what_qdrant_served_and_are_deleted_there(first, claim, cluster):
    bid, _ = first
    q = cluster.qdrant
    for name, data in q.collections.items():
        assert (claim / bid / "qdrant" / f"{name}.snapshot").read_bytes() == b"SNAPSHOT:" + data
    assert q.snapshots == {}, "every snapshot made is deleted on the server"
    aliases = json.loads((claim / bid / "qdrant" / "aliases.json").read_text())
    assert aliases["result"]["aliases"] == [{"alias_name": "current", "collection_name": "docs"}]
    posts = [c for c in q.calls if c["method"] == "POST"]
    assert posts and all(c["query"] == {"wait": ["true"]} for c in posts)


def test_retention_prunes_exactly_as_on_docker(first, cronjob, secrets_data, cluster, claim):
    bid1, _ = first
    now = time.time()
    # Two a day for 40 days, and things the job did not make: another stack's, a bare directory, a file.
    seeded = {fake_backup(claim, now - (day + half) * 86400, SERVICES) for day in range(1, 41) for half in (0, 0.5)}
    other = fake_backup(claim, now - 30.3 * 86400, "postgres", stack="other")
    (claim / "20200101T000000Z").mkdir()
    (claim / "20200103T000000Z").write_text("a file")
    (claim / "keep-me").mkdir()
    has = {b: SERVICES for b in seeded | {bid1}}
    runs = []
    for _ in range(2):  # the second and the third run
        r = run_pod(cronjob, secrets_data, cluster, claim)
        assert r.rc == 0, r.output
        new = backup_id(r.output)
        before = set(has)
        has[new] = SERVICES
        keep = retention_keep(has, new, daily=7, weekly=4)
        left = {p.name for p in claim.iterdir()}
        assert left & set(has) == keep
        assert r.output.count("pruned ") == len(before - keep)
        has = {b: s for b, s in has.items() if b in keep}
        runs.append(new)
        for foreign in (other, "20200101T000000Z", "20200103T000000Z", "keep-me"):
            assert foreign in left
        time.sleep(1)
    assert bid1 not in has, "the first run's backup, of the same day as the third, is pruned by the third"
    assert runs[0] not in has and runs[1] in has


def test_a_failing_step_fails_the_run_and_completes_no_backup(cronjob, secrets_data, cluster, claim, first):
    before = {p.name for p in claim.iterdir() if not p.name.startswith(".")}
    r = run_pod(cronjob, secrets_data, cluster, claim, override={"PGPASSWORD": "not-the-password"})
    assert r.rc != 0 and r.failed == "postgres" and "finish" not in r.ran, r.output
    assert {p.name for p in claim.iterdir() if not p.name.startswith(".")} == before, "no completed backup"
    partials = [p.name for p in claim.iterdir() if p.name.endswith(".partial")]
    assert len(partials) == 1
    # The next run's first container removes the dead partial, then completes its own backup.
    r = run_pod(cronjob, secrets_data, cluster, claim)
    assert r.rc == 0, r.output
    assert f"removed the unfinished backup {partials[0]}" in r.output
    assert [p.name for p in claim.iterdir() if p.name.endswith(".partial")] == []


def test_a_wrong_redis_password_fails_the_redis_step(cronjob, secrets_data, cluster, claim, first):
    before = {p.name for p in claim.iterdir() if not p.name.startswith(".")}
    r = run_pod(cronjob, secrets_data, cluster, claim,
                override={"REDISCLI_AUTH": "not-the-password"})
    assert r.rc != 0 and r.failed == "redis", r.output
    assert "refused the password" in r.output
    assert {p.name for p in claim.iterdir() if not p.name.startswith(".")} == before


# --------------------------------------------------------------------------------------- the CronJob itself

def test_the_cronjob_runs_one_at_a_time_and_keeps_a_short_history(cronjob):
    spec = cronjob["spec"]
    assert spec["schedule"] == "30 3 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["startingDeadlineSeconds"] == 3600
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert pod_of(cronjob)["restartPolicy"] == "Never"


def test_the_containers_run_in_order_in_the_catalogue_images(cronjob):
    assert [(c["name"], c["image"]) for c in containers(cronjob)] == [
        ("begin", IMAGES["qdrant"].ref), ("postgres", IMAGES["postgres"].ref), ("redis", IMAGES["redis"].ref),
        ("qdrant", IMAGES["curl"].ref), ("finish", IMAGES["qdrant"].ref)]
    shells = {c["name"]: c["command"] for c in containers(cronjob)}
    assert shells == {"begin": ["/bin/bash", "-c"], "postgres": ["/bin/sh", "-c"], "redis": ["/bin/sh", "-c"],
                      "qdrant": ["/bin/sh", "-c"], "finish": ["/bin/bash", "-c"]}


def test_passwords_come_by_secret_key_ref_and_no_secret_is_in_the_pod_spec(cronjob, secrets_data):
    refs = {(c["name"], e["name"]): e["valueFrom"]["secretKeyRef"] for c in containers(cronjob)
            for e in c.get("env", []) if "valueFrom" in e}
    assert refs == {("postgres", "PGPASSWORD"): {"name": "postgres-env", "key": "POSTGRES_PASSWORD"},
                    ("redis", "REDISCLI_AUTH"): {"name": "redis-env", "key": "REDISCLI_AUTH"},
                    ("qdrant", "QDRANT_API_KEY"): {"name": "qdrant-env", "key": "QDRANT__SERVICE__API_KEY"}}
    text = json.dumps(cronjob)
    for name in ("postgres-env", "redis-env", "qdrant-env"):
        for value in secrets_data[name].values():
            assert len(value) >= 8 and value not in text


def test_every_container_mounts_the_claim_and_the_shared_run_directory(cronjob):
    pod = pod_of(cronjob)
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["backups"]["persistentVolumeClaim"] == {"claimName": "backups"}
    assert vols["run"] == {"name": "run", "emptyDir": {}}
    for c in containers(cronjob):
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts["/backups"] == "backups" and mounts["/run/octollm-job"] == "run", c["name"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env["OCTOLLM_BACKUP_DIR"] == "/backups" and env["OCTOLLM_BACKUP_RUN"] == "/run/octollm-job"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False


def test_the_claim_is_a_100_gb_read_write_many_filestore_claim(manifests):
    pvc = [m for m in manifests if m["kind"] == "PersistentVolumeClaim" and m["metadata"]["name"] == "backups"]
    assert len(pvc) == 1
    assert pvc[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc[0]["spec"]["storageClassName"] == "enterprise-rwx"
    assert pvc[0]["spec"]["resources"]["requests"]["storage"] == "100Gi"


def test_the_backup_pod_may_reach_postgres_redis_and_qdrant_only(manifests):
    pols = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "NetworkPolicy"}
    egress = pols[f"egress-{JOB}"]["spec"]
    assert egress["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": JOB}}
    assert sorted((r["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], r["ports"][0]["port"])
                  for r in egress["egress"]) == [("postgres", 5432), ("qdrant", 6333), ("redis", 6379)]
    admitted = {name[len("ingress-"):] for name, m in pols.items() if name.startswith("ingress-") and any(
        f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == JOB
        for rule in m["spec"].get("ingress", []) for f in rule.get("from", []))}
    assert admitted == {"postgres", "redis", "qdrant"}
