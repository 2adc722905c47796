"""Docker host platform: turns ServiceSpecs into containers on one host.

The stack layer creates the host's providers (docker over SSH, or the local socket; and a
command provider) and hands them in. Everything placed on the host goes through this class,
so every resource on a host uses that host's providers and nothing crosses hosts by mistake.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.config import catalog
from components import host_scripts as scripts
from components.config.schema import HostConfig, ModelStoreConfig
from components.platforms.base import NodeTelemetry, ScheduledJob
from components.platforms.forms import docker_cpus, go_duration, mebibytes
from components.platforms.workload import CONFIG_MOUNT, GpuSpec, MountSpec, ServiceSpec

LOG_OPTS = {"max-file": "3", "max-size": "10m"}
MANAGED_LABEL = "org.octollm.managed-by"


def ssh_known_host_alias(host_name: str) -> str:
    return f"octollm-{host_name}"


# How many resource operations `pulumi preview/up/destroy` may run at once (`--parallel`: the
# Makefile's PARALLEL and the workflows use this number; tests/test_ssh_transport.py checks they agree).
# Pulumi's default is 4 x the CPU threads of the machine running it. Over SSH each operation holds one
# session on the host's shared connection (a Docker API call) or opens a connection of its own (a
# remote.Command, or a Docker call that starts before the shared connection is up, as all of them do
# right after the preflight). A stock sshd refuses sessions beyond MaxSessions 10 on one connection
# (ssh then dials anew) and drops new connections once 10 are logging in (MaxStartups 10:30:100).
# benchmarks/ssh_transport.py against a default-config sshd, starting with no shared connection:
# 8 at once lost 0 of 108 calls shared and unshared; 16 lost 10-12 %, 36 23-31 %, 64 41-47 %.
# 8 stays under both limits with room for the shared connection's own login and a stray client.
PARALLEL = 8

# How long a shared SSH connection outlives its last session. It spans the gaps between
# operations of one run (a remote command finishing, the next image starting) so the
# ~0.35 s of a new SSH handshake is paid once per host rather than per Docker API call, and it
# is short enough that no connection lingers long after `pulumi` has exited.
CONTROL_PERSIST_S = 60

# The control socket lives in ~/.ssh, expanded by ssh itself (so the registered provider inputs
# carry the literal "~" and are the same on every machine). ~/.ssh is private to the user, so no
# other local user can plant a socket there and have our connections run through their master
# (a shared /tmp would allow that), and it already exists wherever the identity file lives in it.
# ssh (9.x) does not create it before it connects, and exits with an error when the ControlPath's
# directory is missing, so docker_ssh_opts() creates it (mode 0700, as ssh itself would) on the
# machine that runs the program, which is the machine the docker provider runs ssh on.
CONTROL_DIR = "~/.ssh"
# ssh binds "<ControlPath>.<16 random chars>" then renames it, and a unix socket path holds at
# most 107 bytes (sun_path, 104 on the BSDs): "<home>/.ssh/octollm-" + 16 hex + 17 fits any
# home up to 56 bytes (ssh_control_path_problem() reports a longer one).
CONTROL_HASH_LEN = 16
SUN_PATH_MAX = 104

# remote.Command dial retries (see DockerHost.connection).
DIAL_ERROR_LIMIT = 15
PER_DIAL_TIMEOUT_S = 15


def ssh_control_path(host_name: str, cfg: HostConfig) -> str:
    """The ControlPath of one host's shared SSH connection, e.g. ~/.ssh/octollm-3f1c0a9b2d4e6f70.

    A client that finds a live master at its ControlPath uses it without any host-key check of
    its own, so the path names everything that check depends on: the host alias, address, port,
    user, identity and the pinned host key (or the insecure mode). A master that verified one key
    is never reused by a connection that pins another, nor for another host, port or user.
    (ssh's own %C hashes local host, host, port and user only: two stack entries for one address with
    different keys would share it.) Derived from config only, so it is the same on every machine.
    """
    assert cfg.ssh is not None
    ssh = cfg.ssh
    pin = "insecure" if ssh.insecure_skip_host_key_check or not ssh.host_key else ssh.host_key
    ident = "\0".join([ssh_known_host_alias(host_name), ssh.user, cfg.address, str(ssh.port),
                        ssh.identity_file or "", pin])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:CONTROL_HASH_LEN]
    return f"{CONTROL_DIR}/octollm-{digest}"


def _ssh_home() -> str:
    # ssh expands "~" from the passwd entry, not from $HOME.
    return pwd.getpwuid(os.getuid()).pw_dir


def ensure_ssh_control_dir() -> str:
    """Create ~/.ssh (0700) if it is missing; returns its path. A failure is left for ssh to report."""
    path = os.path.join(_ssh_home(), ".ssh")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        pass
    return path


def ssh_control_path_problem(host_name: str, cfg: HostConfig, home: str | None = None) -> str | None:
    """Why ssh cannot create this host's control socket here (no ~/.ssh, a too-long home), or None."""
    home = home if home is not None else _ssh_home()
    path = ssh_control_path(host_name, cfg).replace("~", home.rstrip("/") or "", 1)
    if len(path.encode()) + 17 >= SUN_PATH_MAX:
        return (f"the SSH control socket path {path} is too long for a unix socket "
                f"({len(path.encode()) + 17} of {SUN_PATH_MAX - 1} bytes while ssh creates it); "
                "use a shorter home directory")
    if not os.path.isdir(os.path.join(home, ".ssh")):
        return f"{home}/.ssh does not exist and cannot be created; ssh needs it for its control socket"
    return None


