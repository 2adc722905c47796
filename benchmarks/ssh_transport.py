"""Docker API calls over SSH against a loopback sshd with its default limits, per concurrency level.

    python benchmarks/ssh_transport.py                       # levels 1 4 8 16 <burst> 64, 3 rounds each
    python benchmarks/ssh_transport.py --levels 8 41 --rounds 5 --json

It starts its own sshd on 127.0.0.1 (a generated host key, key-only auth, no MaxStartups or
MaxSessions lines, so OpenSSH's defaults 10:30:100 and 10 apply) and needs a Docker engine on
the default socket. Each call is what the docker provider does per Engine API connection:
`ssh <the program's options> -T -l user -p port -- 127.0.0.1 docker system dial-stdio` carrying
`GET /_ping`. <burst> is the number of SSH operations the unraid stack makes ready at once after its
preflight, counted from the program under the mock engine (unraid_burst(), which the burst test in
tests/test_ssh_transport.py uses too). For each level, max(2 x level, <burst>) calls run with `level`
in flight at once (all of the first `level` start together, like the operations released by a host's
preflight), `rounds` times, and the table shows:

  mode      shared: the program's options (ControlMaster=auto, ControlPath, ControlPersist);
            each round starts with no master, as after the preflight.
            direct: the same options without connection sharing (one SSH connection per call).
            direct+retry: direct, each failed call redialled on pulumi-command's schedule
            (100 ms, x1.5 per try, at most 5 s) up to --dial-limit retries, as a remote.Command
            dials; `max tries` is the most any call needed.
  calls/s   successful calls per second of wall time
  failed    calls that got no HTTP 200, out of all calls of the rounds, with the errors seen
  sessions refused  shared calls whose session the master refused (beyond MaxSessions 10); ssh
            then opens a connection of its own, which counts against MaxStartups

Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from components.config.schema import HostConfig, load_stack_config  # noqa: E402
from components.platforms.docker_host import DIAL_ERROR_LIMIT, PARALLEL, docker_ssh_opts  # noqa: E402
from loopback import Sshd, free_port, start_sshd  # noqa: E402,F401  (re-exported for the tests)

PING = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
CONTAINERS = b"GET /containers/json HTTP/1.0\r\nHost: docker\r\n\r\n"
# pulumi-command 1.2.1 dials through pulumi's retry.Until with its defaults: 100 ms, x1.5, <= 5 s.
RETRY_DELAY_S, RETRY_BACKOFF, RETRY_MAX_DELAY_S = 0.1, 1.5, 5.0
REMOTE_CMD = "command:remote:Command"


def unraid_burst(home: str | None = None) -> tuple[int, int]:
    """(Docker API calls, remote commands) the unraid stack makes ready at once: its SSH operations whose
    only dependencies are its hosts' preflights, all released when those pass. Counted from the program
    under the mock engine, so the figure follows the stack; `home` holds the identity files the stack
    file names (stand-ins are made when it is None)."""
    from tooling.mock_engine import run_stack, stand_in_ssh_home

    with tempfile.TemporaryDirectory(prefix="ssh-bench-home-") as tmp:
        r = run_stack("unraid", home=home or stand_in_ssh_home(Path(tmp)))
    if r.error is not None:
        raise RuntimeError(f"the unraid stack does not run under the mock engine: {r.error}")
    gate = {x.urn for x in r.registrations if x.name.endswith("-preflight")}
    ready = [x for x in r.registrations if x.dependencies and set(x.dependencies) <= gate]
    docker_calls = sum(x.type.startswith("docker:") for x in ready)
    commands = sum(x.type == REMOTE_CMD for x in ready)
    if docker_calls + commands != len(ready):
        raise RuntimeError(f"operations released by the preflight that are neither Docker nor remote commands: "
                           f"{sorted(x.type for x in ready if not x.type.startswith(('docker:', REMOTE_CMD)))}")
    return docker_calls, commands


def host_config(sshd: Sshd, host_key: str | None = None, name: str = "box") -> HostConfig:
    raw = {"platform": "docker", "hosts": {name: {
        "kind": "ssh", "address": "127.0.0.1", "cpuThreads": 2, "memoryGb": 4,
        "ssh": {"user": sshd.user, "port": sshd.port, "identityFile": sshd.identity,
                "hostKey": host_key or sshd.host_key}}}}
    cfg, _ = load_stack_config(raw)
    return cfg.hosts[name]


def ssh_argv(name: str, host: HostConfig, remote: list[str], *, share: bool = True) -> list[str]:
    """ssh as docker/cli's connection helper runs it: the provider's ssh_opts, -T, -l, -p, --, host."""
    assert host.ssh is not None
    return ["ssh", *docker_ssh_opts(name, host, share=share), "-T", "-l", host.ssh.user,
            "-p", str(host.ssh.port), "--", host.address, *remote]


def dial_argv(name: str, host: HostConfig, *, share: bool = True) -> list[str]:
    return ssh_argv(name, host, ["docker", "system", "dial-stdio"], share=share)


@dataclass
class Call:
    ok: bool
    seconds: float
    error: str = ""
    tries: int = 1
    refused: bool = False  # the shared connection refused the session (MaxSessions); ssh then dialled anew


def classify(stderr: str) -> str:
    text = stderr.lower()
    for needle, label in (("host key verification failed", "Host key verification failed"),
                          ("connection reset", "Connection reset"), ("connection closed", "Connection closed"),
                          ("kex_exchange_identification", "Connection closed"),
                          ("session open refused", "session refused (MaxSessions)"),
                          ("timed out", "timeout")):
        if needle in text:
            return label
    lines = [line for line in stderr.strip().splitlines() if "disabling multiplexing" not in line]
    return lines[-1][:80] if lines else "no HTTP 200"


def api_call(argv: list[str], request: bytes = PING, timeout: float = 60) -> Call:
    """One Docker Engine API request through `argv` (an ssh … dial-stdio command)."""
    t0 = time.monotonic()
    try:
        out = subprocess.run(argv, input=request, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Call(False, time.monotonic() - t0, "timeout")
    dt = time.monotonic() - t0
    err = out.stderr.decode(errors="replace")
    refused = "session open refused" in err.lower()
    if out.stdout.startswith(b"HTTP/1.") and b" 200 " in out.stdout.split(b"\r\n", 1)[0]:
        return Call(True, dt, refused=refused)
    return Call(False, dt, classify(err), refused=refused)


def api_call_retried(argv: list[str], dial_limit: int, request: bytes = PING) -> Call:
    """api_call, redialled like pulumi-command's Connection.Dial: dial_limit retries after the first."""
    t0 = time.monotonic()
    delay, tries = RETRY_DELAY_S, 0
    while True:
        c = api_call(argv, request)
        tries += 1
        if c.ok or tries > dial_limit:
            return Call(c.ok, time.monotonic() - t0, c.error, tries, c.refused)
        time.sleep(min(delay, RETRY_MAX_DELAY_S))
        delay *= RETRY_BACKOFF


