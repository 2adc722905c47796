"""Backups: consistent copies of the data services, made on a schedule on the host that runs them.

`backup_spec(cfg, …)` says what one stack's backup copies and where it writes (the containers, their data
directories, the target, the retention); `Backups` installs that job on the host through the platform
(`Platform.schedule`). The same spec renders the script that `make backup`, `make up` (before a plan that
replaces or deletes a stateful container) and the restore tool send over SSH, so the job that runs at
night and the one run by hand are the same script.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

import pulumi

from components import host_scripts as scripts
from components.config.schema import BackupConfig, StackConfig
from components.platforms.base import JobStep, Platform, ScheduledJob
from components.platforms.workload import Flow
from components.services.shared_model_store import SharedModelStore

# The resource that runs each stateful service, named by its component ("data", "workers", "monitoring" in
# the stack layer) and service: what a plan must not replace or delete before that service has been backed up.
STATEFUL_RESOURCES = {"data-postgres": "postgres", "data-redis": "redis", "workers-redis": "worker-redis",
                      "data-qdrant": "qdrant", "monitoring-grafana": "grafana"}


def job_name(stack: str) -> str:
    """The job's name on the host (timer, service and cron file): one per stack."""
    return "octollm-backup-" + (re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-") or "stack")


def local_address(publish_address: str) -> str:
    """Where the host itself reaches a port it publishes on `publish_address` (every interface: loopback)."""
    ip = ipaddress.ip_address(publish_address)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]" if ip.version == 6 else str(ip)


def backup_spec(cfg: StackConfig, stack: str, container_name: Callable[[str], str],
                appdata: Callable[[str], str]) -> scripts.BackupSpec:
    """What the stack's backup copies: `container_name` and `appdata` are the backup host's (its platform's)."""
    b = cfg.backups
    assert b is not None
    host = cfg.hosts[b.host]
    chosen = b.chosen(cfg)
    target, dataset = b.target, ""
    if b.store is not None:
        store_cfg = cfg.model_stores[b.store]
        target, dataset = store_cfg.path, store_cfg.dataset or ""
        if store_cfg.kind == "pvc":  # Kubernetes: the claim, mounted at K8S_MOUNT in the backup pod
            target = f"pvc://{b.store}"
    kw: dict = {}
    ds = cfg.data_services
    if "postgres" in chosen:
        kw["postgres"] = (container_name("postgres"), ds.postgres.user, ds.postgres.database)
    if "redis" in chosen:
        kw["redis"] = (container_name("redis"), appdata("redis"))
    if "worker-redis" in chosen:
        # The workers' Redis (seed 002's queue): the same Redis image, password and AOF as the data services'.
        data = str(cfg.workers.redis_data_path) if cfg.workers.redis_data_path else appdata("worker-redis")
        kw["worker_redis"] = (container_name("worker-redis"), data)
    if "qdrant" in chosen:
        kw["qdrant"] = (container_name("qdrant"), f"http://{local_address(host.publish_address)}:{ds.qdrant.http_port}")
    if "grafana" in chosen:
        kw["grafana"] = (container_name("grafana"), appdata("grafana"))
    r = b.retention
    return scripts.BackupSpec(stack=stack, target=str(target), zfs_dataset=dataset, keep_daily=r.daily or 0,
                              keep_weekly=r.weekly or 0, keep_days=r.days or 0, **kw)


# Kubernetes: where the backup pod mounts the backup claim, and how its copy steps reach each service
# (the Services the data services' StatefulSets get, on their container ports).
K8S_MOUNT = "/backups"
K8S_PORTS = {"postgres": 5432, "redis": 6379, "qdrant": 6333}


