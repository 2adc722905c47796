"""How long the program takes under the mock engine, against a floor, per stack.

For each stack, in a fresh interpreter (so peak memory is that stack's own):
  resources  number of resources registered
  time       median wall time of the program over --repeat runs
  floor      median wall time of a trivial program registering as many bare resources
             under the same mock engine, measured in the same process
  ratio      time / floor
  peak_rss   peak resident memory of the interpreter (MiB)
  chain      the longest dependency chain, in resources (explicit depends_on, inputs that are
             other resources' outputs, and the provider a resource is created with)

    python benchmarks/bench.py                 # every stack
    python benchmarks/bench.py --stacks unraid --repeat 7 --json
    python benchmarks/bench.py --scale 1 10 50 # synthetic homelab of N hosts
Figures only: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _home() -> str:
    from harness import stand_in_ssh_home

    return stand_in_ssh_home(Path(tempfile.mkdtemp()))


def floor_run(n: int) -> float:
    import pulumi
    from harness import Mocks, RecordingMonitor
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_in_stack, run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    mocks = Mocks()
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pmocks.set_mocks(mocks, project="floor", stack="floor", monitor=RecordingMonitor(mocks))
    settings.set_root_resource(None)  # type: ignore[arg-type]

    def program():
        for i in range(n):
            pulumi.CustomResource("floor:index:Bare", f"r{i}", {"value": str(i)})

    t = time.perf_counter()
    _sync_await(run_pulumi_func(lambda: run_in_stack(program)))
    return time.perf_counter() - t


def longest_chain(result) -> list[str]:
    """Longest path through dependency + provider edges among custom resources (names, in order)."""
    regs = {r.urn: r for r in result.registrations if not r.type.startswith("octollm:index:")}
    edges: dict[str, set[str]] = {u: set() for u in regs}
    comp_children: dict[str, set[str]] = {}
    for r in result.registrations:
        comp_children.setdefault(r.parent, set()).add(r.urn)

    def expand(urn: str) -> set[str]:
        # A dependency on a component means a dependency on everything inside it.
        if urn in regs:
            return {urn}
        out = set()
        for c in comp_children.get(urn, ()):
            out |= expand(c)
        return out

    for u, r in regs.items():
        for d in r.dependencies:
            edges[u] |= expand(d) - {u}
        if r.provider:
            # a provider reference is "<urn>::<id>"
            prov_urn = r.provider.rsplit("::", 1)[0]
            if prov_urn in regs:
                edges[u].add(prov_urn)
    memo: dict[str, list[str]] = {}

    def path(u: str) -> list[str]:
        if u not in memo:
            memo[u] = []
            best = max((path(d) for d in edges[u]), key=len, default=[])
            memo[u] = best + [u]
        return memo[u]

    best = max((path(u) for u in regs), key=len, default=[])
    return [regs[u].name for u in best]


def measure(stack: str, repeat: int, config_file: str | None = None) -> dict:
    from harness import run_stack

    home = _home()
    config = json.loads(Path(config_file).read_text()) if config_file else None
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = run_stack(stack, config=config, home=home)
        times.append(time.perf_counter() - t)
        if result.error is not None:
            raise SystemExit(f"{stack}: {result.error}")
    n = len(result.registrations)
    floors = [floor_run(n) for _ in range(repeat)]
    chain = longest_chain(result)
    t, f = statistics.median(times), statistics.median(floors)
    return {"stack": stack, "resources": n, "time_s": round(t, 4), "floor_s": round(f, 4),
            "ratio": round(t / f, 2), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "chain_length": len(chain), "chain": chain}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"stack": args[0], "skipped": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stacks", nargs="*", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", nargs="*", type=int, default=None, help="synthetic homelab host counts")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        stack, repeat, *cfg = a.child
        print(json.dumps(measure(stack, int(repeat), cfg[0] if cfg else None)))
        return
    stacks = a.stacks if a.stacks is not None else available_stacks()
    rows = [child([s, str(a.repeat)]) for s in stacks]
    skipped = [r for r in rows if "skipped" in r]
    rows = [r for r in rows if "skipped" not in r]
    scale = []
    if a.scale:
        from synthetic import synthetic_homelab
        for n in a.scale:
            f = Path(tempfile.mkdtemp()) / f"homelab-{n}.json"
            f.write_text(json.dumps(synthetic_homelab(n)))
            row = child(["homelab", str(a.repeat), str(f)])
            row["hosts"] = n
            scale.append(row)
    if a.json:
        print(json.dumps({"stacks": rows, "scale": scale}, indent=2))
        return
    print(f"{'stack':<10}{'resources':>10}{'time s':>9}{'floor s':>9}{'ratio':>7}{'peak MiB':>10}{'chain':>7}")
    for r in rows:
        print(f"{r['stack']:<10}{r['resources']:>10}{r['time_s']:>9.3f}{r['floor_s']:>9.3f}{r['ratio']:>7.2f}"
              f"{r['peak_rss_mib']:>10.1f}{r['chain_length']:>7}")
    for r in skipped:
        print(f"{r['stack']:<10} skipped: {r['skipped']}")
    for r in rows:
        print(f"longest chain ({r['stack']}): {' -> '.join(r['chain'])}")
    if scale:
        print(f"\n{'hosts':>6}{'resources':>10}{'time s':>9}{'floor s':>9}{'ratio':>7}{'peak MiB':>10}")
        for r in scale:
            if "skipped" in r:
                print(f"{r['hosts']:>6} skipped: {r['skipped']}")
                continue
            print(f"{r['hosts']:>6}{r['resources']:>10}{r['time_s']:>9.3f}{r['floor_s']:>9.3f}{r['ratio']:>7.2f}"
                  f"{r['peak_rss_mib']:>10.1f}")
        scale = [r for r in scale if "skipped" not in r]
        by = {r["hosts"]: r for r in scale}
        if 10 in by and 50 in by:
            print(f"time 50/10 hosts: {by[50]['time_s'] / by[10]['time_s']:.2f}x "
                  f"(resources {by[50]['resources'] / by[10]['resources']:.2f}x)")


def available_stacks() -> list[str]:
    from harness import run_stack  # noqa: F401  (imports the program's dependencies once)
    import yaml
    out = []
    for f in sorted(ROOT.glob("Pulumi.*.yaml")):
        doc = yaml.safe_load(f.read_text()) or {}
        if (doc.get("config") or {}).get("octollm-infra:platform") in ("docker", "kubernetes"):
            out.append(f.stem.split(".", 1)[1])
    return out


if __name__ == "__main__":
    main()