def burst(argvs: list[list[str]], workers: int | None = None, *, request: bytes = PING,
          dial_limit: int | None = None) -> tuple[list[Call], float]:
    """Start every call at once (at most `workers` in flight); (results, wall seconds)."""
    workers = min(workers or len(argvs), len(argvs))
    start = threading.Barrier(workers)  # the first wave starts together; the rest as workers free up

    def one(job: tuple[int, list[str]]) -> Call:
        i, argv = job
        if i < workers:
            try:
                start.wait(timeout=30)
            except threading.BrokenBarrierError:
                pass
        if dial_limit is not None:
            return api_call_retried(argv, dial_limit, request)
        return api_call(argv, request)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, enumerate(argvs)))
    return results, time.monotonic() - t0


def control(name: str, host: HostConfig, op: str) -> subprocess.CompletedProcess:
    """`ssh -O <op>` (check, exit) on this host's shared connection."""
    assert host.ssh is not None
    argv = ["ssh", *docker_ssh_opts(name, host), "-O", op, "-l", host.ssh.user, "-p", str(host.ssh.port),
            "--", host.address]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def stop_master(name: str, host: HostConfig) -> None:
    """Close a shared connection left by earlier calls, and wait until it is gone."""
    if control(name, host, "check").returncode != 0:
        return
    control(name, host, "exit")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and control(name, host, "check").returncode == 0:
        time.sleep(0.1)


