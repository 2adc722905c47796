"""Every host script, rendered with hostile values in every field it takes, stays data.

Config refuses these values long before a script is rendered (tests/test_config_values.py); this is
the second wall. Every builder of components.host_scripts is found by looking at the module, so a new
one without a case here fails `test_every_builder_has_a_hostile_case`. Each rendering is checked with
`bash -n` and shellcheck, then run for real in a scratch directory with stub system commands that
succeed and answer plausibly, so the script runs on past its first command with the payload in hand:
no payload may run, and nothing outside the scratch root may change.
"""

from __future__ import annotations

import inspect
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components import host_scripts as scripts

SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")


def payloads(marker: Path) -> list[str]:
    m = str(marker)
    return [f"a$(touch {m})b", f"a`touch {m}`b", f"a';touch {m};'b", f'a";touch {m};"b', f"a\ntouch {m}\nb",
            f"a$IFS$(touch {m})", f"a\\$(touch {m})", f"a;touch {m}", f"a%(touch {m})", "-rf", "--help", "*",
            # a line of its own that bash arithmetic would read as an array subscript, and run
            f"a\nPATH[$(touch {m})]\nb"]


# Stub system commands. Each logs its argv and answers what the scripts ask the way the real one
# would on a healthy host, so every later step runs too.
STUBS = {
    "docker": r"""#!/usr/bin/env bash
echo "docker $*" >> "$STUB_LOG"
case "$1" in
  version) echo 24.0.7; exit 0 ;;
  info) echo true; exit 0 ;;
  network) [ "$2" = ls ] && exit 0; exit 1 ;;  # no networks yet
  inspect) echo true; exit 0 ;;  # {{.State.Running}}
  container) exit 1 ;;
  run) echo "GPU 0: NVIDIA GeForce RTX 3070 (UUID: GPU-00000000)"; exit 0 ;;
  exec) ;;
  *) exit 0 ;;  # ps, kill, pause, unpause, stop, start
esac
shift
while [ "$#" -gt 0 ]; do case "$1" in -i) shift ;; -e) shift 2 ;; *) break ;; esac; done
shift  # the container
if [ "$1" = sh ] && [ "$2" = -c ]; then
  case "$3" in
    *'exec "$@"'*) shift 4 ;;  # sh -c '... exec "$@"' name command...
    *'command -v sqlite3'*) exit 1 ;;  # the image has none: the copy is made with the container paused
    *QDRANT__SERVICE__API_KEY*) echo "api-key: stub"; exit 0 ;;
    *) exit 0 ;;
  esac
fi
state="$STUB_STATE"
case "$1" in
  ollama) [ "$2" = show ] && exit 1; exit 0 ;;
  pg_isready) exit 0 ;;
  pg_dump) echo PGDMP-stub ;;
  pg_restore) cat > /dev/null; if [ "$2" = --list ]; then printf ';\n1; 2615 2200 SCHEMA - public\n'; fi ;;
  psql) cat > /dev/null; echo 0 ;;
  grafana) cat > /dev/null ;;
  redis-cli)
    [ -f "$state/lastsave" ] || echo $(( $(date +%s) - 100 )) > "$state/lastsave"
    case "$2 ${3:-}" in
      "PING "*) echo PONG ;;
      # in pieces, as docker relays a stream: a reader that stops at its match breaks the pipe
      "INFO "*) printf '# Persistence\r\nrdb_bgsave_in_progress:0\r\n'; sleep 0.05
                printf 'rdb_last_bgsave_status:ok\r\n'; sleep 0.05; printf 'aof_enabled:0\r\n' ;;
      "LASTSAVE "*) cat "$state/lastsave" ;;
      "BGSAVE "*) echo $(( $(cat "$state/lastsave") + 1 )) > "$state/lastsave"; echo "Background saving started" ;;
      "CONFIG GET") printf '%s\n%s\n' "$4" "$([ "$4" = dbfilename ] && echo dump.rdb || echo appendonlydir)" ;;
      "DBSIZE "*) echo 3 ;;
    esac ;;
esac
exit 0
""",
    "curl": r"""#!/usr/bin/env bash
echo "curl $*" >> "$STUB_LOG"
out="" method=GET url=""
while [ "$#" -gt 0 ]; do
  case "$1" in -o) out="$2"; shift 2 ;; -X) method="$2"; shift 2 ;; -H|-F|--max-time|--retry) shift 2 ;;
    -*) shift ;; *) url="$1"; shift ;; esac
done
case "$method $url" in
  "GET "*/collections) body='{"result":{"collections":[{"name":"c1"}]},"status":"ok"}' ;;
  "GET "*/aliases) body='{"result":{"aliases":[]},"status":"ok"}' ;;
  "POST "*"/snapshots?wait=true") body='{"result":{"name":"c1-2025-01-01.snapshot"},"status":"ok"}' ;;
  *) body='{"result":true,"status":"ok"}' ;;
esac
if [ -n "$out" ]; then printf '%s' "$body" > "$out"; else printf '%s\n' "$body"; fi
""",
    "ollama": '#!/usr/bin/env bash\necho "ollama $*" >> "$STUB_LOG"\n'
              'case "$1" in serve) exec sleep 30 ;; show) exit 1 ;; esac\n',
    "zfs": '#!/usr/bin/env bash\necho "zfs $*" >> "$STUB_LOG"\n[ "$1" = list ] && exit 1\nexit 0\n',
    "exportfs": '#!/usr/bin/env bash\necho "exportfs $*" >> "$STUB_LOG"\n',
    "nvidia-smi": '#!/usr/bin/env bash\necho "NVIDIA GeForce RTX 3070, 8192, 575.64.03"\n',
    "sshd": "#!/usr/bin/env bash\nexit 1\n",
    "chown": '#!/usr/bin/env bash\necho "chown $*" >> "$STUB_LOG"\n',
    "flock": '#!/usr/bin/env bash\necho "flock $*" >> "$STUB_LOG"\n',
    "systemctl": '#!/usr/bin/env bash\necho "systemctl $*" >> "$STUB_LOG"\n',
    "loginctl": "#!/usr/bin/env bash\necho yes\n",
    # the Kubernetes backup steps' clients, in their images
    "pg_isready": "#!/bin/sh\nexit 0\n",
    "pg_dump": '#!/bin/sh\nfor a; do case "$a" in --file=*) echo PGDMP-stub > "${a#--file=}" ;; esac; done\n',
    "pg_restore": "#!/bin/sh\nprintf ';\\n1; 2615 2200 SCHEMA - public\\n'\n",
    "redis-cli": '#!/bin/sh\nwhile [ "$1" = -h ] || [ "$1" = -p ]; do shift 2; done\n'
                 'case "$1" in PING) echo PONG ;; --rdb) echo REDIS0011 > "$2" ;; DBSIZE) echo 3 ;; esac\n',
}


