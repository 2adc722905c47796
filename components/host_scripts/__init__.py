"""Every shell script the program sends to a host.

Scripts are generated here, and only here, so that the tests can run each one through
shellcheck and execute them against a scratch directory. Each script is idempotent: running
it twice leaves the host as running it once does. Values are quoted with shlex.quote.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

HEADER = "#!/usr/bin/env bash\nset -euo pipefail\n"


def q(value: str) -> str:
    return shlex.quote(value)


def ensure_dirs(paths: list[str], owner: str, mode: str = "0750") -> str:
    """Create directories owned by `owner` (uid:gid). Existing data is never touched."""
    lines = [HEADER]
    for p in paths:
        lines.append(f"mkdir -p -- {q(p)}")
        # chown only the directory itself: a recursive chown of a populated data dir is slow
        # and would fight the uid the service itself chose for its files.
        # chown only when needed: a non-root operator can re-run this on directories it owns.
        lines.append(f'[ "$(stat -c %u:%g -- {q(p)})" = {q(owner)} ] || chown {q(owner)} -- {q(p)}')
        lines.append(f"chmod {q(mode)} -- {q(p)}")
    lines.append(f"echo {q('ready: ' + ' '.join(paths))}")
    return "\n".join(lines) + "\n"


def write_file(path: str, owner: str, reload_container: str | None = None,
               signal: str | None = None) -> str:
    """Write stdin to `path` atomically; signal the container to reread it if it runs."""
    d = path.rsplit("/", 1)[0] or "/"
    lines = [
        HEADER,
        f"mkdir -p -- {q(d)}",
        f'tmp="$(mktemp {q(path)}.XXXXXX)"',
        'cat > "$tmp"',
        'chmod 0644 "$tmp"',
        f'chown {q(owner)} "$tmp"',
        f'mv -f "$tmp" {q(path)}',
    ]
    if reload_container and signal:
        lines.append(
            f"if docker inspect -f '{{{{.State.Running}}}}' {q(reload_container)} 2>/dev/null | grep -qx true; then\n"
            f"  docker kill --signal {q(signal)} {q(reload_container)} >/dev/null\n"
            "fi"
        )
    lines.append(f"sha256sum -- {q(path)}")
    return "\n".join(lines) + "\n"


def ollama_pull(container: str, models: list[str], wait_seconds: int = 300) -> str:
    """Pull models into a running Ollama once its API answers; skip models already present."""
    lines = [
        HEADER,
        f"container={q(container)}",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        'until docker exec "$container" ollama list >/dev/null 2>&1; do',
        '  if [ "$(date +%s)" -ge "$deadline" ]; then',
        f'    echo "ollama in $container did not answer within {int(wait_seconds)}s" >&2',
        "    exit 1",
        "  fi",
        "  sleep 2",
        "done",
        f"models=({' '.join(q(m) for m in models)})",
        'for model in "${models[@]}"; do',
        '  if docker exec "$container" ollama show "$model" >/dev/null 2>&1; then',
        '    echo "present: $model"',
        "  else",
        '    docker exec "$container" ollama pull "$model" >/dev/null',
        '    echo "pulled: $model"',
        "  fi",
        "done",
    ]
    return "\n".join(lines) + "\n"


def ollama_pull_job(models: list[str], wait_seconds: int = 120) -> str:
    """Inside a Kubernetes Job: start a private Ollama on the shared volume, pull what is missing, stop."""
    return "\n".join([
        HEADER,
        "ollama serve >/tmp/ollama-serve.log 2>&1 &",
        "server=$!",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        "until ollama list >/dev/null 2>&1; do",
        '  if [ "$(date +%s)" -ge "$deadline" ]; then cat /tmp/ollama-serve.log >&2; exit 1; fi',
        "  sleep 1",
        "done",
        f"models=({' '.join(q(m) for m in models)})",
        'for model in "${models[@]}"; do',
        '  if ollama show "$model" >/dev/null 2>&1; then echo "present: $model"; else ollama pull "$model" >/dev/null; echo "pulled: $model"; fi',
        "done",
        'kill "$server"',
        'wait "$server" || true',
    ]) + "\n"


def zfs_dataset(dataset: str, mountpoint: str, recordsize: str, compression: str, owner: str) -> str:
    """Create a ZFS dataset tuned for its workload, or converge the properties of an existing one."""
    return HEADER + "\n".join([
        f"ds={q(dataset)}",
        f"mnt={q(mountpoint)}",
        'if ! zfs list -H -o name -- "$ds" >/dev/null 2>&1; then',
        f'  zfs create -p -o recordsize={q(recordsize)} -o compression={q(compression)} -o mountpoint="$mnt" "$ds"',
        "else",
        # New properties apply to blocks written from now on; existing data is left as it is.
        f'  zfs set recordsize={q(recordsize)} "$ds"',
        f'  zfs set compression={q(compression)} "$ds"',
        "fi",
        'mkdir -p -- "$mnt"',
        f'chown {q(owner)} -- "$mnt"',
        'zfs get -H -o property,value recordsize,compression,mountpoint "$ds"',
    ]) + "\n"


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
    return HEADER + "\n".join([
        'exports="${OCTOLLM_EXPORTS_FILE:-/etc/exports}"',
        f"path={q(path)}",
        f"line={q(line)}",
        'mkdir -p -- "$path"',
        f'chown {q(owner)} -- "$path"',
        'touch -- "$exports"',
        'if ! grep -qxF -- "$line" "$exports"; then',
        '  tmp="$(mktemp)"',
        '  awk -v p="$path" \'$1 != p\' "$exports" > "$tmp"',
        '  printf \'%s\\n\' "$line" >> "$tmp"',
        '  cat -- "$tmp" > "$exports"',
        '  rm -f -- "$tmp"',
        "fi",
        "exportfs -ra",
        'grep -xF -- "$line" "$exports"',
    ]) + "\n"


@dataclass(frozen=True)
class PreflightSpec:
    """What the stack needs of one Docker host, checked before anything is deployed there."""

    host: str
    stack_label: str  # value of org.octollm.managed-by on this stack's containers and networks
    min_docker: str
    networks: tuple[tuple[str, str], ...] = ()  # (name, subnet)
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


# OpenSSH's defaults, which apply when sshd_config sets neither.
SSHD_DEFAULTS = {"maxstartups": "10:30:100", "maxsessions": "10"}


def _sshd_limits(parallel: int) -> list[str]:
    """Report sshd's MaxStartups/MaxSessions; warn when they are below what `parallel` needs.

    `sshd -T` prints the effective values but needs root (it loads the host keys); otherwise the
    config file is read the way sshd reads it: first value wins, Include files in place, Match
    blocks skipped, OpenSSH's defaults when unset. Only reads.
    """
    d = SSHD_DEFAULTS
    return [
        "",
        f"# sshd limits: this stack runs up to {int(parallel)} SSH operations at once on the host. With",
        "# connection sharing the Docker API calls are sessions on one connection (MaxSessions), and",
        "# each remote command, and the shared connection itself, is a new connection that counts",
        "# against MaxStartups (start:rate:full) until it has logged in.",
        f"ssh_parallel={int(parallel)}",
        'sshd_config="${OCTOLLM_SSHD_CONFIG:-/etc/ssh/sshd_config}"',
        'sshd_dir="$(dirname -- "$sshd_config")"',
        "sshd_lines() {  # a config file's lines, with its Include files expanded where they appear",
        "  local line kw rest pat file pats",
        '  [ "$2" -lt 16 ] && [ -r "$1" ] || return 0',
        '  while IFS= read -r line || [ -n "$line" ]; do',
        '    read -r kw rest <<<"${line/=/ }"',
        '    if [ "${kw,,}" = include ]; then',
        '      read -ra pats <<<"$rest"',
        '      for pat in "${pats[@]}"; do',
        '        case "$pat" in /*) ;; *) pat="$sshd_dir/$pat" ;; esac  # relative to the config directory',
        # in name order, as sshd's glob(3) gives them
        '        while IFS= read -r file; do sshd_lines "$file" $(( $2 + 1 )); done < <(compgen -G "$pat" | LC_ALL=C sort)',
        "      done",
        "    else",
        """      printf '%s\\n' "$line\"""",
        "    fi",
        '  done < "$1"',
        "}",
        "sshd_first() {  # the first global value of a keyword, as sshd takes it",
        """  sshd_lines "$sshd_config" 0 | awk -v key="$1" '""",
        """    { sub(/^[ \\t]+/, ""); sub(/=/, " ") }  # Keyword=value and Keyword value alike""",
        "    /^#/ || NF == 0 { next }",
        """    tolower($1) == "match" { in_match = 1; next }""",
        "    !in_match && tolower($1) == key { print $2; exit }'",
        "}",
        'max_startups=""; max_sessions=""; sshd_source=""',
        'sshd_bin="$(command -v sshd || true)"',
        'if [ -z "$sshd_bin" ] && [ -x /usr/sbin/sshd ]; then sshd_bin=/usr/sbin/sshd; fi',
        'if [ -n "$sshd_bin" ] && effective=$("$sshd_bin" -T -f "$sshd_config" 2>/dev/null); then',
        """  max_startups=$(awk '$1 == "maxstartups" {print $2; exit}' <<<"$effective")""",
        """  max_sessions=$(awk '$1 == "maxsessions" {print $2; exit}' <<<"$effective")""",
        '  sshd_source="sshd -T"',
        'elif [ -r "$sshd_config" ]; then',
        "  max_startups=$(sshd_first maxstartups)",
        "  max_sessions=$(sshd_first maxsessions)",
        '  sshd_source="$sshd_config"',
        '  if [ -z "$max_startups" ] || [ -z "$max_sessions" ]; then sshd_source="$sshd_config, OpenSSH defaults"; fi',
        f'  max_startups="${{max_startups:-{d["maxstartups"]}}}"',
        f'  max_sessions="${{max_sessions:-{d["maxsessions"]}}}"',
        "fi",
        'if [ -z "$sshd_source" ]; then',
        '  echo "sshd: MaxStartups unknown, MaxSessions unknown (sshd -T failed and $sshd_config is not readable)"',
        "else",
        '  echo "sshd: MaxStartups $max_startups, MaxSessions $max_sessions (from $sshd_source)"',
        '  start="${max_startups%%:*}"',
        '  if [[ "$start" =~ ^[0-9]+$ ]] && [ "$start" -lt "$ssh_parallel" ]; then',
        '    warn "sshd MaxStartups $max_startups starts dropping new connections at $start, below the'
        ' $ssh_parallel SSH operations this stack runs at once (connections get reset); raise it, e.g.'
        ' MaxStartups $(( ssh_parallel + 2 )):30:100, or lower pulumi --parallel"',
        "  fi",
        '  if [[ "$max_sessions" =~ ^[0-9]+$ ]] && [ "$max_sessions" -lt "$ssh_parallel" ]; then',
        '    warn "sshd MaxSessions $max_sessions is below the $ssh_parallel Docker API calls this stack runs'
        ' at once on one shared connection (calls beyond it are refused); raise it, e.g.'
        ' MaxSessions $ssh_parallel, or lower pulumi --parallel"',
        "  fi",
        "fi",
    ]


