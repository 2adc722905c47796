"""No secret on a command line, for Redis: the command the unraid and gke stacks register for their Redis
containers runs here under dash and busybox sh, starting the real redis-server on 127.0.0.1, with a hostile
password and a generated-looking one in REDISCLI_AUTH (as the container gets it).

While it starts, every process's /proc/<pid>/cmdline is sampled, and the server's own pid is watched from
the moment it exists; under strace every execve's argv is recorded. The password is in none of them, yet
redis-cli authenticates with it, a wrong one is refused, and AOF persistence is on.

The script is the registered one, unchanged: the container's /data and port 6379 are moved by the
arguments after it (`sh -c SCRIPT NAME ARG…`), which it hands to redis-server and a container never gets.
A missing tool skips, or fails under OCTOLLM_REQUIRE_REAL_HOST=1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import string
import subprocess
import threading
import time
from pathlib import Path

import pytest

import monitoring_tools as mt
from loopback import free_port
from test_secrets_real import CmdlineSampler

STACKS = ("unraid", "gke")  # Docker containers and Kubernetes pods


def hostile(token: str, pwned: Path) -> str:
    """Quotes, backslashes (one at the very end), shell substitutions, a tab and a line break."""
    return (f'p a"ss\\w\'{token}$(touch {pwned})`touch {pwned}` $REDISCLI_AUTH\t"\n'
            f'second line \\x41 \\"\\')


def generated(token: str) -> str:
    """What pulumi-random gives with special=False: 32 letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return token + "".join(secrets.choice(alphabet) for _ in range(32 - len(token)))


@pytest.fixture(scope="module")
def scripts(run) -> list[tuple[str, str, str]]:
    """(stack, resource, script) of every registered Redis, checked to be `sh -c SCRIPT` fed by REDISCLI_AUTH."""
    out = []
    for stack, dep in mt.deployments(run, STACKS).items():
        found = [w for w in dep.workloads if w.image_repo in ("redis", "library/redis")]
        assert found, f"{stack}: no Redis"
        for w in found:
            argv = [*w.entrypoint, *w.command]
            assert len(argv) == 3 and argv[:2] == ["sh", "-c"], (w.resource, argv)
            assert "REDISCLI_AUTH" in w.secret_env, w.resource
            out.append((stack, w.resource, argv[2]))
    return out


