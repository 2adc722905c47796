import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(scope="session")
def ssh_home(tmp_path_factory):
    """A HOME whose ~/.ssh holds the identity files the stack files name (content is not used)."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    for name in ("octollm_unraid", "id_ed25519", "homelab_ed25519"):
        key = home / ".ssh" / name
        key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{name}\n-----END OPENSSH PRIVATE KEY-----\n")
        key.chmod(0o600)
    return str(home)


@pytest.fixture(scope="session")
def run(ssh_home):
    from harness import run_stack

    def _run(stack, config=None, secrets=None, **kw):
        return run_stack(stack, config=config, secrets=secrets, home=ssh_home, **kw)

    return _run
