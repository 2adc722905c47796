"""Stand-in images on a loopback registry, for running the real program without Docker Hub.

`Registry` runs the distribution registry (Debian package docker-registry) on 127.0.0.1 with its
storage in a scratch directory. `build_standins` makes one rootfs of busybox (busybox-static), bash
(bash-static, for the health checks that use bash's /dev/tcp) and the scripts under rootfs/ here,
imports it once per image with that image's role, pushes it as 127.0.0.1:<port>/<repository>:<tag>
and removes the local tag, so the docker provider's RemoteImage really pulls it from the registry.

The stand-ins answer exactly what the program asks of each service: the health checks' HTTP paths
(static files served by busybox httpd), `ollama list/show/pull`, `pg_isready`, `psql`, `redis-cli
ping`, `curl`, `grafana cli`, and they stop at once on their stop signal.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOTFS = HERE / "rootfs"

# catalog.IMAGES key -> (role, ports the stand-in listens on when the role does not say).
ROLES: dict[str, tuple[str, str]] = {
    "ollama": ("ollama", ""),  # OLLAMA_HOST
    "postgres": ("postgres", "5432"),
    "redis": ("redis", "6379"),
    "qdrant": ("qdrant", "6333,6334"),
    "prometheus": ("prometheus", "9090"),
    "grafana": ("grafana", "3000"),
    "loki": ("loki", "3100"),
    "alloy": ("alloy", "12345"),
    "node-exporter": ("node-exporter", "9100"),
    "cadvisor": ("cadvisor", "8080"),
    "redis-exporter": ("redis-exporter", "9121"),
    "postgres-exporter": ("postgres-exporter", "9187"),
    "blackbox-exporter": ("blackbox-exporter", "9115"),
}
OCTOLLM_ROLE = ("octollm", "")  # PORT


class Unavailable(Exception):
    """A tool the stand-ins need is missing; the message says which Debian package has it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stable_ports(n: int, low: int = 20000, high: int = 32000) -> list[int]:
    """`n` ports free on 127.0.0.1 now, below Linux's ephemeral range (32768-60999), so that no client
    connection takes one between this choice and the `pulumi up` whose preflight checks them."""
    import random

    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        port = rng.randrange(low, high)
        if port in out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        out.append(port)
    return sorted(out)


def _run(*cmd: str, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), input=input, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({r.returncode}): "
                           f"{(r.stderr or r.stdout).decode(errors='replace')[-800:]}")
    return r


class Registry:
    """The distribution registry on 127.0.0.1:<port>; the daemon trusts 127.0.0.0/8 as insecure."""

    BINARY = "/usr/bin/docker-registry"

    def __init__(self, workdir: Path, port: int | None = None):
        self.dir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Registry":
        binary = shutil.which("docker-registry") or self.BINARY
        if not Path(binary).exists():
            raise Unavailable("the distribution registry is not installed (Debian package docker-registry)")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "storage").mkdir(exist_ok=True)
        conf = self.dir / "config.yml"
        conf.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {self.dir / 'storage'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
""")
        log = (self.dir / "registry.log").open("w")
        self.proc = subprocess.Popen([binary, "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"docker-registry exited: {(self.dir / 'registry.log').read_text()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        raise Unavailable("docker-registry did not listen within 20s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def _busybox() -> Path:
    p = shutil.which("busybox")
    if p is None:
        raise Unavailable("busybox is not installed (Debian package busybox-static)")
    return Path(p)


def _static_bash() -> Path:
    for p in ("/bin/bash-static", "/usr/bin/bash-static"):
        if Path(p).exists():
            return Path(p)
    raise Unavailable("a static bash is not installed (Debian package bash-static): the program's health "
                      "checks for Ollama and Qdrant run `bash -c` with /dev/tcp, which busybox sh lacks")


def rootfs_tar() -> bytes:
    """The stand-in rootfs as a tar: /bin/busybox and its applets, /bin/bash, the scripts in rootfs/."""
    busybox, bash = _busybox(), _static_bash()
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        seen: set[str] = set()

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name in seen:
                return
            seen.add(name)
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "root", "var", "var/run", "usr", "usr/local", "usr/local/bin", "models", "data"):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        add_file("bin/bash", bash.read_bytes(), 0o755)
        for a in sorted(set(applets) - {"busybox", "bash"}):
            if "/" in a or a in ("[", "[["):
                continue
            info = tarfile.TarInfo(f"bin/{a}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        for path in sorted(ROOTFS.rglob("*")):
            rel = path.relative_to(ROOTFS).as_posix()
            if path.is_dir():
                add_dir(rel)
            else:
                add_file(rel, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
    return buf.getvalue()


def standin_ref(registry: str, ref: str) -> str:
    """ollama/ollama:0.12.6 -> 127.0.0.1:P/ollama/ollama:0.12.6; a registry host in `ref` is dropped."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        ref = rest
    return f"{registry}/{ref}"


@dataclass(frozen=True)
class Image:
    ref: str  # as pushed: 127.0.0.1:<port>/<repository>:<tag>
    role: str
    ports: str = ""  # comma-separated; empty: the role says (OLLAMA_HOST, PORT)
    variant: str = "1"  # a different variant is a different image (ID) under another tag


def push(images: list[Image], tar: bytes | None = None) -> list[str]:
    """Import each image from the one rootfs, push it, and drop the local tag. Returns the refs."""
    tar = tar if tar is not None else rootfs_tar()
    done = []
    for im in images:
        changes = [
            "ENV PATH=/usr/local/bin:/bin",
            f"ENV STANDIN_ROLE={im.role}",
            f"ENV STANDIN_VARIANT={im.variant}",
            'ENTRYPOINT ["/standin/entrypoint"]',
            "WORKDIR /",
        ]
        if im.ports:
            changes.append(f"ENV STANDIN_PORTS={im.ports}")
        args = ["docker", "import"]
        for c in changes:
            args += ["--change", c]
        _run(*args, "-", im.ref, input=tar)
        _run("docker", "push", im.ref, timeout=300)
        _run("docker", "rmi", im.ref)
        done.append(im.ref)
    return done
