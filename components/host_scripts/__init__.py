"""Every shell script the program sends to a host.

The scripts live next to this module as real shell files (`preflight.sh`, `ensure_dirs.sh`, ...), one
per builder below, so shellcheck reads them as they are and the tests also run each rendered script
through shellcheck and against a scratch directory. Each script is idempotent: running it twice leaves
the host as running it once does.

How a `.sh` file becomes the script a host receives
---------------------------------------------------
Each file is a complete bash script that reads its parameters from an associative array `P`. Its
parameter block, from `#@params` to `#@end` right after the shebang, declares `P` with sample values,
so the file on its own parses, passes shellcheck and can be read as what it does. The renderer
(`_render`) turns it into the script for one call's values:

- it drops the parameter block;
- `"${P[name]}"`, a reference written as one double-quoted word, becomes `q(value)`: a string
  through `q`, an int as `q` of its digits, a list or tuple as its items, each through `q`, separated
  by spaces (for an array: `x=("${P[name]}")`);
- `${P[name]}` without quotes of its own (inside a "..." message, an arithmetic expression or a
  comment) is accepted only for an int, and becomes its digits; a string there is refused, so a
  string value can only ever become one whole shell word, quoted by `q`;
- a line whose first non-blank characters are `#@` is for the renderer and never reaches the host:
  `#@if name` ... `#@end` keeps its lines when the value is truthy, `#@for a, b in name` ... `#@end`
  repeats them for each item of a list, binding `${P[a]}` and `${P[b]}`, and `#@ text` is a note for
  whoever reads the file.

Values are data, never code: whatever a value holds (`$(...)`, a backtick, quotes, a newline, a
leading `-`, `${P[x]}` or `#@end`), the shell reads it as one word and the renderer never reads it
again. Substitution is in one pass, directives come only from the file. The one parameter used as a
command word, `gfail` in the preflight, is `fail` or `warn`, chosen here from a boolean.

The rendered scripts are byte for byte what the builders produced when the shell text was written
inline in Python, so moving the text into the `.sh` files changed no registered command.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


def q(value: str) -> str:
    """The one quoting helper: every string value reaches a script through it."""
    return shlex.quote(value)


# --- the renderer ---------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^\s*#@(?:(\S+)\s*(.*?)\s*|\s.*|)$")  # #@word args, or #@ a note
_FOR = re.compile(r"^(\w+(?:\s*,\s*\w+)*)\s+in\s+(\w+)$")
# "${P[name]}" as one quoted word, or ${P[name]} bare (inside a string, arithmetic or a comment)
_REF = re.compile(r'"\$\{P\[(\w+)\]\}"|\$\{P\[(\w+)\]\}')


@dataclass(frozen=True)
class _Line:
    text: str
    where: str  # file:line, for errors


@dataclass(frozen=True)
class _Block:
    kind: str  # "if" or "for"
    arg: str  # the parameter tested or iterated
    names: tuple[str, ...]  # the names a "for" binds
    body: tuple  # of _Line and _Block
    where: str


@dataclass(frozen=True)
class _Template:
    name: str
    body: tuple
    names: frozenset[str]  # every parameter the file refers to, in references and directives


def _parse(name: str, text: str) -> _Template:
    if not text.endswith("\n"):
        raise ValueError(f"{name}: the file must end with a newline")
    stack: list[tuple[str, str, tuple[str, ...], list, str]] = [("top", "", (), [], name)]
    names: set[str] = set()
    in_params = False
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"{name}:{n}"
        m = _DIRECTIVE.match(line)
        if in_params:
            if m and m.group(1) == "end":
                in_params = False
            continue
        if not m:
            names.update(a or b for a, b in _REF.findall(line))
            stack[-1][3].append(_Line(line, where))
            continue
        kind, arg = m.group(1), m.group(2)
        if kind is None:  # a note for the reader
            continue
        if kind not in ("params", "if", "for", "end"):
            raise ValueError(f"{where}: unknown renderer line #@{kind} (a note is '#@ text')")
        if kind == "params":
            if len(stack) > 1:
                raise ValueError(f"{where}: the parameter block must not be inside #@if or #@for")
            in_params = True
        elif kind == "if":
            if not re.fullmatch(r"\w+", arg):
                raise ValueError(f"{where}: #@if takes one parameter name, not {arg!r}")
            names.add(arg)
            stack.append(("if", arg, (), [], where))
        elif kind == "for":
            fm = _FOR.match(arg)
            if not fm:
                raise ValueError(f"{where}: expected '#@for a[, b ...] in name', not {arg!r}")
            bound = tuple(s.strip() for s in fm.group(1).split(","))
            names.update(bound)
            names.add(fm.group(2))
            stack.append(("for", fm.group(2), bound, [], where))
        else:  # end
            if len(stack) == 1:
                raise ValueError(f"{where}: #@end without #@if or #@for")
            kind_, arg_, bound_, body_, where_ = stack.pop()
            stack[-1][3].append(_Block(kind_, arg_, bound_, tuple(body_), where_))
    if in_params:
        raise ValueError(f"{name}: #@params is not closed by #@end")
    if len(stack) > 1:
        raise ValueError(f"{stack[-1][4]}: #@{stack[-1][0]} is not closed by #@end")
    return _Template(name, tuple(stack[0][3]), frozenset(names))


@lru_cache(maxsize=None)
def _template(name: str) -> _Template:
    text = resources.files(__name__).joinpath(f"{name}.sh").read_text(encoding="utf-8")
    return _parse(name, text)


def _word(value: object, what: str) -> str:
    if isinstance(value, str):
        return q(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return q(str(value))
    raise TypeError(f"{what}: {type(value).__name__} {value!r} is neither a string nor an int")


def _value(values: dict, name: str, where: str) -> object:
    if name not in values:
        raise KeyError(f"{where}: parameter {name!r} has no value")
    return values[name]


def _substitute(line: str, values: dict, where: str) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        value = _value(values, name, where)
        if m.group(1):  # a whole quoted word
            if isinstance(value, (list, tuple)):
                return " ".join(_word(v, f"{where}: {name}") for v in value)
            return _word(value, f"{where}: {name}")
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"{where}: {name} is a {type(value).__name__}; only an int may stand outside "
                        f'its own quotes (write "${{P[{name}]}}" as one word)')
    return _REF.sub(one, line)


def _expand(body: tuple, values: dict, out: list[str]) -> None:
    for item in body:
        if isinstance(item, _Line):
            out.append(_substitute(item.text, values, item.where))
        elif item.kind == "if":
            if _value(values, item.arg, item.where):
                _expand(item.body, values, out)
        else:
            for element in _value(values, item.arg, item.where):
                row = element if len(item.names) > 1 else (element,)
                if len(row) != len(item.names):
                    raise ValueError(f"{item.where}: {item.arg} item {element!r} does not match {item.names}")
                _expand(item.body, {**values, **dict(zip(item.names, row))}, out)


def _render(name: str, **values) -> str:
    """The script `name`.sh with these parameter values (see the module docstring)."""
    t = _template(name)
    unknown = set(values) - t.names
    if unknown:
        raise TypeError(f"{name}.sh takes no parameter(s) {sorted(unknown)}")
    out: list[str] = []
    _expand(t.body, values, out)
    return "\n".join(out) + "\n"


# --- the scripts ----------------------------------------------------------------------------------


def ensure_dirs(paths: list[str], owner: str, mode: str = "0750") -> str:
    """Create directories owned by `owner` (uid:gid). Existing data is never touched."""
    return _render("ensure_dirs", paths=list(paths), owner=owner, mode=mode,
                   ready="ready: " + " ".join(paths))


def write_file(path: str, owner: str, reload_container: str | None = None,
               signal: str | None = None) -> str:
    """Write stdin to `path` atomically; signal the container to reread it if it runs."""
    reload = bool(reload_container and signal)
    return _render("write_file", path=path, dir=path.rsplit("/", 1)[0] or "/", owner=owner,
                   reload=reload, reload_container=reload_container if reload else "",
                   signal=signal if reload else "")


def ollama_pull(container: str, models: list[str], wait_seconds: int = 300) -> str:
    """Pull models into a running Ollama once its API answers; skip models already present."""
    return _render("ollama_pull", container=container, models=list(models), wait_seconds=int(wait_seconds))


def ollama_pull_job(models: list[str], wait_seconds: int = 120) -> str:
    """Inside a Kubernetes Job: start a private Ollama on the shared volume, pull what is missing, stop."""
    return _render("ollama_pull_job", models=list(models), wait_seconds=int(wait_seconds))


def zfs_dataset(dataset: str, mountpoint: str, recordsize: str, compression: str, owner: str) -> str:
    """Create a ZFS dataset tuned for its workload, or converge the properties of an existing one."""
    return _render("zfs_dataset", dataset=dataset, mountpoint=mountpoint, recordsize=recordsize,
                   compression=compression, owner=owner)


def _exports_field(value: str, what: str) -> str:
    """One field of an /etc/exports line. exports(5) splits on whitespace, ends a line at a newline and
    reads '(' ')' '#' as syntax: a value holding one would export something else. Config already
    refuses them; this is the file's own guard."""
    if not value or any(c.isspace() or c in "()#\\\"'" or not c.isprintable() for c in value):
        raise ValueError(f"{what} {value!r} cannot be written into an exports line")
    return value


