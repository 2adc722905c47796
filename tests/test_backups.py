"""backups: the config and its rules, what the program registers, the schedule it installs, the plan it reads,
and the scripts' own guards. The drills against real servers are in test_backups_real.py."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components import host_scripts as scripts
from components.config.schema import BackupConfig, ConfigError, load_stack_config
from components.services.backups import STATEFUL_RESOURCES, job_name
from harness import ROOT, stack_config
from test_real_host import REQUIRED
from tooling import backup as backup_tool

SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")
UNRAID = stack_config("unraid")
MINIMAL = {"host": "unraid", "target": "/mnt/user/backups/octollm"}
HOMELAB = stack_config("homelab")


def without_backups(raw: dict) -> dict:
    """The stack's config without backups: (and without the store made for them, homelab's octollm-backups)."""
    raw = copy.deepcopy(raw)
    target = (raw.pop("backups", None) or {}).get("target")
    if isinstance(target, dict):
        raw["modelStores"].pop(target["store"])
    return raw


def need(tool: str, package: str) -> str:
    """A tool the test cannot do without: skipped with the reason, or failed under OCTOLLM_REQUIRE_REAL_HOST=1."""
    path = shutil.which(tool) or (str(ROOT / ".venv-tools" / "bin" / tool)
                                  if (ROOT / ".venv-tools" / "bin" / tool).exists() else None)
    if path is None:
        if REQUIRED:
            pytest.fail(f"{tool} is missing ({package})")
        pytest.skip(f"{tool} is not installed ({package})")
    return path


def with_backups(backups: dict, base: dict = UNRAID, edit=None) -> dict:
    raw = copy.deepcopy(base)
    raw["backups"] = backups
    if edit:
        edit(raw)
    return raw


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_stack_config(raw)
    return [str(p) for p in exc.value.problems]


# ------------------------------------------------------------------------------------------- config

def test_defaults_back_up_every_data_service_on_the_host_nightly():
    cfg, _ = load_stack_config(with_backups(MINIMAL))
    b = cfg.backups
    assert b.chosen(cfg) == ["postgres", "redis", "qdrant", "grafana"]
    assert (b.schedule, b.on_calendar) == ("30 3 * * *", "*-*-* 03:30:00")
    assert (b.retention.daily, b.retention.weekly, b.retention.days) == (7, 4, None)
    assert b.store is None and b.target == "/mnt/user/backups/octollm"


def _del(*keys):
    def edit(raw):
        for k in keys:
            raw.pop(k)
    return edit


INVALID = {
    "minute out of range": ({**MINIMAL, "schedule": "61 3 * * *"}, None, "backups.schedule", "minute '61' is out of range; allowed: 0-59"),
    "four fields": ({**MINIMAL, "schedule": "30 3 * *"}, None, "backups.schedule", "five fields"),
    "day name typo": ({**MINIMAL, "schedule": "0 3 * * mnday"}, None, "backups.schedule", "allowed: 0-7 or sun..sat"),
    "every minute": ({**MINIMAL, "schedule": "* * * * *"}, None, "backups.schedule", "runs every minute"),
    "both day fields": ({**MINIMAL, "schedule": "0 3 1 * mon"}, None, "backups.schedule", "cron ORs and a systemd timer ANDs"),
    "backwards range": ({**MINIMAL, "schedule": "0 5-2 * * *"}, None, "backups.schedule", "runs backwards"),
    "two retention policies": ({**MINIMAL, "retention": {"days": 14, "daily": 7}}, None, "backups.retention", "not both"),
    "no retention": ({**MINIMAL, "retention": {}}, None, "backups.retention", "give daily and/or weekly"),
    "unknown retention key": ({**MINIMAL, "retention": {"monthly": 3}}, None, "backups.retention.monthly", "unknown key"),
    "relative target": ({**MINIMAL, "target": "backups"}, None, "backups.target", "is not an absolute path"),
    "system target": ({**MINIMAL, "target": "/etc/octollm"}, None, "backups.target", "belongs to the system"),
    "target with a space": ({**MINIMAL, "target": "/mnt/user/my backups"}, None, "backups.target", "spaces"),
    "target of two forms": ({**MINIMAL, "target": {"store": "x", "path": "/a"}}, None, "backups.target", "got the keys path, store"),
    "unknown store": ({**MINIMAL, "target": {"store": "nope"}}, None, "backups.target.store", "not defined under modelStores (defined: ollama-models)"),
    "unknown host": ({**MINIMAL, "host": "tower"}, None, "backups.host", "host 'tower' is not defined; defined hosts: unraid"),
    "unknown service": ({**MINIMAL, "services": ["mysql"]}, None, "backups.services[0]",
                        "'postgres', 'redis', 'worker-redis', 'qdrant' or 'grafana'"),
    "service twice": ({**MINIMAL, "services": ["redis", "redis"]}, None, "backups.services[1]", "listed twice"),
    "service not on the host": ({**MINIMAL, "services": ["grafana"]}, _del("monitoring"), "backups.services[0]",
                                "grafana is not deployed on unraid (deployed there: postgres, redis, qdrant)"),
    "nothing on the host": (MINIMAL, _del("dataServices", "octollm", "monitoring"), "backups.host",
                            "runs none of postgres, redis, worker-redis, qdrant, grafana"),
    "workers' Redis not on the host": ({**MINIMAL, "services": ["worker-redis"]}, None, "backups.services[0]",
                                       "worker-redis is not deployed on unraid (deployed there: postgres, redis, "
                                       "qdrant, grafana)"),
    "target inside a data directory": ({**MINIMAL, "target": "/mnt/user/appdata/octollm/redis/backups"}, None,
                                       "backups.target", "overlaps redis's data directory"),
    "target holding the data directories": ({**MINIMAL, "target": "/mnt/user/appdata/octollm"}, None, "backups.target",
                                            "overlaps postgres's data directory /mnt/user/appdata/octollm/postgres"),
    "unknown key": ({**MINIMAL, "when": "nightly"}, None, "backups.when", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_backups_are_refused_with_the_key_and_what_is_allowed(case):
    backups, edit, path, fragment = INVALID[case]
    found = problems(with_backups(backups, edit=edit))
    assert any(p.startswith(f"{path}: ") and fragment in p for p in found), found


def test_a_store_must_be_a_host_store_on_the_backup_host():
    homelab = HOMELAB
    # homelab: grafana runs on server80, the workers' Redis on zfs-ai; its stores: an NFS export on server80,
    # ZFS datasets on zfs-ai.
    cfg, _ = load_stack_config(with_backups({"host": "server80", "target": {"store": "ollama-models"}}, homelab))
    assert cfg.backups.chosen(cfg) == ["grafana"]
    found = problems(with_backups({"host": "server80", "target": {"store": "ai-models"}}, homelab))
    assert "backups.target.store: store 'ai-models' is on zfs-ai, but backups run on server80" in found[0]
    found = problems(with_backups({"host": "server84", "target": "/opt/octollm-backups"}, homelab))
    assert found == ["backups.host: server84 runs none of postgres, redis, worker-redis, qdrant, grafana, so there "
                     "is nothing to back up there; they run on server80, zfs-ai"]


def test_the_workers_redis_is_backed_up_where_the_workers_run():
    cfg, _ = load_stack_config(with_backups({"host": "zfs-ai", "target": "/service-pool/backups"}, HOMELAB))
    assert cfg.backups.chosen(cfg) == ["worker-redis"]
    spec = backup_tool.spec_for(cfg, "homelab")
    assert spec.services == ("worker-redis",)
    assert spec.worker_redis == ("worker-redis", "/service-pool/appdata/worker-redis")

    def elsewhere(raw):
        raw["workers"]["redisDataPath"] = "/service-pool/queue"
    cfg, _ = load_stack_config(with_backups({"host": "zfs-ai", "target": "/service-pool/backups"}, HOMELAB, elsewhere))
    assert backup_tool.spec_for(cfg, "homelab").worker_redis == ("worker-redis", "/service-pool/queue")
    # Its data directory is where workers.redisDataPath puts it, and the target may not overlap it.
    found = problems(with_backups({"host": "zfs-ai", "target": "/service-pool/queue/backups"}, HOMELAB, elsewhere))
    assert found == ["backups.target: /service-pool/queue/backups overlaps worker-redis's data directory "
                     "/service-pool/queue; give a directory outside every data directory (e.g. /service-pool/octollm-backups)"]
    found = problems(with_backups({"host": "zfs-ai", "target": "/service-pool/appdata/worker-redis/b"}, HOMELAB))
    assert any("overlaps worker-redis's data directory /service-pool/appdata/worker-redis" in p for p in found), found


def test_on_kubernetes_a_path_target_is_refused_with_what_to_give():
    found = problems(with_backups({"host": "gke", "target": "/backups"}, stack_config("gke")))
    assert found == ["backups.target: gke is a Kubernetes namespace: a directory path means nothing there; give "
                     "{store: <modelStores name>} of a store of kind pvc (the claim the backup pod writes into)"]


GKE = stack_config("gke")


def test_on_kubernetes_the_defaults_leave_out_grafana():
    cfg, _ = load_stack_config(GKE)
    assert "grafana" in cfg.backups.deployed(cfg)
    assert cfg.backups.chosen(cfg) == ["postgres", "redis", "qdrant"]


def test_on_kubernetes_grafana_and_the_workers_redis_are_refused_naming_the_key_and_what_is_allowed():
    found = problems(with_backups({**GKE["backups"], "services": ["postgres", "grafana", "worker-redis"]}, GKE))
    assert found == [
        "backups.services[1]: grafana is not backed up on Kubernetes: its SQLite database is in Grafana's "
        "ReadWriteOnce claim, which the backup pod cannot mount while Grafana runs; allowed: postgres, redis, qdrant",
        "backups.services[2]: worker-redis is not backed up on Kubernetes; allowed: postgres, redis, qdrant"]


def test_on_kubernetes_the_store_must_be_a_pvc_store_of_the_namespace_of_its_own():
    def host_path(raw):
        raw["modelStores"]["backups"] = {"host": "gke", "kind": "hostPath", "path": "/var/octollm-backups"}
    found = problems(with_backups(GKE["backups"], GKE, edit=host_path))
    assert "backups.target.store: store 'backups' is a hostPath store; allowed on Kubernetes: a pvc store" in found
    found = problems(with_backups({**GKE["backups"], "target": {"store": "models"}}, GKE))
    assert found == ["backups.target.store: store 'models' holds the models of ollama; give the backups a pvc "
                     "store of their own"]
    found = problems(with_backups({**GKE["backups"], "target": {"store": "nope"}}, GKE))
    assert found == ["backups.target.store: store 'nope' is not defined under modelStores (defined: backups, models)"]


def test_backup_of_a_kubernetes_stack_says_how_to_run_its_cronjob_now(capsys):
    assert backup_tool.main(["-s", "gke"]) == 2
    err = capsys.readouterr().err
    assert "Kubernetes is not backed up" not in err and "VolumeSnapshot" not in err
    assert "  kubectl -n octollm create job --from=cronjob/octollm-backup-gke \"$job\"\n" in err
    assert "  kubectl -n octollm wait --for=condition=complete --timeout=3600s \"job/$job\"\n" in err
    assert "  job=octollm-backup-gke-manual-$(date -u +%Y%m%d%H%M%S)\n" in err


def _kubectl_runs(err: str) -> dict[str, dict]:
    """The `kubectl run` lines of a message: pod name -> (its flags, the --overrides pod spec)."""
    import shlex
    out = {}
    for line in err.splitlines():
        if line.strip().startswith("kubectl -n octollm run "):
            argv = shlex.split(line)
            flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
            out[argv[4]] = {"flags": flags, "spec": json.loads(flags["overrides"])["spec"]}
    return out


def test_restore_of_a_kubernetes_stack_gives_each_service_s_exact_commands(capsys):
    from tooling import restore as restore_tool
    bid = "20261201T033000Z"
    assert restore_tool.main(["-s", "gke", "--service", "postgres", "--backup", bid, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "restores none of them itself" in err and "Redis" not in err
    assert restore_tool.main(["-s", "gke", "--list"]) == 2
    err = capsys.readouterr().err
    runs = _kubectl_runs(err)
    assert sorted(runs) == ["octollm-restore-postgres", "octollm-restore-qdrant", "octollm-restore-redis"]
    for name, r in runs.items():
        assert r["flags"]["labels"] == "app.kubernetes.io/name=octollm-backup-gke", "the flows admit only it"
        spec = r["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        [c] = spec["containers"]
        mounts = {m["mountPath"]: claims[m["name"]] for m in c["volumeMounts"]}
        assert mounts["/backups"] == "backups" and spec["automountServiceAccountToken"] is False
        script = c["command"][2]
        assert c["command"][:2] == ["sh", "-c"] and script.startswith("id=latest && if [ \"$id\" = latest ]; then id=$(ls /backups")
        assert "&& cd /backups/$id && sha256sum -c --quiet SHA256SUMS && " in script
        assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
        for e in c["env"]:
            assert set(e) == {"name", "valueFrom"}, "secrets by secretKeyRef only"
    pg = runs["octollm-restore-postgres"]["spec"]["containers"][0]
    assert pg["image"] == "postgres:15.10-alpine"
    assert "pg_restore --clean --if-exists --no-owner --exit-on-error -h postgres -U octollm -d octollm " \
           "/backups/$id/postgres/octollm.dump" in pg["command"][2]
    redis = runs["octollm-restore-redis"]["spec"]["containers"][0]
    assert {m["mountPath"] for m in redis["volumeMounts"]} == {"/backups", "/data"}
    assert "data-redis-0" in json.dumps(runs["octollm-restore-redis"]["spec"]["volumes"])
    lines = err.splitlines()
    i = next(n for n, l in enumerate(lines) if "octollm-restore-redis" in l)
    assert lines[i - 2].strip() == "kubectl -n octollm scale statefulset/redis --replicas=0"
    assert lines[i + 1].strip() == "kubectl -n octollm scale statefulset/redis --replicas=1"
    q = runs["octollm-restore-qdrant"]["spec"]["containers"][0]
    assert q["image"] == "curlimages/curl:8.11.0"
    assert "/snapshots/upload?priority=snapshot" in q["command"][2] and "-H @/tmp/h" in q["command"][2]


def test_the_redis_restore_command_makes_the_rdb_the_aof_base(capsys, tmp_path):
    """The Redis pod's script, run here with its two mounts mapped to directories: a Redis 7 started on
    that /data (AOF on) holds the backup's keys."""
    from tooling import restore as restore_tool
    restore_tool.main(["-s", "gke", "--service", "redis", "--backup", "B", "--yes"])
    c = _kubectl_runs(capsys.readouterr().err)["octollm-restore-redis"]["spec"]["containers"][0]
    backups, data = tmp_path / "backups", tmp_path / "data"
    (backups / "B" / "redis").mkdir(parents=True)
    (data / "appendonlydir").mkdir(parents=True)
    (data / "appendonlydir" / "old").write_text("old")
    rdb = backups / "B" / "redis" / "dump.rdb"
    rdb.write_bytes(b"REDIS0011-not-a-real-rdb")
    subprocess.run(["sha256sum", "redis/dump.rdb"], cwd=backups / "B", check=True,
                   stdout=(backups / "B" / "SHA256SUMS").open("w"))
    script = c["command"][2].replace("/backups", str(backups)).replace("/data", str(data))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (data / "appendonlydir" / "appendonly.aof.1.base.rdb").read_bytes() == rdb.read_bytes()
    assert (data / "appendonlydir" / "appendonly.aof.manifest").read_text() == (
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n")
    assert [p for p in data.iterdir() if p.name.startswith("appendonlydir.before-")], "the old AOF is moved aside"
    rdb.write_bytes(b"damaged")
    assert subprocess.run(["sh", "-c", script], capture_output=True).returncode != 0, "a damaged backup stops it"


def _cron_times(expr: str, start: dt.datetime, n: int) -> list[dt.datetime]:
    """The next n times a five-field cron expression fires after `start`, by brute force over minutes."""
    minute, hour, dom, month, dow = BackupConfig.cron_sets(expr)
    out, t = [], start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while len(out) < n:
        if (t.minute in minute and t.hour in hour and t.day in dom and t.month in month
                and (t.isoweekday() % 7) in dow):
            out.append(t)
        t += dt.timedelta(minutes=1)
    return out


@pytest.mark.parametrize("expr", ["30 3 * * *", "@weekly", "*/15 2-4 * * mon-fri", "5/20 1 * * *", "0 3 1,15 * *",
                                  "0 0 * jan,jul *", "0 */6 * * 0", "45 23 * * 6,7", "@monthly", "0 12 29 2 *"])
def test_the_timer_fires_when_the_cron_expression_does(expr):
    tool = need("systemd-analyze", "Debian package systemd")
    b = BackupConfig.model_validate({**MINIMAL, "schedule": expr})
    base = dt.datetime(2030, 1, 1, 0, 0)
    out = subprocess.run([tool, "calendar", "--base-time=2030-01-01 00:00:00 UTC", "--iterations=6", b.on_calendar],
                         capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
    assert out.returncode == 0, out.stderr
    got = [dt.datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
           for m in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", out.stdout)]
    assert got == _cron_times(b.schedule, base, 6), (expr, b.on_calendar)


# ------------------------------------------------------------------------------------------ program

@pytest.fixture(scope="module")
def unraid_with_backups(run):
    r = run("unraid", config=with_backups(MINIMAL))
    assert r.error is None, r.error
    return r


def test_backups_add_three_resources_and_change_nothing_else(run, unraid_with_backups):
    base = run("unraid", config=without_backups(UNRAID))
    assert base.error is None
    assert not [r for r in base.registrations if "backup" in r.name.lower() or "Backups" in r.type]
    added = unraid_with_backups.names() - base.names()
    assert added == {"backups", "backups-target-dir", "backups-schedule"}

    def rows(res, skip=()):
        return sorted(json.dumps([r.urn, r.raw, r.protect, r.retain_on_delete, r.delete_before_replace,
                                  sorted(r.dependencies)], sort_keys=True)
                      for r in res.registrations if r.name not in skip)
    assert rows(unraid_with_backups, added) == rows(base)
    assert set(unraid_with_backups.outputs) - set(base.outputs) == {"backups"}


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab", "gke"])
def test_stacks_without_backups_register_no_backup_resource(run, stack):
    r = run(stack, config=without_backups(stack_config(stack)))
    assert r.error is None
    assert not [x for x in r.registrations if x.type in ("octollm:index:Backups", "kubernetes:batch/v1:CronJob")
                or "backup" in x.name.lower()]
    assert "backups" not in r.outputs


def test_the_component_installs_the_job_the_tool_runs(unraid_with_backups):
    r = unraid_with_backups
    comp, target, sched = (r.by_name(n) for n in ("backups", "backups-target-dir", "backups-schedule"))
    assert comp.type == "octollm:index:Backups"
    assert target.parent == sched.parent == comp.urn
    assert target.protect and target.retain_on_delete, "the directory holding the backups outlives the stack"
    assert "/mnt/user/backups/octollm" in target.inputs["create"]
    assert sched.type == "command:remote:Command" and sched.delete_before_replace
    assert r.urn_of("backups-target-dir") in sched.dependencies and r.urn_of("unraid-preflight") in sched.dependencies
    # The job's script is the very script `make backup` sends (tooling/backup.py renders it from the same config).
    cfg, _ = load_stack_config(with_backups(MINIMAL))
    assert sched.inputs["stdin"] == scripts.backup(backup_tool.spec_for(cfg, "unraid"))
    assert sched.inputs["create"] == sched.inputs["update"]
    assert "enable --now \"$name.timer\"" in sched.inputs["create"]
    assert "name=octollm-backup-unraid" in sched.inputs["create"] and "'30 3 * * *'" in sched.inputs["create"]
    # Removing the job never touches what it wrote.
    assert "/mnt/user/backups" not in sched.inputs["delete"] and "rm -f -- \"$script\"" in sched.inputs["delete"]
    script = sched.inputs["stdin"]
    for container in ("octollm-postgres", "octollm-redis", "octollm-qdrant", "octollm-grafana"):
        assert container in script
    assert "qdrant_url=http://127.0.0.1:3012" in script and "redis_data=/mnt/user/appdata/octollm/redis" in script
    assert r.outputs["backups"] == "/mnt/user/backups/octollm"


def test_the_real_stacks_back_up_their_data(run):
    """unraid: every data service and Grafana onto an array share; homelab: the workers' Redis into a ZFS dataset."""
    unraid = run("unraid")
    assert unraid.error is None, unraid.error
    script = unraid.by_name("backups-schedule").inputs["stdin"]
    assert "configured=(postgres redis qdrant grafana)" in script and "target=/mnt/user/backups/octollm" in script
    assert "/mnt/user/backups/octollm" in unraid.by_name("backups-target-dir").inputs["create"]
    homelab = run("homelab")
    assert homelab.error is None, homelab.error
    sched = homelab.by_name("backups-schedule")
    script = sched.inputs["stdin"]
    assert "configured=(worker-redis)" in script and "ds=service-pool/octollm-backups" in script
    assert "worker_redis_c=worker-redis" in script and "worker_redis_data=/service-pool/appdata/worker-redis" in script
    assert "backups-target-dir" not in homelab.names()
    assert homelab.urn_of("octollm-backups-dataset") in sched.dependencies
    assert homelab.urn_of("zfs-ai-preflight") in sched.dependencies
    assert "'*-*-* 04:00:00'" in sched.inputs["create"]


def test_the_stateful_resource_names_are_the_containers_the_program_registers(unraid_with_backups, run):
    homelab = run("homelab")  # the workers run there, on a host without a container prefix
    for name, service in STATEFUL_RESOURCES.items():
        res, prefix = (homelab, "") if service == "worker-redis" else (unraid_with_backups, "octollm-")
        [container] = [r for r in res.of_type("docker:index/container:Container") if r.name == name]
        assert container.inputs["name"] == f"{prefix}{service}"


def test_a_zfs_store_target_is_snapshotted_and_not_made_again(run):
    homelab = copy.deepcopy(stack_config("homelab"))
    homelab["modelStores"]["backups"] = {"host": "server80", "kind": "zfs", "dataset": "tank/octollm-backups",
                                         "path": "/tank/octollm-backups", "recordsize": "1M", "compression": "zstd"}
    r = run("homelab", config=with_backups({"host": "server80", "target": {"store": "backups"},
                                            "schedule": "15 4 * * 0", "retention": {"days": 30}}, homelab))
    assert r.error is None, r.error
    sched = r.by_name("backups-schedule")
    assert "backups-target-dir" not in r.names()
    assert r.urn_of("backups-dataset") in sched.dependencies
    assert "ds=tank/octollm-backups" in sched.inputs["stdin"] and "keep_days=30" in sched.inputs["stdin"]
    assert "configured=(grafana)" in sched.inputs["stdin"]
    assert "'Sun *-*-* 04:15:00'" in sched.inputs["create"]


def test_the_kubernetes_platform_schedules_a_cronjob(run, tmp_path):
    """Kubernetes stacks refuse backups: (config), but the platform's schedule() is a CronJob; a program of
    its own builds one, checked against the Kubernetes schema."""
    program = tmp_path / "prog.py"
    program.write_text(f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
import pulumi
from components.config.schema import load_stack_config
from components.platforms.base import ScheduledJob
from components.stack import kubernetes_platform
from harness import stack_config
cfg, _ = load_stack_config(stack_config("gke"))
p = kubernetes_platform(cfg, "gke", "gke")
p.schedule("nightly", p, ScheduledJob(name="nightly-job", cron="30 3 * * *", calendar="*-*-* 03:30:00",
                                      script="echo hi\\n", description="a test job", image="busybox:1.36"))
''')
    r = run("gke", config={}, program=program)
    assert r.error is None, r.error
    [cj] = r.of_type("kubernetes:batch/v1:CronJob")
    spec = cj.inputs["spec"]
    assert spec["schedule"] == "30 3 * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    assert c["command"] == ["/bin/bash", "-c"] and c["args"] == ["echo hi\n"] and c["image"] == "busybox:1.36"
    assert c["securityContext"]["runAsNonRoot"] is True and "limits" in c["resources"]
    import k8s_manifests
    tool = need("kubernetes-validate", "requirements-tools.txt: make setup")
    files = [f for f in k8s_manifests.write(r, tmp_path / "manifests") if "-cronjob-" in f.name]
    assert len(files) == 1
    out = subprocess.run([tool, "--strict", "--quiet", "-k", "1.31.0", *map(str, files)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_job_names_are_unit_names():
    assert job_name("unraid") == "octollm-backup-unraid"
    assert job_name("My_Stack.2") == "octollm-backup-my-stack-2"


# ---------------------------------------------------------------------------------- the saved plan

URN = "urn:pulumi:unraid::octollm-infra::octollm:index:DataServices$docker:index/container:Container"


def test_a_saved_plan_names_the_stateful_containers_it_replaces_or_deletes():
    mon = "urn:pulumi:unraid::octollm-infra::octollm:index:MonitoringStack$docker:index/container:Container"
    plan = {"manifest": {"time": "2026-12-01T00:00:00Z", "magic": "", "version": ""}, "resourcePlans": {
        f"{URN}::data-postgres": {"goal": {"type": "docker:index/container:Container", "name": "data-postgres"},
                                  "steps": ["delete-replaced", "replace", "create-replacement"], "state": {}},
        f"{URN}::data-redis": {"goal": {}, "steps": ["same"], "state": {}},
        f"{URN}::data-qdrant": {"goal": {}, "steps": ["update"], "state": {}},
        f"{mon}::monitoring-grafana": {"steps": ["delete"], "state": {}},
        f"{mon}::monitoring-prometheus": {"steps": ["replace"], "state": {}},
        "urn:pulumi:unraid::octollm-infra::docker:index/remoteImage:RemoteImage::unraid-image-postgres-15":
            {"steps": ["replace"], "state": {}},
        "urn:pulumi:unraid::octollm-infra::octollm:index:DataServices$command:remote:Command::data-postgres":
            {"steps": ["replace"], "state": {}},
    }}
    steps = backup_tool.risky_steps(plan)
    assert [(s.name, s.service, s.action) for s in steps] == [("data-postgres", "postgres", "replace"),
                                                              ("monitoring-grafana", "grafana", "delete")]
    # `pulumi preview --json` lists its steps with op and urn: read the same way.
    preview = {"steps": [{"op": "replace", "urn": f"{URN}::data-redis"}, {"op": "same", "urn": f"{URN}::data-qdrant"}]}
    assert [s.service for s in backup_tool.risky_steps(preview)] == ["redis"]
    with pytest.raises(ValueError):
        backup_tool.risky_steps({"resourcePlans": {"not-a-urn": {"steps": ["delete"]}}})


def _stack_file(tmp_path: Path, backups: dict | None) -> Path:
    raw = without_backups(UNRAID)
    if backups:
        raw["backups"] = backups
    f = tmp_path / "Pulumi.unraid.yaml"
    import yaml
    f.write_text(yaml.safe_dump({"config": {f"octollm-infra:{k}": v for k, v in raw.items()}}))
    return f


def test_before_plan_runs_the_backup_of_the_replaced_services_first(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_run(cfg, script, env, timeout):
        ran.append((script, env))
        return 0, ["postgres: …", "backup-id: 20261201T000000Z", "backup-path: /mnt/user/backups/octollm/20261201T000000Z"]
    monkeypatch.setattr(backup_tool, "run_script", fake_run)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"resourcePlans": {f"{URN}::data-postgres": {"steps": ["replace"]},
                                                  f"{URN}::data-redis": {"steps": ["delete"]}}}))
    f = _stack_file(tmp_path, MINIMAL)
    assert backup_tool.main(["-s", "unraid", "--file", str(f), "--before-plan", str(plan)]) == 0
    out = capsys.readouterr().out
    [(script, env)] = ran
    assert env == {"OCTOLLM_BACKUP_ONLY": "postgres redis",
                   "OCTOLLM_BACKUP_REASON": "before plan: replace data-postgres, delete data-redis"}
    cfg, _ = load_stack_config(with_backups(MINIMAL))
    assert script == scripts.backup(backup_tool.spec_for(cfg, "unraid")), "the installed job's own script"
    assert "backed up postgres, redis before the plan: unraid:/mnt/user/backups/octollm/20261201T000000Z" in out
    assert "python -m tooling.restore -s unraid --service redis --backup 20261201T000000Z" in out
    # A failed backup stops `make up`.
    monkeypatch.setattr(backup_tool, "run_script", lambda *a: (1, ["backup: disk full"]))
    assert backup_tool.main(["-s", "unraid", "--file", str(f), "--before-plan", str(plan)]) == 1


def test_before_plan_backs_up_the_workers_redis_of_homelab(run, tmp_path, monkeypatch, capsys):
    """A plan replacing the workers' Redis (its resource as the real homelab program registers it) backs it up."""
    [reg] = [r for r in run("homelab").of_type("docker:index/container:Container") if r.inputs["name"] == "worker-redis"]
    ran = []

    def fake_run(cfg, script, env, timeout):
        ran.append((script, env))
        return 0, ["backup-id: 20261201T000000Z", "backup-path: /service-pool/octollm-backups/20261201T000000Z"]
    monkeypatch.setattr(backup_tool, "run_script", fake_run)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"resourcePlans": {reg.urn: {"steps": ["delete-replaced", "replace",
                                                                      "create-replacement"]}}}))
    assert backup_tool.main(["-s", "homelab", "--before-plan", str(plan)]) == 0
    [(script, env)] = ran
    assert env == {"OCTOLLM_BACKUP_ONLY": "worker-redis", "OCTOLLM_BACKUP_REASON": "before plan: replace workers-redis"}
    assert script == run("homelab").by_name("backups-schedule").inputs["stdin"], "the installed job's own script"
    out = capsys.readouterr().out
    assert "the plan would replace workers-redis (worker-redis;" in out
    assert "python -m tooling.restore -s homelab --service worker-redis --backup 20261201T000000Z" in out


def test_before_plan_without_backups_warns_and_lets_the_plan_go(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(backup_tool, "run_script", lambda *a: pytest.fail("nothing may run"))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"resourcePlans": {f"{URN}::data-postgres": {"steps": ["replace"]}}}))
    assert backup_tool.main(["-s", "unraid", "--file", str(_stack_file(tmp_path, None)), "--before-plan",
                             str(plan)]) == 0
    err = capsys.readouterr().err
    assert "backups: is not configured for this stack, so nothing is backed up first" in err
    plan.write_text("{not json")
    assert backup_tool.main(["-s", "unraid", "--file", str(_stack_file(tmp_path, None)), "--before-plan",
                             str(plan)]) == 2


def test_the_remote_command_quotes_what_it_passes(tmp_path):
    cfg, _ = load_stack_config(with_backups(MINIMAL))
    cmd, env = backup_tool.host_command(cfg, {"OCTOLLM_BACKUP_ONLY": "postgres redis", "OCTOLLM_BACKUP_REASON": "x; y"})
    assert env is None and cmd[0] == "ssh" and "StrictHostKeyChecking=yes" in cmd
    assert cmd[-5:] == ["env", "'OCTOLLM_BACKUP_ONLY=postgres redis'", "'OCTOLLM_BACKUP_REASON=x; y'", "bash", "-s"]


# ------------------------------------------------------------------------------------------ Makefile

def _make_n(target: str, *extra: str) -> list[str]:
    out = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), target, "STACK=unraid", "PULUMI=pulumi", *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_make_up_backs_up_what_the_plan_replaces_after_the_answer_and_before_applying():
    lines = _make_n("up")

    def at(fragment: str) -> int:
        return next(i for i, l in enumerate(lines) if fragment in l)
    plan = at("--save-plan .pulumi-plan-unraid.json")
    ask = at("Apply exactly this plan")
    data = at("-m tooling.backup -s unraid --before-plan .pulumi-plan-unraid.json")
    apply = at("up --stack unraid --plan .pulumi-plan-unraid.json")
    assert plan < ask < data < apply


def test_make_backup_runs_the_tool():
    assert any(l.endswith("-m tooling.backup -s unraid") for l in _make_n("backup"))


# ------------------------------------------------------------------------------ the scripts' guards

def _shellcheck(text: str, tmp_path: Path, name: str) -> None:
    f = tmp_path / f"{name}.sh"
    f.write_text(text)
    out = subprocess.run([SHELLCHECK, "--shell=bash", "--severity=style", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def _specs():
    pg, rd = ("octollm-postgres", "octollm", "octollm"), ("octollm-redis", "/mnt/x/redis")
    qd, gf = ("octollm-qdrant", "http://127.0.0.1:3012"), ("octollm-grafana", "/mnt/x/grafana")
    wr = ("octollm-worker-redis", "/mnt/x/worker-redis")
    yield scripts.BackupSpec("s", "/mnt/b", keep_daily=7, keep_weekly=4, postgres=pg, redis=rd, worker_redis=wr,
                             qdrant=qd, grafana=gf)
    for one in ({"postgres": pg}, {"redis": rd}, {"worker_redis": wr}, {"qdrant": qd}, {"grafana": gf},
                {"redis": rd, "worker_redis": wr}):
        yield scripts.BackupSpec("s", "/mnt/b", zfs_dataset="tank/b", keep_days=3, **one)


def test_every_rendering_passes_shellcheck(tmp_path):
    for i, spec in enumerate(_specs()):
        _shellcheck(scripts.backup(spec), tmp_path, f"backup-{i}")
        _shellcheck(scripts.backup_list(spec), tmp_path, f"list-{i}")
        for svc in spec.services:
            _shellcheck(scripts.restore(spec, svc, "latest"), tmp_path, f"restore-{i}-{svc}")
    for install in (True, False):
        _shellcheck(scripts.schedule_job("octollm-backup-s", "d", "*-*-* 03:30:00", "30 3 * * *", "/a/j.sh",
                                         "/a/j.log", install=install), tmp_path, f"job-{install}")


def test_unit_and_cron_fields_cannot_carry_a_second_line():
    for bad in ("x\nExecStartPre=/bin/evil", "50%", "", "tab\there", "joins the next line\\"):
        with pytest.raises(ValueError, match="cannot be written into a unit file"):
            scripts.schedule_job("octollm-backup-s", bad, "*-*-* 03:30:00", "30 3 * * *", "/a/j.sh", "/a/j.log",
                                 install=True)
    with pytest.raises(ValueError, match="not a unit name"):
        scripts.schedule_job("../evil", "d", "c", "30 3 * * *", "/a/j.sh", "/a/j.log", install=True)


def test_hostile_values_stay_data(tmp_path):
    marker = tmp_path / "PWNED"
    stub = tmp_path / "bin"
    stub.mkdir()
    for tool in ("docker", "flock", "curl", "zfs"):
        (stub / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {tmp_path}/calls\nexit 1\n')
        (stub / tool).chmod(0o755)
    target = tmp_path / "target"
    target.mkdir()
    for v in (f"a$(touch {marker})b", f"a`touch {marker}`b", f"a';touch {marker};'b", f'a";touch {marker};"b',
              f"a\ntouch {marker}\nb", "-rf", "*"):
        spec = scripts.BackupSpec(v, str(target), zfs_dataset=v, keep_daily=1, postgres=(v, v, v), redis=(v, v),
                                  worker_redis=(v, v), qdrant=(v, v), grafana=(v, v))
        for text in (scripts.backup(spec), scripts.backup_list(spec), scripts.restore(spec, "redis", v),
                     scripts.restore(spec, "worker-redis", v)):
            assert subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True).returncode == 0
            subprocess.run(["bash", "-s"], input=text, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={"PATH": f"{stub}:/usr/bin:/bin", "OCTOLLM_BACKUP_REASON": v})
            assert not marker.exists(), v


def test_runtime_inputs_are_checked(tmp_path):
    spec = scripts.BackupSpec("s", str(tmp_path), keep_daily=1, redis=("octollm-redis", str(tmp_path)))
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker").write_text("#!/bin/bash\nexit 1\n")
    (stub / "docker").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "-s"], input=scripts.backup(spec), capture_output=True, text=True,
                         env={**env, "OCTOLLM_BACKUP_ONLY": "postgres"})
    assert out.returncode == 1 and "postgres is not one of the services this job copies (redis)" in out.stderr
    out = subprocess.run(["bash", "-s"], input=scripts.backup(spec), capture_output=True, text=True,
                         env={**env, "OCTOLLM_BACKUP_REASON": "a\tb"})
    assert out.returncode == 1 and "OCTOLLM_BACKUP_REASON may hold only" in out.stderr
    out = subprocess.run(["bash", "-s"], input=scripts.restore(spec, "redis", "../../etc"), capture_output=True,
                         text=True, env=env)
    assert out.returncode == 1 and "is not a backup id" in out.stderr


# ---------------------------------------------------------------------------- installing the schedule

SYSTEMCTL = '#!/bin/bash\necho "systemctl $*" >> "$OCTOLLM_SYSTEM_ROOT/calls"\n'
UPDATE_CRON = '#!/bin/bash\necho "update_cron" >> "$OCTOLLM_SYSTEM_ROOT/calls"\n'


def _job(tmp_path: Path, install: bool, cal: str = "Mon..Fri *-*-* 02:00:00") -> str:
    return scripts.schedule_job("octollm-backup-unraid", "octollm-infra backups of stack unraid", cal,
                                "0 2 * * 1-5", str(tmp_path / "appdata" / "jobs" / "octollm-backup-unraid.sh"),
                                str(tmp_path / "appdata" / "jobs" / "octollm-backup-unraid.log"), install=install)


def _run_job(tmp_path: Path, root: Path, text: str, stdin: str = "") -> subprocess.CompletedProcess:
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "systemctl").write_text(SYSTEMCTL)
    (stub / "systemctl").chmod(0o755)
    return subprocess.run(["bash", "-c", text], input=stdin, capture_output=True, text=True,
                          env={"PATH": f"{stub}:/usr/bin:/bin", "OCTOLLM_SYSTEM_ROOT": str(root), "HOME": str(tmp_path)})


def test_on_a_systemd_host_the_job_is_a_timer(tmp_path):
    if os.geteuid() != 0:
        if REQUIRED:
            pytest.fail("the system units are written as root")
        pytest.skip("the system units are written as root")
    root = tmp_path / "root"
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    job = "#!/usr/bin/env bash\necho backing up\n"
    for _ in range(2):  # idempotent
        out = _run_job(tmp_path, root, _job(tmp_path, True), job)
        assert out.returncode == 0, out.stderr
    units = root / "etc" / "systemd" / "system"
    timer = (units / "octollm-backup-unraid.timer").read_text()
    service = (units / "octollm-backup-unraid.service").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 02:00:00\nPersistent=true\n" in timer and "WantedBy=timers.target" in timer
    script = tmp_path / "appdata" / "jobs" / "octollm-backup-unraid.sh"
    assert f"Type=oneshot\nExecStart=/bin/bash {script}\n" in service
    assert script.read_text() == job and oct(script.stat().st_mode & 0o777) == "0o700"
    assert (root / "calls").read_text().splitlines()[:2] == ["systemctl daemon-reload",
                                                             "systemctl enable --now octollm-backup-unraid.timer"]
    out = subprocess.run([need("systemd-analyze", "Debian package systemd"), "verify", "--man=no",
                          str(units / "octollm-backup-unraid.timer"), str(units / "octollm-backup-unraid.service")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (tmp_path / "appdata" / "backups-made").mkdir()
    out = _run_job(tmp_path, root, _job(tmp_path, False))
    assert out.returncode == 0, out.stderr
    assert not list(units.iterdir()) and not script.exists()
    assert (tmp_path / "appdata" / "backups-made").exists()
    assert "systemctl disable --now octollm-backup-unraid.timer" in (root / "calls").read_text()
    # A calendar systemd does not accept stops the install before anything is written.
    out = _run_job(tmp_path, root, _job(tmp_path, True, cal="Funday 25:00"), job)
    assert out.returncode != 0 and not list(units.iterdir())


def test_on_unraid_the_job_is_a_cron_file_update_cron_loads(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "unraid-version").write_text('version="6.12.13"\n')
    (root / "run" / "systemd" / "system").mkdir(parents=True)  # ignored: Unraid is recognised first
    sbin = root / "usr" / "local" / "sbin"
    sbin.mkdir(parents=True)
    (sbin / "update_cron").write_text(UPDATE_CRON)
    (sbin / "update_cron").chmod(0o755)
    out = _run_job(tmp_path, root, _job(tmp_path, True), "#!/usr/bin/env bash\ntrue\n")
    assert out.returncode == 0, out.stderr
    cron = (root / "boot" / "config" / "plugins" / "dynamix" / "octollm-backup-unraid.cron").read_text().splitlines()
    jobs = tmp_path / "appdata" / "jobs"
    assert cron[0].startswith("# octollm-infra backups of stack unraid")
    assert cron[1] == f"0 2 * * 1-5 /bin/bash {jobs}/octollm-backup-unraid.sh > {jobs}/octollm-backup-unraid.log 2>&1"
    assert (root / "calls").read_text() == "update_cron\n" and not (root / "etc" / "systemd").exists()
    out = _run_job(tmp_path, root, _job(tmp_path, False))
    assert out.returncode == 0 and not (root / "boot" / "config" / "plugins" / "dynamix" / "octollm-backup-unraid.cron").exists()
    assert (root / "calls").read_text() == "update_cron\nupdate_cron\n"


def test_a_host_with_neither_systemd_nor_unraid_is_told_so(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    out = _run_job(tmp_path, root, _job(tmp_path, True), "true\n")
    assert out.returncode == 1 and "neither systemd nor Unraid" in out.stderr


def test_a_stack_with_backups_passes_every_mandatory_policy(unraid_with_backups):
    from policy.checks import CHECKS, Opts, run_check

    failures = []
    for reg in unraid_with_backups.registrations:
        opts = Opts(protect=reg.protect, delete_before_replace=reg.delete_before_replace,
                    retain_on_delete=reg.retain_on_delete)
        for c in CHECKS:
            if c.enforcement != "advisory":
                failures += [f"{c.id} {reg.name}: {m}" for m in run_check(c, reg.type, reg.raw, opts, reg.name)]
    assert not failures, "\n".join(failures)
