"""Host scripts run twice against a scratch directory with stub zfs, exportfs, nvidia-smi and docker."""

import os
import subprocess
from pathlib import Path

import pytest

from components import host_scripts as scripts

ZFS_STUB = r'''#!/usr/bin/env bash
# A tiny zfs: one file per dataset under $ZFS_STATE holding "prop=value" lines.
set -eu
state="$ZFS_STATE"; mkdir -p "$state"
f() { echo "$state/$(echo "$1" | tr / _)"; }
case "$1" in
  list) ds="${@: -1}"; [ -f "$(f "$ds")" ] ;;
  create)
    shift; props=()
    while [ "$#" -gt 1 ]; do case "$1" in -p) shift ;; -o) props+=("$2"); shift 2 ;; *) shift ;; esac; done
    ds="$1"; printf '%s\n' "${props[@]}" | sort > "$(f "$ds")"
    for p in "${props[@]}"; do case "$p" in mountpoint=*) mkdir -p "${p#mountpoint=}" ;; esac; done
    echo "create $ds" >> "$state/log" ;;
  set) kv="$2"; ds="$3"; grep -v "^${kv%%=*}=" "$(f "$ds")" > "$(f "$ds").t" || true
       echo "$kv" >> "$(f "$ds").t"; sort "$(f "$ds").t" > "$(f "$ds")"; rm "$(f "$ds").t" ;;
  get) ds="${@: -1}"; for k in recordsize compression mountpoint; do
         printf '%s\t%s\n' "$k" "$(grep "^$k=" "$(f "$ds")" | cut -d= -f2-)"; done ;;
esac
'''

EXPORTFS_STUB = '#!/usr/bin/env bash\necho "exportfs $*" >> "$EXPORTFS_LOG"\n'


def stub_env(tmp_path: Path, **stubs: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in stubs.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ZFS_STATE": str(tmp_path / "zfs"),
            "EXPORTFS_LOG": str(tmp_path / "exportfs.log"), "OCTOLLM_EXPORTS_FILE": str(tmp_path / "exports")}