def docker_ssh_opts(host_name: str, cfg: HostConfig, *, share: bool = True) -> list[str]:
    """ssh(1) options for the docker CLI connection helper (`ssh … docker system dial-stdio`).

    The host key comes from config through KnownHostsCommand under a HostKeyAlias, so the
    check does not depend on, or write to, the operator's ~/.ssh/known_hosts, and the provider
    inputs are the same on every machine that runs the program.

    The docker CLI starts one ssh per Engine API connection. With `share` (what the program
    uses) they multiplex over one SSH connection per host (ControlMaster=auto): the first
    becomes the master, the rest open sessions on it instead of new TCP connections and
    handshakes, which sshd would start dropping beyond MaxStartups. share=False gives the old
    one-connection-per-call options, for comparison (tests and benchmarks only).
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
    if share:
        ensure_ssh_control_dir()
        opts += [
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={ssh_control_path(host_name, cfg)}",
            "-o", f"ControlPersist={CONTROL_PERSIST_S}",
            # A persisted master whose host went away (reboot, network change) would otherwise
            # hold new sessions until TCP gives up; with keepalives it exits within a minute.
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
        ]
    return opts


def docker_dial_command(host_name: str, cfg: HostConfig) -> list[str]:
    """The command the docker CLI connection helper runs for one Engine API connection.

    docker/cli's connhelper passes the provider's ssh_opts, adds -T, then `-l user -p port -- host`
    and `docker system dial-stdio`.
    """
    assert cfg.ssh is not None
    return ["ssh", *docker_ssh_opts(host_name, cfg), "-T", "-l", cfg.ssh.user, "-p", str(cfg.ssh.port),
            "--", cfg.address, "docker", "system", "dial-stdio"]


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
    images: dict[str, str] | None = None  # overrides of catalog.IMAGES from the stack config
    preflight: scripts.PreflightSpec | None = None


class DockerHost(pulumi.ComponentResource):
    """One Docker host: its networks, and the helpers every component uses to place work on it."""

    networks: dict[str, docker.Network]

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
                # Every field is ForceNew and the name is fixed: a second network of that name cannot
                # exist, and the engine refuses to remove one with endpoints. Deleted first, the
                # engine also deletes first every container whose networks_advanced takes its name
                # from this resource, then recreates the network and them (test_change_sets). A container
                # outside the stack attached to it would stop that halfway: the preflight refuses first.
                opts=self.child_opts(self, delete_before_replace=True),
            )
        self.register_outputs({"networks": {n: net.name for n, net in self.networks.items()}})

    # ------------------------------------------------------------------ options

    def child_opts(self, parent: pulumi.Resource, *, provider: str = "docker",
                   depends_on: Sequence[pulumi.Resource] = (), renamed_from: tuple[str, str] | None = None,
                   **kw) -> pulumi.ResourceOptions:
        """renamed_from=(old, new): the resource was named `old` before; the alias keeps its identity."""
        prov = self.args.docker_provider if provider == "docker" else self.args.command_provider
        deps = list(self.gate) + [d for d in depends_on if d is not None]
        if renamed_from and renamed_from[0] != renamed_from[1]:
            kw["aliases"] = [pulumi.Alias(name=renamed_from[0])]
        return pulumi.ResourceOptions(parent=parent, provider=prov, depends_on=deps or None, **kw)

    @property
    def connection(self) -> command.remote.ConnectionArgs:
        ssh = self.cfg.ssh
        assert ssh is not None
        return command.remote.ConnectionArgs(
            host=self.cfg.address,
            port=ssh.port,
            user=ssh.user,
            # No private key: the login goes through ssh-agent ($SSH_AUTH_SOCK, read by the provider),
            # so nothing here differs between the preview key and the write key (components/stack.py).
            host_key=None if ssh.insecure_skip_host_key_check else ssh.host_key,
            # pulumi-command 1.2.1 (provider/pkg/provider/remote/connection.go) opens one SSH
            # connection per command and redials a failed dial through pulumi's retry.Until:
            # waits of 100 ms growing x1.5 up to 5 s, giving up once the failures exceed
            # dial_error_limit (default 10; the old 3 meant four tries within 0.5 s). A burst past
            # sshd's MaxStartups resets connections for as long as it lasts: in
            # benchmarks/ssh_transport.py, 64 uncapped dials on that schedule needed up to 11
            # tries and 1 of 384 still failed with the default; with 15 none failed (at most 12
            # tries). 15 allows 16 tries over about 36 s: a refusing host fails after that, a
            # silent one after 16 x per_dial_timeout.
            dial_error_limit=DIAL_ERROR_LIMIT,
            # Each try may take this long (the provider's default, stated so it is reviewed
            # with the limit): enough for a handshake with a busy host.
            per_dial_timeout=PER_DIAL_TIMEOUT_S,
        )

    # ------------------------------------------------------------------ commands

    def command(self, name: str, parent: pulumi.Resource, create: str, *,
                update: str | None = None, delete: str | None = None,
                stdin: pulumi.Input[str] | None = None, triggers: list | None = None,
                depends_on: Sequence[pulumi.Resource] = (), keep: bool = False,
                renamed_from: tuple[str, str] | None = None) -> pulumi.CustomResource:
        """Run a script on the host: over SSH for an ssh host, locally for the local host.

        keep=True marks a step that creates data (directories, datasets): it is protected and
        retained, so neither `pulumi destroy` nor a replacement removes what it made.
        """
        opts = self.child_opts(parent, provider="command", depends_on=depends_on, renamed_from=renamed_from,
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

    def connect(self, name: str, flows: Sequence, routes: Mapping[str, tuple[str, int]]) -> None:
        """Nothing to add: a host's isolation is its bridge networks (created with the host, `internal`
        where configured), and its services are published on host ports, not through an ingress."""
        return None

    def network_name(self, network: str) -> pulumi.Output[str]:
        return self.networks[network].name

    def provision_store(self, name: str, parent: pulumi.Resource, store: ModelStoreConfig,
                        owner: str) -> pulumi.Resource:
        if store.kind == "hostPath":
            return self.ensure_dirs(f"{name}-dir", parent, [store.path], owner=owner)
        if store.kind == "zfs":
            return self.command(
                f"{name}-dataset", parent,
                scripts.zfs_dataset(store.dataset, store.path, store.recordsize, store.compression, owner), keep=True)
        if store.kind == "nfs":
            return self.command(
                f"{name}-export", parent,
                scripts.nfs_export(store.path, store.client_cidr, store.export_options, owner), keep=True)
        raise ValueError(f"modelStores.{name}: a {store.kind} store cannot be held by the Docker host {self.name}")

    def prepare_models(self, name: str, parent: pulumi.Resource, **_) -> None:
        return None  # the server pulls into its own store once it runs (load_models)

    def load_models(self, name: str, parent: pulumi.Resource, *, service: str, models: Sequence[str],
                    depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource:
        # Re-runs exactly when the model list changes (the trigger); the script skips models
        # already present, so a re-run after a failure is cheap and safe.
        return self.command(name, parent, scripts.ollama_pull(self.container_name(service), list(models)),
                            triggers=list(models), depends_on=depends_on)

    def schedule(self, name: str, parent: pulumi.Resource, job: ScheduledJob,
                 depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.CustomResource:
        """The job's script in <appdataRoot>/jobs, run by a systemd timer (OnCalendar=job.calendar); on Unraid,
        which has no systemd, by a cron file in /boot/config/plugins/dynamix (job.cron), which Unraid's
        update_cron merges into root's crontab now and at every boot. Which one is found on the host.

        A changed script or schedule updates it in place; delete removes the timer (or cron file) and the
        script, and nothing the job wrote. Replacing deletes first: the old resource's delete would otherwise
        remove what the new one installed under the same name."""
        args = dict(name=job.name, description=job.description or job.name, calendar=job.calendar, cron=job.cron,
                    script_path=self.appdata("jobs", f"{job.name}.sh"), log_path=self.appdata("jobs", f"{job.name}.log"))
        install = scripts.schedule_job(**args, install=True)
        remove = scripts.schedule_job(**args, install=False)
        opts = self.child_opts(parent, provider="command", depends_on=depends_on, delete_before_replace=True)
        if self.cfg.kind == "local":
            return command.local.Command(name, create=install, update=install, delete=remove, stdin=job.script,
                                         interpreter=["/bin/bash", "-c"], opts=opts)
        return command.remote.Command(name, connection=self.connection, create=install, update=install,
                                      delete=remove, stdin=job.script, opts=opts)

    def telemetry(self) -> NodeTelemetry:
        ex = self.cfg.exporters
        gpu = ex.gpu_exporter if self.cfg.gpus and ex.gpu_exporter != "none" else None
        return NodeTelemetry(node_metrics=True, gpu_exporter=gpu, log_discovery="docker")

    def agent(self, name: str, spec: ServiceSpec, parent: pulumi.Resource, *, gpu_nodes: bool = False,
              api_read: Sequence[dict] = ()) -> docker.Container:
        # One host is one node; a GPU exporter container sees the GPUs only through a device request.
        if gpu_nodes and spec.gpu is None:
            spec = dataclasses.replace(spec, gpu=GpuSpec(count=-1))
        return self.run(name, spec, parent)

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

    def run(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = (),
            extra_mounts: Sequence[docker.ContainerMountArgs] = ()) -> docker.Container:
        files = self._write_files(name, spec, parent)
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
                tests=list(h.test), interval=go_duration(h.interval_s), timeout=go_duration(h.timeout_s),
                retries=h.retries, start_period=go_duration(h.start_period_s))
        gpu = None
        if spec.gpu:
            gpu = [docker.ContainerDeviceRequestArgs(
                driver="nvidia", capabilities=["gpu"],
                count=spec.gpu.count if not spec.gpu.device_ids else None,
                device_ids=list(spec.gpu.device_ids) or None)]
        image = self.image(spec.image)
        container = docker.Container(
            name,
            name=self.container_name(spec.name),
            image=image.image_id,
            command=list(spec.command) or None,
            entrypoints=list(spec.entrypoint) or None,
            envs=envs or None,
            ports=[docker.ContainerPortArgs(internal=p.container, external=p.host, ip=p.bind, protocol=p.protocol)
                   # In the order the provider reads them back: by container port.
                   for p in sorted(spec.ports, key=lambda p: (p.container, p.protocol)) if p.host is not None] or None,
            mounts=mounts or None,
            networks_advanced=net,
            healthcheck=health,
            device_requests=gpu,
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            restart="unless-stopped",
            log_driver="json-file",
            log_opts=LOG_OPTS,
            cpus=docker_cpus(spec.cpus),
            memory=mebibytes(spec.memory_gb),
            # Unset, the engine stores MemorySwap = 2 x Memory, which the provider reads back as
            # memory_swap: a diff on every `up` (seen under the real engine). Equal to memory, the
            # limit is the limit (no swap past it) and reads back as given. An engine without swap
            # accounting stores -1 for any other request (moby verifyPlatformContainerResources),
            # unset included, so there -1 is the only value that reads back as given.
            memory_swap=mebibytes(spec.memory_gb) if self.cfg.swap_limit else -1,
            user=spec.user,
            shm_size=spec.shm_size_gb * 1024 if spec.shm_size_gb else None,
            privileged=spec.privileged or None,
            read_only=spec.read_only_rootfs or None,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=256m"} if spec.read_only_rootfs else None,
            pid_mode="host" if spec.pid_host else None,
            devices=[docker.ContainerDeviceArgs(host_path=d, container_path=d, permissions="rwm")
                     for d in spec.devices] or None,
            # The engine sends the stop signal, waits this long, then kills. The provider's delete
            # stops with a timeout of 0 (an immediate SIGKILL) unless destroy_grace_seconds is set,
            # so both carry the service's grace: a replaced database shuts down cleanly.
            stop_timeout=spec.stop_grace_s,
            destroy_grace_seconds=spec.stop_grace_s,
            stop_signal=spec.stop_signal,
            wait=spec.wait_healthy or None,
            wait_timeout=600 if spec.wait_healthy else None,
            # A fixed container name and fixed host ports cannot exist twice: the old container
            # must go before its replacement starts (and a single GPU cannot be held by both).
            opts=self.child_opts(parent, depends_on=[*depends_on, *files], delete_before_replace=True,
                                 renamed_from=(f"{self.name}-{spec.name}", name)),
        )
        if spec.password_apply is not None:
            self._apply_password(name, spec, parent, container)
        return container

    def _apply_password(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
                        container: docker.Container) -> pulumi.Resource:
        """Re-runs when the password changes (stdin is an input), so a rotation reaches the data."""
        pa = spec.password_apply
        cname = self.container_name(spec.name)
        if pa.service == "postgres":
            script = scripts.postgres_set_password(cname, pa.user, pa.database)
        else:
            script = scripts.grafana_set_admin_password(cname)
        password = pulumi.Output.from_input(spec.secret_env[pa.env])
        return self.command(f"{name}-password-sync", parent, script,
                            stdin=password.apply(lambda pw: pw + "\n"), depends_on=[container])

    def _config_dir(self, spec: ServiceSpec) -> str:
        return self.appdata("config", spec.name)

    def _write_files(self, name: str, spec: ServiceSpec, parent: pulumi.Resource) -> list[pulumi.Resource]:
        out = []
        for f in sorted(spec.files, key=lambda f: f.name):
            path = f"{self._config_dir(spec)}/{f.name}"
            script = scripts.write_file(path, self.cfg.data_owner, self.container_name(spec.name), f.reload_signal)
            # The file is its own resource: a changed scrape target rewrites the file (and
            # signals the service) instead of replacing the container.
            out.append(self.command(f"{name}-file-{slug(f.name)}", parent, script, stdin=f.content,
                                    renamed_from=(f"{self.name}-{spec.name}-file-{slug(f.name)}",
                                                  f"{name}-file-{slug(f.name)}")))
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
                # As the network: a volume in use cannot be removed, so a changed export or NFS
                # option deletes its containers first (they mount it by this resource's name).
                opts=self.child_opts(self, delete_before_replace=True))
        return self._volumes[vname]