def nfs_export(path: str, client_cidr: str, options: str, owner: str) -> str:
    """Export `path` to `client_cidr`, replacing an older line for the same path; reload exports."""
    line = (f"{_exports_field(path, 'path')} {_exports_field(client_cidr, 'client')}"
            f"({_exports_field(options, 'options')})")
    return _render("nfs_export", path=path, line=line, owner=owner)


@dataclass(frozen=True)
class PreflightSpec:
    """What the stack needs of one Docker host, checked before anything is deployed there."""

    host: str
    stack_label: str  # value of org.octollm.managed-by on this stack's containers and networks
    min_docker: str
    networks: tuple[tuple[str, str], ...] = ()  # (name, subnet)
    # (name, subnet, gateway, internal, reserved (who, address) pairs) each network is created with:
    # an existing network of this stack that differs is replaced by this update
    network_settings: tuple[tuple[str, str, str, bool, tuple[tuple[str, str], ...]], ...] = ()
    anchors: tuple[str, ...] = ()  # directories that must already exist (pool/array mount points)
    dirs: tuple[tuple[str, str], ...] = ()  # (path, uid:gid) the stack creates or reuses
    disk: tuple[tuple[str, int], ...] = ()  # (store path, KiB the configured models need)
    gpus: tuple[tuple[str, int], ...] = ()  # (model, VRAM MiB) as declared
    min_driver: str | None = None  # oldest driver that runs every GPU image on the host
    driver_reason: str = ""
    gpu_image: str | None = None  # image used to prove Docker can hand the GPU to a container
    gpu_fallback: bool = False  # GPU problems are warnings: engines may run on the CPU
    ports: tuple[int, ...] = ()
    # SSH operations the stack runs against this host at once (pulumi --parallel); 0: not over SSH
    ssh_parallel: int = 0
    swap_limit: bool = True  # the config says the engine has swap accounting (hosts.<h>.swapLimit)


