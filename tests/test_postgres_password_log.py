"""A rotated PostgreSQL password never reaches the server log: neither the Docker step
(components/host_scripts/postgres_set_password.sh) nor the Kubernetes postStart hook
(kubernetes.postgres_password_on_start) lets it, against a real PostgreSQL that logs everything it can.

psql interpolates the password into the ALTER statement it sends, so the server sees it in plain text;
only the session's logging settings keep it out of the log. The server here logs every statement, every
duration, every sampled statement and transaction, and the statement of every error, and the step's
user is a superuser, as POSTGRES_USER is in the official image. A guard test shows the same server
logging a password an ALTER sends without those settings.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components import host_scripts as scripts
from components.platforms import kubernetes as kp
from loopback_postgres import pg_bin, start_cluster

# What makes the server log a statement's text, each at its most talkative.
LOG_EVERYTHING = {"log_statement": "all", "log_min_duration_statement": "0", "log_min_duration_sample": "0",
                  "log_statement_sample_rate": "1", "log_transaction_sample_rate": "1",
                  "log_min_error_statement": "debug5", "log_min_messages": "debug1"}


@pytest.fixture
def pg():
    base = Path(tempfile.mkdtemp(prefix="octollm-pglog-"))
    base.chmod(0o755)
    try:
        cluster = start_cluster(base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def sql(statement: str) -> None:
        subprocess.run(cluster.psql("-q", "-c", statement), check=True, capture_output=True, text=True)

    try:
        sql("CREATE ROLE octollm LOGIN SUPERUSER PASSWORD 'old-pw-1'")
        sql("CREATE DATABASE octollm OWNER octollm")
        for key, value in LOG_EVERYTHING.items():
            sql(f"ALTER SYSTEM SET {key} = '{value}'")
        sql("SELECT pg_reload_conf()")
        cluster.log = cluster.data / "log"
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _fake_docker(bin_dir: Path, cluster) -> Path:
    """`docker exec [-i] [-e NAME]… CONTAINER CMD…` runs CMD here against the cluster's socket, with only
    the variables -e names (the Engine API passes them as the container's environment)."""
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
[ "$1" = exec ] || exit 2
shift
keep=(PATH PGHOST PGPORT)
export PATH=/usr/bin:/bin PGHOST={cluster.sock} PGPORT={cluster.port}
while [ $# -gt 0 ]; do
  case "$1" in
    -i) shift ;;
    -e) keep+=("$2"); shift 2 ;;
    *) break ;;
  esac
done
shift
for name in $(compgen -e); do
  case " ${{keep[*]}} " in *" $name "*) ;; *) unset "$name" ;; esac
done
exec "$@"
""")
    docker.chmod(0o755)
    return bin_dir


def _logs_in(cluster, password: str, user: str = "octollm") -> bool:
    return subprocess.run([pg_bin("psql"), "-X", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", user,
                           "-d", "octollm", "-w", "-tAc", "SELECT 1"], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PGPASSWORD": password}).returncode == 0


def _server_log(cluster) -> str:
    return cluster.log.read_text(errors="replace")


def test_the_docker_step_keeps_the_password_out_of_the_server_log(pg, tmp_path):
    password = f"Docker-Rot4ted-{secrets.token_hex(8)}"
    bin_dir = _fake_docker(tmp_path / "bin", pg)
    out = subprocess.run(["bash", "-c", scripts.postgres_set_password("octollm-postgres", "octollm", "octollm")],
                         input=password + "\n", capture_output=True, text=True, timeout=120,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert _logs_in(pg, password) and not _logs_in(pg, "old-pw-1")
    log = _server_log(pg)
    # statements are logged, this session's too, up to the moment it turned logging off
    assert "statement: SET log_statement = 'none';" in log
    assert password not in log and password not in out.stdout + out.stderr


def test_the_kubernetes_hook_keeps_the_password_out_of_the_server_log(pg):
    password = f"Kube-Rot4ted-{secrets.token_hex(8)}"
    env = {"PATH": "/usr/bin:/bin", "PGHOST": str(pg.sock), "PGPORT": str(pg.port), "POSTGRES_USER": "octollm",
           "POSTGRES_DB": "octollm", "POSTGRES_PASSWORD": password}
    out = subprocess.run(["sh", "-c", kp.postgres_password_on_start(wait_seconds=60)], capture_output=True,
                         text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stderr
    assert _logs_in(pg, password)
    log = _server_log(pg)
    assert "statement: SET log_statement = 'none';" in log
    assert password not in log and password not in out.stdout + out.stderr


def test_a_failing_alter_logs_no_password_either(pg, tmp_path):
    """The statement of an error is logged at log_min_error_statement: an ALTER that fails must not show."""
    password = f"Fails-{secrets.token_hex(8)}"
    bin_dir = _fake_docker(tmp_path / "bin", pg)
    script = scripts.postgres_set_password("octollm-postgres", "octollm", "octollm").replace(
        'ALTER USER :\\"user\\"', 'ALTER USER :\\"user\\" NOSUCHOPTION')  # refused by the parser
    assert script != scripts.postgres_set_password("octollm-postgres", "octollm", "octollm")
    out = subprocess.run(["bash", "-c", script], input=password + "\n", capture_output=True, text=True,
                         timeout=120, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert out.returncode != 0
    log = _server_log(pg)
    assert 'ERROR:  unrecognized role option "nosuchoption"' in log  # the error is logged...
    assert password not in log  # ...without its statement


def test_without_a_superuser_the_step_stops_before_sending_the_password(pg, tmp_path):
    """Logging cannot be turned off by an ordinary role: the step fails rather than log the password."""
    subprocess.run(pg.psql("-q", "-c", "CREATE ROLE plain LOGIN PASSWORD 'plain-old'"), check=True, capture_output=True)
    password = f"Plain-{secrets.token_hex(8)}"
    bin_dir = _fake_docker(tmp_path / "bin", pg)
    out = subprocess.run(["bash", "-c", scripts.postgres_set_password("octollm-postgres", "plain", "octollm")],
                         input=password + "\n", capture_output=True, text=True, timeout=120,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert out.returncode != 0 and 'permission denied to set parameter "log_statement"' in out.stderr
    assert "password applied" not in out.stdout
    assert password not in _server_log(pg)
    assert _logs_in(pg, "plain-old", "plain") and not _logs_in(pg, password, "plain")


def test_the_server_does_log_a_password_sent_without_those_settings(pg):
    """The guard on the guards: this server's log shows an ALTER's password unless the session stops it."""
    password = f"Unguarded-{secrets.token_hex(8)}"
    subprocess.run(pg.psql("-q", "-d", "octollm", "-c", f"ALTER ROLE octollm PASSWORD '{password}'"),
                   check=True, capture_output=True)
    assert password in _server_log(pg)
