"""SharedModelStore: where model weights live, outside every container's lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.config.schema import ModelStoreConfig
from components.platforms.base import Platform
from components.platforms.workload import MountSpec, NfsSource


@dataclass
class SharedModelStoreArgs:
    config: ModelStoreConfig
    server: Platform  # the host (or Kubernetes namespace) that holds the data


class SharedModelStore(pulumi.ComponentResource):
    """host path | ZFS dataset | NFS export. Creation is idempotent; deletion never removes data."""

    path: str
    kind: str

    def __init__(self, name: str, args: SharedModelStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:SharedModelStore", name, None, opts)
        cfg = args.config
        self.name = name
        self.cfg = cfg
        self.kind = cfg.kind
        self.path = cfg.path
        self.server_host = args.server.name
        self.server_address = args.server.cfg.address
        owner = cfg.owner or args.server.cfg.data_owner
        self.ready = args.server.provision_store(name, self, cfg, owner)
        self.register_outputs({"path": self.path, "kind": self.kind, "host": self.server_host})

    def mount(self, host_name: str, target: str, read_only: bool) -> MountSpec:
        """How a container on `host_name` sees the store: a bind mount on the server, NFS elsewhere."""
        if self.kind == "pvc":
            return MountSpec(target, self.name, "claim", read_only)
        if self.kind != "nfs" or host_name == self.server_host:
            return MountSpec(target, self.path, "bind", read_only)
        opts = f"addr={self.server_address},{'ro' if read_only else 'rw'},{self.cfg.mount_options}"
        return MountSpec(target, f"{self.name}-nfs", "nfs", read_only,
                         NfsSource(self.server_address, self.path, opts))
