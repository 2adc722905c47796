"""backup: run a stack's backup job now, on its host, over SSH with the program's own SSH options.

    python -m tooling.backup -s unraid                          # every service the job copies (make backup)
    python -m tooling.backup -s unraid --services postgres redis
    python -m tooling.backup -s unraid --before-plan .pulumi-plan-unraid.json   # make up, before applying

The script is the one `pulumi up` installs on the host for its timer (components/host_scripts/backup.sh,
rendered from the same config), sent on stdin to `bash -s`. --before-plan reads a plan saved by
`pulumi preview --save-plan` and backs up, first, each stateful service (PostgreSQL, Redis, the workers'
Redis, Qdrant, Grafana) whose container the plan would replace or delete; when it would touch none, it does nothing.
Exit status 1 when a backup fails, 2 when the config or the plan cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from components import host_scripts as scripts
from components.config.schema import ConfigError, StackConfig, load_stack_config
from components.services.backups import STATEFUL_RESOURCES, backup_spec
from .doctor import ssh_command
from .mock_engine import ROOT, read_stack_file

# What a plan step does to a resource that loses (or may lose) the running container.
RISKY_OPS = ("replace", "create-replacement", "delete-replaced", "delete")
STATEFUL_TYPES = ("docker:index/container:Container", "kubernetes:apps/v1:StatefulSet")


def kubernetes_run_now(cfg: StackConfig, stack: str) -> str:
    """What runs a Kubernetes stack's backup now: a Job made from its CronJob, waited for, its logs read."""
    from components.services.backups import job_name
    ns, cj = cfg.kubernetes.namespace, job_name(stack)
    job = f"{cj}-manual-$(date -u +%Y%m%d%H%M%S)"
    return (f"stack {stack!r} runs on Kubernetes: its backups are the CronJob {ns}/{cj} (see README, 'Backups and "
            "restore'), and this tool does not create Jobs itself. Run one now with:\n"
            f"  job={job}\n"
            f"  kubectl -n {ns} create job --from=cronjob/{cj} \"$job\"\n"
            f"  kubectl -n {ns} wait --for=condition=complete --timeout=3600s \"job/$job\"\n"
            f"  kubectl -n {ns} logs \"job/$job\" --all-containers --prefix\n"
            "The last container's log ends with backup-id and backup-path; a failed container fails the Job and "
            "leaves no completed backup.")


def load_config(stack: str, file: Path | None = None) -> StackConfig:
    """The stack's validated config from Pulumi.<stack>.yaml (encrypted values are not needed here)."""
    path = file or ROOT / f"Pulumi.{stack}.yaml"
    cfg, _ = load_stack_config(read_stack_file(path)[0])
    return cfg


def spec_for(cfg: StackConfig, stack: str) -> scripts.BackupSpec:
    """backup_spec() with the names the backup host's DockerHost gives (container prefix, appdata root)."""
    host = cfg.hosts[cfg.backups.host]
    return backup_spec(cfg, stack, lambda s: f"{host.container_prefix}{s}",
                       lambda s: "/".join([host.appdata_root.rstrip("/"), s]))


def host_command(cfg: StackConfig, env: dict[str, str]) -> tuple[list[str], dict[str, str] | None]:
    """`bash -s` on the backup host: over ssh with the docker provider's options, or here for a local host."""
    name = cfg.backups.host
    host = cfg.hosts[name]
    if host.kind == "local":
        return ["bash", "-s"], {**os.environ, **env}
    # ssh joins the remote words with spaces for the remote shell: each is quoted.
    remote = ["env", *(shlex.quote(f"{k}={v}") for k, v in sorted(env.items())), "bash", "-s"]
    return ssh_command(name, host, remote), None


def run_script(cfg: StackConfig, script: str, env: dict[str, str], timeout: int) -> tuple[int, list[str]]:
    """Run a script on the backup host, echoing its output as it comes; returns the status and the lines."""
    cmd, local_env = host_command(cfg, env)
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=local_env)
    except FileNotFoundError as exc:
        print(f"{exc.filename} is not installed here", file=sys.stderr)
        return 1, lines
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(script)
    proc.stdin.close()
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    try:
        return proc.wait(timeout=timeout), lines
    except subprocess.TimeoutExpired:
        proc.kill()
        print(f"the backup did not finish within {timeout}s", file=sys.stderr)
        return 1, lines


@dataclass(frozen=True)
class RiskyStep:
    urn: str
    name: str  # the resource's name, e.g. data-postgres
    service: str  # postgres, redis, worker-redis, qdrant, grafana
    ops: tuple[str, ...]

    @property
    def action(self) -> str:
        return "delete" if set(self.ops) == {"delete"} else "replace"


def _urn_parts(urn: str) -> tuple[str, str]:
    """(type, name) of a URN: urn:pulumi:<stack>::<project>::<parent types$>type::<name>."""
    parts = urn.split("::")
    if len(parts) < 4 or not parts[0].startswith("urn:pulumi:"):
        raise ValueError(f"{urn!r} is not a resource URN")
    return parts[2].rsplit("$", 1)[-1], parts[-1]


