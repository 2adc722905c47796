"""Every host script, rendered with hostile values in every field it takes, stays data.

Config refuses these values long before a script is rendered (tests/test_config_values.py); this is
the second wall. Each script is checked with `bash -n` and shellcheck, then run for real in a scratch
directory with stub system commands: no payload may run, and nothing outside the scratch root may
change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components import host_scripts as scripts

SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")


def payloads(marker: Path) -> list[str]:
    m = str(marker)
    return [f"a$(touch {m})b", f"a`touch {m}`b", f"a';touch {m};'b", f'a";touch {m};"b', f"a\ntouch {m}\nb",
            f"a$IFS$(touch {m})", f"a\\$(touch {m})", "-rf", "--help", "*"]


STUBS = {
    # docker: answers what the scripts ask, runs nothing
    "docker": """#!/usr/bin/env bash
echo "docker $*" >> "$STUB_LOG"
case "$1" in
  version) echo 24.0.7 ;;
  network) [ "$2" = ls ] && exit 0; echo '[]' ;;
  ps|inspect) exit 0 ;;
  exec) exit 0 ;;
  kill) exit 0 ;;
esac
""",
    "zfs": '#!/usr/bin/env bash\necho "zfs $*" >> "$STUB_LOG"\n[ "$1" = list ] && exit 1\nexit 0\n',
    "exportfs": '#!/usr/bin/env bash\necho "exportfs $*" >> "$STUB_LOG"\n',
    "nvidia-smi": '#!/usr/bin/env bash\necho "NVIDIA GeForce RTX 3070, 8192, 575.64.03"\n',
    "sshd": "#!/usr/bin/env bash\nexit 1\n",
    "chown": '#!/usr/bin/env bash\necho "chown $*" >> "$STUB_LOG"\n',
}


def _env(root: Path) -> dict:
    bin_dir = root / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root / "home"),
            "STUB_LOG": str(root / "stub.log"), "OCTOLLM_EXPORTS_FILE": str(root / "exports"),
            "OCTOLLM_SSHD_CONFIG": str(root / "sshd_config"), "TMPDIR": str(root / "tmp")}


def _outside_snapshot() -> dict:
    """Where a value that escaped its quotes would land as a path: the working directory, /, /tmp
    (only names made of the payloads: other processes use /tmp meanwhile), and /etc/exports."""
    def payload_names(d: str) -> list[str]:
        return sorted(n for n in os.listdir(d) if any(t in n for t in ("touch", "PWNED", "a$", "a`", "a'", 'a"')))
    return {"cwd": sorted(os.listdir(".")), "root": sorted(os.listdir("/")), "tmp": payload_names("/tmp"),
            "exports": Path("/etc/exports").read_bytes() if Path("/etc/exports").exists() else None}


def _or_refused(build, *args) -> str:
    """A builder that refuses a value outright is as safe as one that quotes it: an empty script."""
    try:
        return build(*args)
    except ValueError:
        return "true\n"


def test_an_exports_line_cannot_be_split_or_extended():
    for bad in ("10.0.0.0/24\n/ *(rw,no_root_squash)", "10.0.0.0/24 *", "10.0.0.0/24(rw)", "#x", ""):
        with pytest.raises(ValueError, match="cannot be written into an exports line"):
            scripts.nfs_export("/opt/ollama-models", bad, "rw,sync", "1000:1000")
    with pytest.raises(ValueError):
        scripts.nfs_export("/opt/ollama models", "10.0.0.0/24", "rw", "1000:1000")


def _scripts(root: Path, v: str) -> dict[str, tuple[str, str | None]]:
    """Every script builder, each string argument given the hostile value `v` (paths inside root)."""
    d = f"{root}/data/{v}"
    return {
        "ensure_dirs": (scripts.ensure_dirs([d, f"{root}/other"], v), None),
        "write_file": (scripts.write_file(f"{root}/cfg/{v}/file.yml", v, v, "HUP"), "content\n"),
        "ollama_pull": (scripts.ollama_pull(v, [v, "llama3.1:8b"], wait_seconds=2), None),
        "ollama_pull_job": (scripts.ollama_pull_job([v], wait_seconds=1), None),
        "zfs_dataset": (scripts.zfs_dataset(f"pool/{v}", d, v, v, v), None),
        "nfs_export": (_or_refused(scripts.nfs_export, d, v, v, v), None),
        "postgres_set_password": (scripts.postgres_set_password(v, v, v, wait_seconds=2), f"{v}\n"),
        "grafana_set_admin_password": (scripts.grafana_set_admin_password(v, wait_seconds=2), f"{v}\n"),
        "preflight": (scripts.preflight(scripts.PreflightSpec(
            host=v, stack_label=v, min_docker=v, networks=((v, "172.30.0.0/24"),), anchors=(f"{root}/{v}",),
            dirs=((d, v),), disk=((d, 1024),), gpus=((v, 8192),), min_driver=v, driver_reason=v,
            gpu_image=v, gpu_fallback=False, ports=(18999,), ssh_parallel=8)), None),
    }


NAMES = sorted(_scripts(Path("/x"), "v"))


@pytest.mark.parametrize("name", NAMES)
def test_hostile_values_stay_data(tmp_path, name):
    root = tmp_path / "root"
    root.mkdir()
    (root / "home").mkdir()
    (root / "tmp").mkdir()
    marker = tmp_path / "PWNED"
    before = _outside_snapshot()
    for i, v in enumerate(payloads(marker)):
        script, stdin = _scripts(root, v)[name]
        syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert syntax.returncode == 0, (v, syntax.stderr)
        f = tmp_path / f"{name}-{i}.sh"
        f.write_text(script)
        sc = subprocess.run([SHELLCHECK, "-S", "warning", "-s", "bash", str(f)], capture_output=True, text=True)
        assert sc.returncode == 0, (v, sc.stdout)
        subprocess.run(["bash", "-c", script], input=stdin or "", capture_output=True, text=True,
                       env=_env(root), cwd=root, timeout=60)
        assert not marker.exists(), f"{name} ran the payload in {v!r}"
    assert _outside_snapshot() == before


@pytest.mark.parametrize("value", ['a"b', 'x" }\nloki.write "evil" {', "back\\slash", "new\nline"])
def test_alloy_strings_cannot_be_closed_by_a_value(value):
    import json
    import re

    from components.services.monitoring_stack import alloy_config

    text = alloy_config(value, "http://loki:3100/loki/api/v1/push")
    m = re.search(r"labels\s+= \{ host = (.*) \}\n", text)
    assert m and json.loads(m.group(1)) == value
    assert text.count('loki.write "') == 1