@dataclass
class Row:
    mode: str
    level: int
    calls: int = 0
    ok: int = 0
    seconds: float = 0.0
    max_tries: int = 1
    refused: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        return self.calls - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def calls_per_round(level: int, min_calls: int) -> int:
    # Enough calls that each worker makes at least two: the first wave starts with no master
    # (as after the preflight), the later ones show what sharing it buys.
    return max(2 * level, min_calls)


def measure(sshd: Sshd, levels: list[int], rounds: int, dial_limit: int, modes: list[str],
            min_calls: int) -> list[Row]:
    host = host_config(sshd)
    rows = []
    for mode in modes:
        for level in levels:
            row = Row(mode, level)
            for _ in range(rounds):
                stop_master("box", host)
                argvs = [dial_argv("box", host, share=mode == "shared")] * calls_per_round(level, min_calls)
                results, wall = burst(argvs, level, dial_limit=dial_limit if mode == "direct+retry" else None)
                row.calls += len(results)
                row.ok += sum(r.ok for r in results)
                row.seconds += wall
                row.max_tries = max([row.max_tries, *(r.tries for r in results)])
                row.refused += sum(r.refused for r in results)
                row.errors.update(r.error for r in results if not r.ok)
                time.sleep(1.0)  # let sshd reap the round's connections before the next burst
            stop_master("box", host)
            rows.append(row)
            print(f"  {mode:<13} {level:>3}: {row.ok}/{row.calls} ok, {row.rate:.1f} calls/s", file=sys.stderr)
    return rows


def markdown(rows: list[Row], rounds: int) -> str:
    out = [f"| mode | concurrent | calls/s | failed ({rounds} rounds) | sessions refused | max tries | errors |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        errs = ", ".join(f"{k} x{v}" for k, v in r.errors.most_common()) or "-"
        tries = str(r.max_tries) if r.mode == "direct+retry" else "-"
        refused = str(r.refused) if r.mode == "shared" else "-"
        out.append(f"| {r.mode} | {r.level} | {r.rate:.1f} | {r.failed}/{r.calls} "
                   f"({100 * r.failed / r.calls:.0f} %) | {refused} | {tries} | {errs} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", help="default: 1 4 PARALLEL 16 <unraid burst> 64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["shared", "direct", "direct+retry"],
                    choices=["shared", "direct", "direct+retry"])
    ap.add_argument("--dial-limit", type=int, default=DIAL_ERROR_LIMIT,
                    help="retries in direct+retry mode (the program's dial_error_limit; the provider default is 10)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    min_calls = sum(unraid_burst())
    levels = a.levels or sorted({1, 4, PARALLEL, 16, min_calls, 64})
    print(f"unraid burst after the preflight: {min_calls} SSH operations", file=sys.stderr)
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        print("no Docker engine answers on the default socket", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ssh-bench-") as tmp:
        sshd = start_sshd(Path(tmp))
        try:
            rows = measure(sshd, levels, a.rounds, a.dial_limit, a.modes, min_calls)
        finally:
            sshd.stop()
    if a.json:
        print(json.dumps([{"mode": r.mode, "concurrent": r.level, "calls": r.calls, "failed": r.failed,
                           "calls_per_s": round(r.rate, 2), "max_tries": r.max_tries, "sessions_refused": r.refused,
                           "errors": dict(r.errors)} for r in rows], indent=2))
    else:
        print(markdown(rows, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
