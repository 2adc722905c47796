"""A throwaway PostgreSQL cluster on 127.0.0.1, set up as the official image sets it up.

The socket trusts its users, TCP asks for the password (scram-sha-256); only loopback listens. The
server runs as the postgres user, so its directories live under a world-searchable scratch directory
(pytest's own temporary directories are private to root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loopback import free_port
from test_real_host import unavailable

AS_POSTGRES = ["runuser", "-u", "postgres", "--"]


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        unavailable("PostgreSQL is not installed (Debian package postgresql)")
    return found[-1]


@dataclass
class Cluster:
    data: Path
    sock: Path
    port: int

    def psql(self, *args: str) -> list[str]:
        """psql as the postgres superuser over the trusted socket."""
        return [*AS_POSTGRES, pg_bin("psql"), "-h", str(self.sock), "-p", str(self.port), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1", *args]

    def stop(self) -> None:
        subprocess.run([*AS_POSTGRES, pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True)


def start_cluster(base: Path) -> Cluster:
    """initdb and start a cluster in base/pg with its socket in base/sock; refuses (skips) without root."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        unavailable("the PostgreSQL test needs root to run the server as the postgres user")
    try:
        subprocess.run(["id", "postgres"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        unavailable("no postgres user (Debian package postgresql creates it)")
    data, sock = base / "pg", base / "sock"
    for p in (data, sock):
        p.mkdir()
        shutil.chown(p, "postgres")
    subprocess.run([*AS_POSTGRES, pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust"],
                   check=True, capture_output=True)
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    port = free_port()
    subprocess.run([*AS_POSTGRES, pg_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {sock}", "start"], check=True, capture_output=True)
    return Cluster(data, sock, port)
