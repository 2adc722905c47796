"""The preview credential (tools/host/preview-credential.sh) on a real sshd and dockerd, loopback only.

The module starts Debian's haproxy with exactly the config the script writes (`--print-config`),
listening on a unix socket in a temporary directory, and an sshd on 127.0.0.1 whose authorized_keys
holds a normal (write) key and, added by the script, the preview key's forced-command line. Through
the preview key, over the same `ssh … docker system dial-stdio` transport the docker provider uses,
reads answer and every write, file read, attach and exec gets the proxy's 403 while the engine stays
as it was. The script's container mode runs with a stand-in image built from the same haproxy binary
(no registry here). Needs the Debian packages haproxy, openssh-server, openssh-client, docker.io and
busybox-static; with OCTOLLM_REQUIRE_REAL_HOST=1 anything missing is a failure, not a skip.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml

from tooling import doctor
from components.config.schema import load_stack_config
from components.platforms.docker_host import docker_dial_command, docker_ssh_opts
from loopback import start_sshd
from test_real_host import busybox_image, docker, dockerd, unavailable  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "host" / "preview-credential.sh"
SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")
REFUSAL = b"refused by the octollm read-only Docker proxy"
API = "/v1.41"


def script(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], input=input, capture_output=True, text=True, timeout=120)


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def short_tmpdir() -> Path:
    """A root-owned 0700 directory with a short path: unix socket paths hold 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="octro-", dir="/tmp"))


