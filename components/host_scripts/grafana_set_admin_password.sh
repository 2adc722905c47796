#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
#@ The password itself is never a parameter: it arrives on stdin.
declare -A P=(
  [container]=octollm-grafana
  [wait_seconds]=180  # int
)
#@end
set -euo pipefail

IFS= read -r pw
container="${P[container]}"
deadline=$(( $(date +%s) + "${P[wait_seconds]}" ))
until printf '%s\n' "$pw" | docker exec -i "$container" grafana cli --homepath /usr/share/grafana admin reset-admin-password --password-from-stdin >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "grafana in $container did not accept the password" >&2; exit 1; fi
  sleep 3
done
echo "password applied"
