"""One typed vocabulary for every config value that leaves Python.

Each type is a pydantic annotation whose error names the value and the allowed form; pydantic adds
the key path. A value of these types is data: it can be quoted into a shell script, written into a
file the host reads, or passed to ssh, and it still means only itself (scripts quote it again,
with `scripts.q`, whatever its type allows).

Every grammar is matched with `re.fullmatch`: `re.match(...$)` also accepts the value followed by a
newline, which a script or a config file would read as a second line.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated

from docker_image import reference as docker_reference
from pydantic import AfterValidator


def _printable(v: str, form: str) -> None:
    # Control characters (newline, tab, escape, NUL, …) end a line or a field in every file and command
    # a value reaches; no config value needs one.
    if not v.isprintable():
        bad = next(c for c in v if not c.isprintable())
        raise ValueError(f"{v!r} holds the control character {bad!r}, so it is not {form}")


# ------------------------------------------------------------------ hosts

_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ADDRESS_FORM = "an IPv4 address or a DNS name (RFC 1123: letters, digits and inner hyphens, dot-separated)"


def _ipv6_refused(v: str, what: str) -> None:
    # URLs, ssh destinations and bind flags are built as host:port across the program, unbracketed; a
    # zone ID (fe80::1%eth0) would also carry whatever follows the '%' into them.
    if ":" in v or "%" in v:
        raise ValueError(f"{v!r} is not {what}; IPv6 is not supported")


def _host_address(v: str) -> str:
    if not v:
        raise ValueError(f"an address is required ({_ADDRESS_FORM})")
    _printable(v, _ADDRESS_FORM)
    _ipv6_refused(v, _ADDRESS_FORM)
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        pass
    labels = v.rstrip(".").split(".")
    if len(v) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{v!r} is neither an IP address nor a DNS name; give {_ADDRESS_FORM} "
                         "(it cannot start with '-')")
    return v


HostAddress = Annotated[str, AfterValidator(_host_address)]


def _bind_address(v: str) -> str:
    form = "an IPv4 address of an interface on the host (or 0.0.0.0 for every interface)"
    _printable(v, form)
    _ipv6_refused(v, form)
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ValueError(f"{v!r} is not {form}") from None


BindAddress = Annotated[str, AfterValidator(_bind_address)]


def _ipv4_address(v: str) -> str:
    _printable(v, "an IPv4 address such as 172.20.0.10")
    _ipv6_refused(v, "an IPv4 address")
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 address (dotted quad such as 172.20.0.10)") from None


Ipv4Address = Annotated[str, AfterValidator(_ipv4_address)]


def _ssh_user(v: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
        raise ValueError(f"{v!r} is not a login name: lower-case letters, digits, '_' and '-', starting "
                         "with a letter or '_', at most 32 characters")
    return v


SshUser = Annotated[str, AfterValidator(_ssh_user)]


def _local_file(v: str) -> str:
    # A file on the operator's machine (ssh -i): any name the user's filesystem holds, but one line.
    if not v.strip():
        raise ValueError("a file name is required")
    _printable(v, "a file name")
    return v


LocalFile = Annotated[str, AfterValidator(_local_file)]


def _registry(v: str) -> str:
    form = "host[:port][/path] such as harbor.example.lan or 10.0.0.5:5000/library"
    _printable(v, f"a registry address: {form}")
    host_port, _, path = v.partition("/")
    host, _, port = host_port.partition(":")
    try:
        _host_address(host)
    except ValueError:
        raise ValueError(f"{v!r} is not a registry address: {form} (the host an IPv4 address or a DNS "
                         "name; IPv6 is not supported)") from None
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        raise ValueError(f"{v!r} has port {port!r}; a registry port is 1-65535")
    if path and not all(re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", p) for p in path.split("/")):
        raise ValueError(f"{v!r} has a path outside lower-case letters, digits and inner ._- ({form})")
    return v


Registry = Annotated[str, AfterValidator(_registry)]


def _registry_user(v: str) -> str:
    # Harbor robot accounts are named robot$<name> (and robot$<project>+<name>): '$' and '+' are data here,
    # handed to the Docker provider's registry auth and never to a shell.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._$+@-]{0,254}", v):
        raise ValueError(f"{v!r} is not a registry user name: letters, digits and ._$+@-, starting with a letter "
                         "or digit, at most 255 characters (no spaces, quotes or control characters)")
    return v


RegistryUser = Annotated[str, AfterValidator(_registry_user)]

# ------------------------------------------------------------------ paths

# Where no stack may point a data directory, a store or a bind mount it writes or chowns: the
# system itself, and the trees whose every child belongs to someone else.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
                "/proc", "/sys", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet",
                "/var/spool", "/var/log", "/root", "/opt/containerd", "/opt/cni", "/mnt/user/system",
                "/mnt/cache/system", "/mnt/user0/system")
SYSTEM_ROOTS = ("/", "/var", "/var/lib", "/var/tmp", "/tmp", "/opt", "/mnt", "/mnt/user", "/mnt/cache",
                "/home", "/srv", "/media", "/boot/config", "/data")

# The roots a data directory may live under (strictly below each). Everything else is refused: a list of
# system paths is never complete, a list of data roots is. /var/lib holds package state under names a
# data directory could share, so only the program's own name is allowed there.
DATA_ROOTS = ("/mnt", "/srv", "/opt", "/data", "/home", "/var/lib/octollm", "/tmp", "/var/tmp")
# Roots that are this program's own, so they may be given themselves.
OWN_ROOTS = ("/var/lib/octollm",)
# Directories whose direct children are shared too (a user's home, an Unraid share or disk): a data
# directory must be a directory inside one of those children, not the child itself.
SHARE_PARENTS = ("/home", "/mnt/user", "/mnt/user0", "/mnt/cache", "/mnt/disks", "/mnt/remotes", "/mnt/addons",
                 "/mnt/rootshare")
_UNRAID_DISK = re.compile(r"/mnt/disk[0-9]+")
ALLOWED_ROOTS_TEXT = ("/mnt/<disk>/…, /mnt/user/<share>/…, /srv/…, /opt/…, /data/…, /home/<user>/…, "
                      "/var/lib/octollm[/…], /tmp/… or /var/tmp/… (scratch), or /<pool>/… of a ZFS pool that a "
                      "zfs store of the same host uses")
_PATH_CHARS = re.compile(r"[A-Za-z0-9._@+/-]+")


def _shared_root(norm: str) -> str | None:
    """The shared directory `norm` is (and may only hold data directories), if it is one."""
    if norm in OWN_ROOTS:
        return None
    if norm in SYSTEM_ROOTS or norm in DATA_ROOTS or norm in SHARE_PARENTS or _UNRAID_DISK.fullmatch(norm):
        return norm
    parent = posixpath.dirname(norm)
    if parent in SHARE_PARENTS or _UNRAID_DISK.fullmatch(parent):
        return norm
    return None


def data_root_of(norm: str) -> str | None:
    """The allowed root `norm` lies in, or None: then it can only be inside a ZFS pool's mount."""
    for root in DATA_ROOTS:
        if norm.startswith(root + "/") or (norm == root and root in OWN_ROOTS):
            return root
    return None