def unix_http(path: str, raw: bytes, timeout: float = 10) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request(method: str, target: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: docker", "Connection: close", *headers]
    if body or method in ("POST", "PUT"):
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def status(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert m, f"no HTTP response: {response[:200]!r}"
    return int(m.group(1))


def body_of(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    if not re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return body
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2:]
    return out


def wait_for_ping(sock: Path, proc: subprocess.Popen | None, log: Path) -> None:
    for _ in range(100):
        if proc is not None and proc.poll() is not None:
            unavailable(f"haproxy exited: {log.read_text()[-800:]}")
        try:
            if status(unix_http(str(sock), request("GET", "/_ping"), timeout=2)) == 200:
                return
        except (OSError, AssertionError):
            pass
        time.sleep(0.1)
    unavailable(f"haproxy did not answer on {sock}: {log.read_text()[-800:] if log.exists() else ''}")


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root_user():
    if os.geteuid() != 0:
        unavailable("the preview-credential tests run the script, which needs root")
    return getpass.getuser()


@pytest.fixture(scope="module")
def proxy(dockerd, root_user):
    """Debian's haproxy with the script's own config (--print-config), on a socket in a tmp dir."""
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if haproxy is None:
        unavailable("haproxy is not installed (Debian package haproxy)")
    d = short_tmpdir()
    out = script("--print-config", str(d / "cfg"), "--socket-dir", str(d / "sock"), "--user", root_user)
    assert out.returncode == 0, out.stderr
    (d / "sock").mkdir(mode=0o755)
    log = d / "haproxy.log"
    proc = subprocess.Popen([haproxy, "-db", "-f", str(d / "cfg" / "haproxy.cfg")],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    sock = d / "sock" / "docker.sock"
    try:
        wait_for_ping(sock, proc, log)
        yield {"dir": d, "socket": sock, "config": d / "cfg" / "haproxy.cfg", "log": log, "haproxy": haproxy}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def host(proxy, root_user, tmp_path_factory):
    """An sshd on 127.0.0.1 whose authorized_keys has the write key and the script's preview line."""
    d = tmp_path_factory.mktemp("preview-sshd")
    write_key, preview_key = keygen(d / "write_key"), keygen(d / "preview_key")
    (d / "home" / ".ssh").mkdir(parents=True)
    authorized = d / "home" / ".ssh" / "authorized_keys"
    authorized.write_text((d / "write_key.pub").read_text())
    out = script("--no-proxy-container", "--user", root_user, "--socket-dir", str(proxy["dir"] / "sock"),
                 "--authorized-keys", str(authorized), "--key", str(d / "preview_key.pub"))
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        # Forwarding on, so the test can show the preview key's `restrict` refuses it.
        server = start_sshd(d, authorized_keys=authorized,
                            extra_config="AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\n")
    except RuntimeError as exc:
        unavailable(str(exc))
    port, host_key = server.port, server.host_key

    def raw_config(identity: Path) -> dict:
        return {"platform": "docker", "hosts": {"box": {
            "kind": "ssh", "address": "127.0.0.1", "publishAddress": "127.0.0.1",
            "ssh": {"user": root_user, "port": port, "identityFile": str(identity), "hostKey": host_key},
            "cpuThreads": 2, "memoryGb": 4, "appdataRoot": str(d / "appdata")}}}

    def host_config(identity: Path):
        cfg, _ = load_stack_config(raw_config(identity))
        return cfg.hosts["box"]

    yield {"dir": d, "port": port, "user": root_user, "authorized": authorized, "host_key": host_key,
           "socket": proxy["socket"],
           "write": host_config(write_key), "preview": host_config(preview_key),
           "write_key": write_key, "preview_key": preview_key, "raw_config": raw_config}
    server.stop()


def dial(hostcfg, raw: bytes) -> bytes:
    """One HTTP exchange through `ssh … docker system dial-stdio` with the docker provider's options."""
    out = subprocess.run(docker_dial_command("box", hostcfg), input=raw, capture_output=True, timeout=60)
    return out.stdout or out.stderr


def ssh(hostcfg, *remote: str, opts: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
    """ssh with the provider's options, without connection sharing (every call its own login)."""
    cmd = ["ssh", *docker_ssh_opts("box", hostcfg, share=False), *opts, "-l", hostcfg.ssh.user,
           "-p", str(hostcfg.ssh.port), "--", "127.0.0.1", *remote]
    return subprocess.run(cmd, capture_output=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def probes(dockerd, busybox_image):
    """What the preview key must not be able to touch: a running and a created (never started) container
    and an image tag, all this module's own, so that even a broken proxy changes nothing of anyone else's."""
    tag = uuid.uuid4().hex[:8]
    label = f"org.octollm.preview-probe={tag}"
    running, created = f"octollm-preview-running-{tag}", f"octollm-preview-created-{tag}"
    image = f"octollm-test/preview-probe-{tag}:1"
    new_name = f"octollm-preview-must-not-exist-{tag}"
    docker("tag", busybox_image, image)
    docker("run", "-d", "--name", running, "--label", label, image, "/bin/busybox", "sleep", "3600")
    docker("create", "--name", created, "--label", label, image, "/bin/busybox", "sleep", "3600")
    ids = {n: docker("inspect", "--format", "{{.Id}}", n).stdout.strip() for n in (running, created)}
    prune = urllib.parse.quote(json.dumps({"label": [label]}))
    yield {"running": running, "created": created, "running_id": ids[running], "created_id": ids[created],
           "image": image, "new_name": new_name, "tag": tag, "prune_filter": prune}
    for n in (ids[running], ids[created], new_name):
        docker("rm", "-f", n, check=False)
    docker("volume", "rm", "-f", new_name, check=False)
    docker("network", "rm", new_name, check=False)
    for ref in (image, f"octollm-test/preview-retagged-{tag}:1"):
        docker("image", "rm", ref, check=False)


def engine_state(p: dict) -> tuple:
    """Everything a request of the preview key could change, by ID (a rename shows as a change too)."""
    fmt = ("{{.Name}} {{.State.Status}} {{.State.StartedAt}} {{.State.Pid}} {{.RestartCount}} "
           "{{.HostConfig.Memory}} {{json .ExecIDs}}")
    state = tuple(docker("inspect", "--format", fmt, p[n], check=False).stdout.strip()
                  for n in ("running_id", "created_id"))
    changes = docker("container", "diff", p["running_id"], check=False).stdout
    images = docker("images", "--no-trunc", "--filter", f"reference=octollm-test/preview-*-{p['tag']}",
                    "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    new = [docker("container", "ls", "-a", "-q", "--filter", f"name={p['new_name']}").stdout.strip(),
           *(docker(kind, "ls", "-q", "--filter", f"name={p['new_name']}").stdout.strip()
             for kind in ("volume", "network"))]
    return state, changes, images, new


# ---- the script itself ---------------------------------------------------------------------------

def test_script_is_shellcheck_clean():
    out = subprocess.run([SHELLCHECK, str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_help_names_every_option():
    out = script("--help")
    assert out.returncode == 0
    options = set(re.findall(r"^\s+(--[a-z-]+)\)", SCRIPT.read_text(), re.M))
    assert options >= {"--key", "--authorized-keys", "--no-proxy-container", "--print-config"}
    for opt in options:
        assert re.search(rf"^  {re.escape(opt)}\b", out.stdout, re.M), f"--help does not explain {opt}"
    assert "haproxy:3.0.5" in out.stdout and "restrict" in out.stdout


def test_printed_config_is_valid_haproxy(proxy):
    out = subprocess.run([proxy["haproxy"], "-c", "-f", str(proxy["config"])], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = proxy["config"].read_text()
    assert f"bind unix@{proxy['socket']} mode 600 uid 0 gid 0" in text
    assert "server engine unix@/var/run/docker.sock" in text


# ---- through the preview key: reads pass ------------------------------------------------------------

READS = [
    ("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", f"{API}/_ping"), ("GET", f"{API}/version"),
    ("GET", f"{API}/info"), ("GET", f"{API}/containers/json?all=1"), ("GET", "/containers/json"),
    ("GET", f"{API}/containers/{{running_id}}/json"), ("GET", f"{API}/containers/{{created}}/json"),
    ("GET", "/containers/{running}/json"), ("GET", f"{API}/containers/{{running}}/top"),
    ("GET", f"{API}/images/json"), ("GET", f"{API}/images/{{image}}/json"), ("GET", f"{API}/networks"),
    ("GET", f"{API}/volumes"),
]


@pytest.mark.parametrize("method,target", READS, ids=[f"{m} {t}" for m, t in READS])
def test_reads_pass_with_the_preview_key(host, probes, method, target):
    response = dial(host["preview"], request(method, target.format(**probes)))
    assert status(response) == 200, response[:300]
    if target.endswith("/containers/json?all=1"):
        names = {n.lstrip("/") for c in json.loads(body_of(response)) for n in c["Names"]}
        assert {probes["running"], probes["created"]} <= names


def test_doctor_api_check_passes_with_the_preview_key(host):
    ok, detail = doctor.check_api("box", host["preview"], timeout=30)
    assert ok and detail.startswith("ok (API 1."), detail


def test_doctor_tells_a_read_only_key_from_one_that_can_write(host, probes, tmp_path, capsys):
    """--api-only asks for a change the proxy refuses and an engine would have nothing to act on."""
    before = engine_state(probes)
    assert doctor.check_read_only("box", host["preview"], timeout=30) == (True, "yes")
    ok, detail = doctor.check_read_only("box", host["write"], timeout=30)
    assert ok is False and detail.startswith("NO: the Docker engine itself answered a POST (HTTP/1.0 404"), detail
    for key, want_rc, want in (("preview_key", 0, "read-only: yes"), ("write_key", 3, "read-only: NO")):
        stack = tmp_path / f"Pulumi.{key}.yaml"
        stack.write_text(yaml.safe_dump({"config": {f"octollm-infra:{k}": v
                                                    for k, v in host["raw_config"](host[key]).items()}}))
        rc = doctor.main(["--file", str(stack), "--api-only", "--timeout", "60"])
        out = capsys.readouterr().out
        assert rc == want_rc and want in out, out
    assert engine_state(probes) == before


# ---- through the preview key: everything else is refused, and nothing changes ----------------------

def one_file_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PLANT = one_file_tar("planted", b"x\n")  # PUT …/archive would write /planted into the container
CREATE = json.dumps({"Image": "{image}", "Cmd": ["/bin/busybox", "true"]}).encode()
EXEC = json.dumps({"Cmd": ["/bin/busybox", "touch", "/tmp/exec-ran"], "AttachStdout": True}).encode()
UPGRADE = ("Connection: Upgrade", "Upgrade: tcp")

REFUSED = [
    # writes, whatever they are
    ("POST", f"{API}/containers/create?name={{new_name}}", CREATE, ()),
    ("POST", "/containers/create?name={new_name}", CREATE, ()),
    ("POST", f"{API}/containers/{{created_id}}/start", b"", ()),
    ("POST", f"{API}/containers/{{running_id}}/exec", EXEC, ()),
    ("DELETE", f"{API}/containers/{{running_id}}?force=1", b"", ()),
    ("DELETE", f"{API}/containers/{{created}}", b"", ()),
    ("POST", f"{API}/containers/{{running_id}}/kill", b"", ()),
    ("POST", f"{API}/containers/{{running}}/stop?t=0", b"", ()),
    ("POST", f"{API}/containers/{{running}}/restart?t=0", b"", ()),
    ("POST", f"{API}/containers/{{running}}/pause", b"", ()),
    ("POST", f"{API}/containers/{{running}}/update", b'{"Memory": 8388608}', ()),
    ("POST", f"{API}/containers/{{running}}/rename?name={{new_name}}", b"", ()),
    ("PUT", f"{API}/containers/{{running_id}}/archive?path=/", PLANT, ()),
    ("POST", f"{API}/containers/prune?filters={{prune_filter}}", b"", ()),
    # a registry on a closed loopback port: even if passed, the engine would reach nothing else
    ("POST", f"{API}/images/create?fromImage=127.0.0.1:9/octollm-nothing&tag=1", b"", ()),
    ("POST", f"{API}/images/{{image}}/tag?repo=octollm-test/preview-retagged-{{tag}}&tag=1", b"", ()),
    ("DELETE", f"{API}/images/{{image}}?force=1", b"", ()),
    ("POST", f"{API}/build", b"", ()),
    ("POST", f"{API}/volumes/create", b'{"Name": "{new_name}"}', ()),
    ("POST", f"{API}/networks/create", b'{"Name": "{new_name}"}', ()),
    ("POST", f"{API}/session", b"", UPGRADE),
    ("POST", "/grpc", b"", ()),
    ("PATCH", f"{API}/containers/{{running}}/json", b"", ()),
    ("OPTIONS", f"{API}/_ping", b"", ()),
    # reads of file contents, logs and streams into containers
    ("GET", f"{API}/containers/{{running_id}}/archive?path=/", b"", ()),
    ("HEAD", f"{API}/containers/{{running_id}}/archive?path=/etc/passwd", b"", ()),
    ("GET", "/containers/{running}/archive?path=/", b"", ()),
    ("GET", f"{API}/containers/{{running}}/%61rchive?path=/", b"", ()),
    ("GET", f"{API}/containers/{{running}}/archive/?path=/", b"", ()),
    ("GET", f"{API}//containers/{{running}}/archive?path=/", b"", ()),
    ("GET", f"{API}/containers/{{running}}/./archive?path=/", b"", ()),
    ("GET", f"{API}/containers/{{running}}%00/archive?path=/", b"", ()),
    ("GET", f"http://docker{API}/containers/{{running}}/archive?path=/", b"", ()),
    ("GET", f"{API}/containers/{{running_id}}/export", b"", ()),
    ("GET", f"{API}/containers/{{running}}/logs?stdout=1&stderr=1", b"", ()),
    ("GET", f"{API}/containers/{{running}}/attach/ws?stream=1&stdin=1",
     b"", ("Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")),
    ("GET", f"{API}/containers/{{running}}/attach?stream=1", b"", ()),
    ("GET", f"{API}/exec/0123456789abcdef/json", b"", ()),
    ("GET", f"{API}/images/{{image}}/get", b"", ()),
    ("GET", f"{API}/images/get?names={{image}}", b"", ()),
    ("GET", f"{API}/swarm/unlockkey", b"", ()),
    ("GET", f"{API}/configs", b"", ()),
    ("GET", f"{API}/secrets/x", b"", ()),
    # any Upgrade, even on a read that would pass
    ("GET", "/_ping", b"", UPGRADE),
    ("GET", f"{API}/containers/json", b"", ("Connection: keep-alive, Upgrade", "Upgrade: h2c")),
]


@pytest.mark.parametrize("method,target,body,headers", REFUSED, ids=[f"{m} {t}" for m, t, _, _ in REFUSED])
def test_everything_else_is_refused_and_changes_nothing(host, probes, method, target, body, headers):
    before = engine_state(probes)
    if body is not PLANT:
        body = body.replace(b"{image}", probes["image"].encode()).replace(b"{new_name}", probes["new_name"].encode())
    response = dial(host["preview"], request(method, target.format(**probes), body, headers))
    assert engine_state(probes) == before, f"the engine changed; it answered {response[:300]!r}"
    assert status(response) == 403, response[:300]
    if method != "HEAD":
        assert REFUSAL in response, response[:300]


def test_docker_cli_over_ssh_with_the_preview_key(host, probes, tmp_path):
    """The real docker CLI (ssh:// connection helper): ps and inspect work, changes are refused."""
    cfg = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{host['port']} {host['host_key']}\n")
    cfg.write_text(f"""Host preview-box
  HostName 127.0.0.1
  Port {host['port']}
  User {host['user']}
  IdentityFile {host['preview_key']}
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking yes
  UserKnownHostsFile {known}
  GlobalKnownHostsFile /dev/null
""")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {cfg} \"$@\"\n")
    (bindir / "ssh").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "DOCKER_CONFIG": str(tmp_path / "docker")}
    env.pop("DOCKER_HOST", None)

    def cli(*args):
        return subprocess.run(["docker", "-H", "ssh://preview-box", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    before = engine_state(probes)
    ps = cli("ps", "-a", "--format", "{{.Names}}")
    assert ps.returncode == 0, ps.stderr
    assert {probes["running"], probes["created"]} <= set(ps.stdout.split())
    inspect = cli("inspect", "--format", "{{.State.Status}}", probes["running"])
    assert inspect.returncode == 0 and inspect.stdout.strip() == "running", inspect.stderr
    assert cli("images", "-q").returncode == 0
    for args in (["run", "--name", probes["new_name"], probes["image"], "/bin/busybox", "true"],
                 ["create", "--name", probes["new_name"], probes["image"]],
                 ["start", probes["created"]], ["exec", probes["running"], "/bin/busybox", "true"],
                 ["rm", "-f", probes["running"]], ["kill", probes["running"]], ["stop", probes["running"]],
                 ["cp", f"{probes['running']}:/etc", "-"], ["logs", probes["running"]],
                 ["export", probes["running"]], ["volume", "create", probes["new_name"]]):
        out = cli(*args)
        assert out.returncode != 0, f"docker {' '.join(args)} worked with the preview key"
        # `docker cp` asks HEAD …/archive first: a 403 to HEAD has no body, so the CLI names the status.
        assert REFUSAL.decode() in out.stderr or "Forbidden" in out.stderr, f"docker {' '.join(args)}: {out.stderr}"
    assert engine_state(probes) == before


# ---- the key can do nothing but the forced command -----------------------------------------------------

def test_preview_key_runs_the_forced_command_whatever_is_asked(host, tmp_path):
    marker = tmp_path / "ran"
    # ssh joins the remote words with spaces; sshd hands the line to the login shell, unless forced.
    for remote in ([f"sh -c 'touch {marker}'"], [f"touch {marker}"], ["bash", "-s"]):
        ssh(host["preview"], *remote, input=f"touch {marker}\n".encode())
        assert not marker.exists(), f"{remote} ran with the preview key"
    # The forced command is the proxy's dial-stdio: an HTTP request asked as "any command" reaches it.
    out = ssh(host["preview"], "id", input=request("GET", "/_ping"))
    assert status(out.stdout) == 200
    # No pty either.
    out = ssh(host["preview"], "true", opts=("-tt",), input=b"")
    assert b"PTY allocation request failed" in out.stderr


def test_preview_key_cannot_forward_to_the_engine_socket_or_ports(host, tmp_path):
    """restrict: no unix-socket forwarding to /var/run/docker.sock (which would bypass the proxy), no TCP."""
    banner = ssh(host["write"], opts=("-W", f"127.0.0.1:{host['port']}"), input=b"")
    assert banner.stdout.startswith(b"SSH-2.0-")  # forwarding works on this sshd, for the write key
    refused = ssh(host["preview"], opts=("-W", f"127.0.0.1:{host['port']}"), input=b"")
    assert not refused.stdout.startswith(b"SSH-2.0-")
    assert b"administratively prohibited" in refused.stderr

    def forwarded_ping(hostcfg) -> bytes:
        local = short_tmpdir() / "fwd.sock"
        cmd = ["ssh", *docker_ssh_opts("box", hostcfg, share=False), "-N", "-o", "ExitOnForwardFailure=yes",
               "-L", f"{local}:/var/run/docker.sock", "-l", hostcfg.ssh.user, "-p", str(hostcfg.ssh.port),
               "--", "127.0.0.1"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for _ in range(100):
                if local.exists() or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert local.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no socket"
            try:
                return unix_http(str(local), request("GET", "/_ping"), timeout=10)
            except OSError:
                return b""
        finally:
            # ssh can sit out SIGTERM while it tears down a refused channel; the result is already read.
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            shutil.rmtree(local.parent, ignore_errors=True)

    assert status(forwarded_ping(host["write"])) == 200
    assert forwarded_ping(host["preview"]) == b""


def test_write_key_is_unrestricted(host, tmp_path):
    marker = tmp_path / "ran"
    out = ssh(host["write"], f"sh -c 'touch {marker}'")
    assert out.returncode == 0 and marker.exists(), out.stderr
    # Its Engine API calls reach the engine itself: a POST gets the engine's own 404, not the proxy's 403.
    response = dial(host["write"], request("POST", f"{API}/containers/octollm-no-such-container/kill"))
    assert status(response) == 404 and REFUSAL not in response


# ---- authorized_keys: once, idempotent, refuses conflicts, validates inputs ------------------------------

def entry_lines(path: Path, key_file: Path) -> list[str]:
    blob = key_file.read_text().split()[1]
    return [l for l in path.read_text().splitlines() if blob in l]


def test_the_line_is_added_once(host):
    key_type, blob = host["preview_key"].with_suffix(".pub").read_text().split()[:2]
    expected = (f'command="{shutil.which("docker")} -H unix://{host["socket"]} system dial-stdio",'
                f'restrict {key_type} {blob} octollm-preview')
    assert entry_lines(host["authorized"], host["preview_key"].with_suffix(".pub")) == [expected]
    assert len(entry_lines(host["authorized"], host["write_key"].with_suffix(".pub"))) == 1


def test_running_the_script_twice_changes_nothing(proxy, host, root_user, tmp_path):
    ak = tmp_path / "home" / ".ssh" / "authorized_keys"
    ak.parent.mkdir(parents=True)
    ak.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKeyOthe other")  # no newline
    args = ["--no-proxy-container", "--user", root_user, "--socket-dir", str(proxy["dir"] / "sock"),
            "--authorized-keys", str(ak), "--key", str(host["preview_key"].with_suffix(".pub"))]
    first = script(*args)
    assert first.returncode == 0, first.stderr
    assert "added the preview key" in first.stdout and "POST is refused" in first.stdout
    after_first = ak.read_bytes()
    assert after_first.count(b"\n") == 2 and after_first.endswith(b" octollm-preview\n")
    second = script(*args)
    assert second.returncode == 0, second.stderr
    assert "unchanged" in second.stdout
    assert ak.read_bytes() == after_first
    # The key as a string, and from stdin, is the same key: still once.
    key_text = host["preview_key"].with_suffix(".pub").read_text()
    assert script(*args[:-1], key_text.strip()).returncode == 0
    assert script(*args[:-1], "-", input=key_text).returncode == 0
    assert ak.read_bytes() == after_first
    assert len(entry_lines(ak, host["preview_key"].with_suffix(".pub"))) == 1


def test_a_key_already_listed_otherwise_is_refused(proxy, host, root_user, tmp_path):
    """Giving the deploy key (or a preview key that is also listed unrestricted) changes nothing."""
    ak = tmp_path / "authorized_keys"
    ak.write_text(host["write_key"].with_suffix(".pub").read_text())
    before = ak.read_bytes()
    out = script("--no-proxy-container", "--user", root_user, "--socket-dir", str(proxy["dir"] / "sock"),
                 "--authorized-keys", str(ak), "--key", str(host["write_key"].with_suffix(".pub")))
    assert out.returncode == 1 and "already lists this key on line(s) 1" in out.stderr
    assert ak.read_bytes() == before


@pytest.fixture(scope="module")
def good_key(tmp_path_factory):
    path = keygen(tmp_path_factory.mktemp("validate") / "key")
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])



@pytest.mark.parametrize("override,fragment", [
    ({"--key": 'command="sh" {key}'}, "neither a public key nor a readable file"),
    ({"--key": '{key}"'}, "not base64"),
    ({"--key": "{key}\"; touch /tmp/x"}, "not base64"),
    ({"--key": "TRUNCATED"}, "not base64"),
    ({"--key": "AAAAC4:{key}"}, "does not decode"),
    ({"--key": "{key}\n{key}"}, "exactly one public key"),
    ({"--key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "neither a public key"),
    ({"--key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP"}, "got type 'ssh-dss'"),
    ({"--key": "/nonexistent/key.pub"}, "neither a public key nor a readable file"),
    ({"--user": "root;id"}, "plain user name"),
    ({"--user": "octollm-no-such-user"}, "no such user"),
    ({"--socket-dir": "tmp/sock"}, "absolute path"),
    ({"--socket-dir": "/tmp/a b"}, "absolute path"),
    ({"--socket-dir": '/tmp/a"b'}, "absolute path"),
    ({"--socket-dir": "/tmp/../etc"}, "'..'"),
    ({"--socket-dir": "/tmp/" + "x" * 90}, "too long"),
    ({"--authorized-keys": "/tmp/$(id)"}, "absolute path"),
    ({"--docker-cli": "/usr/bin/docker;id"}, "absolute path"),
    ({"--image": "haproxy"}, "pinned"),
    ({"--image": "haproxy:latest"}, "latest"),
    ({"--image": "haproxy:3.0.5;id"}, "not an image reference"),
    ({"--name": "bad name"}, "not a container name"),
    ({"--bogus": None}, "unknown argument"),
])
def test_inputs_are_validated_before_anything_changes(root_user, good_key, tmp_path, override, fragment):
    ak = tmp_path / "authorized_keys"
    sockdir = tmp_path / "sock"
    if "--key" in override:
        value = override["--key"]
        if value.startswith("AAAAC4:"):  # the type's bytes in the base64 changed: decodes to another type
            value = good_key.replace("AAAAC3", "AAAAC4")
        elif value == "TRUNCATED":
            value = good_key[:40]
        override = {"--key": value.replace("{key}", good_key)}
    opts = {"--key": good_key, "--user": root_user, "--authorized-keys": str(ak), "--socket-dir": str(sockdir),
            "--name": f"octollm-preview-validate-{uuid.uuid4().hex[:8]}", **override}
    args = [a for k, v in opts.items() for a in ((k,) if v is None else (k, v))]
    before = docker("ps", "-a", "--filter", f"name={opts['--name']}", "-q", check=False).stdout \
        if " " not in opts["--name"] else ""
    out = script(*args)
    assert out.returncode == 1, out.stdout
    assert fragment in out.stderr, out.stderr
    assert not ak.exists() and not sockdir.exists()
    if " " not in opts["--name"]:
        assert docker("ps", "-a", "--filter", f"name={opts['--name']}", "-q", check=False).stdout == before


# ---- the proxy container (stand-in image built from the same haproxy binary) ------------------------------

@pytest.fixture(scope="module")
def standin_image(proxy, tmp_path_factory):
    """An image laid out like the official one (haproxy on PATH, config in /usr/local/etc/haproxy)."""
    ref = "octollm-test/haproxy-standin:1"
    if docker("image", "inspect", ref, check=False).returncode == 0:
        return ref
    root = tmp_path_factory.mktemp("haproxy-rootfs")
    ldd = subprocess.run(["ldd", proxy["haproxy"]], capture_output=True, text=True)
    libs = re.findall(r"(/\S+) \(0x", ldd.stdout)
    if ldd.returncode != 0 or not libs:
        unavailable(f"cannot list haproxy's libraries: {ldd.stderr}")
    for lib in libs:
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, dest)  # follows symlinks: the library itself under the name the loader asks for
    (root / "usr/local/sbin").mkdir(parents=True)
    shutil.copy(proxy["haproxy"], root / "usr/local/sbin/haproxy")
    (root / "usr/local/etc/haproxy").mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    tar = subprocess.run(["tar", "-C", str(root), "-cf", "-", "."], capture_output=True, check=True).stdout
    subprocess.run(["docker", "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
                    "--change", 'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]', "-", ref],
                   input=tar, capture_output=True, check=True)
    return ref


def test_proxy_container_is_locked_down_survives_restarts_and_is_idempotent(standin_image, host, root_user, tmp_path):
    d = short_tmpdir()
    name = f"octollm-docker-ro-test-{uuid.uuid4().hex[:8]}"
    ak = tmp_path / "authorized_keys"
    args = ["--image", standin_image, "--name", name, "--user", root_user, "--socket-dir", str(d / "sock"),
            "--authorized-keys", str(ak), "--key", str(host["preview_key"].with_suffix(".pub"))]
    try:
        first = script(*args)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"created container {name}" in first.stdout and "POST is refused" in first.stdout
        info = json.loads(docker("inspect", name).stdout)[0]
        hc = info["HostConfig"]
        assert info["State"]["Running"] and hc["RestartPolicy"]["Name"] == "unless-stopped"
        assert hc["NetworkMode"] == "none" and hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
        assert "no-new-privileges" in hc["SecurityOpt"] and not hc["Privileged"]
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/var/run/docker.sock"]["RW"] is False
        assert mounts[str(d / "sock")]["Source"] == str(d / "sock")
        sock = d / "sock" / "docker.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert status(unix_http(str(sock), request("GET", f"{API}/containers/json"))) == 200
        assert status(unix_http(str(sock), request("POST", f"{API}/containers/{name}/kill"))) == 403
        assert entry_lines(ak, host["preview_key"].with_suffix(".pub"))[0].startswith(
            f'command="{shutil.which("docker")} -H unix://{sock} system dial-stdio",restrict ')

        ak_after, started = ak.read_bytes(), (info["Id"], info["State"]["StartedAt"])
        second = script(*args)
        assert second.returncode == 0, second.stderr
        assert f"unchanged: container {name}" in second.stdout
        again = json.loads(docker("inspect", name).stdout)[0]
        assert (again["Id"], again["State"]["StartedAt"]) == started and ak.read_bytes() == ak_after

        # The config lives in the container, and the socket directory is made again if it is gone (as
        # /var/run is after a reboot): starting the container again brings the proxy back.
        docker("stop", "-t", "1", name)
        shutil.rmtree(d / "sock")
        docker("start", name)
        for _ in range(100):
            try:
                if status(unix_http(str(sock), request("GET", "/_ping"), timeout=2)) == 200:
                    break
            except (OSError, AssertionError):
                time.sleep(0.1)
        else:
            pytest.fail(f"the proxy did not come back after a restart: {docker('logs', name).stderr[-500:]}")
        assert status(unix_http(str(sock), request("DELETE", f"{API}/containers/{name}"))) == 403
    finally:
        docker("rm", "-f", name, check=False)
        shutil.rmtree(d, ignore_errors=True)