def _env(root: Path) -> dict:
    bin_dir = root / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    (root / "stub-state").mkdir(exist_ok=True)
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root / "home"),
            "STUB_LOG": str(root / "stub.log"), "STUB_STATE": str(root / "stub-state"),
            "OCTOLLM_EXPORTS_FILE": str(root / "exports"), "OCTOLLM_SSHD_CONFIG": str(root / "sshd_config"),
            "TMPDIR": str(root / "tmp")}


def _outside_snapshot() -> dict:
    """Where a value that escaped its quotes would land as a path: the working directory, /, /tmp
    (only names made of the payloads: other processes use /tmp meanwhile), /etc/exports and the places a
    scheduled job is installed."""
    def payload_names(d: str) -> list[str]:
        return sorted(n for n in os.listdir(d) if any(t in n for t in ("touch", "PWNED", "a$", "a`", "a'", 'a"')))

    def listing(d: str) -> list[str] | None:
        return sorted(os.listdir(d)) if os.path.isdir(d) else None
    return {"cwd": sorted(os.listdir(".")), "root": sorted(os.listdir("/")), "tmp": payload_names("/tmp"),
            "exports": Path("/etc/exports").read_bytes() if Path("/etc/exports").exists() else None,
            "units": listing("/etc/systemd/system"), "cron": listing("/boot/config/plugins/dynamix"),
            "home": listing(os.path.expanduser("~/.config/systemd/user"))}


@dataclass
class Run:
    """One script to run, in order with the others of its case, in the same scratch root."""

    script: str | None  # None: the builder refused the value with a ValueError
    stdin: str = ""
    env: dict = field(default_factory=dict)
    sh: bool = False  # POSIX sh (the Kubernetes backup steps, whose images have no bash)
    setup: object = None  # a callable run just before


