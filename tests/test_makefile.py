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
