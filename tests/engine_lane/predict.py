"""What the mock engine says a config change touches, as tests/test_change_sets.py computes it.

Run from the project copy the lane deploys (so the prediction comes from the same program):
    python -m tests.engine_lane.predict STACK BEFORE.yaml AFTER.yaml
prints {"added": [...], "removed": [...], "changed": [...]} (resource names), where changed means the
registered inputs or dependencies differ, exactly as test_change_sets.diff().
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tooling.mock_engine import read_stack_file, run_stack


def registrations(stack: str, path: Path):
    cfg, encrypted = read_stack_file(path)
    if encrypted:
        raise SystemExit(f"{path}: encrypted values cannot be predicted offline: {encrypted}")
    r = run_stack(stack, config=cfg)
    if r.error is not None:
        raise SystemExit(f"{path}: the program failed under the mock engine: {r.error}")
    return {x.name: x for x in r.registrations}


def main(argv: list[str]) -> int:
    stack, before, after = argv
    a = registrations(stack, Path(before))
    b = registrations(stack, Path(after))
    changed = sorted(n for n in set(a) & set(b)
                     if a[n].raw != b[n].raw or set(a[n].dependencies) != set(b[n].dependencies))
    print(json.dumps({"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)), "changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