def refused(build, *args, **kw) -> Run | str:
    """The builder's script, or Run(None) when it refuses the value (as safe as quoting it)."""
    try:
        return build(*args, **kw)
    except ValueError:
        return Run(None)


def _runs(*items) -> list[Run]:
    return [i if isinstance(i, Run) else Run(i) for i in items]


CASES = {}  # builder name -> the case that renders and runs its scripts


def case(*builders: str):
    def register(fn):
        for b in builders or (fn.__name__.removeprefix("case_"),):
            CASES[b] = fn
        return fn
    return register


@case()
def case_ensure_dirs(root: Path, v: str) -> list[Run]:
    return _runs(scripts.ensure_dirs([f"{root}/data/{v}", f"{root}/other"], v))


@case()
def case_write_file(root: Path, v: str) -> list[Run]:
    return [Run(scripts.write_file(f"{root}/cfg/{v}/file.yml", v, v, v), stdin="content\n")]


@case()
def case_ollama_pull(root: Path, v: str) -> list[Run]:
    return _runs(scripts.ollama_pull(v, [v, "llama3.1:8b"], wait_seconds=2))


@case()
def case_ollama_pull_job(root: Path, v: str) -> list[Run]:
    return _runs(scripts.ollama_pull_job([v, "llama3.1:8b"], wait_seconds=2))


@case()
def case_zfs_dataset(root: Path, v: str) -> list[Run]:
    return _runs(scripts.zfs_dataset(f"pool/{v}", f"{root}/data/{v}", v, v, v))


@case()
def case_nfs_export(root: Path, v: str) -> list[Run]:
    d = f"{root}/data/{v}"
    (root / "export").mkdir(exist_ok=True)
    good = dict(path=str(root / "export"), client_cidr="10.0.0.0/24", options="rw,sync", owner="1000:1000")
    # every field hostile at once, and each one alone (a refusal of one must not hide another)
    return _runs(refused(scripts.nfs_export, d, v, v, v),
                 *(refused(scripts.nfs_export, **{**good, k: d if k == "path" else v}) for k in good))


@case()
def case_postgres_set_password(root: Path, v: str) -> list[Run]:
    return [Run(scripts.postgres_set_password(v, v, v, wait_seconds=2), stdin=f"{v}\n")]


@case()
def case_grafana_set_admin_password(root: Path, v: str) -> list[Run]:
    return [Run(scripts.grafana_set_admin_password(v, wait_seconds=2), stdin=f"{v}\n")]


@case()
def case_preflight(root: Path, v: str) -> list[Run]:
    """Every field hostile (the checks then fail, and say so), and the names and labels hostile with the
    checks passing, so the script runs through to its all-clear."""
    d = f"{root}/data/{v}"

    def make():
        Path(root, v).mkdir(parents=True, exist_ok=True)
        Path(d).mkdir(parents=True, exist_ok=True)
    return [Run(scripts.preflight(scripts.PreflightSpec(
        host=v, stack_label=v, min_docker=v, networks=((v, "172.30.0.0/24"),), anchors=(f"{root}/{v}",),
        dirs=((d, v),), disk=((d, 1024),), gpus=((v, 8192),), min_driver=v, driver_reason=v,
        gpu_image=v, gpu_fallback=False, ports=(18999,), ssh_parallel=8)), setup=make),
        Run(scripts.preflight(scripts.PreflightSpec(
            host=v, stack_label=v, min_docker="20.10", networks=((v, "172.30.0.0/24"),), anchors=(f"{root}/{v}",),
            dirs=((d, f"{os.getuid()}:{os.getgid()}"),), disk=((d, 1024),), gpus=(("NVIDIA GeForce RTX 3070", 8192),),
            min_driver="550.0", driver_reason=v, gpu_image=v, gpu_fallback=False, ports=(18999,), ssh_parallel=8)))]