def risky_steps(plan: dict) -> list[RiskyStep]:
    """The stateful containers a plan would replace or delete.

    `pulumi preview --save-plan` writes `resourcePlans.<urn>.steps`, a list of operation names such as
    ["delete-replaced", "replace", "create-replacement"] (apitype.ResourcePlanV1); `pulumi preview --json`
    writes `steps[]` with `op` and `urn`. Both are read.
    """
    if not isinstance(plan, dict):
        raise ValueError("a saved plan is a JSON object")
    ops: dict[str, list[str]] = {}
    for urn, rp in (plan.get("resourcePlans") or {}).items():
        for step in (rp or {}).get("steps") or []:
            ops.setdefault(urn, []).append(step if isinstance(step, str) else str((step or {}).get("op", "")))
    for step in plan.get("steps") or []:
        if isinstance(step, dict) and step.get("urn"):
            ops.setdefault(step["urn"], []).append(str(step.get("op", "")))
    out = []
    for urn, found in sorted(ops.items()):
        t, name = _urn_parts(urn)
        risky = tuple(sorted({o for o in found if o in RISKY_OPS}))
        if risky and t in STATEFUL_TYPES and name in STATEFUL_RESOURCES:
            out.append(RiskyStep(urn, name, STATEFUL_RESOURCES[name], risky))
    return out


def backup_now(cfg: StackConfig, stack: str, services: list[str] | None, reason: str,
               timeout: int = 3600) -> tuple[int, str | None]:
    """Run the backup on its host; returns the status and where it was saved (host:path), or None."""
    spec = spec_for(cfg, stack)
    env = {"OCTOLLM_BACKUP_REASON": reason}
    if services:
        env["OCTOLLM_BACKUP_ONLY"] = " ".join(services)
    rc, lines = run_script(cfg, scripts.backup(spec), env, timeout)
    path = next((l.split(": ", 1)[1] for l in lines if l.startswith("backup-path: ")), None)
    return rc, (f"{cfg.backups.host}:{path}" if path else None)


def before_plan(cfg: StackConfig, stack: str, plan_file: Path) -> int:
    try:
        steps = risky_steps(json.loads(plan_file.read_text()))
    except (OSError, ValueError) as exc:
        print(f"cannot read the saved plan {plan_file}: {exc}", file=sys.stderr)
        return 2
    if not steps:
        print("the plan replaces or deletes no stateful container (PostgreSQL, Redis, the workers' Redis, Qdrant, "
              "Grafana): "
              "no data backup is needed first")
        return 0
    for s in steps:
        print(f"the plan would {s.action} {s.name} ({s.service}; steps: {', '.join(s.ops)})")
    if cfg.backups is None:
        print("warning: backups: is not configured for this stack, so nothing is backed up first; the data stays "
              "where it is (a host directory or a volume claim, not the container), but there is no copy to go back "
              "to (see README, 'Backups and restore')", file=sys.stderr)
        return 0
    chosen = cfg.backups.chosen(cfg)
    services = sorted({s.service for s in steps if s.service in chosen}, key=chosen.index)
    for s in steps:
        if s.service not in chosen:
            print(f"warning: {s.service} is not among backups.services ({', '.join(chosen)}): not backed up first",
                  file=sys.stderr)
    if not services:
        return 0
    reason = "before plan: " + ", ".join(f"{s.action} {s.name}" for s in steps if s.service in services)
    rc, where = backup_now(cfg, stack, services, reason)
    if rc != 0 or where is None:
        print(f"the backup of {', '.join(services)} failed (status {rc}): not applying the plan", file=sys.stderr)
        return 1
    backup_id = where.rsplit("/", 1)[-1]
    print(f"backed up {', '.join(services)} before the plan: {where}")
    for svc in services:
        print(f"  restore with: python -m tooling.restore -s {stack} --service {svc} --backup {backup_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.backup", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", required=True)
    ap.add_argument("--file", type=Path, default=None, help="a Pulumi.<stack>.yaml (default: from -s)")
    ap.add_argument("--services", nargs="+", default=None, help="copy only these (default: every one the job copies)")
    ap.add_argument("--before-plan", type=Path, default=None, metavar="PLAN_JSON",
                    help="back up what a plan saved by `pulumi preview --save-plan` would replace or delete")
    ap.add_argument("--timeout", type=int, default=3600)
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.stack, a.file)
    except (ConfigError, OSError) as exc:
        print(exc.render() if isinstance(exc, ConfigError) else str(exc), file=sys.stderr)
        return 2
    if a.before_plan is not None:
        return before_plan(cfg, a.stack, a.before_plan)
    if cfg.backups is None:
        print(f"stack {a.stack!r} has no backups: configuration (see README, 'Backups and restore')", file=sys.stderr)
        return 2
    if cfg.platform == "kubernetes":
        print(kubernetes_run_now(cfg, a.stack), file=sys.stderr)
        return 2
    chosen = cfg.backups.chosen(cfg)
    unknown = [s for s in a.services or [] if s not in chosen]
    if unknown:
        print(f"{', '.join(unknown)}: not among the services the job copies ({', '.join(chosen)})", file=sys.stderr)
        return 2
    rc, where = backup_now(cfg, a.stack, a.services, "on demand", a.timeout)
    if rc == 0 and where:
        print(f"backup saved on {where}")
    return rc if rc else (0 if where else 1)


if __name__ == "__main__":
    sys.exit(main())
