"""Every shell script the program sends to a host.

Scripts are generated here, and only here, so that the tests can run each one through
shellcheck and execute them against a scratch directory. Each script is idempotent: running
it twice leaves the host as running it once does. Values are quoted with shlex.quote.
"""

from __future__ import annotations

import shlex

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
        f'chmod 0644 "$tmp"',
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
