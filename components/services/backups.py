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
from components.platforms.base import Platform, ScheduledJob
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
        store = cfg.model_stores[b.store]
        target, dataset = store.path, store.dataset or ""
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


@dataclass
class BackupsArgs:
    config: BackupConfig
    platform: Platform  # the host the data services run on
    stack: str
    spec: scripts.BackupSpec  # backup_spec() of the stack
    store: SharedModelStore | None = None  # the store backups go into (backups.target.store)
    image: str | None = None  # for a platform that runs scheduled jobs in a container: the image


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
        self.script = scripts.backup(spec)
        self.job = host.schedule(f"{name}-schedule", self, ScheduledJob(
            name=job_name(args.stack), cron=args.config.schedule, calendar=args.config.on_calendar,
            script=self.script, image=args.image,
            description=f"octollm-infra backups of stack {args.stack} ({', '.join(spec.services)})"),
            depends_on=[r for r in ready if r is not None])
        self.register_outputs({"target": spec.target, "schedule": args.config.schedule,
                               "services": list(spec.services)})
