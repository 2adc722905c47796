import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(scope="session")
def ssh_home(tmp_path_factory):
    """A HOME whose ~/.ssh holds the identity files the stack files name (content is not used)."""
    from harness import stand_in_ssh_home

    return stand_in_ssh_home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def run(ssh_home):
    from harness import run_stack

    def _run(stack, config=None, secrets=None, **kw):
        return run_stack(stack, config=config, secrets=secrets, home=ssh_home, **kw)

    return _run