def _safe_dir(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{v!r} is not an absolute path")
    if not _PATH_CHARS.fullmatch(v):
        raise ValueError(f"{v!r} holds characters outside letters, digits and ._@+-/ (spaces, quotes, "
                         "$ and control characters are refused)")
    parts = [p for p in v.split("/") if p]
    if ".." in parts or "." in parts:
        raise ValueError(f"{v!r} climbs with '.' or '..'; give the path it means")
    # posixpath keeps a leading '//' (POSIX lets it mean something else); every Linux host reads it as '/',
    # so the checks below judge what the host will use.
    norm = "/" + "/".join(parts)
    for tree in SYSTEM_TREES:
        if norm == tree or norm.startswith(tree + "/"):
            raise ValueError(f"{norm!r} is inside {tree}, which belongs to the system; use a data directory "
                             f"under one of the allowed roots: {ALLOWED_ROOTS_TEXT}")
    if _shared_root(norm) is not None:
        raise ValueError(f"{norm!r} is a system directory or a shared root; give a directory of this stack's own "
                         f"under it (e.g. {posixpath.join(norm if norm != '/' else '/opt', 'octollm')!r}); allowed: {ALLOWED_ROOTS_TEXT}")
    if norm != v.rstrip("/"):
        raise ValueError(f"{v!r} is not normalised; write it as {norm!r}")
    if any(p.startswith("-") for p in parts):
        raise ValueError(f"{v!r} has a path component starting with '-'")
    if any(p.startswith(".") for p in parts):
        raise ValueError(f"{v!r} has a hidden component (starting with '.'), where keys and tool state live; "
                         f"give a data directory of its own under one of the allowed roots: {ALLOWED_ROOTS_TEXT}")
    return norm


DataPath = Annotated[str, AfterValidator(_safe_dir)]
"""A host data directory. Where it may be, below one of DATA_ROOTS or inside the mount of a ZFS pool that a
zfs store of the same host uses, `rules.check_rules` decides with `allowed_root_problem`: it needs the host."""


def allowed_root_problem(norm: str, pools: list[str]) -> str | None:
    """Why the DataPath `norm` is outside the allowed roots of a host whose zfs stores use `pools`, or None."""
    if data_root_of(norm) is not None:
        return None
    parts = norm.split("/")[1:]
    top = "/" + parts[0]
    if len(parts) < 2 or top in SYSTEM_ROOTS or parts[0] not in pools:
        why = (f"{top} is the mount of no ZFS pool a zfs store of the host uses (pools there: "
               f"{', '.join(pools) or 'none'})" if len(parts) >= 2 and top not in SYSTEM_ROOTS else
               "a pool's own mount is shared by all of its datasets" if len(parts) < 2 and parts[0] in pools else
               f"{top} is not a data root")
        return f"{norm!r} is not under an allowed root: {why}; allowed: {ALLOWED_ROOTS_TEXT}"
    return None


def _relative_file(v: str) -> str:
    if v.startswith("/") or not _PATH_CHARS.fullmatch(v):
        raise ValueError(f"{v!r} must be a path relative to the model store (letters, digits and ._@+-/)")
    parts = v.split("/")
    if ".." in parts or posixpath.normpath(v) != v:
        raise ValueError(f"{v!r} must stay inside the model store: no '..' and no '.' components")
    if any(p.startswith((".", "-")) for p in parts):
        raise ValueError(f"{v!r} has a component starting with '.' or '-'; give the model file's own path in the "
                         "model store")
    return v


StoreRelativePath = Annotated[str, AfterValidator(_relative_file)]


def _zfs_dataset(v: str) -> str:
    parts = v.split("/")
    if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", p) for p in parts):
        raise ValueError(f"{v!r} is not a ZFS dataset name: pool/child, each part letters, digits and _.:-, "
                         "starting with a letter or digit")
    if len(parts) < 2:
        raise ValueError(f"{v!r} is a pool root; give a dataset below it such as {v}/ai-models (the program "
                         "sets properties on it, and a pool's root holds everything else)")
    return v


ZfsDataset = Annotated[str, AfterValidator(_zfs_dataset)]

# ------------------------------------------------------------------ networks and NFS


def _client_cidr(v: str) -> str:
    _printable(v, "a network in CIDR form such as 10.0.0.0/24")
    _ipv6_refused(v, "an IPv4 network in CIDR form such as 10.0.0.0/24")
    try:
        net = ipaddress.IPv4Network(v, strict=True)
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
    _printable(v, "an image reference (e.g. repo/name:1.2.3)")
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

_OLLAMA_MODEL = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?(:[A-Za-z0-9][A-Za-z0-9._-]*)?")
_HF_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def _model_name(v: str) -> str:
    if not (_OLLAMA_MODEL.fullmatch(v) or _HF_MODEL.fullmatch(v)) or len(v) > 200 or ".." in v:
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

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _kubernetes_name(v: str) -> str:
    if not _DNS_LABEL.fullmatch(v):
        raise ValueError(f"{v!r} is not a Kubernetes name (DNS-1123 label): at most 63 lower-case letters, "
                         "digits and '-', starting and ending with a letter or digit")
    return v


KubernetesName = Annotated[str, AfterValidator(_kubernetes_name)]


def _kubernetes_subdomain(v: str) -> str:
    if len(v) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in v.split(".")):
        raise ValueError(f"{v!r} is not a Kubernetes object name (DNS-1123 subdomain): dot-separated labels of "
                         "lower-case letters, digits and '-', each starting and ending with a letter or digit, at "
                         "most 253 characters")
    return v


