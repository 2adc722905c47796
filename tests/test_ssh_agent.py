"""Remote commands log in through ssh-agent: no key material among their inputs, the same inputs whichever
key the agent holds, and an update without an agent stops before anything is registered.

The real engine's side of it (a preview with the read-only key after an `up` with the write key shows no
change) is in tests/lane_engine.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pulumi import RunError

from harness import ROOT, run_stack, stand_in_ssh_home

REMOTE_CMD = "command:remote:Command"
CONNECTION_KEYS = {"host", "port", "user", "hostKey", "dialErrorLimit", "perDialTimeout"}


def _home(tmp_path, name: str, marker: str) -> str:
    """A HOME whose identity files are key-shaped and hold `marker`, so a leak of their content is visible."""
    (tmp_path / name).mkdir()
    home = stand_in_ssh_home(tmp_path / name)
    for key in (tmp_path / name / ".ssh").iterdir():
        key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n-----END OPENSSH PRIVATE KEY-----\n")
    return home


def _commands(result) -> dict[str, dict]:
    return {r.name: r.inputs for r in result.of_type(REMOTE_CMD)}


@pytest.mark.parametrize("stack", ["unraid", "homelab"])
def test_connections_hold_no_key_and_no_key_is_in_any_input(stack, tmp_path):
    r = run_stack(stack, home=_home(tmp_path, "h", "WRITE-KEY-CONTENT"))
    assert r.error is None, r.error
    commands = _commands(r)
    assert commands
    for name, inputs in commands.items():
        conn = inputs["connection"]
        assert isinstance(conn, dict) and set(conn) <= CONNECTION_KEYS, (name, sorted(conn))
        assert {"host", "port", "user", "hostKey"} <= set(conn), (name, sorted(conn))
    for reg in r.registrations:
        assert "WRITE-KEY-CONTENT" not in json.dumps(reg.raw), reg.name


@pytest.mark.parametrize("stack", ["unraid", "homelab"])
def test_the_preview_key_and_the_write_key_register_the_same_inputs(stack, tmp_path):
    """What a plan saved with one key and applied with the other compares: every resource's inputs."""
    write = run_stack(stack, home=_home(tmp_path, "write", "WRITE"))
    preview = run_stack(stack, home=_home(tmp_path, "preview", "PREVIEW"))
    assert write.error is None and preview.error is None
    assert {r.urn: r.raw for r in write.registrations} == {r.urn: r.raw for r in preview.registrations}


def test_an_update_without_an_agent_stops_before_anything_is_registered(ssh_home):
    r = run_stack("unraid", home=ssh_home, ssh_agent=None)
    assert isinstance(r.error, RunError)
    message = str(r.error)
    assert "SSH_AUTH_SOCK is not set" in message and "hosts.unraid" in message
    assert "make up" in message and f"ssh-add {ssh_home}/.ssh/octollm_unraid" in message
    assert r.registrations == []


def test_a_preview_needs_no_agent_and_a_local_stack_none_at_all(ssh_home):
    r = run_stack("unraid", home=ssh_home, ssh_agent=None, preview=True)
    assert r.error is None, r.error
    assert r.of_type(REMOTE_CMD)
    r = run_stack("dev", home=ssh_home, ssh_agent=None)
    assert r.error is None, r.error


def test_doctor_lists_the_identity_files_for_ssh_add(tmp_path):
    stack = tmp_path / "Pulumi.two.yaml"
    text = (ROOT / "Pulumi.homelab.yaml").read_text()
    stack.write_text(text)

    def listed(path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tooling.doctor", "--file", str(path), "--identity-files"],
                              cwd=ROOT, capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})

    out = listed(stack)
    assert out.returncode == 0, out.stderr
    # Every host of the homelab stack names the same file: it is listed once, expanded.
    assert out.stdout.splitlines() == [f"{tmp_path}/.ssh/homelab_ed25519"]
    out = listed(ROOT / "Pulumi.dev.yaml")
    assert out.returncode == 0 and out.stdout == ""
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(text.replace("identityFile: ~/.ssh/homelab_ed25519", "identityFile: [1]", 1))
    out = listed(bad)
    assert out.returncode == 2 and "identityFile" in out.stderr and out.stdout == ""
