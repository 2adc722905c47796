"""No secret on a command line: the password step runs against a real PostgreSQL while every
process's /proc/<pid>/cmdline is sampled, and the password is found in none of them.

PostgreSQL 15 (Debian `postgresql`) runs as a throwaway cluster listening on a unix socket only.
`docker exec` is stood in for by a script that runs the command here with the environment docker
would pass (`-e NAME` copies NAME from the caller, as the Engine API does).
"""

from __future__ import annotations

import glob
import secrets
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from components import host_scripts as scripts
from loopback_postgres import start_cluster

# Unique per run: another run of this suite on the machine must not show up in this one's sampler.
PASSWORD = f"Rot4ted-S3cret-{secrets.token_hex(8)}"
OLD = "old-pw-1"


@pytest.fixture
def postgres():
    base = Path(tempfile.mkdtemp(prefix="octollm-pg-"))
    base.chmod(0o755)
    try:
        pg = start_cluster(base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    # a superuser, as POSTGRES_USER is in the official image (the step turns statement logging off)
    subprocess.run(pg.psql("-q", "-c", f"CREATE ROLE octollm LOGIN SUPERUSER PASSWORD '{OLD}'"), check=True,
                   capture_output=True)
    subprocess.run(pg.psql("-q", "-c", "CREATE DATABASE octollm OWNER octollm"), check=True, capture_output=True)
    try:
        yield pg.sock, pg.port
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _fake_docker(bin_dir: Path, sock: Path, port: int) -> None:
    """`docker exec [-i] [-e NAME]… CONTAINER CMD…` runs CMD here, as the container's superuser
    reaches its own server (the official image trusts local connections)."""
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"""#!/usr/bin/env bash
set -euo pipefail
[ "$1" = exec ] || exit 2
shift
# Only the variables named with -e reach the command, as through the Engine API, and by the
# environment, never as arguments (an `env NAME=value` here would itself put them in an argv).
keep=(PATH PGHOST PGPORT)
export PATH=/usr/bin:/bin PGHOST={sock} PGPORT={port}
while [ $# -gt 0 ]; do
  case "$1" in
    -i) shift ;;
    -e) keep+=("$2"); shift 2 ;;
    *) break ;;
  esac
done
shift  # the container
for name in $(compgen -e); do
  case " ${{keep[*]}} " in *" $name "*) ;; *) unset "$name" ;; esac
done
exec "$@"
""")
    (bin_dir / "docker").chmod(0o755)


def _connects(port: int, password: str) -> bool:
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": password}
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "octollm", "-d", "octollm",
                           "-w", "-tAc", "select 1"],
                          env=env, capture_output=True, text=True).returncode == 0


class CmdlineSampler(threading.Thread):
    """Reads every process's argv while the step runs; records any that holds the needle."""

    def __init__(self, needle: str):
        super().__init__(daemon=True)
        self.needle, self.seen, self.samples, self.done = needle.encode(), [], 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            for path in glob.glob("/proc/[0-9]*/cmdline"):
                try:
                    raw = Path(path).read_bytes()
                except OSError:
                    continue
                if self.needle in raw:
                    self.seen.append(raw.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1


def test_password_sync_never_puts_the_password_on_a_command_line(postgres, tmp_path):
    sock, port = postgres
    bin_dir = tmp_path / "bin"
    _fake_docker(bin_dir, sock, port)
    assert _connects(port, OLD) and not _connects(port, PASSWORD)
    script = scripts.postgres_set_password("octollm-postgres", "octollm", "octollm")
    sampler = CmdlineSampler(PASSWORD)
    sampler.start()
    try:
        out = subprocess.run(["bash", "-c", script], input=PASSWORD + "\n", capture_output=True, text=True,
                             env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=120)
    finally:
        sampler.done.set()
        sampler.join()
    assert out.returncode == 0, out.stderr
    assert "password applied" in out.stdout and PASSWORD not in out.stdout + out.stderr
    assert _connects(port, PASSWORD) and not _connects(port, OLD)
    assert sampler.samples > 0 and sampler.seen == []


def test_the_sampler_sees_a_secret_that_is_on_a_command_line():
    """The guard on the guard: an argv that holds the needle is caught."""
    sampler = CmdlineSampler(PASSWORD)
    sampler.start()
    try:
        subprocess.run(["sh", "-c", f"sleep 0.3; : {PASSWORD}"], check=True)
    finally:
        sampler.done.set()
        sampler.join()
    assert sampler.seen
