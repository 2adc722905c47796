#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
declare -A P=(
  [paths]=/mnt/user/appdata/octollm/postgres  # the list of directories; [path] is one of them
  [path]=/mnt/user/appdata/octollm/postgres
  [owner]=999:999  # uid:gid
  [mode]=0750
  [ready]='ready: /mnt/user/appdata/octollm/postgres'  # "ready: " and the paths
)
#@end
set -euo pipefail

#@for path in paths
#@ chown only the directory itself: a recursive chown of a populated data dir is slow and would
#@ fight the uid the service itself chose for its files. chown only when needed: a non-root operator
#@ can re-run this on directories it owns.
mkdir -p -- "${P[path]}"
[ "$(stat -c %u:%g -- "${P[path]}")" = "${P[owner]}" ] || chown "${P[owner]}" -- "${P[path]}"
chmod "${P[mode]}" -- "${P[path]}"
#@end
echo "${P[ready]}"