def _backup_spec(root: Path, v: str, database: str = "octollm") -> scripts.BackupSpec:
    """Every field hostile but the database name, which is also a file name and is refused outright (the
    variant with it hostile is a run of its own: its refusal stops the script before the other services)."""
    d = f"{root}/data/{v}"
    return scripts.BackupSpec(v, f"{root}/backups/{v}", zfs_dataset=v, keep_daily=1, postgres=(v, v, database),
                              redis=(v, f"{d}/redis"), worker_redis=(v, f"{d}/worker-redis"), qdrant=(v, v),
                              grafana=(v, f"{d}/grafana"), wait_seconds=2)


def _backup_data(spec: scripts.BackupSpec):
    """What the services hold on the host: the target, the Redis RDBs, Grafana's SQLite database."""
    def make():
        Path(spec.target).mkdir(parents=True, exist_ok=True)
        for _, data in (spec.redis, spec.worker_redis):
            Path(data).mkdir(parents=True, exist_ok=True)
            (Path(data) / "dump.rdb").write_bytes(b"REDIS0011")
        Path(spec.grafana[1]).mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(Path(spec.grafana[1]) / "grafana.db")
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        db.commit()
        db.close()
    return make


@case("backup", "backup_list", "restore")
def case_backups(root: Path, v: str) -> list[Run]:
    """A backup, the list, and a restore of each service from it: each later script finds what the
    earlier one made under the hostile names. The backup id is checked by the same lines whatever the
    service, so one restore tries the hostile value as the id."""
    spec = _backup_spec(root, v)
    return [Run(scripts.backup(spec), setup=_backup_data(spec)),
            Run(scripts.backup(_backup_spec(root, v, database=v))),
            Run(scripts.backup_list(spec)),
            *(Run(scripts.restore(spec, s, "latest", wait_seconds=2)) for s in spec.services),
            Run(scripts.restore(spec, "postgres", v, wait_seconds=2)),
            Run(scripts.restore(_backup_spec(root, v, database=v), "postgres", "latest")),
            # last: when the reason is allowed, this one becomes the latest backup, of two services only
            Run(scripts.backup(spec), env={"OCTOLLM_BACKUP_ONLY": "redis qdrant", "OCTOLLM_BACKUP_REASON": v})]


@case()
def case_backup_kubernetes(root: Path, v: str) -> list[Run]:
    k = scripts.backup_kubernetes(v, scripts.KUBERNETES_BACKUP_SERVICES, keep_daily=1, wait_seconds=2)
    target, run = root / "claim" / v, root / "run"

    def make():
        target.mkdir(parents=True, exist_ok=True)
        run.mkdir(exist_ok=True)
    # what the pod spec sets: the backup claim, the shared emptyDir, each service's connection
    env = {"OCTOLLM_BACKUP_DIR": str(target), "OCTOLLM_BACKUP_RUN": str(run), "PGHOST": v, "PGUSER": v,
           "PGDATABASE": "octollm", "PGPASSWORD": v, "REDIS_HOST": v, "REDISCLI_AUTH": v, "QDRANT_URL": v,
           "QDRANT_API_KEY": v}
    return [Run(k.begin, env=env, setup=make), *(Run(s, env=env, sh=True) for s in k.steps.values()),
            Run(k.finish, env=env)]


def _job_args(root: Path) -> dict:
    return dict(name="octollm-backup-s", description="backups of stack s", calendar="*-*-* 03:30:00",
                cron="30 3 * * *", script_path=f"{root}/jobs/octollm-backup-s.sh",
                log_path=f"{root}/jobs/octollm-backup-s.log")


