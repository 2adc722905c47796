"""Every shell script the program sends to a host passes shellcheck, and is idempotent."""

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from components import host_scripts as scripts

SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")
STACKS = ["unraid", "dev", "homelab"]
# The scripts' source files, found next to the module that renders them (not from the working directory).
SCRIPT_DIR = Path(str(resources.files(scripts)))
SH_FILES = sorted(SCRIPT_DIR.glob("*.sh"))


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


def shellcheck_as(script: str, tmp_path: Path, name: str, shell: str) -> subprocess.CompletedProcess:
    f = tmp_path / f"{name}.sh"
    f.write_text(script)
    return subprocess.run([SHELLCHECK, f"--shell={shell}", "--severity=style", str(f)], capture_output=True, text=True)


K8S_BACKUP = scripts.backup_kubernetes("gke", ("postgres", "redis", "qdrant"), keep_daily=7, keep_weekly=4,
                                       keep_days=3)


@pytest.mark.parametrize("part", ["begin", "finish", "postgres", "redis", "qdrant"])
def test_the_kubernetes_backup_renderings_pass_shellcheck(part, tmp_path):
    """backup.sh's two Kubernetes renderings as bash; each step as POSIX sh (its image has no bash), and sh -n."""
    script = getattr(K8S_BACKUP, part) if part in ("begin", "finish") else K8S_BACKUP.steps[part]
    shell = "bash" if part in ("begin", "finish") else "sh"
    assert script.startswith("#!/usr/bin/env bash\n" if shell == "bash" else "#!/bin/sh\n")
    proc = shellcheck_as(script, tmp_path, part, shell)
    assert proc.returncode == 0, proc.stdout
    assert subprocess.run([shell, "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert "declare -A P=" not in script and "${P[" not in script, "only rendered values reach a pod"


def test_posix_shellcheck_is_real(tmp_path):
    assert shellcheck_as("#!/bin/sh\nx=(a b)\n[[ $x ]] && echo ok\n", tmp_path, "bad", "sh").returncode != 0


DOCKER_SPEC = scripts.BackupSpec("unraid", "/mnt/user/backups", keep_daily=7, keep_weekly=4, keep_days=3,
                                 postgres=("p", "octollm", "octollm"), redis=("r", "/a/r"),
                                 worker_redis=("w", "/a/w"), qdrant=("q", "http://127.0.0.1:6333"),
                                 grafana=("g", "/a/g"))
K8S_ONLY = ("OCTOLLM_BACKUP_DIR", "OCTOLLM_BACKUP_RUN", "$scratch", ".octollm-backup-partial",
            "removed the unfinished backup", "the pod's first container", "left no record")


def test_the_docker_rendering_of_backup_sh_has_no_kubernetes_part():
    docker = scripts.backup(DOCKER_SPEC)
    for part in K8S_ONLY:
        assert part not in docker, part
    # and the Kubernetes renderings have each of those somewhere, and no docker, flock or pause of their own
    k8s = K8S_BACKUP.begin + K8S_BACKUP.finish
    for part in K8S_ONLY:
        assert part in k8s, part
    for part in ("docker exec", "docker pause", "flock -w", "docker inspect"):
        assert part in docker and part not in k8s, part


def test_the_kubernetes_renderings_split_the_docker_job_at_the_copies():
    """begin makes the id and the partial directory and stops there; finish writes no new id and prunes."""
    assert 'id="$(date -u +%Y%m%dT%H%M%SZ)"' in K8S_BACKUP.begin and "pruned" not in K8S_BACKUP.begin
    assert 'id="$(date -u +%Y%m%dT%H%M%SZ)"' not in K8S_BACKUP.finish and "pruned" in K8S_BACKUP.finish
    assert "manifest.json" in K8S_BACKUP.finish and "manifest.json" not in K8S_BACKUP.begin


# --- the .sh files themselves ---------------------------------------------------------------------

def test_the_script_files_are_package_data_next_to_the_module():
    assert SCRIPT_DIR == Path(scripts.__file__).parent
    # one file for each builder
    assert {f.stem for f in SH_FILES} == {
        "ensure_dirs", "write_file", "ollama_pull", "ollama_pull_job", "zfs_dataset", "nfs_export",
        "preflight", "postgres_set_password", "grafana_set_admin_password", "backup", "backup_step", "restore",
        "schedule_job"}


def test_scripts_render_from_any_working_directory(tmp_path):
    # The files are read relative to the module, so a program started elsewhere finds them.
    root = Path(scripts.__file__).resolve().parents[2]
    code = ("from components import host_scripts as s; "
            "print(s.preflight(s.PreflightSpec('h', 'l', '20.10', ports=(1,))), end='')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == scripts.preflight(scripts.PreflightSpec("h", "l", "20.10", ports=(1,)))


@pytest.mark.parametrize("path", SH_FILES, ids=lambda p: p.name)
def test_every_script_file_passes_shellcheck(path):
    # shellcheck reads the file itself: the source, before any value is rendered into it.
    proc = subprocess.run([SHELLCHECK, "--shell=bash", "--severity=style", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


PARAM_REF = re.compile(r"\$\{P\[(\w+)\]\}")


@pytest.mark.parametrize("path", SH_FILES, ids=lambda p: p.name)
def test_every_parameter_a_file_uses_has_a_sample_in_its_block(path):
    # The parameter block makes the file valid shell on its own (set -u): each ${P[name]} and each
    # name in an #@if/#@for has a sample value there, and the block holds nothing else.
    text = path.read_text()
    # bash, or POSIX sh for what runs in images without bash (backup_step.sh); the sample block is bash either way
    assert text.startswith(("#!/usr/bin/env bash\n#@params\n", "#!/bin/sh\n#@params\n")) and text.endswith("\n")
    block, body = text.split("\n#@end\n", 1)
    samples = set(re.findall(r"^  \[(\w+)\]=", block, re.M))
    used = set(PARAM_REF.findall(body))
    for m in re.finditer(r"^\s*#@(if|for)\s+(.*)$", body, re.M):
        used.update(re.findall(r"\w+", m.group(2).replace(" in ", " ")))
    assert used == samples, (used - samples, samples - used)


def test_the_sshd_defaults_in_preflight_are_openssh_s():
    text = (SCRIPT_DIR / "preflight.sh").read_text()
    d = scripts.SSHD_DEFAULTS
    assert f'max_startups="${{max_startups:-{d["maxstartups"]}}}"' in text
    assert f'max_sessions="${{max_sessions:-{d["maxsessions"]}}}"' in text


def test_nothing_of_the_template_reaches_a_host():
    spec = scripts.PreflightSpec(
        host="h", stack_label="l", min_docker="20.10", networks=(("n", "172.30.0.0/24"),), anchors=("/a",),
        dirs=(("/a/d", "1:1"),), disk=(("/a/m", 1024),), gpus=(("g", 8192),), min_driver="570.26",
        driver_reason="r", gpu_image="i", ports=(1,), ssh_parallel=8)
    rendered = [scripts.preflight(spec), scripts.ensure_dirs(["/a"], "1:1"), scripts.write_file("/a/f", "1:1", "c", "HUP"),
                scripts.ollama_pull("c", ["m"]), scripts.ollama_pull_job(["m"]), scripts.zfs_dataset("p/d", "/m", "1M", "lz4", "1:1"),
                scripts.nfs_export("/a", "10.0.0.0/24", "rw", "1:1"), scripts.postgres_set_password("c", "u", "d"),
                scripts.grafana_set_admin_password("c")]
    for text in rendered:
        assert text.startswith("#!/usr/bin/env bash\nset -")
        assert "P[" not in text and "#@" not in text and "declare -A" not in text


def test_a_string_value_only_ever_becomes_one_whole_quoted_word():
    t = scripts._parse("t", '#!/usr/bin/env bash\n#@params\ndeclare -A P=([v]=x [n]=1)\n#@end\n'
                            'echo "${P[v]}" "in ${P[n]} s"\necho "bare ${P[v]}"\n')
    out: list[str] = []
    with pytest.raises(TypeError, match="only an int may stand outside its own quotes"):
        scripts._expand(t.body, {"v": "$(touch x)", "n": 2}, out)
    assert out == ["#!/usr/bin/env bash", "echo '$(touch x)' \"in 2 s\""]
    with pytest.raises(TypeError, match="neither a string nor an int"):
        scripts._expand(t.body, {"v": None, "n": 2}, [])
    with pytest.raises(TypeError, match="only an int"):  # a bool is not a count
        scripts._expand(t.body, {"v": "x", "n": True}, [])


def test_a_builder_cannot_pass_a_parameter_the_file_does_not_use():
    with pytest.raises(TypeError, match="takes no parameter"):
        scripts._render("ensure_dirs", paths=[], owner="1:1", mode="0750", ready="", extra="x")


@pytest.mark.parametrize("text,error", [
    ("#@if x\necho\n", "not closed"),
    ("echo\n#@end\n", "without #@if"),
    ("#@for x of y\n#@end\n", "expected '#@for"),
    ("#@params\n", "not closed"),
    ("echo", "newline"),
    ("#@endif\n", "unknown renderer line"),
])
def test_a_malformed_template_is_refused(text, error):
    with pytest.raises(ValueError, match=error):
        scripts._parse("t", text)
