"""The SSH transport survives the burst the stack makes after a host's preflight.

Offline: the provider's ssh options (shared connection, ControlPath per host and key) are the same on
every machine, the parallelism cap is one number everywhere, remote commands redial, and the
preflight reports sshd's limits. On loopback: a real sshd with OpenSSH's DEFAULT limits
(MaxStartups 10:30:100, MaxSessions 10; nothing set in its config) and the real Docker engine.
The real-host tests fail instead of skipping when OCTOLLM_REQUIRE_REAL_HOST=1 (see test_real_host).
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks.ssh_transport import (CONTAINERS, PING, REMOTE_CMD, api_call, burst, control, dial_argv, host_config,
                                      start_sshd, stop_master, unraid_burst)
from components.platforms import docker_host
from tooling import doctor
from components.config.schema import load_stack_config
from components.platforms.docker_host import (DIAL_ERROR_LIMIT, PARALLEL, PER_DIAL_TIMEOUT_S, docker_dial_command,
                                    docker_ssh_opts, ssh_control_path, ssh_control_path_problem)
from components.config.inventory import preflight_spec
from components.host_scripts import PreflightSpec, preflight
from harness import ROOT, stack_config
from test_real_host import dockerd, unavailable  # noqa: F401 - fixtures

# ---------------------------------------------------------------- offline


def _opt(opts: list[str], key: str) -> str:
    values = [o.split("=", 1)[1] for o in opts if o.startswith(f"{key}=")]
    assert len(values) == 1, (key, opts)
    return values[0]


def test_provider_shares_one_connection_per_host_with_machine_independent_options(run, tmp_path):
    first = run("unraid")
    other_home = tmp_path / "elsewhere"
    (other_home / ".ssh").mkdir(parents=True)
    (other_home / ".ssh" / "octollm_unraid").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    (other_home / ".ssh" / "octollm_unraid").chmod(0o600)
    from harness import run_stack
    second = run_stack("unraid", home=str(other_home))
    assert first.error is None and second.error is None
    a = first.by_name("unraid-docker").inputs["sshOpts"]
    assert a == second.by_name("unraid-docker").inputs["sshOpts"]
    opts = json.loads(a)
    assert _opt(opts, "ControlMaster") == "auto"
    assert _opt(opts, "ControlPersist") == str(docker_host.CONTROL_PERSIST_S)
    assert re.fullmatch(r"~/\.ssh/octollm-[0-9a-f]{16}", _opt(opts, "ControlPath"))
    assert _opt(opts, "StrictHostKeyChecking") == "yes"  # pinning unchanged
    joined = " ".join(opts)
    for home in (os.path.expanduser("~"), str(other_home), docker_host._ssh_home()):
        assert home not in joined  # "~" stays for ssh to expand


def test_every_ssh_host_of_every_stack_gets_its_own_control_path(run):
    paths = {}
    for stack in ("unraid", "homelab"):
        for reg in run(stack).of_type("pulumi:providers:docker"):
            opts = json.loads(reg.inputs.get("sshOpts") or "[]")
            if opts:
                paths[(stack, reg.name)] = _opt(opts, "ControlPath")
    assert len(paths) == 5 and len(set(paths.values())) == 5, paths


def _host(**ssh):
    base = {"user": "root", "port": 22, "identityFile": "~/.ssh/k",
            "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINYcwxsWOuy453/7g3seJTxioREle31qz8g5CfNHObEH"}
    raw = {"platform": "docker", "hosts": {"h": {"kind": "ssh", "address": "10.0.0.5", "cpuThreads": 2,
                                                 "memoryGb": 4, "ssh": {**base, **ssh}}}}
    return load_stack_config(raw)[0].hosts["h"]


def test_control_path_changes_with_anything_the_host_key_check_depends_on():
    base = ssh_control_path("h", _host())
    assert base == ssh_control_path("h", _host())  # deterministic
    variants = [
        ssh_control_path("other", _host()),  # host alias
        ssh_control_path("h", _host(port=2222)),
        ssh_control_path("h", _host(user="admin")),
        ssh_control_path("h", _host(identityFile="~/.ssh/other")),
        ssh_control_path("h", _host(hostKey="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/Zv7pQ8YybUIqwqqf+hDdCazlCrbb/I0IXmJaq+JLF")),
        ssh_control_path("h", _host(insecureSkipHostKeyCheck=True)),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_control_socket_path_fits_and_a_too_long_home_is_reported(tmp_path):
    host = _host()
    # ssh binds "<path>.<16 chars>": a home of up to 56 bytes fits a 104-byte sun_path
    assert "does not exist" in ssh_control_path_problem("h", host, home="/home/" + "u" * 50)
    assert "too long for a unix socket" in ssh_control_path_problem("h", host, home="/home/" + "u" * 51)
    (tmp_path / ".ssh").mkdir()
    if len(str(tmp_path)) <= 56:
        assert ssh_control_path_problem("h", host, home=str(tmp_path)) is None


def test_the_control_directory_is_created_before_ssh_needs_it(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(docker_host, "_ssh_home", lambda: str(home))
    docker_ssh_opts("h", _host())
    assert (home / ".ssh").is_dir() and stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    docker_ssh_opts("h", _host())  # and again: nothing changes
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700


def test_remote_commands_redial_through_a_burst(run):
    cmds = run("unraid").of_type(REMOTE_CMD)
    assert cmds
    for reg in cmds:
        conn = reg.inputs["connection"]
        assert conn["dialErrorLimit"] == DIAL_ERROR_LIMIT and conn["perDialTimeout"] == PER_DIAL_TIMEOUT_S
    # 1 + limit tries, waits 0.1 s x 1.5^n capped at 5 s (pulumi-command 1.2.1's schedule)
    waits = [min(0.1 * 1.5 ** n, 5.0) for n in range(DIAL_ERROR_LIMIT)]
    assert 30 <= sum(waits) <= 60


def test_parallelism_cap_is_one_number_in_the_makefile_the_workflows_and_the_program():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^PARALLEL \?= (\d+)$", make, re.M).group(1) == str(PARALLEL)
    lines = [m.group(0) for m in re.finditer(r"\$\(PULUMI\) (preview|up|destroy|refresh)\b[^\n]*", make)]
    assert len(lines) >= 5
    assert all("--parallel $(PARALLEL)" in line for line in lines), lines
    for wf in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        text = wf.read_text()
        for m in re.finditer(r"^\s*(?:run: )?pulumi (preview|up|destroy|refresh)\b[^\n]*", text, re.M):
            assert f"--parallel {PARALLEL}" in m.group(0), (wf.name, m.group(0))
        for job in yaml.safe_load(text)["jobs"].values():
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("pulumi/actions@"):
                    assert str(step["with"]["parallel"]) == str(PARALLEL), wf.name


def test_preflight_spec_carries_the_cap_for_ssh_hosts_only():
    for stack, host, want in (("unraid", "unraid", PARALLEL), ("dev", "local", 0)):
        cfg, _ = load_stack_config(stack_config(stack))
        assert preflight_spec(cfg, host, stack).ssh_parallel == want


# The preflight asks the engine first; a stub answers as a healthy one would, so these runs neither
# need nor meet whatever Docker engine the machine has (a real one or none).
DOCKER_STUB = 'case "$1" in version) echo 27.5.1 ;; info) echo true ;; esac'


def _sshd_section(tmp_path: Path, config: str | None, sshd_stub: str = "exit 1") -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("sshd", sshd_stub), ("docker", DOCKER_STUB)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    conf = tmp_path / "sshd_config"
    if config is not None:
        conf.write_text(config)
    script = preflight(PreflightSpec(host="h", stack_label="pulumi/t", min_docker="1.0", ssh_parallel=PARALLEL))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OCTOLLM_SSHD_CONFIG": str(conf)}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)


def test_preflight_reports_sshd_limits_from_the_config_file_when_sshd_t_fails(tmp_path):
    (tmp_path / "sshd_config.d").mkdir()
    (tmp_path / "sshd_config.d" / "10-first.conf").write_text("MaxStartups=4:30:60\n")
    (tmp_path / "sshd_config.d" / "20-later.conf").write_text("MaxStartups 50\n")
    r = _sshd_section(tmp_path, "# MaxSessions 1\nInclude sshd_config.d/*.conf\n  maxsessions 6\n"
                                "Match User git\n  MaxSessions 1\n")
    assert r.returncode == 0, r.stderr  # warnings, not failures
    assert f"sshd: MaxStartups 4:30:60, MaxSessions 6 (from {tmp_path}/sshd_config)" in r.stdout
    assert f"warning: h: sshd MaxStartups 4:30:60 starts dropping new connections at 4, below the {PARALLEL}" in r.stdout
    assert f"warning: h: sshd MaxSessions 6 is below the {PARALLEL} Docker API calls" in r.stdout


def test_preflight_takes_sshd_t_and_falls_back_to_defaults_or_unknown(tmp_path):
    r = _sshd_section(tmp_path, "", sshd_stub="echo 'maxsessions 20'; echo 'maxstartups 30:30:100'")
    assert "sshd: MaxStartups 30:30:100, MaxSessions 20 (from sshd -T)" in r.stdout and "warning" not in r.stdout
    r = _sshd_section(tmp_path, "Port 22\n")
    assert "MaxStartups 10:30:100, MaxSessions 10 (from" in r.stdout and "OpenSSH defaults" in r.stdout
    assert "warning" not in r.stdout  # the defaults are enough for the cap
    (tmp_path / "sshd_config").unlink()
    r = _sshd_section(tmp_path, None)
    assert "sshd: MaxStartups unknown, MaxSessions unknown" in r.stdout and r.returncode == 0, r.stderr


# ---------------------------------------------------------------- loopback sshd, default limits


@pytest.fixture(scope="module")
def sshd(dockerd, tmp_path_factory):  # noqa: F811 - dockerd is the imported fixture
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd-default-limits"))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        unavailable(str(exc))
    assert "MaxStartups" not in (server.dir / "sshd_config").read_text()
    assert "MaxSessions" not in (server.dir / "sshd_config").read_text()
    hosts = []
    yield server, hosts
    for name, host in hosts:
        stop_master(name, host)
    server.stop()


def _register(sshd_and_hosts, name="box", host_key=None):
    server, hosts = sshd_and_hosts
    host = host_config(server, host_key=host_key, name=name)
    hosts.append((name, host))
    return server, host


@pytest.fixture(scope="module")
def burst_size(ssh_home):
    """SSH operations the unraid stack makes ready at once: those that wait on the preflight only (the
    benchmark's burst too)."""
    docker_calls, commands = unraid_burst(ssh_home)
    assert docker_calls >= 20 and commands >= 10, (docker_calls, commands)
    return docker_calls, commands


def _accepted(server) -> int:
    return server.log.read_text().count("Accepted publickey")


def test_the_post_preflight_burst_with_the_program_options_and_the_cap_loses_nothing(sshd, burst_size):
    server, host = _register(sshd)
    docker_calls, commands = burst_size
    assert docker_dial_command("box", host) == dial_argv("box", host)  # exactly what the provider runs
    shared = docker_dial_command("box", host)
    # A remote.Command opens a connection of its own (Go's x/crypto/ssh, not ssh(1)); an unshared
    # ssh with the same key and host key puts the same load on sshd: one more connection to log in.
    own = dial_argv("box", host, share=False)
    argvs = [shared] * docker_calls + [own] * commands
    random.Random(0).shuffle(argvs)  # the engine starts them in no particular order
    before = _accepted(server)
    for request in (PING, CONTAINERS):
        stop_master("box", host)  # as after the preflight: no shared connection yet
        results, _ = burst(argvs, PARALLEL, request=request)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert not any(r.refused for r in results)  # the cap keeps within MaxSessions
    # The Docker calls shared connections: far fewer logins than calls.
    logins = _accepted(server) - before
    assert logins <= 2 * (PARALLEL + commands) < 2 * len(argvs), logins
    assert control("box", host, "check").returncode == 0  # the master persists for the next calls


def test_the_same_burst_without_sharing_or_cap_loses_calls(sshd, burst_size):
    server, host = _register(sshd)
    n = sum(burst_size)
    argvs = [dial_argv("box", host, share=False)] * n
    lost = []
    # About 30 % of ~40 unshared dials at once are lost per round (benchmarks/ssh_transport.py, one
    # connection per call); three clean rounds would be a surprise.
    for _ in range(3):
        results, _ = burst(argvs)
        lost = [r.error for r in results if not r.ok]
        if lost:
            break
    assert lost, f"{n} unshared, uncapped concurrent calls against MaxStartups 10:30:100 all succeeded"
    assert set(lost) <= {"Connection reset", "Connection closed"}, lost
    assert "past MaxStartups" in server.log.read_text()


def test_sharing_without_the_cap_runs_into_max_sessions(sshd):
    """Why the cap matters with sharing too: sessions beyond MaxSessions 10 on the shared connection
    are refused, and ssh falls back to connections of its own, which then meet MaxStartups."""
    server, host = _register(sshd)
    stop_master("box", host)
    assert api_call(dial_argv("box", host)).ok  # the shared connection is up
    refused = 0
    for _ in range(3):
        results, _ = burst([dial_argv("box", host)] * 32)
        refused = sum(r.refused for r in results)
        if refused:
            break
    assert refused, "32 sessions at once on one connection were all accepted despite MaxSessions 10"


def test_a_master_for_the_right_key_never_carries_a_connection_that_pins_another(sshd, tmp_path):
    server, good = _register(sshd)
    assert api_call(dial_argv("box", good)).ok
    assert control("box", good, "check").returncode == 0
    _, bad = _register(sshd, host_key=server.other_key)
    assert ssh_control_path("box", bad) != ssh_control_path("box", good)
    ok, detail = doctor.check_api("box", bad, timeout=30)
    assert not ok and "Host key verification failed" in detail
    marker = tmp_path / "ran"
    out = subprocess.run(doctor.ssh_command("box", bad, ["touch", str(marker)]),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 255 and not marker.exists()
    # Another host alias for the same address, port and user gets its own connection too.
    _, alias = _register(sshd, name="box2")
    assert ssh_control_path("box2", alias) != ssh_control_path("box", good)
    assert api_call(dial_argv("box2", alias)).ok
    assert control("box2", alias, "check").returncode == 0


def test_doctor_and_the_preflight_share_the_connection_and_read_the_default_limits(sshd):
    server, host = _register(sshd)
    stop_master("box", host)
    ok, detail = doctor.check_api("box", host, timeout=30)
    assert ok, detail
    assert control("box", host, "check").returncode == 0  # doctor's first call left the master up
    spec = PreflightSpec(host="box", stack_label="pulumi/t", min_docker="1.0", ssh_parallel=PARALLEL)
    out = subprocess.run(["env", f"OCTOLLM_SSHD_CONFIG={server.dir / 'sshd_config'}", "bash", "-c",
                          preflight(spec)], capture_output=True, text=True, timeout=60)
    # the same script, over SSH, reading the loopback sshd's own config (defaults: no warning)
    remote = subprocess.run(doctor.ssh_command("box", host, ["env", f"OCTOLLM_SSHD_CONFIG={server.dir / 'sshd_config'}",
                                                             "bash", "-s"]),
                            input=preflight(spec), capture_output=True, text=True, timeout=60)
    for r in (out, remote):
        assert r.returncode == 0, r.stderr
        assert "sshd: MaxStartups 10:30:100, MaxSessions 10 (from " in r.stdout and "warning" not in r.stdout