KubernetesSubdomain = Annotated[str, AfterValidator(_kubernetes_subdomain)]


def _kube_context(v: str) -> str:
    # kubeconfig context names are free-form (gke_<project>_<zone>_<cluster>, arn:aws:eks:…/name); the
    # provider takes it as data, and a name without whitespace cannot pass for a second argument anywhere.
    if not v or len(v) > 253 or not v.isprintable() or any(c.isspace() for c in v) or v.startswith("-"):
        raise ValueError(f"{v!r} is not a kubeconfig context name: 1-253 printable characters without spaces or "
                         "control characters, not starting with '-'")
    return v


KubeContext = Annotated[str, AfterValidator(_kube_context)]


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

# ------------------------------------------------------------------ text


def text(max_len: int, what: str):
    """Free text of at most `max_len` printable characters: for values that only ever reach a serialiser
    (YAML, JSON, a Kubernetes annotation) or a message, never a command line or a line-based file."""
    def check(v: str) -> str:
        _printable(v, f"{what}: one line of printable text")
        if len(v) > max_len:
            raise ValueError(f"{v[:40]!r}… is {len(v)} characters long; {what} is at most {max_len}")
        return v
    return Annotated[str, AfterValidator(check)]


def _url_path(v: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,254}", v):
        raise ValueError(f"{v!r} is not a URL path: '/' then at most 254 URL characters (RFC 3986), no spaces "
                         "or control characters")
    return v


UrlPath = Annotated[str, AfterValidator(_url_path)]


def _http_url(v: str) -> str:
    from urllib.parse import urlsplit

    form = "http(s)://host[:port][/path], the host an IPv4 address or a DNS name"
    _printable(v, f"a URL: {form}")
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError:
        raise ValueError(f"{v!r} is not a URL: {form}") from None
    if u.scheme not in ("http", "https") or not u.hostname or u.username or u.password or " " in v:
        raise ValueError(f"{v!r} is not a URL: {form} (no credentials: they come from secret config)")
    _host_address(u.hostname)
    if port == 0:
        raise ValueError(f"{v!r} has port 0; give 1-65535")
    return v


HttpUrl = Annotated[str, AfterValidator(_http_url)]


GpuModel = text(64, "a GPU model name")  # matched against the catalogue, shown in messages and outputs
Description = text(200, "a model description")  # shown in messages and the catalogue output
TraefikRule = text(1000, "a Traefik router rule")  # reaches only Traefik's file provider, via yaml.safe_dump
RotationMarker = text(100, "a rotation marker")  # a keeper of the random providers: it only has to change