@case()
def case_schedule_job(root: Path, v: str) -> list[Run]:
    good = _job_args(root)
    systemd, unraid = root / "systemd-host", root / "unraid-host"

    def make():
        (systemd / "run" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        (unraid / "etc").mkdir(parents=True, exist_ok=True)
        (unraid / "etc" / "unraid-version").write_text('version="7.0.0"\n')
        (unraid / "usr" / "local" / "sbin").mkdir(parents=True, exist_ok=True)
        (unraid / "usr" / "local" / "sbin" / "update_cron").write_text(STUBS["systemctl"])
        (unraid / "usr" / "local" / "sbin" / "update_cron").chmod(0o755)
    # Every field hostile at once is refused (its script path is not even absolute), so it never runs
    # against the real system paths; then each field alone, against a systemd and an Unraid host.
    with pytest.raises(ValueError):
        scripts.schedule_job(v, v, v, v, v, v, install=True)
    out = [Run(None, setup=make)]
    for k in good:
        bad = {**good, k: f"{root}/jobs/{v}" if k.endswith("_path") else v}
        for install in (True, False):
            built = refused(scripts.schedule_job, **bad, install=install)
            if isinstance(built, Run):
                out.append(built)
                continue
            for host in (systemd, unraid):
                out.append(Run(built, stdin="#!/usr/bin/env bash\necho job\n", env={"OCTOLLM_SYSTEM_ROOT": str(host)}))
    return out


def _builders() -> set[str]:
    """Every public function of components.host_scripts that returns a script (or the scripts of a pod)."""
    return {n for n, f in inspect.getmembers(scripts, inspect.isfunction)
            if f.__module__ == scripts.__name__ and not n.startswith("_")
            and inspect.signature(f).return_annotation in ("str", "KubernetesBackup")} - {"q"}


def test_every_builder_has_a_hostile_case():
    assert _builders() == set(CASES)
    assert {"backup", "backup_kubernetes", "restore", "backup_list", "schedule_job", "preflight"} <= _builders()


def test_an_exports_line_cannot_be_split_or_extended():
    for bad in ("10.0.0.0/24\n/ *(rw,no_root_squash)", "10.0.0.0/24 *", "10.0.0.0/24(rw)", "#x", ""):
        with pytest.raises(ValueError, match="cannot be written into an exports line"):
            scripts.nfs_export("/opt/ollama-models", bad, "rw,sync", "1000:1000")
    with pytest.raises(ValueError):
        scripts.nfs_export("/opt/ollama models", "10.0.0.0/24", "rw", "1000:1000")


def _check_and_run(tmp_path: Path, root: Path, name: str, i: int, runs: list[Run]) -> list[tuple[int, str]]:
    """bash -n (sh -n) and shellcheck on every distinct rendering, then each run in order."""
    files: dict[str, list[str]] = {"bash": [], "sh": []}
    seen: set[str] = set()
    for j, r in enumerate(runs):
        shell = "sh" if r.sh else "bash"
        if r.script is None or r.script in seen:
            continue
        seen.add(r.script)
        syntax = subprocess.run([shell, "-n"], input=r.script, capture_output=True, text=True)
        assert syntax.returncode == 0, (name, j, syntax.stderr)
        f = tmp_path / f"{name}-{i}-{j}.sh"
        f.write_text(r.script)
        files[shell].append(str(f))
    for shell, paths in files.items():
        if paths:  # one shellcheck for all of them: it starts once
            sc = subprocess.run([SHELLCHECK, "-S", "warning", "-s", shell, *paths], capture_output=True, text=True)
            assert sc.returncode == 0, (name, sc.stdout)
    results = []
    for r in runs:
        if r.setup:
            r.setup()
        if r.script is None:
            results.append((-1, "refused"))
            continue
        out = subprocess.run(["sh" if r.sh else "bash", "-c", r.script], input=r.stdin, capture_output=True,
                             text=True, env={**_env(root), **r.env}, cwd=root, timeout=60)
        results.append((out.returncode, out.stderr))
    return results


# The runs that may fail, and the refusal each must end with. Everything else exits 0: the stubs
# succeed, so a failure would be a payload that changed what the script does.
EXPECTED_FAILURES = [
    # a value with a newline is refused by the manifest's JSON writer (the backup is then removed)
    ("backups", "\n", "backup: a control character in"),
    ("backups", "\n", "restore: there is no backup of stack"),
    ("backup_kubernetes", "\n", "backup: a control character in"),
    # OCTOLLM_BACKUP_REASON is checked against its allowed characters
    ("backups", "", "OCTOLLM_BACKUP_REASON may hold only"),
    # a backup id that is not one (restore's second run of each service)
    ("backups", "", "is not a backup id"),
    # the preflight reports what it found wrong (a Docker "version" that is a payload, a GPU model that
    # does not match): as text, which is the point
    ("preflight", "", "preflight failed on host"),
    # a database name that is not a file name
    ("backups", "", "backup: postgres: the database name"),
    ("backups", "", "restore: postgres: the database name"),
    # systemd-analyze refuses a calendar it cannot parse, before anything is written
    ("schedule_job", "", "Failed to parse calendar specification"),
]


def _expected(name: str, v: str, stderr: str) -> bool:
    return any(n == name and s in v and m in stderr for n, s, m in EXPECTED_FAILURES)


@pytest.mark.parametrize("name", sorted({fn.__name__.removeprefix("case_") for fn in CASES.values()}))
def test_hostile_values_stay_data(tmp_path, name):
    marker = tmp_path / "PWNED"
    before = _outside_snapshot()
    ran_to_the_end = 0
    for i, v in enumerate(payloads(marker)):
        root = tmp_path / f"root{i}"
        for d in ("home", "tmp"):
            (root / d).mkdir(parents=True)
        results = _check_and_run(tmp_path, root, name, i, globals()[f"case_{name}"](root, v))
        assert not marker.exists(), f"{name} ran the payload in {v!r}"
        for rc, stderr in results:
            assert rc in (0, -1) or _expected(name, v, stderr), (name, v, rc, stderr)
        ran_to_the_end += sum(rc == 0 for rc, _ in results)
    # The hostile values reached a script that ran to its end, not only refusals.
    assert ran_to_the_end > 0
    assert _outside_snapshot() == before


@pytest.mark.parametrize("value", ['a"b', 'x" }\nloki.write "evil" {', "back\\slash", "new\nline"])
def test_alloy_strings_cannot_be_closed_by_a_value(value):
    import json

    from components.services.monitoring_stack import alloy_config

    text = alloy_config(value, "http://loki:3100/loki/api/v1/push")
    m = re.search(r"labels\s+= \{ host = (.*) \}\n", text)
    assert m and json.loads(m.group(1)) == value
    assert text.count('loki.write "') == 1


# ------------------------------------------------------------------ a scheduled job's crontab line and unit

@pytest.mark.parametrize("field,value", [
    ("script_path", "relative/job.sh"), ("script_path", "/a/../b.sh"), ("script_path", "/a//b.sh"),
    ("script_path", "/a/./b.sh"), ("script_path", "/a/-rf.sh"), ("script_path", "/a/b c.sh"),
    ("script_path", "/a/$(touch /tmp/PW).sh"), ("script_path", "/a/`id`.sh"), ("script_path", "/a/50%.sh"),
    ("script_path", "/a/b\n.sh"), ("script_path", "/a/b'c.sh"), ("script_path", "/"), ("script_path", "/a/"),
    ("log_path", "/a/j.log; rm -rf /x"), ("log_path", "/a/j.log > /etc/passwd"), ("log_path", "/a/$HOME.log"),
    ("cron", "30 3 * *"), ("cron", "30 3 * * * /bin/evil"), ("cron", "30;3 * * * *"), ("cron", "-rf"),
    ("cron", "30  3 * * *"), ("cron", "30 3 * * $(id)"), ("cron", "@reboot"), ("cron", "30 3 * * %"),
    ("calendar", "-rf"), ("calendar", "*-*-* 03:30:00; x"), ("calendar", "$(id)"), ("calendar", "*-*-*\\"),
    ("calendar", "*-*-*  03:30:00"), ("calendar", "%H"),
    ("description", "ends in a backslash\\"), ("description", "50%"), ("description", "two\nlines"),
    ("name", "../evil"), ("name", "-rf"),
])
def test_schedule_values_are_refused(tmp_path, field, value):
    what = {"script_path": "script path", "log_path": "log path", "name": "unit name"}.get(field, field)
    with pytest.raises(ValueError, match=re.escape(repr(value)) if field == "name" else what):
        scripts.schedule_job(**{**_job_args(tmp_path), field: value}, install=True)


def test_the_schedules_config_makes_are_accepted(tmp_path):
    from components.config.schema import BackupConfig

    for schedule in ("30 3 * * *", "@weekly", "@hourly", "0 2 * * 1-5", "15 */6 * * *", "0 4 1,15 * *",
                     "0 3 * jan-mar sun"):
        b = BackupConfig(host="h", target="/mnt/x/backups", schedule=schedule)
        scripts.schedule_job(**{**_job_args(tmp_path), "cron": b.schedule, "calendar": b.on_calendar}, install=True)


def _argv_job(argv_file: Path) -> str:
    """A job that records how it was started: $0 (the script path bash was given) and its arguments."""
    return f"#!/usr/bin/env bash\nprintf '%s\\n' \"$0\" \"$#\" \"$@\" > {scripts.q(str(argv_file))}\n"


def _cron_command(line: str) -> str:
    """What cron hands to /bin/sh: everything after the five time fields (dcron: no user column)."""
    fields = line.split(" ", 5)
    assert len(fields) == 6, line
    return fields[5]


def test_the_crontab_line_runs_exactly_the_job(tmp_path):
    """Installed on an Unraid host, the cron file's line, run the way cron runs it (/bin/sh -c), starts bash
    with the job's script as its only argument and sends the output to the log, nowhere else."""
    root = tmp_path / "unraid"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "unraid-version").write_text('version="7.0.0"\n')
    (root / "usr" / "local" / "sbin").mkdir(parents=True)
    (root / "usr" / "local" / "sbin" / "update_cron").write_text("#!/bin/sh\n")
    (root / "usr" / "local" / "sbin" / "update_cron").chmod(0o755)
    args = {**_job_args(tmp_path), "script_path": f"{tmp_path}/app+data/@jobs/octollm-backup-s.v1.sh",
            "log_path": f"{tmp_path}/app+data/@jobs/octollm-backup-s.v1.log"}
    argv = tmp_path / "argv"
    out = subprocess.run(["bash", "-c", scripts.schedule_job(**args, install=True)], input=_argv_job(argv),
                         capture_output=True, text=True, env={**_env(tmp_path), "OCTOLLM_SYSTEM_ROOT": str(root)})
    assert out.returncode == 0, out.stderr
    lines = (root / "boot" / "config" / "plugins" / "dynamix" / "octollm-backup-s.cron").read_text().splitlines()
    assert lines[0].startswith("# backups of stack s")
    assert len(lines) == 2 and lines[1].startswith("30 3 * * * ")
    subprocess.run(["/bin/sh", "-c", _cron_command(lines[1])], cwd=tmp_path, check=True, env={"PATH": "/usr/bin:/bin"})
    assert argv.read_text().splitlines() == [args["script_path"], "0"]
    assert Path(args["log_path"]).exists()


