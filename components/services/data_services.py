"""DataServices: PostgreSQL 15, Redis 7 (AOF) and Qdrant with data outside the containers."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from components.config.schema import DataServicesConfig, RedisConfig
from components.platforms.base import Platform
from components.platforms.workload import (GRACE_DATA, HealthSpec, MountSpec, PasswordApply, PortSpec, ServiceSpec,
                                           http_health)


def secret_or_generated(parent: pulumi.Resource, name: str, given: pulumi.Input[str] | None,
                        length: int = 32, rotation: str | None = None) -> pulumi.Output[str]:
    """The configured secret, or a generated one that stays stable across runs (kept in state).

    A new `rotation` value regenerates it (a keeper), and only the services that use it change.
    """
    if given is not None:
        return pulumi.Output.secret(given)
    pw = random.RandomPassword(name, length=length, special=False,
                               keepers={"rotation": rotation} if rotation else None,
                               opts=pulumi.ResourceOptions(parent=parent))
    # The engine marks `result` secret through additional_secret_outputs; wrapping it here as well
    # keeps it secret in every input it flows into, whatever engine runs the program.
    return pulumi.Output.secret(pw.result)


@dataclass
class DataServicesArgs:
    config: DataServicesConfig
    platform: Platform
    postgres_password: pulumi.Input[str] | None = None
    redis_password: pulumi.Input[str] | None = None
    qdrant_api_key: pulumi.Input[str] | None = None
    labels: dict[str, dict[str, str]] | None = None  # extra labels per service (Unraid UI)
    rotate: dict[str, str] | None = None


class DataServices(pulumi.ComponentResource):
    postgres_password: pulumi.Output[str] | None
    redis_password: pulumi.Output[str] | None
    qdrant_api_key: pulumi.Output[str] | None
    urls: dict[str, str]

    def __init__(self, name: str, args: DataServicesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:DataServices", name, None, opts)
        cfg, host = args.config, args.platform
        labels = args.labels or {}
        self.containers = {}
        self.urls = {}
        self.postgres_password = self.redis_password = self.qdrant_api_key = None
        owner = host.cfg.data_owner
        dirs = [host.appdata(s) for s, c in (("postgres", cfg.postgres), ("redis", cfg.redis),
                                              ("qdrant", cfg.qdrant)) if c is not None]
        data_dirs = host.ensure_dirs(f"{name}-data-dirs", self, dirs)
        bind = host.cfg.publish_address

        if cfg.postgres:
            pg = cfg.postgres
            self.postgres_password = secret_or_generated(self, f"{name}-postgres-password", args.postgres_password,
                                                         rotation=(args.rotate or {}).get("postgres"))
            self.containers["postgres"] = host.run(f"{name}-postgres", ServiceSpec(
                name="postgres", image=host.image_ref("postgres"),
                cpus=pg.limits.cpus, memory_gb=pg.limits.memory_gb,
                env={"POSTGRES_DB": pg.database, "POSTGRES_USER": pg.user,
                     "PGDATA": "/var/lib/postgresql/data/pgdata"},
                secret_env={"POSTGRES_PASSWORD": self.postgres_password},
                ports=(PortSpec(5432, pg.port, bind, name="postgres"),),
                mounts=(MountSpec("/var/lib/postgresql/data", host.appdata("postgres")),),
                health=HealthSpec(("CMD", "pg_isready", "-U", pg.user, "-d", pg.database), port=5432),
                user=owner, network=cfg.network, stateful=True, labels=labels.get("postgres", {}),
                # SIGINT is PostgreSQL's fast shutdown (the image's own STOPSIGNAL, stated so a
                # replacement never depends on it): transactions roll back, a checkpoint is written.
                stop_signal="SIGINT", stop_grace_s=GRACE_DATA,
                # POSTGRES_PASSWORD only initialises a new cluster: a rotation must reach the data.
                password_apply=PasswordApply("postgres", "POSTGRES_PASSWORD", user=pg.user, database=pg.database),
            ), self, depends_on=[data_dirs])
            self.urls["postgres"] = host.url("postgres", pg.port, 5432).replace("http://", "postgresql://") + \
                f"/{pg.database}"

        if cfg.redis:
            r = cfg.redis
            self.redis_password = secret_or_generated(self, f"{name}-redis-password", args.redis_password,
                                                      rotation=(args.rotate or {}).get("redis"))
            self.containers["redis"] = host.run(f"{name}-redis", redis_spec(
                "redis", host.image_ref("redis"), r, bind, host.appdata("redis"), owner, cfg.network,
                self.redis_password, labels.get("redis", {})), self, depends_on=[data_dirs])
            self.urls["redis"] = host.url("redis", r.port or 6379, 6379).replace("http://", "redis://")

        if cfg.qdrant:
            qd = cfg.qdrant
            self.qdrant_api_key = secret_or_generated(self, f"{name}-qdrant-api-key", args.qdrant_api_key,
                                                      rotation=(args.rotate or {}).get("qdrant"))
            self.containers["qdrant"] = host.run(f"{name}-qdrant", ServiceSpec(
                name="qdrant", image=host.image_ref("qdrant"),
                cpus=qd.limits.cpus, memory_gb=qd.limits.memory_gb,
                secret_env={"QDRANT__SERVICE__API_KEY": self.qdrant_api_key},
                ports=(PortSpec(6333, qd.http_port, bind, name="http"),
                       PortSpec(6334, qd.grpc_port, bind, name="grpc")),
                mounts=(MountSpec("/qdrant/storage", host.appdata("qdrant")),),
                health=http_health(6333, "/healthz", tool="bash"),
                user=owner, network=cfg.network, stateful=True, labels=labels.get("qdrant", {}),
                stop_grace_s=GRACE_DATA,  # flushes its WAL and segments on SIGTERM
                needs_root=True,  # qdrant/qdrant:v1.7.4 owns /qdrant as root (no unprivileged variant)
            ), self, depends_on=[data_dirs])
            self.urls["qdrant"] = host.url("qdrant", qd.http_port, 6333) + "/dashboard"

        self.register_outputs({"urls": self.urls})


# The container's shell turns REDISCLI_AUTH into a `requirepass` line that redis-server reads as its
# config file from stdin (`-`). A here-document is written by the shell itself into a pipe, so the
# password is in no process's argv: `--requirepass "$REDISCLI_AUTH"` would put it in redis-server's
# /proc/<pid>/cmdline (readable by every user of the host) until Redis renames its process.
# sed escapes it for the config syntax (a double-quoted string: backslash and double quote escaped,
# line breaks as \n) and reads it from a here-document too. An empty value would switch the password
# off (`requirepass ""`), so it stops the start instead. Arguments after the script are handed on
# to redis-server (none in a container). `exec` keeps redis-server as PID 1, where SIGTERM reaches it.
REDIS_START = r"""if [ -z "${REDISCLI_AUTH:-}" ]; then
  echo 'redis: REDISCLI_AUTH is empty: refusing to start without a password' >&2; exit 1
