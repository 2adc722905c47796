#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
declare -A P=(
  [path]=/opt/ollama-models
  [line]='/opt/ollama-models 10.0.0.0/24(rw,sync,no_subtree_check,no_root_squash)'  # checked by nfs_export()
  [owner]=1000:1000  # uid:gid
)
#@end
set -euo pipefail
exports="${OCTOLLM_EXPORTS_FILE:-/etc/exports}"
path="${P[path]}"
line="${P[line]}"
mkdir -p -- "$path"
chown "${P[owner]}" -- "$path"
touch -- "$exports"
if ! grep -qxF -- "$line" "$exports"; then
  tmp="$(mktemp)"
  awk -v p="$path" '$1 != p' "$exports" > "$tmp"
  printf '%s\n' "$line" >> "$tmp"
  cat -- "$tmp" > "$exports"
  rm -f -- "$tmp"
fi
exportfs -ra
grep -xF -- "$line" "$exports"