# OpenSSH's defaults, which apply when sshd_config sets neither (written into preflight.sh; a test
# holds the two together).
SSHD_DEFAULTS = {"maxstartups": "10:30:100", "maxsessions": "10"}


def preflight(spec: PreflightSpec) -> str:
    """Read-only checks of a host; every failure is reported, together, in one message.

    The only thing it may leave behind is the GPU test image (pulled if absent), which the GPU
    engines need anyway. The sshd limits are checked when `spec.ssh_parallel` is set: `sshd -T`
    prints the effective values but needs root (it loads the host keys); otherwise the config file
    is read the way sshd reads it (first value wins, Include files in place, Match blocks skipped,
    OpenSSH's defaults when unset). A network of this stack that `spec.network_settings` would
    change is replaced by the update, which the engine refuses while a container outside the stack
    is attached: the preflight names those containers and the commands that detach them. Only reads.
    """
    return _render(
        "preflight",
        host=spec.host,
        stack_label=spec.stack_label,
        min_docker=spec.min_docker,
        wanted=[f"{n}={s}" for n, s in spec.networks],
        nets=[(n, s, g, "true" if internal else "false", " ".join(f"{who}={ip}" for who, ip in sorted(reserved)))
              for n, s, g, internal, reserved in spec.network_settings],
        paths=bool(spec.anchors or spec.dirs),
        anchors=list(spec.anchors),
        dirs=list(spec.dirs),
        disk=[(p, int(kib), (int(kib) + 1048575) // 1048576) for p, kib in spec.disk],
        expected=[f"{m}={v}" for m, v in spec.gpus],
        gfail="warn" if spec.gpu_fallback else "fail",
        min_driver=spec.min_driver or "",
        driver_reason=spec.driver_reason,
        gpu_image=spec.gpu_image or "",
        ports=[int(p) for p in spec.ports],
        ssh_parallel=int(spec.ssh_parallel),
        swap_limit=int(bool(spec.swap_limit)),
    )


def postgres_set_password(container: str, user: str, database: str, wait_seconds: int = 120) -> str:
    """Apply the configured password to an existing database (POSTGRES_PASSWORD only acts on first init).

    The password arrives on stdin, travels in the environment (docker exec -e NAME passes the value
    through the API, not argv) and psql reads it with \\getenv: no process's command line holds it.
    """
    return _render("postgres_set_password", container=container, user=user, database=database,
                   wait_seconds=int(wait_seconds))


def grafana_set_admin_password(container: str, wait_seconds: int = 180) -> str:
    """Apply the configured admin password (GF_SECURITY_ADMIN_PASSWORD only acts on first start)."""
    return _render("grafana_set_admin_password", container=container, wait_seconds=int(wait_seconds))


@dataclass(frozen=True)
class BackupSpec:
    """What one stack's backup job copies on its host, and where it writes."""

    stack: str
    target: str  # the directory backups go to (one directory per backup)
    zfs_dataset: str = ""  # the target store's dataset; "": snapshot only when the target is found on ZFS
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_days: int = 0
    postgres: tuple[str, str, str] | None = None  # (container, user, database)
    redis: tuple[str, str] | None = None  # (container, host directory mounted at /data)
    worker_redis: tuple[str, str] | None = None  # the workers' Redis (service worker-redis), as redis
    qdrant: tuple[str, str] | None = None  # (container, its HTTP API as the host reaches it)
    grafana: tuple[str, str] | None = None  # (container, host directory mounted at /var/lib/grafana)
    wait_seconds: int = 600

    SERVICES = ("postgres", "redis", "worker-redis", "qdrant", "grafana")  # the config's BACKUP_SERVICES
    REDIS = ("redis", "worker-redis")  # copied and restored by the same Redis code of the scripts

    def of(self, service: str):
        """The spec's entry for a service name (worker-redis is the field worker_redis)."""
        return getattr(self, service.replace("-", "_"))

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(s for s in self.SERVICES if self.of(s) is not None)


def _backup_values(spec: BackupSpec, only: tuple[str, ...] | None = None) -> dict:
    chosen = spec.services if only is None else only
    values: dict = {}
    if "postgres" in chosen and spec.postgres:
        values.update(pg_container=spec.postgres[0], pg_user=spec.postgres[1], pg_database=spec.postgres[2])
    if "redis" in chosen and spec.redis:
        values.update(redis_container=spec.redis[0], redis_data=spec.redis[1])
    if "worker-redis" in chosen and spec.worker_redis:
        values.update(worker_redis_container=spec.worker_redis[0], worker_redis_data=spec.worker_redis[1])
    if "qdrant" in chosen and spec.qdrant:
        values.update(qdrant_container=spec.qdrant[0], qdrant_url=spec.qdrant[1])
    if "grafana" in chosen and spec.grafana:
        values.update(grafana_container=spec.grafana[0], grafana_data=spec.grafana[1])
    return values


def backup(spec: BackupSpec) -> str:
    """Consistent copies of the spec's services into a new <target>/<id>, with a manifest; then retention.

    The same script runs from the host's timer, `make backup` and before a risky plan (those two set
    OCTOLLM_BACKUP_ONLY / OCTOLLM_BACKUP_REASON in its environment)."""
    if not spec.services:
        raise ValueError("a backup needs at least one service to copy")
    return _render("backup", stack=spec.stack, target=spec.target, zfs_dataset=spec.zfs_dataset,
                   keep_daily=int(spec.keep_daily), keep_weekly=int(spec.keep_weekly), keep_days=int(spec.keep_days),
                   services=list(spec.services), wait_seconds=int(spec.wait_seconds),
                   **{s.replace("-", "_"): s in spec.services for s in spec.SERVICES},
                   any_redis=any(s in spec.services for s in spec.REDIS),
                   docker=True, k8s=False, k8s_begin=False, k8s_finish=False, new_backup=True, finish=True,
                   **_backup_values(spec))


# What a Kubernetes backup pod copies, one init container each (backup_step.sh).
KUBERNETES_BACKUP_SERVICES = ("postgres", "redis", "qdrant")


@dataclass(frozen=True)
class KubernetesBackup:
    """The scripts of a Kubernetes backup pod: `begin` (first container) and `finish` (last) are backup.sh,
    `steps` the copy of each service in between, by service."""

    begin: str
    steps: dict[str, str]
    finish: str


def backup_kubernetes(stack: str, services: tuple[str, ...], keep_daily: int = 0, keep_weekly: int = 0,
                      keep_days: int = 0, wait_seconds: int = 600) -> KubernetesBackup:
    """backup.sh as the first and last container of the backup pod (the id and the partial directory; the
    manifest, the rename and the same retention as on a Docker host), and one backup_step.sh per service."""
    if not services:
        raise ValueError("a backup needs at least one service to copy")
    bad = [s for s in services if s not in KUBERNETES_BACKUP_SERVICES]
    if bad:
        raise ValueError(f"{', '.join(bad)}: not copied on Kubernetes (only {', '.join(KUBERNETES_BACKUP_SERVICES)})")
    common = dict(stack=stack, zfs_dataset="", keep_daily=int(keep_daily), keep_weekly=int(keep_weekly),
                  keep_days=int(keep_days), services=list(services), docker=False, k8s=True,
                  **{s.replace("-", "_"): False for s in BackupSpec.SERVICES}, any_redis=False)
    return KubernetesBackup(
        begin=_render("backup", **common, k8s_begin=True, k8s_finish=False, new_backup=True, finish=False),
        steps={s: _render("backup_step", wait_seconds=int(wait_seconds),
                          **{k: k == s for k in KUBERNETES_BACKUP_SERVICES}) for s in services},
        finish=_render("backup", **common, k8s_begin=False, k8s_finish=True, new_backup=False, finish=True))


def restore(spec: BackupSpec, service: str, backup_id: str, wait_seconds: int = 300) -> str:
    """Restore one service of the spec from one backup (an id, or 'latest'), after checking its sha256 sums."""
    if service not in spec.services:
        raise ValueError(f"{service} is not one of the services the backups hold ({', '.join(spec.services)})")
    values = _backup_values(spec, (service,))
    if service in spec.REDIS:
        # One Redis restore for either: the service's name (its directory in the backup) and its container.
        container, data = spec.of(service)
        values = dict(redis_service=service, redis_container=container, redis_data=data)
    return _render("restore", stack=spec.stack, target=spec.target, backup_id=backup_id, list=False, restore=True,
                   wait_seconds=int(wait_seconds),
                   **{s: s == service for s in ("postgres", "qdrant", "grafana")}, redis=service in spec.REDIS,
                   **values)


def backup_list(spec: BackupSpec) -> str:
    """List the stack's backups in the target: id, services, size, reason."""
    return _render("restore", stack=spec.stack, target=spec.target, list=True, restore=False,
                   **{s: False for s in ("postgres", "redis", "qdrant", "grafana")})


def _unit_field(value: str, what: str) -> str:
    """A free-text value written into a systemd unit or a crontab comment: one line, no control characters
    (a newline would start a directive of its own), no '%' (cron reads it as a newline, systemd as a
    specifier) and no backslash (systemd joins a line ending in one with the next)."""
    if not value or any(not c.isprintable() for c in value) or "%" in value or "\\" in value:
        raise ValueError(f"{what} {value!r} cannot be written into a unit file or a crontab line "
                         "(one line of printable characters without '%' or '\\')")
    return value


# Characters a job's path may hold. None of them is special to /bin/sh, to cron (no '%') or to systemd's
# ExecStart= splitting ('$' variables, '%' specifiers, quotes, backslash escapes, a lone ';'), so the path
# means itself in all three; quoting below is for the shell all the same.
_JOB_PATH = re.compile(r"/[A-Za-z0-9._@+/-]+")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*,/-]+")
_CALENDAR_WORD = re.compile(r"[A-Za-z0-9*,.:/~_+-]+")


def _job_path(value: str, what: str) -> str:
    """An absolute, normalised path of letters, digits and ._@+-/ whose components do not start with '-'."""
    if (not _JOB_PATH.fullmatch(value) or posixpath.normpath(value) != value or value.startswith("//")
            or any(p.startswith("-") or p in (".", "..") for p in value.split("/")[1:])):
        raise ValueError(f"{what} {value!r} is not an absolute, normalised path of letters, digits and ._@+-/ "
                         "(no '.' or '..' components, none starting with '-')")
    return value


def _cron_expression(value: str) -> str:
    fields = value.split(" ")
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"cron {value!r} is not five cron fields separated by single spaces (each of digits, "
                         "letters and *,/-), e.g. '30 3 * * *'")
    return value