def preflight(spec: PreflightSpec) -> str:
    """Read-only checks of a host; every failure is reported, together, in one message.

    The only thing it may leave behind is the GPU test image (pulled if absent), which the GPU
    engines need anyway.
    """
    L = [
        "#!/usr/bin/env bash",
        "set -uo pipefail",
        f"host={q(spec.host)}",
        f"stack_label={q(spec.stack_label)}",
        "failures=()",
        "warnings=()",
        'fail() { failures+=("$1"); }',
        'warn() { warnings+=("$1"); }',
        'version_ge() { [ "$(printf \'%s\\n%s\\n\' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }',
        'ip2int() { local a b c d; IFS=. read -r a b c d <<<"$1"; echo $(( (a << 24) | (b << 16) | (c << 8) | d )); }',
        "cidr_range() {",
        '  local ip="${1%/*}" bits="${1#*/}" n size',
        '  n=$(ip2int "$ip"); size=$(( 1 << (32 - bits) ))',
        '  echo "$(( n / size * size )) $(( n / size * size + size - 1 ))"',
        "}",
        "overlaps() {",
        "  local s1 e1 s2 e2",
        '  read -r s1 e1 <<<"$(cidr_range "$1")"; read -r s2 e2 <<<"$(cidr_range "$2")"',
        '  [ "$s1" -le "$e2" ] && [ "$s2" -le "$e1" ]',
        "}",
        'nearest_existing() { local p="$1"; while [ ! -e "$p" ]; do p="$(dirname -- "$p")"; done; echo "$p"; }',
        "",
        "# Docker engine",
        "docker_ok=0",
        "if ! command -v docker >/dev/null 2>&1; then",
        '  fail "the docker CLI is not installed"',
        "elif ! server=$(docker version --format '{{.Server.Version}}' 2>&1); then",
        '  fail "the Docker engine does not answer: ${server##*$\'\\n\'}"',
        "else",
        "  docker_ok=1",
        # Config values reach messages through quoted variables, never inside a "…" string.
        f"  min_docker={q(spec.min_docker)}",
        '  if ! version_ge "${server%%[+-]*}" "$min_docker"; then',
        '    fail "Docker engine $server is older than $min_docker, the oldest this program supports"',
        "  fi",
        # Containers are created with memory_swap = memory (no swap past the limit). An engine without
        # swap accounting stores -1 instead, so every `up` would show memorySwap changing.
        "  if [ \"$(docker info --format '{{.SwapLimit}}' 2>/dev/null)\" = false ]; then",
        '    warn "the Docker engine has no swap limit support (cgroup swap accounting is off): memory limits hold '
        'but swap is not limited, and every pulumi up will show memorySwap changes on its containers"',
        "  fi",
        "fi",
    ]
    if spec.networks:
        L += [
            "",
            "# Networks: no foreign network may already use a subnet or name this stack wants",
            f"wanted=({' '.join(q(f'{n}={s}') for n, s in spec.networks)})",
            'if [ "$docker_ok" = 1 ]; then',
            "  while IFS='|' read -r name label subnets; do",
            '    [ -n "$name" ] || continue',
            '    [ "$label" = "$stack_label" ] && continue',
            '    for want in "${wanted[@]}"; do',
            '      wname="${want%%=*}"; wsubnet="${want#*=}"',
            '      if [ "$name" = "$wname" ]; then',
            '        fail "a Docker network named $name already exists and is not managed by this stack"',
            "      fi",
            "      for s in $subnets; do",
            '        case "$s" in *:*) continue ;; esac',
            '        if overlaps "$s" "$wsubnet"; then',
            '          fail "Docker network $name already uses $s, which overlaps $wsubnet wanted for $wname"',
            "        fi",
            "      done",
            "    done",
            "  done < <(docker network ls -q | xargs -r docker network inspect --format "
            "'{{.Name}}|{{index .Labels \"org.octollm.managed-by\"}}|{{range .IPAM.Config}}{{.Subnet}} {{end}}')",
            "fi",
        ]
    if spec.anchors or spec.dirs:
        L += ["", "# Host paths"]
        for a in spec.anchors:
            L += [f"a={q(a)}",
                  'if [ ! -d "$a" ]; then',
                  '  fail "$a does not exist (is the pool or array that holds it mounted?)"',
                  "fi"]
        for path, owner in spec.dirs:
            L += [
                f"p={q(path)}",
                f"owner={q(owner)}",
                'if [ -e "$p" ]; then',
                '  if [ ! -d "$p" ]; then',
                '    fail "$p exists but is not a directory"',
                '  elif [ "$(stat -c %u:%g -- "$p")" != "$owner" ] && [ "$(id -u)" != 0 ]; then',
                '    fail "$p is owned by $(stat -c %u:%g -- "$p"), not $owner, and this user cannot change that"',
                "  fi",
                "else",
                '  anc="$(nearest_existing "$p")"',
                '  if [ ! -w "$anc" ]; then',
                '    fail "$p does not exist and cannot be created: $anc is not writable by $(id -un)"',
                "  fi",
                "fi",
            ]
    if spec.disk:
        L += ["", "# Free disk at each model store"]
        for path, need_kib in spec.disk:
            L += [
                f"p={q(path)}",
                'anc="$(nearest_existing "$p")"',
                "free=$(df -Pk -- \"$anc\" | awk 'NR==2 {print $4}')",
                "have=0",
                'if [ -d "$p" ]; then have=$(du -sk -- "$p" 2>/dev/null | awk \'{print $1}\'); fi',
                f'if [ $(( free + have )) -lt {need_kib} ]; then',
                f'  fail "$p: $(( (free + have) / 1048576 )) GiB free for models that need '
                f'{(need_kib + 1048575) // 1048576} GiB"',
                "fi",
            ]
    if spec.gpus:
        gfail = "warn" if spec.gpu_fallback else "fail"
        L += [
            "",
            "# GPUs",
            f"expected=({' '.join(q(f'{m}={v}') for m, v in spec.gpus)})",
            "if ! command -v nvidia-smi >/dev/null 2>&1; then",
            f'  {gfail} "nvidia-smi not found: the config declares ${{#expected[@]}} GPU(s) but no NVIDIA driver is installed"',
            "else",
            "  mapfile -t rows < <(nvidia-smi --query-gpu=name,memory.total,driver_version "
            "--format=csv,noheader,nounits 2>&1)",
            '  if [ "${#rows[@]}" -ne "${#expected[@]}" ]; then',
            f'    {gfail} "nvidia-smi reports ${{#rows[@]}} GPU(s), the config declares ${{#expected[@]}}"',
            "  fi",
            '  for i in "${!expected[@]}"; do',
            '    [ "$i" -lt "${#rows[@]}" ] || break',
            '    want="${expected[$i]}"; wmodel="${want%=*}"; wmib="${want##*=}"',
            "    IFS=',' read -r name mib driver <<<\"${rows[$i]}\"",
            '    name="${name# }"; mib="${mib// /}"; driver="${driver// /}"',
            '    if ! [ "$mib" -eq "$mib" ] 2>/dev/null; then',
            f'      {gfail} "GPU $i: nvidia-smi failed: ${{rows[$i]}}"',
            "      continue",
            "    fi",
            '    if [ "$mib" -lt $(( wmib * 9 / 10 )) ]; then',
            f'      {gfail} "GPU $i ($name) has $mib MiB of VRAM; the config declares $wmodel with $wmib MiB"',
            "    fi",
        ]
        if spec.min_driver:
            L += [
                f"    min_driver={q(spec.min_driver)}; driver_reason={q(spec.driver_reason)}",
                '    if ! version_ge "$driver" "$min_driver"; then',
                f'      {gfail} "GPU $i ($name): driver $driver is older than $min_driver, which $driver_reason"',
                "    fi",
            ]
        L += ["  done"]
        if spec.gpu_image:
            L += [
                '  if [ "$docker_ok" = 1 ]; then',
                f"    if ! out=$(docker run --rm --gpus all --entrypoint nvidia-smi {q(spec.gpu_image)} -L 2>&1); then",
                f'      {gfail} "Docker cannot hand the GPU to a container (is nvidia-container-toolkit installed '
                'and the daemon restarted?): ${out##*$\'\\n\'}"',
                "    fi",
                "  fi",
            ]
        L += ["fi"]
    if spec.ports:
        L += [
            "",
            "# Host ports: free, or published by this stack's own containers",
            f"ports=({' '.join(str(p) for p in spec.ports)})",
            "held=\"\"",
            'if [ "$docker_ok" = 1 ]; then',
            "  held=$(docker ps --format '{{.Names}}|{{.Label \"org.octollm.managed-by\"}}|{{.Ports}}')",
            "fi",
            "listening=\"\"",
            "if command -v ss >/dev/null 2>&1; then listening=$(ss -Hltn 2>/dev/null | awk '{print $4}'); fi",
            'for port in "${ports[@]}"; do',
            "  owner=\"\"",
            "  while IFS='|' read -r cname clabel cports; do",
            '    case ",$cports" in *":$port->"*) owner="$cname|$clabel" ;; esac',
            '  done <<<"$held"',
            '  if [ -n "$owner" ]; then',
            '    if [ "${owner#*|}" != "$stack_label" ]; then',
            '      fail "port $port is already published by container ${owner%%|*}, which this stack does not manage"',
            "    fi",
            '  elif printf \'%s\\n\' "$listening" | grep -Eq "[:.]$port\\$"; then',
            '    fail "port $port is already in use by a process on the host"',
            "  fi",
            "done",
        ]
    if spec.ssh_parallel:
        L += _sshd_limits(spec.ssh_parallel)
    L += [
        "",
        'for w in "${warnings[@]}"; do echo "warning: $host: $w"; done',
        'if [ "${#failures[@]}" -gt 0 ]; then',
        '  {',
        '    echo "preflight failed on host $host (${#failures[@]} problem(s)):"',
        '    for f in "${failures[@]}"; do echo "  - $f"; done',
        "  } >&2",
        "  exit 1",
        "fi",
        'echo "preflight ok on host $host"',
    ]
    return "\n".join(L) + "\n"