def shells(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """sh (dash on Debian, the redis image's sh) and busybox sh with busybox's sed, as redis:7-alpine has."""
    server = Path(mt.need_tool("redis-server")).parent
    busybox = shutil.which("busybox")
    if busybox is None:
        mt.unavailable("busybox is not installed (Debian package busybox-static)")
    applets = tmp / "busybox-bin"
    applets.mkdir()
    for name in ("sed", "sh"):
        (applets / name).symlink_to(busybox)
    return {"dash": (["sh"], f"{server}:/usr/bin:/bin"),
            "busybox": ([busybox, "sh"], f"{applets}:{server}:/usr/bin:/bin")}


class PidWatcher(threading.Thread):
    """Reads one process's argv as fast as it can: the sampler of all processes may miss a short window."""

    def __init__(self, pid: int, needle: str):
        super().__init__(daemon=True)
        self.path, self.needle = f"/proc/{pid}/cmdline", needle.encode()
        self.seen, self.samples, self.done = [], 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                with open(self.path, "rb") as f:
                    raw = f.read()
            except OSError:
                return  # it has exited
            if self.needle in raw:
                self.seen.append(raw.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1


def redis_cli(port: int, *args: str, auth: str | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if auth is not None:
        env["REDISCLI_AUTH"] = auth
    out = subprocess.run([mt.need_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, env=env, timeout=10)
    return (out.stdout + out.stderr).strip()


def wait_ready(proc: subprocess.Popen, port: int, password: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"redis exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if redis_cli(port, "PING", auth=password) == "PONG":
            return
        time.sleep(0.05)
    pytest.fail(f"redis did not answer on 127.0.0.1:{port}:\n{log.read_text(errors='replace')}")


def server_pid(port: int, password: str) -> int:
    return int(redis_cli(port, "INFO", "server", auth=password).split("process_id:")[1].split()[0])


def stop(port: int, password: str, proc: subprocess.Popen) -> int:
    """SIGTERM to the server's own pid, as the container runtime sends it to PID 1; its exit code."""
    os.kill(server_pid(port, password), signal.SIGTERM)
    return proc.wait(timeout=30)


def start_argv(shell: list[str], script: str, port: int, data: Path) -> list[str]:
    return [*shell, "-c", script, "redis", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]


@pytest.mark.parametrize("kind", ["hostile", "generated"])
@pytest.mark.parametrize("shell_name", ["dash", "busybox"])
def test_redis_gets_its_password_with_none_on_a_command_line(scripts, tmp_path, shell_name, kind):
    shell, path = shells(tmp_path)[shell_name]
    for stack, resource, script in scripts:
        work = tmp_path / stack / resource
        data, pwned = work / "data", work / "PWNED"
        data.mkdir(parents=True)
        token = f"Tk{secrets.token_hex(6)}"  # in the password, unique to this run: what the samplers look for
        password = hostile(token, pwned) if kind == "hostile" else generated(token)
        port, log = free_port(), work / "redis.log"
        sampler = CmdlineSampler(token)
        sampler.start()
        proc = watcher = None
        try:
            # Only PATH and the secret env value: what the container's environment holds of relevance.
            proc = subprocess.Popen(start_argv(shell, script, port, data), cwd=work, stdin=subprocess.DEVNULL,
                                    stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                    env={"PATH": path, "REDISCLI_AUTH": password})
            watcher = PidWatcher(proc.pid, token)
            watcher.start()
            wait_ready(proc, port, password, log)
        finally:
            sampler.done.set()
            sampler.join()
            if watcher:
                watcher.done.set()
                watcher.join()
        try:
            where = f"{stack} {resource} under {shell_name}"
            assert sampler.samples > 0 and watcher.samples > 0, where
            assert sampler.seen == [] and watcher.seen == [], (where, sampler.seen, watcher.seen)
            assert token not in log.read_text(errors="replace"), where
            assert not pwned.exists(), f"{where}: the password was run as shell code"
            assert redis_cli(port, "PING") == "NOAUTH Authentication required.", where
            wrong = redis_cli(port, "PING", auth=password[:-1])
            assert "WRONGPASS" in wrong and "PONG" not in wrong, (where, wrong)
            # The password redis-server holds is REDISCLI_AUTH to the byte, escapes and all.
            got = subprocess.run([mt.need_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "--raw",
                                  "CONFIG", "GET", "requirepass"], capture_output=True,
                                 env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password}, timeout=10).stdout
            assert got == b"requirepass\n" + password.encode() + b"\n", (where, got)
            assert redis_cli(port, "CONFIG", "GET", "appendonly", auth=password).split() == ["appendonly", "yes"]
            assert redis_cli(port, "CONFIG", "GET", "appendfsync", auth=password).split() == [
                "appendfsync", "everysec"]
            assert redis_cli(port, "CONFIG", "GET", "dir", auth=password).split() == ["dir", str(data)], where
            assert redis_cli(port, "SET", "k", "v", auth=password) == "OK"
            # `exec`: the pid the runtime signals (PID 1) is redis-server's, which fsyncs and exits cleanly.
            assert server_pid(port, password) == proc.pid, where
            assert stop(port, password, proc) == 0, log.read_text(errors="replace")
            assert any(b"SET" in p.read_bytes() for p in data.glob("appendonlydir/*.aof")), where
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_no_execve_of_the_start_has_the_password_in_its_argv(scripts, tmp_path):
    """Deterministic where the samplers are not: strace records the argv of every program the start runs."""
    strace = shutil.which("strace")
    if strace is None:
        mt.unavailable("strace is not installed (Debian package strace)")
    for shell_name, (shell, path) in shells(tmp_path).items():
        _, resource, script = scripts[0]
        assert all(s == script for _, _, s in scripts), "every Redis registers the same start script"
        work = tmp_path / shell_name
        data = work / "data"
        data.mkdir(parents=True)
        token = f"Tk{secrets.token_hex(6)}"
        password = hostile(token, work / "PWNED")
        port, log, trace = free_port(), work / "redis.log", work / "execve.trace"
        # Without -v strace prints no environment (where REDISCLI_AUTH belongs), only each argv, in full.
        proc = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-o", str(trace),
                                 *start_argv(shell, script, port, data)], cwd=work, stdin=subprocess.DEVNULL,
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                env={"PATH": path, "REDISCLI_AUTH": password})
        try:
            wait_ready(proc, port, password, log)
            assert stop(port, password, proc) == 0, log.read_text(errors="replace")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        text = trace.read_text(errors="replace")
        if "execve(" not in text:
            mt.unavailable(f"strace cannot trace here: {log.read_text(errors='replace')[-500:]}")
        execs = [line for line in text.splitlines() if "execve(" in line]
        assert token not in text, (shell_name, [line for line in execs if token in line])
        # The escaping helper and the server both ran, so their argv are in the trace.
        assert any('["sed", ' in line for line in execs), (shell_name, execs)
        assert any('["redis-server", "-", ' in line for line in execs), (shell_name, execs)


@pytest.mark.parametrize("value", [None, ""])
def test_an_empty_password_stops_the_start(scripts, tmp_path, value):
    """`requirepass ""` would be a Redis without a password: the script refuses to start one."""
    shell, path = shells(tmp_path)["busybox"]
    _, _, script = scripts[0]
    port = free_port()
    env = {"PATH": path} if value is None else {"PATH": path, "REDISCLI_AUTH": value}
    out = subprocess.run(start_argv(shell, script, port, tmp_path), capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=30)
    assert out.returncode != 0 and "REDISCLI_AUTH is empty" in out.stderr, out
    assert "Could not connect" in redis_cli(port, "PING")