def _on_calendar(value: str) -> str:
    if value.startswith("-") or not all(_CALENDAR_WORD.fullmatch(w) for w in value.split(" ")):
        raise ValueError(f"calendar {value!r} is not a systemd OnCalendar expression (words of letters, digits "
                         "and *,.:/~_+- separated by single spaces, not starting with '-'), e.g. '*-*-* 03:30:00'")
    return value


def _cron_line(cron: str, script_path: str, log_path: str) -> str:
    """The crontab line: cron hands everything after the five fields to /bin/sh, so each path is one sh
    word (q). cron also turns an unescaped '%' into a newline, and how '\\%' is unescaped differs between
    cron implementations (dcron on Unraid, cronie, vixie cron), so a '%' is refused, not escaped."""
    for v in (cron, script_path, log_path):
        if "%" in v or not v.isprintable():
            raise ValueError(f"{v!r} cannot be written into a crontab line (a '%' or a control character)")
    return f"{_cron_expression(cron)} /bin/bash {q(script_path)} > {q(log_path)} 2>&1"


def _exec_start(script_path: str) -> str:
    """ExecStart= of the job's service. systemd splits it with its own rules (quotes, '\\' escapes, '$'
    variables, '%' specifiers): a path made only of _JOB_PATH's characters is one word that means itself
    there, and any other is refused rather than escaped."""
    return f"/bin/bash {_job_path(script_path, 'script path')}"


def schedule_job(name: str, description: str, calendar: str, cron: str, script_path: str, log_path: str, *,
                 install: bool) -> str:
    """Install (install=True; the job's script on stdin) or remove a scheduled job on a Docker host: a systemd
    timer, or on Unraid a cron file that update_cron merges into root's crontab."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,99}", name):
        raise ValueError(f"{name!r} is not a unit name")
    _unit_field(description, "description")
    _on_calendar(_unit_field(calendar, "calendar"))
    _cron_expression(_unit_field(cron, "cron"))
    _job_path(script_path, "script path")
    _job_path(log_path, "log path")
    return _render("schedule_job", job=name, description=description, calendar=calendar, cron=cron,
                   script_path=script_path, exec_start=_exec_start(script_path),
                   cron_line=_cron_line(cron, script_path, log_path), install=install, remove=not install)