def postgres_set_password(container: str, user: str, database: str, wait_seconds: int = 120) -> str:
    """Apply the configured password to an existing database (POSTGRES_PASSWORD only acts on first init).

    The password arrives on stdin, travels in the environment (docker exec -e NAME passes the value
    through the API, not argv) and psql reads it with \\getenv: no process's command line holds it.
    """
    return "\n".join([
        HEADER,
        "IFS= read -r OCTOLLM_PG_PASSWORD",
        "export OCTOLLM_PG_PASSWORD",
        f"container={q(container)}",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        f'until docker exec "$container" pg_isready -U {q(user)} -d {q(database)} >/dev/null 2>&1; do',
        '  if [ "$(date +%s)" -ge "$deadline" ]; then echo "postgres in $container is not ready" >&2; exit 1; fi',
        "  sleep 2",
        "done",
        "printf '%s\\n' '\\getenv pw OCTOLLM_PG_PASSWORD' \"ALTER USER :\\\"user\\\" WITH PASSWORD :'pw';\" |",
        f'  docker exec -i -e OCTOLLM_PG_PASSWORD "$container" psql -v ON_ERROR_STOP=1 -q -U {q(user)} -d {q(database)} '
        f'-v user={q(user)} >/dev/null',
        'echo "password applied"',
    ]) + "\n"


def grafana_set_admin_password(container: str, wait_seconds: int = 180) -> str:
    """Apply the configured admin password (GF_SECURITY_ADMIN_PASSWORD only acts on first start)."""
    return "\n".join([
        HEADER,
        "IFS= read -r pw",
        f"container={q(container)}",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        "until printf '%s\\n' \"$pw\" | docker exec -i \"$container\" grafana cli --homepath /usr/share/grafana "
        "admin reset-admin-password --password-from-stdin >/dev/null 2>&1; do",
        '  if [ "$(date +%s)" -ge "$deadline" ]; then echo "grafana in $container did not accept the password" >&2; exit 1; fi',
        "  sleep 3",
        "done",
        'echo "password applied"',
    ]) + "\n"
