"""Every shell script the program sends to a host passes shellcheck, and is idempotent."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components import host_scripts as scripts

SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")
STACKS = ["unraid", "dev", "homelab"]


def shellcheck(script: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    f = tmp_path / f"{name}.sh"
    f.write_text(script)
    return subprocess.run([SHELLCHECK, "--shell=bash", "--severity=style", str(f)],
                          capture_output=True, text=True)


def registered_scripts(result):
    for reg in result.registrations:
        if reg.type.startswith("command:"):
            for field in ("create", "update", "delete"):
                if reg.inputs.get(field):
                    yield f"{reg.name}-{field}", reg.inputs[field]


@pytest.mark.parametrize("stack", STACKS)
def test_every_registered_script_passes_shellcheck(run, stack, tmp_path):
    result = run(stack)
    assert result.error is None
    found = list(registered_scripts(result))
    assert found, "the stack sends no scripts?"
    failures = {}
    for name, script in found:
        proc = shellcheck(script, tmp_path, name)
        if proc.returncode != 0:
            failures[name] = proc.stdout
    assert not failures, failures


def test_shellcheck_is_real(tmp_path):
    # The checker must be able to fail: an unquoted expansion is a finding.
    assert shellcheck("#!/usr/bin/env bash\nrm -rf $1/*\n", tmp_path, "bad").returncode != 0


def run_bash(script: str, env: dict, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], input=stdin, capture_output=True, text=True, env=env)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>", oct(p.stat().st_mode))
            for p in sorted(root.rglob("*"))}


def test_ensure_dirs_is_idempotent_and_keeps_data(tmp_path):
    me = f"{os.getuid()}:{os.getgid()}"
    paths = [str(tmp_path / "appdata" / s) for s in ("postgres", "redis")]
    script = scripts.ensure_dirs(paths, me)
    env = dict(os.environ)
    assert run_bash(script, env).returncode == 0
    (tmp_path / "appdata" / "postgres" / "PG_VERSION").write_text("15")
    first = snapshot(tmp_path)
    second = run_bash(script, env)
    assert second.returncode == 0, second.stderr
    assert snapshot(tmp_path) == first


def test_write_file_is_atomic_and_idempotent(tmp_path):
    me = f"{os.getuid()}:{os.getgid()}"
    target = tmp_path / "config" / "prometheus" / "prometheus.yml"
    script = scripts.write_file(str(target), me)
    env = dict(os.environ)
    a = run_bash(script, env, "global: {}\n")
    b = run_bash(script, env, "global: {}\n")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert target.read_text() == "global: {}\n"
    assert a.stdout == b.stdout  # same checksum line
    assert sorted(p.name for p in target.parent.iterdir()) == ["prometheus.yml"]  # no temp files left


def test_ollama_pull_skips_present_models_and_waits(tmp_path):
    # A stub `docker` that records calls and knows one model already.
    log = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/usr/bin/env bash\n"
        f"echo \"$*\" >> {log}\n"
        'case "$*" in\n'
        '  *"ollama show llama3.1:8b"*) exit 0 ;;\n'
        '  *"ollama show"*) exit 1 ;;\n'
        "esac\n"
        "exit 0\n")
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = run_bash(scripts.ollama_pull("octollm-ollama", ["llama3.1:8b", "nomic-embed-text"]), env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["present: llama3.1:8b", "pulled: nomic-embed-text"]
    calls = log.read_text()
    assert "ollama pull nomic-embed-text" in calls and "ollama pull llama3.1:8b" not in calls


def test_kubernetes_model_pull_job_script_passes_shellcheck(tmp_path):
    proc = shellcheck(scripts.ollama_pull_job(["llama3.1:8b", "nomic-embed-text"]), tmp_path, "job")
    assert proc.returncode == 0, proc.stdout
