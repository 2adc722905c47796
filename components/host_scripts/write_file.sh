#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
declare -A P=(
  [path]=/mnt/user/appdata/octollm/config/prometheus/prometheus.yml
  [dir]=/mnt/user/appdata/octollm/config/prometheus  # the directory that holds it
  [owner]=65534:65534  # uid:gid
  [reload]=1  # whether to signal a container (empty: no)
  [reload_container]=octollm-prometheus
  [signal]=HUP
)
#@end
set -euo pipefail

mkdir -p -- "${P[dir]}"
tmp="$(mktemp "${P[path]}".XXXXXX)"
cat > "$tmp"
chmod 0644 "$tmp"
chown "${P[owner]}" "$tmp"
mv -f "$tmp" "${P[path]}"
#@if reload
if docker inspect -f '{{.State.Running}}' "${P[reload_container]}" 2>/dev/null | grep -qx true; then
  docker kill --signal "${P[signal]}" "${P[reload_container]}" >/dev/null
fi
#@end
sha256sum -- "${P[path]}"