def test_the_crontab_quoting_holds_without_the_path_check(tmp_path):
    """The second wall: a path the builder's check would refuse still becomes one /bin/sh word each."""
    marker = tmp_path / "PWNED"
    for i, v in enumerate(payloads(marker)):
        d = tmp_path / f"job{i}" / v
        script, log = f"{d}/job.sh", f"{d}/job.log"
        try:
            line = scripts._cron_line("30 3 * * *", script, log)
        except ValueError:
            assert "%" in v or not v.isprintable(), v  # only what cron itself would split
            continue
        d.mkdir(parents=True)
        Path(script).write_text(_argv_job(tmp_path / "argv"))
        subprocess.run(["/bin/sh", "-c", _cron_command(line)], cwd=tmp_path, check=True,
                       env={"PATH": "/usr/bin:/bin"})
        assert (tmp_path / "argv").read_text().splitlines() == [script, "0"], v
        assert Path(log).exists() and not marker.exists(), v


# systemd's ExecStart= splitting treats these as syntax (quotes, escapes, variables, specifiers, ';')
SYSTEMD_SPECIAL = set("\"'\\$%;") | {" ", "\t"}


def test_the_unit_runs_exactly_the_job(tmp_path):
    """Installed on a systemd host, ExecStart= is bash and the job's path, two words none of which systemd
    reads as syntax; systemd-analyze verify accepts the service and the timer."""
    root = tmp_path / "systemd"
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    args = {**_job_args(tmp_path), "script_path": f"{tmp_path}/app+data/@jobs/octollm-backup-s.v1.sh"}
    out = subprocess.run(["bash", "-c", scripts.schedule_job(**args, install=True)], input="#!/usr/bin/env bash\n",
                         capture_output=True, text=True, env={**_env(tmp_path), "OCTOLLM_SYSTEM_ROOT": str(root)})
    assert out.returncode == 0, out.stderr
    units = (root / "etc" / "systemd" / "system") if os.geteuid() == 0 else tmp_path / "home" / ".config" / "systemd" / "user"
    service = (units / "octollm-backup-s.service").read_text()
    exec_start = [line.removeprefix("ExecStart=") for line in service.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1
    words = exec_start[0].split(" ")
    assert words == ["/bin/bash", args["script_path"]]
    assert not any(set(w) & SYSTEMD_SPECIAL for w in words)
    analyze = subprocess.run(["systemd-analyze", "--version"], capture_output=True)  # FileNotFoundError: not installed
    assert analyze.returncode == 0
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "octollm-backup-s.service"),
                          str(units / "octollm-backup-s.timer")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_exec_start_refuses_what_systemd_would_read_as_syntax(tmp_path):
    for v in payloads(tmp_path / "PWNED") + ["a b", "a$$b", "a%%n", 'a"b']:
        with pytest.raises(ValueError, match="script path"):
            scripts._exec_start(f"/opt/jobs/{v}/job.sh")


