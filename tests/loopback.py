"""Loopback servers for the real-host tests and benchmarks: an sshd on 127.0.0.1 with generated keys.

It runs with OpenSSH's default MaxStartups/MaxSessions (nothing set here unless `extra_config` says so),
so what the tests and benchmarks measure is what a stock host allows.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sshd:
    port: int
    dir: Path
    host_key: str
    other_key: str
    identity: str
    user: str
    log: Path
    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_binary() -> str | None:
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def start_sshd(d: Path, extra_config: str = "", authorized_keys: Path | None = None) -> Sshd:
    """An sshd on 127.0.0.1 with OpenSSH's default MaxStartups/MaxSessions (nothing set here).

    Its log goes to a file (sshd -e logs a line per dropped connection; a pipe nobody reads
    would fill up and stall it). Raises RuntimeError when it cannot start.
    """
    sshd_bin = sshd_binary()
    if sshd_bin is None or shutil.which("ssh") is None:
        raise RuntimeError("openssh-server / openssh-client are not installed")
    d.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key", "other_host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {authorized_keys or d / "authorized_keys"}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
{extra_config}""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory (root sshd only)
    log = d / "sshd.log"
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-500:]}")
        time.sleep(0.1)
    else:
        proc.terminate()
        raise RuntimeError("sshd did not listen within 5s")

    def key(name: str) -> str:
        return " ".join((d / f"{name}.pub").read_text().split()[:2])

    return Sshd(port=port, dir=d, host_key=key("host_key"), other_key=key("other_host_key"),
                identity=str(d / "client_key"), user=getpass.getuser(), log=log, proc=proc)


def import_busybox_image(ref: str, root: Path, files: dict[str, str] | None = None,
                         changes: tuple[str, ...] = ()) -> None:
    """A local image without a registry: /bin/busybox plus `files` (path -> executable text),
    `docker import`ed with Dockerfile `changes` (e.g. 'ENTRYPOINT ["/stand-in"]'). Raises
    FileNotFoundError when busybox is not installed (Debian package busybox-static)."""
    src = shutil.which("busybox")
    if src is None:
        raise FileNotFoundError("busybox is not installed (Debian package busybox-static)")
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(src, root / "bin" / "busybox")
    for rel, text in (files or {}).items():
        (root / rel).write_text(text)
    for rel in ("bin/busybox", *(files or {})):
        (root / rel).chmod(0o755)
    top = sorted({"bin", *(rel.split("/", 1)[0] for rel in files or {})})
    tar = subprocess.run(["tar", "-C", str(root), "-cf", "-", *top], capture_output=True, check=True).stdout
    cmd = ["docker", "import", *(a for c in changes for a in ("-c", c)), "-", ref]
    subprocess.run(cmd, input=tar, capture_output=True, check=True)
