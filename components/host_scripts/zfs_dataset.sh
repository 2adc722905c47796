#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
declare -A P=(
  [dataset]=service-pool/ai-models
  [mountpoint]=/mnt/service-pool/ai-models
  [recordsize]=1M
  [compression]=lz4
  [owner]=1000:1000  # uid:gid
)
#@end
set -euo pipefail
ds="${P[dataset]}"
mnt="${P[mountpoint]}"
if ! zfs list -H -o name -- "$ds" >/dev/null 2>&1; then
  zfs create -p -o recordsize="${P[recordsize]}" -o compression="${P[compression]}" -o mountpoint="$mnt" "$ds"
else
#@ New properties apply to blocks written from now on; existing data is left as it is.
  zfs set recordsize="${P[recordsize]}" "$ds"
  zfs set compression="${P[compression]}" "$ds"
fi
mkdir -p -- "$mnt"
chown "${P[owner]}" -- "$mnt"
zfs get -H -o property,value recordsize,compression,mountpoint "$ds"
