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


def nfs_export(path: str, client_cidr: str, options: str, owner: str) -> str:
    """Export `path` to `client_cidr`, replacing an older line for the same path; reload exports."""
    line = f"{path} {client_cidr}({options})"
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
        f'  if ! version_ge "${{server%%[+-]*}}" {q(spec.min_docker)}; then',
        f'    fail "Docker engine $server is older than {spec.min_docker}, the oldest this program supports"',
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
            L += [f"if [ ! -d {q(a)} ]; then",
                  f'  fail "{a} does not exist (is the pool or array that holds it mounted?)"',
                  "fi"]
        for path, owner in spec.dirs:
            L += [
                f"p={q(path)}",
                'if [ -e "$p" ]; then',
                '  if [ ! -d "$p" ]; then',
                '    fail "$p exists but is not a directory"',
                f'  elif [ "$(stat -c %u:%g -- "$p")" != {q(owner)} ] && [ "$(id -u)" != 0 ]; then',
                f'    fail "$p is owned by $(stat -c %u:%g -- "$p"), not {owner}, and this user cannot change that"',
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
                f'    if ! version_ge "$driver" {q(spec.min_driver)}; then',
                f'      {gfail} "GPU $i ($name): driver $driver is older than {spec.min_driver}, which '
                f'{spec.driver_reason}"',
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

    The password arrives on stdin and reaches psql as a quoted variable, never on a command line.
    """
    return "\n".join([
        HEADER,
        "IFS= read -r pw",
        f"container={q(container)}",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        f'until docker exec "$container" pg_isready -U {q(user)} -d {q(database)} >/dev/null 2>&1; do',
        '  if [ "$(date +%s)" -ge "$deadline" ]; then echo "postgres in $container is not ready" >&2; exit 1; fi',
        "  sleep 2",
        "done",
        f"printf '%s\\n' \"ALTER USER {user} WITH PASSWORD :'pw';\" |",
        f'  docker exec -i "$container" psql -v ON_ERROR_STOP=1 -q -U {q(user)} -d {q(database)} -v "pw=$pw" >/dev/null',
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
