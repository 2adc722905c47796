"""Docker host platform: turns ServiceSpecs into containers on one host.

The stack layer creates the host's providers (docker over SSH, or the local socket; and a
command provider) and hands them in. Everything placed on the host goes through this class,
so every resource on a host uses that host's providers and nothing crosses hosts by mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from . import catalog, scripts
from .config import HostConfig
from .workload import CONFIG_MOUNT, MountSpec, ServiceSpec

LOG_OPTS = {"max-file": "3", "max-size": "10m"}
MANAGED_LABEL = "org.octollm.managed-by"


def ssh_known_host_alias(host_name: str) -> str:
    return f"octollm-{host_name}"


def docker_ssh_opts(host_name: str, cfg: HostConfig) -> list[str]:
    """ssh(1) options for the docker CLI connection helper (`ssh … docker system dial-stdio`).

    The host key comes from config through KnownHostsCommand under a HostKeyAlias, so the
    check does not depend on, or write to, the operator's ~/.ssh/known_hosts, and the provider
    inputs are the same on every machine that runs the program.
    """
    assert cfg.ssh is not None
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
    if cfg.ssh.identity_file:
        opts += ["-i", cfg.ssh.identity_file, "-o", "IdentitiesOnly=yes"]
    if cfg.ssh.host_key and not cfg.ssh.insecure_skip_host_key_check:
        alias = ssh_known_host_alias(host_name)
        opts += [
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={alias}",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"KnownHostsCommand=/bin/echo {alias} {cfg.ssh.host_key}",
        ]
    else:
        opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return opts


def docker_host_url(cfg: HostConfig) -> str:
    if cfg.kind == "local":
        return "unix:///var/run/docker.sock"
    assert cfg.ssh is not None
    return f"ssh://{cfg.ssh.user}@{cfg.address}:{cfg.ssh.port}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class DockerHostArgs:
    host_name: str
    config: HostConfig
    stack: str
    docker_provider: docker.Provider
    command_provider: command.Provider
    private_key: pulumi.Input[str] | None = None
    images: dict[str, str] | None = None  # overrides of catalog.IMAGES from the stack config
    preflight: scripts.PreflightSpec | None = None


class DockerHost(pulumi.ComponentResource):
    """One Docker host: its networks, and the helpers every component uses to place work on it."""

    networks: dict[str, docker.Network]
    kind = "docker"

    def __init__(self, name: str, args: DockerHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:DockerHost", name, None, opts)
        self.name = name
        self.args = args
        self.cfg = args.config
        self._images: dict[str, docker.RemoteImage] = {}
        self._volumes: dict[str, docker.Volume] = {}
        # Every resource on the host waits for the preflight: nothing is touched on a host that
        # is not ready, and the failure message says what is wrong there.
        self.gate: list[pulumi.Resource] = []
        self.preflight = None
        if args.preflight is not None:
            self.preflight = self.command(f"{name}-preflight", self, scripts.preflight(args.preflight))
            self.gate.append(self.preflight)
        self.networks = {}
        for net_name, net in sorted(self.cfg.networks.items()):
            self.networks[net_name] = docker.Network(
                f"{name}-net-{net_name}",
                name=net_name,
                driver="bridge",
                internal=net.internal,
                ipam_configs=[docker.NetworkIpamConfigArgs(
                    subnet=net.subnet, gateway=net.gateway,
                    # Reserved addresses (clients outside this stack) are never handed out by Docker.
                    aux_address=dict(sorted(net.reserved.items())) or None)],
                labels=[docker.NetworkLabelArgs(label=MANAGED_LABEL, value=f"pulumi/{args.stack}")],
                opts=self.child_opts(self),
            )
        self.register_outputs({"networks": {n: net.name for n, net in self.networks.items()}})

    # ------------------------------------------------------------------ options

    def child_opts(self, parent: pulumi.Resource, *, provider: str = "docker",
                   depends_on: Sequence[pulumi.Resource] = (), **kw) -> pulumi.ResourceOptions:
        prov = self.args.docker_provider if provider == "docker" else self.args.command_provider
        deps = list(self.gate) + [d for d in depends_on if d is not None]
        return pulumi.ResourceOptions(parent=parent, provider=prov, depends_on=deps or None, **kw)

    @property
    def connection(self) -> command.remote.ConnectionArgs:
        ssh = self.cfg.ssh
        assert ssh is not None
        return command.remote.ConnectionArgs(
            host=self.cfg.address,
            port=ssh.port,
            user=ssh.user,
            private_key=self.args.private_key,
            host_key=None if ssh.insecure_skip_host_key_check else ssh.host_key,
            dial_error_limit=3,
        )

    # ------------------------------------------------------------------ commands

    def command(self, name: str, parent: pulumi.Resource, create: str, *,
                update: str | None = None, delete: str | None = None,
                stdin: pulumi.Input[str] | None = None, triggers: list | None = None,
                depends_on: Sequence[pulumi.Resource] = (), keep: bool = False) -> pulumi.CustomResource:
        """Run a script on the host: over SSH for an ssh host, locally for the local host.

        keep=True marks a step that creates data (directories, datasets): it is protected and
        retained, so neither `pulumi destroy` nor a replacement removes what it made.
        """
        opts = self.child_opts(parent, provider="command", depends_on=depends_on,
                               protect=keep or None, retain_on_delete=keep or None)
        if self.cfg.kind == "local":
            return command.local.Command(
                name, create=create, update=update, delete=delete, stdin=stdin, triggers=triggers,
                interpreter=["/bin/bash", "-c"], opts=opts)
        return command.remote.Command(
            name, connection=self.connection, create=create, update=update, delete=delete,
            stdin=stdin, triggers=triggers, opts=opts)

    def ensure_dirs(self, name: str, parent: pulumi.Resource, paths: list[str],
                    owner: str | None = None) -> pulumi.CustomResource:
        script = scripts.ensure_dirs(sorted(paths), owner or self.cfg.data_owner)
        return self.command(name, parent, script, keep=True)

    def appdata(self, *parts: str) -> str:
        return "/".join([self.cfg.appdata_root.rstrip("/"), *parts])

    def url(self, service: str, port: int, container_port: int | None = None) -> str:
        """Where a user reaches a published port of this host."""
        return f"http://{self.cfg.address}:{port}"

    def container_name(self, service: str) -> str:
        return f"{self.cfg.container_prefix}{service}"

    # ------------------------------------------------------------------ images

    def image_ref(self, key: str) -> str:
        return (self.args.images or {}).get(key, catalog.IMAGES[key].ref)

    def image(self, ref: str) -> docker.RemoteImage:
        """One pull per image per host, shared by every container that runs it; kept on destroy."""
        if ref not in self._images:
            self._images[ref] = docker.RemoteImage(
                f"{self.name}-image-{slug(ref)}", name=ref, keep_locally=True, opts=self.child_opts(self))
        return self._images[ref]

    # ------------------------------------------------------------------ containers

    def run(self, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = (),
            extra_mounts: Sequence[docker.ContainerMountArgs] = ()) -> docker.Container:
        files = self._write_files(spec, parent)
        mounts = list(extra_mounts) + [self._mount(m) for m in spec.mounts]
        if files:
            mounts.append(docker.ContainerMountArgs(
                type="bind", source=self._config_dir(spec), target=CONFIG_MOUNT, read_only=True))
        if spec.docker_socket:
            mounts.append(docker.ContainerMountArgs(
                type="bind", source="/var/run/docker.sock", target="/var/run/docker.sock", read_only=True))
        mounts.sort(key=lambda m: m.target if isinstance(m, docker.ContainerMountArgs) else "")
        envs: list[pulumi.Input[str]] = [f"{k}={v}" if isinstance(v, str) else pulumi.Output.concat(k, "=", v)
                                         for k, v in sorted(spec.env.items())]
        envs += [pulumi.Output.concat(k, "=", v) for k, v in sorted(spec.secret_env.items())]
        labels = {MANAGED_LABEL: f"pulumi/{self.args.stack}", "org.octollm.service": spec.name, **spec.labels}
        net = None
        if spec.network:
            net = [docker.ContainerNetworksAdvancedArgs(
                name=self.networks[spec.network].name, aliases=[spec.name], ipv4_address=spec.ipv4_address)]
        health = None
        if spec.health:
            h = spec.health
            health = docker.ContainerHealthcheckArgs(
                tests=list(h.test), interval=f"{h.interval_s}s", timeout=f"{h.timeout_s}s",
                retries=h.retries, start_period=f"{h.start_period_s}s")
        gpu = None
        if spec.gpu:
            gpu = [docker.ContainerDeviceRequestArgs(
                driver="nvidia", capabilities=["gpu"],
                count=spec.gpu.count if not spec.gpu.device_ids else None,
                device_ids=list(spec.gpu.device_ids) or None)]
        image = self.image(spec.image)
        return docker.Container(
            f"{self.name}-{spec.name}",
            name=self.container_name(spec.name),
            image=image.image_id,
            command=list(spec.command) or None,
            entrypoints=list(spec.entrypoint) or None,
            envs=envs or None,
            ports=[docker.ContainerPortArgs(internal=p.container, external=p.host, ip=p.bind, protocol=p.protocol)
                   for p in spec.ports if p.host is not None] or None,
            mounts=mounts or None,
            networks_advanced=net,
            healthcheck=health,
            device_requests=gpu,
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            restart="unless-stopped",
            log_driver="json-file",
            log_opts=LOG_OPTS,
            cpus=f"{spec.cpus:g}",
            memory=int(round(spec.memory_gb * 1024)),
            user=spec.user,
            shm_size=spec.shm_size_gb * 1024 if spec.shm_size_gb else None,
            privileged=spec.privileged or None,
            read_only=spec.read_only_rootfs or None,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=256m"} if spec.read_only_rootfs else None,
            pid_mode="host" if spec.pid_host else None,
            devices=[docker.ContainerDeviceArgs(host_path=d, container_path=d) for d in spec.devices] or None,
            wait=spec.wait_healthy or None,
            wait_timeout=600 if spec.wait_healthy else None,
            # A fixed container name and fixed host ports cannot exist twice: the old container
            # must go before its replacement starts (and a single GPU cannot be held by both).
            opts=self.child_opts(parent, depends_on=[*depends_on, *files], delete_before_replace=True),
        )

    def _config_dir(self, spec: ServiceSpec) -> str:
        return self.appdata("config", spec.name)

    def _write_files(self, spec: ServiceSpec, parent: pulumi.Resource) -> list[pulumi.Resource]:
        out = []
        for f in sorted(spec.files, key=lambda f: f.name):
            path = f"{self._config_dir(spec)}/{f.name}"
            script = scripts.write_file(path, self.cfg.data_owner, self.container_name(spec.name), f.reload_signal)
            # The file is its own resource: a changed scrape target rewrites the file (and
            # signals the service) instead of replacing the container.
            out.append(self.command(f"{self.name}-{spec.name}-file-{slug(f.name)}", parent, script, stdin=f.content))
        return out

    def _mount(self, m: MountSpec) -> docker.ContainerMountArgs:
        if m.kind == "bind":
            return docker.ContainerMountArgs(type="bind", source=m.source, target=m.target, read_only=m.read_only)
        if m.kind == "nfs":
            return docker.ContainerMountArgs(type="volume", source=self.nfs_volume(m).name,
                                             target=m.target, read_only=m.read_only)
        return docker.ContainerMountArgs(type="volume", source=m.source, target=m.target, read_only=m.read_only)

    def nfs_volume(self, m: MountSpec) -> docker.Volume:
        """A local-driver volume that mounts the NFS export; one per store and access mode per host."""
        assert m.nfs is not None
        vname = f"{m.source}-{'ro' if m.read_only else 'rw'}"
        if vname not in self._volumes:
            self._volumes[vname] = docker.Volume(
                f"{self.name}-volume-{vname}", name=vname, driver="local",
                driver_opts={"type": "nfs", "o": m.nfs.options, "device": f":{m.nfs.export}"},
                labels=[docker.VolumeLabelArgs(label=MANAGED_LABEL, value=f"pulumi/{self.args.stack}")],
                opts=self.child_opts(self))
        return self._volumes[vname]