# ------------------------------------------------------------------ the real program, with hostile secrets

# The token survives any quoting or escaping a script could apply to the secret around it
HOSTILE_SECRET = "x'$(touch PWNED)\"`;\\ $HOME Tok3n9q7%s"
PASSWORD_SECRETS = ("postgresPassword", "redisPassword", "qdrantApiKey", "grafanaAdminPassword", "openaiApiKey",
                    "anthropicApiKey", "workerRedisPassword", "registryPassword", "webuiSecretKey")
# Where a secret may be registered: a container's environment, a command's stdin (the scripts read it
# there), a Kubernetes Secret, a Docker provider's registry login. Never a script, an argument list or a label.
SECRET_HOMES = {"envs", "stdin", "environment", "data", "stringData", "registryAuth"}


def _strings(v, key: str = ""):
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _strings(x, key or k)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x, key)
    elif isinstance(v, str):
        yield key, v


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab", "gke"])
def test_program_scripts_never_hold_a_secret(run, stack):
    secrets = {k: HOSTILE_SECRET.replace("%s", k) for k in PASSWORD_SECRETS}
    tokens = [f"Tok3n9q7{k}" for k in secrets]
    r = run(stack, secrets=secrets)
    assert r.error is None, r.error
    commands = [x for x in r.registrations if x.type.startswith("command:")]
    checked = 0
    for x in commands:
        for key in ("create", "update", "delete"):
            script = x.inputs.get(key)
            if script:
                syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
                assert syntax.returncode == 0, (x.name, key, syntax.stderr)
                checked += 1
    assert checked >= len(commands)
    placed = 0
    for x in r.registrations:
        for top, value in x.inputs.items():
            for _, s in _strings(value):
                placed += sum(t in s for t in tokens)
                assert not any(t in s for t in tokens) or top in SECRET_HOMES, (x.type, x.name, top)
    # ...and, wherever it is, inside Pulumi's secret wrapper: no plain registered string holds one
    leaked = [s for s in r.plain_strings() if any(t in s for t in tokens)]
    assert not leaked, leaked[:3]
    if stack in ("unraid", "homelab"):  # stacks whose data services or Grafana take these secrets
        assert placed > 0


