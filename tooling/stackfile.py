"""Reading a Pulumi.<stack>.yaml for the tools that run outside the program (verify, the Kubernetes preflight)."""

from __future__ import annotations

import sys
from pathlib import Path

from components.config.schema import ConfigError, StackConfig, load_stack_config

from .mock_engine import read_stack_file


def load_or_report(path: Path) -> tuple[StackConfig, list[str]] | None:
    """The validated config and the names of its encrypted keys, or None once the problem is on stderr
    (the caller exits 2: a bad or unreadable stack file, not a failed check)."""
    try:
        plain, encrypted = read_stack_file(path)
        cfg, _ = load_stack_config(plain)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return None
    return cfg, encrypted