def bash(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*")) if "log" not in p.name}


def me() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def test_zfs_dataset_twice_gives_the_same_dataset(tmp_path):
    env = stub_env(tmp_path, zfs=ZFS_STUB)
    mnt = tmp_path / "service-pool" / "ai-models"
    script = scripts.zfs_dataset("service-pool/ai-models", str(mnt), "1M", "lz4", me())
    first = bash(script, env)
    assert first.returncode == 0, first.stderr
    state = tree(tmp_path / "zfs")
    second = bash(script, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout == f"recordsize\t1M\ncompression\tlz4\nmountpoint\t{mnt}\n"
    assert tree(tmp_path / "zfs") == state
    assert (tmp_path / "zfs" / "log").read_text().count("create") == 1  # created once, converged after


def test_zfs_dataset_converges_properties_without_recreating(tmp_path):
    env = stub_env(tmp_path, zfs=ZFS_STUB)
    mnt = tmp_path / "staging-pool" / "ai-temp"
    assert bash(scripts.zfs_dataset("staging-pool/ai-temp", str(mnt), "128K", "lz4", me()), env).returncode == 0
    (mnt / "data.bin").write_text("kept")
    out = bash(scripts.zfs_dataset("staging-pool/ai-temp", str(mnt), "128K", "off", me()), env)
    assert out.returncode == 0 and "compression\toff" in out.stdout
    assert (mnt / "data.bin").read_text() == "kept"


def test_nfs_export_is_idempotent_and_replaces_an_old_line(tmp_path):
    env = stub_env(tmp_path, exportfs=EXPORTFS_STUB)
    exports = tmp_path / "exports"
    exports.write_text("/srv/other 10.0.0.0/24(ro)\n/opt/ollama-models 10.0.0.0/24(ro,sync)\n")
    path = str(tmp_path / "opt" / "ollama-models")
    script = scripts.nfs_export(path, "10.0.0.0/24", "rw,sync,no_subtree_check,no_root_squash", me())
    for _ in range(2):
        r = bash(script, env)
        assert r.returncode == 0, r.stderr
    lines = exports.read_text().splitlines()
    assert lines == ["/srv/other 10.0.0.0/24(ro)", "/opt/ollama-models 10.0.0.0/24(ro,sync)",
                     f"{path} 10.0.0.0/24(rw,sync,no_subtree_check,no_root_squash)"]
    assert (tmp_path / "exportfs.log").read_text().splitlines() == ["exportfs -ra", "exportfs -ra"]
    changed = scripts.nfs_export(path, "10.0.0.0/24", "ro,sync,no_subtree_check", me())
    assert bash(changed, env).returncode == 0
    assert [l for l in exports.read_text().splitlines() if l.startswith(path)] == \
        [f"{path} 10.0.0.0/24(ro,sync,no_subtree_check)"]


def nvidia_smi(rows: list[str]) -> str:
    body = "\\n".join(rows)
    return f'#!/usr/bin/env bash\nprintf "{body}\\n"\n'


DOCKER_STUB = r'''#!/usr/bin/env bash
case "$1" in
  version) echo "27.5.1" ;;
  network) [ "$2" = ls ] && exit 0 ;;
  ps) exit 0 ;;
  run) echo "GPU 0: stub" ;;
esac
'''


def gpu_spec(tmp_path, **kw) -> scripts.PreflightSpec:
    base = dict(host="zfs-ai", stack_label="pulumi/homelab", min_docker="20.10",
                anchors=(str(tmp_path),), dirs=((str(tmp_path / "appdata"), me()),),
                gpus=(("RTX 5070 Ti", 16384),), min_driver="570.26", driver_reason="CUDA 12.8 needs",
                gpu_image="ollama/ollama:0.12.6")
    base.update(kw)
    return scripts.PreflightSpec(**base)


HEALTHY = ["NVIDIA GeForce RTX 5070 Ti, 16303, 575.64.03"]


@pytest.mark.parametrize("rows,fragment", [
    (HEALTHY, None),
    (["NVIDIA GeForce RTX 5070 Ti, 16303, 565.57.01"], "driver 565.57.01 is older than 570.26"),
    (["NVIDIA GeForce RTX 4060, 8188, 575.64.03"], "has 8188 MiB of VRAM"),
    ([], "reports 0 GPU(s), the config declares 1"),
])
def test_preflight_gpu_checks_with_a_stub_nvidia_smi(tmp_path, rows, fragment):
    env = stub_env(tmp_path, docker=DOCKER_STUB, **({"nvidia-smi": nvidia_smi(rows)} if rows else
                                                     {"nvidia-smi": "#!/usr/bin/env bash\nexit 0\n"}))
    before = tree(tmp_path)
    script = scripts.preflight(gpu_spec(tmp_path))
    for _ in range(2):
        r = bash(script, env)
        if fragment is None:
            assert r.returncode == 0 and r.stdout.strip() == "preflight ok on host zfs-ai", r.stderr
        else:
            assert r.returncode == 1 and fragment in r.stderr, r.stderr
            assert r.stderr.startswith("preflight failed on host zfs-ai")
    assert tree(tmp_path) == before  # read-only


def test_preflight_without_nvidia_smi_fails_unless_cpu_fallback(tmp_path):
    env = stub_env(tmp_path, docker=DOCKER_STUB)
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    r = bash(scripts.preflight(gpu_spec(tmp_path)), env)
    assert r.returncode == 1 and "nvidia-smi not found" in r.stderr
    ok = bash(scripts.preflight(gpu_spec(tmp_path, gpu_fallback=True)), env)
    assert ok.returncode == 0, ok.stderr
    assert "warning: zfs-ai: nvidia-smi not found" in ok.stdout


def test_preflight_reports_every_failure_at_once(tmp_path):
    env = stub_env(tmp_path, docker=DOCKER_STUB, **{"nvidia-smi": nvidia_smi(
        ["NVIDIA GeForce RTX 5070 Ti, 8000, 560.35.03"])})
    spec = gpu_spec(tmp_path, anchors=(str(tmp_path / "missing-pool"),), min_docker="99.0")
    r = bash(scripts.preflight(spec), env)
    assert r.returncode == 1
    assert "(4 problem(s))" in r.stderr
    for fragment in ("older than 99.0", "missing-pool does not exist", "8000 MiB", "driver 560.35.03"):
        assert fragment in r.stderr