# ------------------------------------------------------------------ health checks

def test_a_health_check_path_is_refused_unless_it_is_a_plain_http_path():
    from components.platforms.workload import http_health

    hostile = ["/" + v for v in payloads(Path("/tmp/PWNED")) if v not in ("-rf", "--help")]  # those two are paths
    for v in hostile + ["health", "/a b", "/a%n", "/a'b", "/a\\b", "/a$HOME", ""]:
        with pytest.raises(ValueError, match="health check path"):
            http_health(8080, v)
    with pytest.raises(ValueError, match="health check port"):
        http_health(70000, "/health")


@pytest.mark.parametrize("tool", ["bash", "python", "curl", "wget"])
def test_a_health_check_requests_exactly_its_path(tool):
    """Each form of the check, run against a loopback server, sends the path it was given."""
    import http.server
    import shutil
    import threading

    from components.platforms.workload import http_health

    if shutil.which({"bash": "bash", "python": "python3"}.get(tool, tool)) is None:
        pytest.skip(f"{tool} is not installed here")
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    path = "/-/ready?probe=1&x=a+b~c"
    test = http_health(server.server_address[1], path, tool=tool).test
    assert test[0] == "CMD"
    out = subprocess.run(list(test[1:]), capture_output=True, text=True, timeout=30)
    server.server_close()
    assert out.returncode == 0, out.stderr
    assert seen == [path]