def kubernetes_job(cfg: StackConfig, stack: str, image_ref: Callable[[str], str], run_dir: str) -> ScheduledJob:
    """The backup as a Kubernetes CronJob's pod: backup.sh's first part (the id and the partial directory),
    one init container per service in that service's own image (pg_dump, redis-cli --rdb, curl against
    Qdrant's API), then backup.sh's last part (manifest, SHA256SUMS, rename, retention) as the main container.
    Passwords come from the data services' own Secrets (`<service>-env`, made by the platform) by
    secretKeyRef. `run_dir` is the emptyDir the platform shares between the pod's containers."""
    b = cfg.backups
    assert b is not None
    chosen = tuple(b.chosen(cfg))
    r = b.retention
    k = scripts.backup_kubernetes(stack, chosen, keep_daily=r.daily or 0, keep_weekly=r.weekly or 0,
                                  keep_days=r.days or 0)
    ds = cfg.data_services
    # The image with bash and GNU coreutils for backup.sh: Qdrant's (Debian 12), already pinned and pulled.
    shell_image = image_ref("qdrant")
    steps = [JobStep("begin", shell_image, k.begin, shell="/bin/bash")]
    if "postgres" in chosen:
        steps.append(JobStep("postgres", image_ref("postgres"), k.steps["postgres"], env=(
            ("PGHOST", "postgres"), ("PGPORT", str(K8S_PORTS["postgres"])), ("PGUSER", ds.postgres.user),
            ("PGDATABASE", ds.postgres.database)), secret_env=(("PGPASSWORD", "postgres-env", "POSTGRES_PASSWORD"),)))
    if "redis" in chosen:
        steps.append(JobStep("redis", image_ref("redis"), k.steps["redis"], env=(
            ("REDIS_HOST", "redis"), ("REDIS_PORT", str(K8S_PORTS["redis"]))),
            secret_env=(("REDISCLI_AUTH", "redis-env", "REDISCLI_AUTH"),)))
    if "qdrant" in chosen:
        steps.append(JobStep("qdrant", image_ref("curl"), k.steps["qdrant"], env=(
            ("QDRANT_URL", f"http://qdrant:{K8S_PORTS['qdrant']}"),),
            secret_env=(("QDRANT_API_KEY", "qdrant-env", "QDRANT__SERVICE__API_KEY"),)))
    return ScheduledJob(
        name=job_name(stack), cron=b.schedule, calendar=b.on_calendar, script=k.finish, image=shell_image,
        description=f"octollm-infra backups of stack {stack} ({', '.join(chosen)})", steps=tuple(steps),
        claim=b.store, mount=K8S_MOUNT, env=(("OCTOLLM_BACKUP_DIR", K8S_MOUNT), ("OCTOLLM_BACKUP_RUN", run_dir)))


def flows(cfg: StackConfig, stack: str) -> list[Flow]:
    """What the Kubernetes backup pod connects to: each service it copies, on its port; nothing else."""
    b = cfg.backups
    # Only a backup into a claim runs as a pod (the rules allow a pvc store target on Kubernetes only).
    store_cfg = cfg.model_stores[b.store] if b is not None and b.store is not None else None
    if store_cfg is None or store_cfg.kind != "pvc":
        return []
    return [Flow(job_name(stack), s, (K8S_PORTS[s],)) for s in b.chosen(cfg)]


@dataclass
class BackupsArgs:
    config: BackupConfig
    platform: Platform  # the host the data services run on
    stack: str
    spec: scripts.BackupSpec  # backup_spec() of the stack
    store: SharedModelStore | None = None  # the store backups go into (backups.target.store)
    image: str | None = None  # for a platform that runs scheduled jobs in a container: the image
    job: ScheduledJob | None = None  # Kubernetes: the CronJob's pod (kubernetes_job()), instead of the host script


class Backups(pulumi.ComponentResource):
    """The backup job on its host: the target directory (kept on destroy) and the schedule that runs it."""

    target: str
    script: str

    def __init__(self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:Backups", name, None, opts)
        host, spec = args.platform, args.spec
        self.target = spec.target
        if args.store is not None:
            ready = [args.store.ready]
        else:
            # Owned like the data it holds; each backup inside is private to the user the job runs as.
            ready = [host.ensure_dirs(f"{name}-target-dir", self, [spec.target])]
        if args.job is not None:
            self.script = args.job.script
            job = args.job
        else:
            self.script = scripts.backup(spec)
            job = ScheduledJob(
                name=job_name(args.stack), cron=args.config.schedule, calendar=args.config.on_calendar,
                script=self.script, image=args.image,
                description=f"octollm-infra backups of stack {args.stack} ({', '.join(spec.services)})")
        self.job = host.schedule(f"{name}-schedule", self, job, depends_on=[r for r in ready if r is not None])
        self.register_outputs({"target": spec.target, "schedule": args.config.schedule,
                               "services": list(spec.services)})
