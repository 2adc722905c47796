"""Preflight and doctor against a real Docker engine over a real SSH connection, on loopback only.

The fixtures start dockerd (default socket) and an sshd on 127.0.0.1 with key-only auth and a
generated host key. When either cannot start, the tests are skipped with the reason, unless
OCTOLLM_REQUIRE_REAL_HOST=1 (set by .ci/run), which turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tooling import doctor
from loopback import free_port as _free_port  # noqa: F401  (imported from here by other tests)
from loopback import import_busybox_image, start_sshd
from components.config.schema import load_stack_config
from components.platforms.docker_host import docker_ssh_opts
from components.config.inventory import preflight_spec
from components.host_scripts import preflight

REQUIRED = os.environ.get("OCTOLLM_REQUIRE_REAL_HOST") == "1"
STACK = "realtest"
LABEL = f"org.octollm.managed-by=pulumi/{STACK}"
SUBNET = "172.30.0.0/24"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"real-host tests are required here but cannot run: {reason}")
    pytest.skip(f"real-host tests skipped: {reason}")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


def _docker_answers() -> bool:
    try:
        return docker("version", "--format", "{{.Server.Version}}", check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    if shutil.which("docker") is None:
        unavailable("the docker CLI is not installed (Debian package docker.io)")
    proc = None
    if not _docker_answers():
        if shutil.which("dockerd") is None or os.geteuid() != 0:
            unavailable("dockerd is not installed or this user cannot start it")
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        proc = subprocess.Popen(["dockerd", "--host", "unix:///var/run/docker.sock"],
                                stdout=log.open("w"), stderr=subprocess.STDOUT)
        for _ in range(60):
            if _docker_answers():
                break
            if proc.poll() is not None:
                unavailable(f"dockerd exited: {log.read_text()[-500:]}")
            time.sleep(0.5)
        else:
            proc.terminate()
            unavailable(f"dockerd did not answer within 30s: {log.read_text()[-500:]}")
    yield
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def busybox_image(dockerd, tmp_path_factory):
    """A local image for the 'port held by another container' case: no registry is needed."""
    ref = "octollm-test/busybox:1"
    if docker("image", "inspect", ref, check=False).returncode == 0:
        return ref
    try:
        import_busybox_image(ref, tmp_path_factory.mktemp("busybox-rootfs"))
    except FileNotFoundError as exc:
        unavailable(str(exc))
    return ref


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except RuntimeError as exc:
        unavailable(str(exc))
    yield {"port": server.port, "dir": server.dir, "host_key": server.host_key, "other_key": server.other_key,
           "identity": server.identity, "user": server.user}
    server.stop()


def stack_doc(sshd, root: Path, *, host_key=None, appdata=None, gpus=None, port=18434) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    host = {
        "kind": "ssh", "address": "127.0.0.1", "publishAddress": "127.0.0.1",
        "ssh": {"user": sshd["user"], "port": sshd["port"], "identityFile": sshd["identity"],
                "hostKey": host_key or sshd["host_key"]},
        "cpuThreads": 2, "memoryGb": 4, "appdataRoot": appdata or str(root / "appdata"),
        "dataOwner": f"{os.getuid()}:{os.getgid()}", "containerPrefix": "realtest-",
        "networks": {"octo-test": {"subnet": SUBNET, "gateway": "172.30.0.1"}},
    }
    if gpus:
        host["gpus"] = gpus
    node = {"host": "box", "engine": "ollama", "network": "octo-test", "port": port,
            "models": ["qwen2.5:0.5b"], "limits": {"cpus": 1, "memoryGb": 1}, "modelStore": "models"}
    if gpus:
        node["gpu"] = {"count": 1}
    return {"platform": "docker", "hosts": {"box": host},
            "modelStores": {"models": {"host": "box", "path": str(root / "models")}},
            "inference": {"ollama": node}}


def run_remote_preflight(sshd, raw: dict, stub_path: Path | None = None) -> subprocess.CompletedProcess:
    """The real preflight script over SSH, with exactly the options the docker provider gets."""
    cfg, _ = load_stack_config(raw)
    script = preflight(preflight_spec(cfg, "box", STACK))
    remote = ["bash", "-s"]
    if stub_path is not None:
        remote = ["env", f"PATH={stub_path}:{SYSTEM_PATH}", "bash", "-s"]
    cmd = doctor.ssh_command("box", cfg.hosts["box"], remote)
    return subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=180)


def host_state(root: Path) -> tuple:
    nets = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    ps = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    return sorted(nets), sorted(ps), files


@pytest.fixture
def clean(dockerd):
    yield
    for name in ("foreign-app", "realtest-ollama"):
        docker("rm", "-f", name, check=False)
    docker("network", "rm", "foreign-net", check=False)


def test_docker_api_answers_through_the_program_ssh_options(dockerd, sshd, tmp_path):
    cfg, _ = load_stack_config(stack_doc(sshd, tmp_path))
    host = cfg.hosts["box"]
    opts = docker_ssh_opts("box", host)
    assert "StrictHostKeyChecking=yes" in opts and "UserKnownHostsFile=/dev/null" in opts
    ok, detail = doctor.check_api("box", host, timeout=30)
    assert ok, detail
    assert detail.startswith("ok (API 1.")


def test_command_connection_key_is_the_key_the_server_presents(sshd):
    scanned = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(sshd["port"]), "127.0.0.1"],
                             capture_output=True, text=True, timeout=30).stdout
    presented = " ".join(next(l for l in scanned.splitlines() if not l.startswith("#")).split()[1:3])
    assert presented == sshd["host_key"]
    # pulumi-command checks `host_key` against what the server presents, as ssh does here:
    known = sshd["dir"] / "known_hosts_command"
    known.write_text(f"[127.0.0.1]:{sshd['port']} {sshd['host_key']}\n")
    ok = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                         "-o", f"UserKnownHostsFile={known}", "-i", sshd["identity"], "-p", str(sshd["port"]),
                         f"{sshd['user']}@127.0.0.1", "true"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr


def test_wrong_host_key_is_refused_not_accepted(dockerd, sshd, tmp_path):
    marker = tmp_path / "ran"
    cfg, _ = load_stack_config(stack_doc(sshd, tmp_path, host_key=sshd["other_key"]))
    ok, detail = doctor.check_api("box", cfg.hosts["box"], timeout=30)
    assert not ok and "Host key verification failed" in detail
    cmd = doctor.ssh_command("box", cfg.hosts["box"], ["touch", str(marker)])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 255 and not marker.exists()


def test_preflight_passes_on_a_healthy_host_and_changes_nothing(dockerd, sshd, tmp_path, clean):
    raw = stack_doc(sshd, tmp_path)
    before = host_state(tmp_path)
    for _ in range(2):
        r = run_remote_preflight(sshd, raw)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("preflight ok on host box")
    assert host_state(tmp_path) == before


def test_conflicting_network_is_reported(dockerd, sshd, tmp_path, clean):
    docker("network", "create", "--subnet", "172.30.0.128/25", "foreign-net")
    raw = stack_doc(sshd, tmp_path)
    before = host_state(tmp_path)
    r = run_remote_preflight(sshd, raw)
    assert r.returncode == 1
    assert "Docker network foreign-net already uses 172.30.0.128/25, which overlaps 172.30.0.0/24 " \
           "wanted for octo-test" in r.stderr
    assert host_state(tmp_path) == before


def test_network_of_this_stack_is_not_a_conflict(dockerd, sshd, tmp_path, clean):
    docker("network", "create", "--subnet", SUBNET, "--label", LABEL, "foreign-net")
    r = run_remote_preflight(sshd, stack_doc(sshd, tmp_path))
    assert r.returncode == 0, r.stderr


def test_missing_host_path_is_reported(dockerd, sshd, tmp_path, clean):
    raw = stack_doc(sshd, tmp_path, appdata="/mnt/nonexistent-pool/appdata/octollm")
    r = run_remote_preflight(sshd, raw)
    assert r.returncode == 1
    assert "/mnt/nonexistent-pool/appdata does not exist (is the pool or array that holds it mounted?)" in r.stderr
    assert not Path("/mnt/nonexistent-pool").exists()


def test_gpu_required_where_none_exists(dockerd, sshd, tmp_path, clean):
    raw = stack_doc(sshd, tmp_path, gpus=[{"model": "RTX 3070", "vramGb": 8, "driverVersion": "575.64.03"}])
    r = run_remote_preflight(sshd, raw, stub_path=tmp_path / "empty-bin")
    assert r.returncode == 1
    assert "nvidia-smi not found: the config declares 1 GPU(s) but no NVIDIA driver is installed" in r.stderr


@pytest.mark.parametrize("row,fragment", [
    ("NVIDIA GeForce RTX 3070, 8192, 535.247.01", "driver 535.247.01 is older than 570.26"),
    ("NVIDIA GeForce RTX 3070, 4096, 575.64.03", "has 4096 MiB of VRAM; the config declares RTX 3070 with 8192 MiB"),
])
def test_stub_nvidia_smi_early_in_path(dockerd, sshd, tmp_path, clean, row, fragment):
    stub = tmp_path / "stub-bin"
    stub.mkdir()
    (stub / "nvidia-smi").write_text(f"#!/bin/sh\necho '{row}'\n")
    (stub / "nvidia-smi").chmod(0o755)
    raw = stack_doc(sshd, tmp_path, gpus=[{"model": "RTX 3070", "vramGb": 8, "driverVersion": "575.64.03"}])
    r = run_remote_preflight(sshd, raw, stub_path=stub)
    assert r.returncode == 1
    assert fragment in r.stderr, r.stderr


def test_port_published_by_another_container(dockerd, sshd, busybox_image, tmp_path, clean):
    docker("run", "-d", "--name", "foreign-app", "-p", "127.0.0.1:18434:8080", busybox_image,
           "/bin/busybox", "httpd", "-f", "-p", "8080")
    r = run_remote_preflight(sshd, stack_doc(sshd, tmp_path, port=18434))
    assert r.returncode == 1
    assert "port 18434 is already published by container foreign-app, which this stack does not manage" in r.stderr


def test_port_held_by_this_stacks_own_container_is_fine(dockerd, sshd, busybox_image, tmp_path, clean):
    docker("run", "-d", "--name", "realtest-ollama", "--label", LABEL, "-p", "127.0.0.1:18434:8080",
           busybox_image, "/bin/busybox", "httpd", "-f", "-p", "8080")
    r = run_remote_preflight(sshd, stack_doc(sshd, tmp_path, port=18434))
    assert r.returncode == 0, r.stderr


def test_doctor_table_for_a_healthy_and_an_unhealthy_host(dockerd, sshd, busybox_image, tmp_path, clean, capsys):
    f = tmp_path / "Pulumi.realtest.yaml"
    raw = stack_doc(sshd, tmp_path)
    f.write_text(yaml.safe_dump({"config": {f"octollm-infra:{k}": v for k, v in raw.items()}}))
    assert doctor.main(["--file", str(f)]) == 0
    healthy = capsys.readouterr().out
    lines = healthy.splitlines()
    assert lines[0].split() == ["HOST", "DOCKER", "API", "OVER", "SSH", "PREFLIGHT"]
    assert lines[1].split()[0] == "box" and "ok (API" in lines[1] and lines[1].endswith("ok")
    docker("run", "-d", "--name", "foreign-app", "-p", "127.0.0.1:18434:8080", busybox_image,
           "/bin/busybox", "httpd", "-f", "-p", "8080")
    assert doctor.main(["--file", str(f)]) == 1
    unhealthy = capsys.readouterr().out
    assert "FAILED (1)" in unhealthy
    assert "- port 18434 is already published by container foreign-app" in unhealthy
    (tmp_path / "README-doctor.txt").write_text(healthy + "\n" + unhealthy)


def test_doctor_api_only_checks_the_api_and_runs_no_script(dockerd, sshd, tmp_path, clean, capsys):
    """What a read-only preview key allows: the API check alone, which a foreign port cannot fail. This
    sshd hands out the write key, so the same run also says the key is not read-only (exit 3); with the
    preview key it says yes (test_preview_credential.py)."""
    f = tmp_path / "Pulumi.realtest.yaml"
    raw = stack_doc(sshd, tmp_path)
    f.write_text(yaml.safe_dump({"config": {f"octollm-infra:{k}": v for k, v in raw.items()}}))
    before = host_state(tmp_path)
    assert doctor.main(["--file", str(f), "--api-only"]) == 3
    out = capsys.readouterr().out
    assert "ok (API" in out and "not run (--api-only)" in out and "read-only: NO" in out
    assert host_state(tmp_path) == before


def test_preflight_passes_on_a_fresh_host_where_nothing_of_the_stack_exists_yet(dockerd, sshd, tmp_path, clean):
    """The model store lives inside the appdata root, which the stack itself creates: only the
    directory holding the root has to exist (the dev stack's first up used to stop here)."""
    raw = stack_doc(sshd, tmp_path)
    raw["modelStores"]["models"]["path"] = str(tmp_path / "appdata" / "ollama")
    assert not (tmp_path / "appdata").exists()
    r = run_remote_preflight(sshd, raw)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "appdata").exists()
