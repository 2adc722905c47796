"""What each Docker host must offer, derived from the validated config (for preflight and doctor)."""

from __future__ import annotations

import posixpath

from components.config import catalog
from components.config.schema import StackConfig
from components.platforms.docker_host import PARALLEL
from components.config.rules import engine_image_key, image_cuda, inventory, monitored_hosts
from components.host_scripts import PreflightSpec

MANAGED_BY = "pulumi/{stack}"


def _gb_to_kib(gb: float) -> int:
    return int(gb * 1024 * 1024)


def _within(path: str, root: str) -> bool:
    path, root = path.rstrip("/") or "/", root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/")


def preflight_spec(cfg: StackConfig, host_name: str, stack: str):
    host = cfg.hosts[host_name]
    places = [p for p in inventory(cfg) if p.host == host_name]
    anchors = {posixpath.dirname(host.appdata_root.rstrip("/")) or "/"}
    dirs = {(host.appdata_root, host.data_owner)}
    disk: dict[str, float] = {}
    for sname, store in sorted(cfg.model_stores.items()):
        if store.host != host_name:
            continue
        if store.kind != "zfs":  # zfs create makes its own mountpoint
            parent = posixpath.dirname(store.path.rstrip("/")) or "/"
            # A store inside the appdata root is created with it (mkdir -p): only what holds the
            # root must exist beforehand. Anchoring on the store's parent made a first `up` of the
            # dev stack fail on a fresh machine.
            if not _within(parent, host.appdata_root):
                anchors.add(parent)
            dirs.add((store.path, store.owner or host.data_owner))
        for node in cfg.all_inference.values():
            if node.model_store == sname and not node.read_only:
                sizes = [info.size_gb for m in node.models if (info := node.model_info(m))]
                if node.model_path and (info := node.model_info(node.model_path.rsplit("/", 1)[-1])):
                    sizes.append(info.size_gb)
                disk[store.path] = disk.get(store.path, 0.0) + sum(sizes)
    min_driver, reason, gpu_image = None, "", None
    for name, node in sorted(cfg.all_inference.items()):
        if node.host != host_name or node.gpu is None or not host.gpus:
            continue
        image = node.image or cfg.image(engine_image_key(node, gpu=True))
        gpu_image = gpu_image or image
        cuda = image_cuda(cfg, node)
        if cuda and cuda in catalog.CUDA_MIN_DRIVER:
            need = catalog.CUDA_MIN_DRIVER[cuda]
            if min_driver is None or need > catalog.driver_tuple(min_driver):
                min_driver = f"{need[0]}.{need[1]:02d}"
                reason = f"CUDA {cuda} needs (image {image} of {name})"
    mon = cfg.monitoring
    exporter = host.exporters.gpu_exporter
    if (gpu_image is None and host.kind != "kubernetes" and host.gpus and exporter != "none" and mon is not None
            and host_name in monitored_hosts(cfg)):
        # The GPU exporter takes the GPUs through a device request too: with no GPU engine on the
        # host it is the container that proves Docker can hand them over.
        gpu_image = cfg.image("dcgm-exporter" if exporter == "dcgm" else "nvidia-gpu-exporter")
    return PreflightSpec(
        host=host_name,
        stack_label=MANAGED_BY.format(stack=stack),
        min_docker=host.min_docker_version,
        networks=tuple(sorted((n, c.subnet) for n, c in host.networks.items())),
        network_settings=tuple(sorted((n, c.subnet, c.gateway, c.internal, tuple(sorted(c.reserved.items())))
                                      for n, c in host.networks.items())),
        anchors=tuple(sorted(anchors)),
        dirs=tuple(sorted(dirs)),
        disk=tuple(sorted((p, _gb_to_kib(gb)) for p, gb in disk.items() if gb > 0)),
        gpus=tuple((g.model, int(g.vram_gb * 1024)) for g in host.gpus),
        min_driver=min_driver,
        driver_reason=reason,
        gpu_image=gpu_image,
        gpu_fallback=host.allow_cpu_fallback,
        ports=tuple(sorted({p.port for pl in places for p in pl.ports})),
        # sshd's limits matter where the providers reach the host over SSH (pulumi --parallel).
        ssh_parallel=PARALLEL if host.kind == "ssh" else 0,
        swap_limit=host.swap_limit,
    )
