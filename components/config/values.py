"""One typed vocabulary for every config value that leaves Python.

Each type is a pydantic annotation whose error names the value and the allowed form; pydantic adds
the key path. A value of these types is data: it can be quoted into a shell script, written into a
file the host reads, or passed to ssh, and it still means only itself (scripts quote it again,
with `scripts.q`, whatever its type allows).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated

from docker_image import reference as docker_reference
from pydantic import AfterValidator, Field

# ------------------------------------------------------------------ hosts

_HOSTNAME_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _host_address(v: str) -> str:
    if not v:
        raise ValueError("an address is required (an IP address or a DNS name)")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        pass
    labels = v.rstrip(".").split(".")
    if len(v) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{v!r} is neither an IP address nor a DNS name (RFC 1123: letters, digits and "
                         "inner hyphens, dot-separated; it cannot start with '-')")
    return v


HostAddress = Annotated[str, AfterValidator(_host_address)]


def _ssh_user(v: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
        raise ValueError(f"{v!r} is not a login name: lower-case letters, digits, '_' and '-', starting "
                         "with a letter or '_', at most 32 characters")
    return v


SshUser = Annotated[str, AfterValidator(_ssh_user)]

# ------------------------------------------------------------------ paths

# Where no stack may point a data directory, a store or a bind mount it writes or chowns: the
# system itself, and the roots whose every child belongs to someone else.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
                "/proc", "/sys", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd", "/root")
SYSTEM_ROOTS = ("/", "/var", "/var/lib", "/var/tmp", "/tmp", "/opt", "/mnt", "/mnt/user", "/mnt/cache",
                "/home", "/srv", "/media", "/boot/config")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._@+/-]+$")


def _safe_dir(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{v!r} is not an absolute path")
    if not _PATH_CHARS.match(v):
        raise ValueError(f"{v!r} holds characters outside letters, digits and ._@+-/ (spaces, quotes, "
                         "$ and control characters are refused)")
    parts = v.split("/")
    if ".." in parts or "." in parts:
        raise ValueError(f"{v!r} climbs with '.' or '..'; give the path it means")
    norm = posixpath.normpath(v)
    if norm != v.rstrip("/") and not (v == "/" and norm == "/"):
        raise ValueError(f"{v!r} is not normalised; write it as {norm!r}")
    if any(p.startswith("-") for p in parts):
        raise ValueError(f"{v!r} has a path component starting with '-'")
    if norm in SYSTEM_ROOTS:
        raise ValueError(f"{norm!r} is a system directory; give a directory of this stack's own under it "
                         f"(e.g. {posixpath.join(norm, 'octollm')!r})")
    for tree in SYSTEM_TREES:
        if norm == tree or norm.startswith(tree + "/"):
            raise ValueError(f"{norm!r} is inside {tree}, which belongs to the system; use a data directory "
                             "such as /mnt/user/appdata/octollm or /opt/octollm")
    return norm


DataPath = Annotated[str, AfterValidator(_safe_dir)]


def _relative_file(v: str) -> str:
    if v.startswith("/") or not _PATH_CHARS.match(v):
        raise ValueError(f"{v!r} must be a path relative to the model store (letters, digits and ._@+-/)")
    if ".." in v.split("/") or posixpath.normpath(v) != v:
        raise ValueError(f"{v!r} must stay inside the model store: no '..' and no '.' components")
    return v


StoreRelativePath = Annotated[str, AfterValidator(_relative_file)]


def _zfs_dataset(v: str) -> str:
    parts = v.split("/")
    if len(parts) < 2:
        raise ValueError(f"{v!r} is a pool root; give a dataset below it such as {v}/ai-models (the program "
                         "sets properties on it, and a pool's root holds everything else)")
    if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", p) for p in parts):
        raise ValueError(f"{v!r} is not a ZFS dataset name: pool/child, each part letters, digits and _.:-, "
                         "starting with a letter or digit")
    return v


ZfsDataset = Annotated[str, AfterValidator(_zfs_dataset)]

# ------------------------------------------------------------------ networks and NFS


def _client_cidr(v: str) -> str:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as exc:
        raise ValueError(f"{v!r} is not a network in CIDR form such as 10.0.0.0/24 ({exc})") from None
    if net.prefixlen == 0:
        raise ValueError(f"{v!r} is every address; give the network of the NFS clients")
    return str(net)


Cidr = Annotated[str, AfterValidator(_client_cidr)]


def _nfs_options(v: str) -> str:
    tokens = v.split(",")
    if not all(re.fullmatch(r"[a-z][a-z0-9_]*(=[A-Za-z0-9_.:/]+)?", t) for t in tokens):
        raise ValueError(f"{v!r} is not a comma-separated list of NFS options (name or name=value, "
                         "letters, digits and _.:/ only)")
    return v


NfsOptions = Annotated[str, AfterValidator(_nfs_options)]

# ------------------------------------------------------------------ images and models


def _image_ref(v: str) -> str:
    try:
        ref = docker_reference.Reference.parse(v)
    except docker_reference.InvalidReference as exc:
        raise ValueError(f"{v!r} is not an image reference ({exc}); expected e.g. repo/name:1.2.3") from None
    if not ref["tag"] and not ref["digest"]:
        raise ValueError(f"{v!r} has no tag or digest; pin it (e.g. {v}:1.2.3 or {v}@sha256:…) so a deploy is "
                         "repeatable")
    if ref["tag"] == "latest" and not ref["digest"]:
        raise ValueError(f"{v!r} uses 'latest', which is not a pinned tag; use a version or a digest")
    return v


ImageRef = Annotated[str, AfterValidator(_image_ref)]

_OLLAMA_MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?(:[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_HF_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _model_name(v: str) -> str:
    if not (_OLLAMA_MODEL.match(v) or _HF_MODEL.match(v)) or len(v) > 200:
        raise ValueError(f"{v!r} is not a model name: an Ollama name such as llama3.1:8b or a Hugging Face "
                         "id such as Qwen/Qwen2.5-7B-Instruct-AWQ")
    return v


ModelName = Annotated[str, AfterValidator(_model_name)]

# ------------------------------------------------------------------ identifiers


def _pg_identifier(v: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", v):
        raise ValueError(f"{v!r} is not a plain PostgreSQL identifier: lower-case letters, digits and '_', "
                         "starting with a letter or '_', at most 63 characters (no '-')")
    return v


PgIdentifier = Annotated[str, AfterValidator(_pg_identifier)]

KubernetesName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


def _label_value(v: str) -> str:
    if len(v) > 63 or not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", v):
        raise ValueError(f"{v!r} is not a Kubernetes label value: at most 63 letters, digits, '-', '_' "
                         "and '.', starting and ending with a letter or digit")
    return v


LabelValue = Annotated[str, AfterValidator(_label_value)]


def _gpu_device_id(v: str) -> str:
    # Indices only: the VRAM budget and the preflight check each GPU the config declares by its index.
    if not re.fullmatch(r"[0-9]{1,2}", v):
        raise ValueError(f"{v!r} is not a GPU index (0, 1, … in the order of hosts.<host>.gpus)")
    return v


GpuDeviceId = Annotated[str, AfterValidator(_gpu_device_id)]
