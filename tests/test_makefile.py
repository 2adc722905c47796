"""The Makefile's own failure paths, run with make itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_stops_with_a_clear_message_when_the_cli_cannot_be_installed(tmp_path):
    # A curl that fails as a download does without a network (exit 6: host not resolved), and no
    # pulumi anywhere: the target must stop here, not run `sh` on nothing and carry on.
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "curl").write_text("#!/bin/sh\necho 'curl: (6) Could not resolve host: get.pulumi.com' >&2\nexit 6\n")
    (stub / "curl").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "pulumi-cli"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "the Pulumi CLI is not installed and could not be downloaded" in out.stderr
    assert not (tmp_path / "home" / ".pulumi").exists()


def test_destroy_dev_unprotects_then_destroys_and_names_the_data_left(tmp_path):
    fake = tmp_path / "pulumi"
    log = tmp_path / "calls"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "destroy-dev", f"PULUMI={fake}"],
                         env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == ["state unprotect --all --yes --stack dev",
                                            "destroy --stack dev --yes --parallel 8"]
    assert "Its data stays on disk under /var/tmp/octollm-dev" in out.stdout


# ---- pulumi under a private ssh-agent ------------------------------------------------------------------

FAKE_PULUMI = """#!/bin/sh
# Records what each pulumi call sees: its arguments, the agent and the keys the agent holds.
{{ echo "args: $*"; echo "sock: $SSH_AUTH_SOCK"; ssh-add -L 2>&1 | sed 's/^/key: /'; }} >> {log}
exit {rc}
"""


def _agent_env(tmp_path, passphrase: str = "") -> tuple[dict, Path, Path]:
    """A HOME holding the unraid stack's identity file (~/.ssh/octollm_unraid), no agent of our own, and
    an askpass program that answers the passphrase and counts how often it was asked."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    key = home / ".ssh" / "octollm_unraid"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "lane", "-f", str(key)], check=True)
    asked = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho x >> {asked}\necho '{passphrase}'\n")
    askpass.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "MAKEFLAGS")}
    env.update(HOME=str(home), SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    return env, key, asked


def _fake(tmp_path, name: str, rc: int = 0) -> tuple[Path, Path]:
    log = tmp_path / f"{name}.log"
    fake = tmp_path / name
    fake.write_text(FAKE_PULUMI.format(log=log, rc=rc))
    fake.chmod(0o755)
    return fake, log


def _calls(log: Path) -> list[dict]:
    calls: list[dict] = []
    for line in log.read_text().splitlines():
        kind, _, value = line.partition(": ")
        if kind == "args":
            calls.append({"args": value, "sock": None, "keys": []})
        elif kind == "sock":
            calls[-1]["sock"] = value
        else:
            calls[-1]["keys"].append(value)
    return calls


def _public(key: Path) -> str:
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_drift_runs_pulumi_under_an_agent_holding_exactly_the_stack_key_and_ends_it(tmp_path):
    env, key, _ = _agent_env(tmp_path)
    fake, log = _fake(tmp_path, "pulumi")
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "drift", "STACK=unraid", f"PULUMI={fake}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    [call] = _calls(log)
    assert call["args"].startswith("preview --stack unraid --refresh --expect-no-changes")
    assert [" ".join(k.split()[:2]) for k in call["keys"]] == [_public(key)]
    assert call["sock"] and not Path(call["sock"]).exists(), "the agent outlived make"


def test_a_failing_pulumi_still_ends_the_agent(tmp_path):
    env, _, _ = _agent_env(tmp_path)
    fake, log = _fake(tmp_path, "pulumi", rc=3)
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "drift", "STACK=unraid", f"PULUMI={fake}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    [call] = _calls(log)
    assert call["keys"] and not Path(call["sock"]).exists()


def test_up_asks_the_passphrase_once_and_previews_and_applies_under_one_agent(tmp_path):
    env, key, asked = _agent_env(tmp_path, passphrase="correct horse")
    fake, log = _fake(tmp_path, "pulumi")
    # The python of the recipe: the real one for the key list, a recorder for backup and verify (they
    # would talk to the hosts).
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\nif [ "$2" = tooling.doctor ]; then exec {ROOT}/.venv/bin/python "$@"; fi\n'
                  f'echo "python $*" >> {tmp_path}/python.log\n')
    py.chmod(0o755)
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", "policy/venv/.ready", "-o", ".venv/.ready", "up",
                          "STACK=unraid", f"PULUMI={fake}", f"PY={py}", f"PULUMI_BACKEND_URL=file://{tmp_path}/state"],
                         env=env, input="y\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = _calls(log)
    assert [c["args"].split()[0] for c in calls] == ["preview", "stack", "up"]
    assert calls[0]["args"].endswith("--save-plan .pulumi-plan-unraid.json --parallel 8")
    assert calls[2]["args"].startswith("up --stack unraid --plan .pulumi-plan-unraid.json")
    assert len({c["sock"] for c in calls}) == 1 and all(c["sock"] for c in calls)
    assert all([" ".join(k.split()[:2]) for k in c["keys"]] == [_public(key)] for c in calls)
    assert asked.read_text().count("x") == 1, "ssh-add asked for the passphrase more than once"
    assert not Path(calls[0]["sock"]).exists()
    assert "tooling.verify -s unraid" in (tmp_path / "python.log").read_text()
