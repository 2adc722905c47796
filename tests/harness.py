"""The tests use the same recording mock engine as the offline plan."""

from tooling.mock_engine import *  # noqa: F401,F403
from tooling.mock_engine import ROOT, Registration, Result, run_stack, stack_config, unwrap  # noqa: F401
