"""The tests use the same recording mock engine as the offline plan."""

from components.mock_engine import *  # noqa: F401,F403
from components.mock_engine import ROOT, Registration, Result, run_stack, stack_config, unwrap  # noqa: F401
