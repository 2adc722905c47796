"""restore: put one service of a stack back as it was in one backup, on its host, over SSH.

    python -m tooling.restore -s unraid --list
    python -m tooling.restore -s unraid --service postgres --backup 20250101T033000Z
    python -m tooling.restore -s unraid --service redis --backup latest --yes

The backup's sha256 sums are checked first; nothing is touched when they do not match. Then:
PostgreSQL: the other sessions are ended and `pg_restore --clean --if-exists --single-transaction`
runs into the database (the server must run for that). Redis (redis, and the workers' worker-redis, by the
same steps): the container is stopped, the RDB is
put in place (also as the base of its AOF, which Redis 7 loads instead of the RDB), the container is
started. Grafana: stopped, grafana.db swapped, started. Qdrant: each collection is recovered from its
uploaded snapshot while the server runs. What a restore replaces on disk is moved to
<data>/before-restore-<time>/, never deleted. Every step is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components import host_scripts as scripts
from components.config.schema import BACKUP_SERVICES, ConfigError
from .backup import load_config, run_script, spec_for


def _helper_pod(cfg, stack: str, name: str, image: str, claims: dict[str, str], env: list[dict],
                argv: list[str]) -> str:
    """`kubectl run` of a one-off pod in the backup pod's identity (its label, so the NetworkPolicies admit
    it), with `claims` (mount path -> claim) mounted and `env` set, running `argv`."""
    import json
    import shlex

    from components.services.backups import job_name
    ns = cfg.kubernetes.namespace
    vols = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims.values())]
    mounts = [{"name": f"v{i}", "mountPath": m} for i, m in enumerate(claims)]
    overrides = {"spec": {"automountServiceAccountToken": False, "restartPolicy": "Never", "volumes": vols,
                          "containers": [{"name": name, "image": image, "command": argv, "env": env,
                                          "volumeMounts": mounts, "stdin": True, "tty": False}]}}
    return (f"kubectl -n {ns} run {name} --rm -i --restart=Never --image={image} "
            f"--labels=app.kubernetes.io/name={job_name(stack)} "
            f"--overrides={shlex.quote(json.dumps(overrides, separators=(',', ':')))}")


def kubernetes_restore(cfg, stack: str, service: str | None, backup: str) -> str:
    """What restores a Kubernetes stack's service from a backup in the backup claim: the exact commands,
    per service (this tool runs none of them)."""
    import shlex

    from components.config.catalog import IMAGES
    from components.services.backups import K8S_MOUNT
    ns, claim, ds = cfg.kubernetes.namespace, cfg.backups.store, cfg.data_services
    d = f"{K8S_MOUNT}/$id"
    check = (f"id={shlex.quote(backup)} && if [ \"$id\" = latest ]; then id=$(ls {K8S_MOUNT} | "
             "grep -E '^[0-9]{8}T[0-9]{6}Z$' | sort | tail -n 1); fi && "
             f"cd {d} && sha256sum -c --quiet SHA256SUMS")
    services = [service] if service else cfg.backups.chosen(cfg)
    out = [f"stack {stack!r} runs on Kubernetes: its backups are in the claim {claim!r} of namespace {ns}, and "
           f"this tool restores none of them itself. Per service, for backup {backup} (an id as the CronJob's log "
           "gives it, backup-id: ..., or latest), each first checking the backup's SHA256SUMS:"]
    for s in services:
        if s == "postgres":
            pg = ds.postgres
            out.append("PostgreSQL (pg_restore into the running database, its objects dropped first):\n  " + _helper_pod(
                cfg, stack, "octollm-restore-postgres", IMAGES["postgres"].ref, {K8S_MOUNT: claim},
                [{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "postgres-env",
                                                                       "key": "POSTGRES_PASSWORD"}}}],
                ["sh", "-c", f"{check} && pg_restore --clean --if-exists --no-owner --exit-on-error -h postgres "
                             f"-U {pg.user} -d {pg.database} {d}/postgres/{pg.database}.dump"]))
        elif s == "redis":
            out.append("Redis (stopped, its AOF replaced by the backup's RDB as its base, started):\n"
                       f"  kubectl -n {ns} scale statefulset/redis --replicas=0\n"
                       f"  kubectl -n {ns} wait --for=delete pod/redis-0 --timeout=300s\n  " + _helper_pod(
                           cfg, stack, "octollm-restore-redis", IMAGES["redis"].ref,
                           {K8S_MOUNT: claim, "/data": "data-redis-0"}, [],
                           ["sh", "-c", f"{check} && cd /data && stamp=$(date -u +%Y%m%dT%H%M%SZ) && "
                                        "for f in dump.rdb appendonlydir; do [ ! -e $f ] || mv $f $f.before-$stamp; "
                                        "done && mkdir appendonlydir && "
                                        f"cp {d}/redis/dump.rdb appendonlydir/appendonly.aof.1.base.rdb && "
                                        ": > appendonlydir/appendonly.aof.1.incr.aof && "
                                        "printf 'file appendonly.aof.1.base.rdb seq 1 type b\\nfile "
                                        "appendonly.aof.1.incr.aof seq 1 type i\\n' > "
                                        "appendonlydir/appendonly.aof.manifest"]) +
                       f"\n  kubectl -n {ns} scale statefulset/redis --replicas=1")
        elif s == "qdrant":
            out.append("Qdrant (each collection's snapshot uploaded, replacing the collection):\n  " + _helper_pod(
                cfg, stack, "octollm-restore-qdrant", IMAGES["curl"].ref, {K8S_MOUNT: claim},
                [{"name": "QDRANT_API_KEY", "valueFrom": {"secretKeyRef": {"name": "qdrant-env",
                                                                           "key": "QDRANT__SERVICE__API_KEY"}}}],
                ["sh", "-c", f"{check} && printf 'api-key: %s\\n' \"$QDRANT_API_KEY\" > /tmp/h && "
                             f"for f in {d}/qdrant/*.snapshot; do n=$(basename \"$f\" .snapshot); "
                             "curl -fsS -H @/tmp/h -X POST -F \"snapshot=@$f\" "
                             "\"http://qdrant:6333/collections/$n/snapshots/upload?priority=snapshot\" || exit 1; done"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.restore", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", required=True)
    ap.add_argument("--file", type=Path, default=None, help="a Pulumi.<stack>.yaml (default: from -s)")
    ap.add_argument("--list", action="store_true", help="list the stack's backups")
    ap.add_argument("--service", choices=BACKUP_SERVICES)
    ap.add_argument("--backup", metavar="ID", help="a backup id (as --list shows it), or latest")
    ap.add_argument("--yes", action="store_true", help="do not ask before restoring")
    ap.add_argument("--timeout", type=int, default=3600)
    a = ap.parse_args(argv)
    if not a.list and not (a.service and a.backup):
        ap.error("give --list, or --service and --backup")
    try:
        cfg = load_config(a.stack, a.file)
    except (ConfigError, OSError) as exc:
        print(exc.render() if isinstance(exc, ConfigError) else str(exc), file=sys.stderr)
        return 2
    if cfg.backups is None:
        print(f"stack {a.stack!r} has no backups: configuration", file=sys.stderr)
        return 2
    if cfg.platform == "kubernetes":
        print(kubernetes_restore(cfg, a.stack, None if a.list else a.service, a.backup or "latest"),
              file=sys.stderr)
        return 2
    spec = spec_for(cfg, a.stack)
    if a.list:
        rc, _ = run_script(cfg, scripts.backup_list(spec), {}, a.timeout)
        return rc
    if a.service not in spec.services:
        print(f"{a.service} is not among the services the backups hold ({', '.join(spec.services)})", file=sys.stderr)
        return 2
    if not a.yes:
        if not sys.stdin.isatty():
            print("restoring replaces the service's current data (it is moved aside, not deleted): "
                  "confirm with --yes", file=sys.stderr)
            return 2
        answer = input(f"Restore {a.service} of {a.stack} on {cfg.backups.host} from backup {a.backup}? [y/N] ")
        if answer.strip().lower() != "y":
            return 1
    print(f"restoring {a.service} of stack {a.stack} on {cfg.backups.host} from backup {a.backup}")
    rc, _ = run_script(cfg, scripts.restore(spec, a.service, a.backup), {}, a.timeout)
    if rc != 0:
        print(f"the restore of {a.service} failed (status {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