fi
pw=$(sed -e ':a' -e '$!{N;ba' -e '}' -e 's/[\\"]/\\&/g' -e 's/\n/\\n/g' <<EOF
$REDISCLI_AUTH
EOF
) || exit 1
exec redis-server - --appendonly yes --appendfsync everysec "$@" <<EOF
requirepass "$pw"
EOF
"""


def redis_spec(name: str, image: str, r: RedisConfig, bind: str, data_path: str, owner: str,
               network: str, password: pulumi.Input[str], labels: dict[str, str]) -> ServiceSpec:
    """Redis 7 with AOF persistence and a password that never appears on a command line."""
    return ServiceSpec(
        name=name, image=image, cpus=r.limits.cpus, memory_gb=r.limits.memory_gb,
        # The password is a secret env value, never part of the command (a plain input in the
        # state); redis-cli, in the health check and the backups, reads REDISCLI_AUTH itself.
        command=("sh", "-c", REDIS_START),
        secret_env={"REDISCLI_AUTH": password},
        ports=(PortSpec(6379, r.port, bind, name="redis"),) if r.port else (),
        mounts=(MountSpec("/data", data_path),),
        health=HealthSpec(("CMD-SHELL", "redis-cli ping | grep -q PONG"), port=6379),
        user=owner, network=network, stateful=True, labels=labels,
        stop_grace_s=GRACE_DATA,  # SIGTERM: fsyncs the AOF and writes a final RDB before exiting
    )
