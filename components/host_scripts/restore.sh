#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
#@ Either list is set (list the backups), or restore and exactly one of postgres, redis, qdrant and
#@ grafana (restore that service from backup_id); redis restores the Redis named by redis_service (the
#@ data services' redis, or the workers' worker-redis). As in backup.sh, no password is a parameter.
declare -A P=(
  [stack]=unraid
  [target]=/mnt/user/backups/octollm
  [backup_id]=20250101T033000Z  # a backup directory under target, or 'latest'
  [list]=''  # list the backups (empty: no)
  [restore]=1  # restore one service: the one of postgres, redis, qdrant and grafana that is set
  [postgres]=1  # restore this service (empty: no)
  [redis]=''
  [redis_service]=redis  # redis or worker-redis: its directory in the backup
  [qdrant]=''
  [grafana]=''
  [pg_container]=octollm-postgres
  [pg_user]=octollm
  [pg_database]=octollm
  [redis_container]=octollm-redis
  [redis_data]=/mnt/user/appdata/octollm/redis
  [qdrant_container]=octollm-qdrant
  [qdrant_url]=http://127.0.0.1:3012
  [grafana_container]=octollm-grafana
  [grafana_data]=/mnt/user/appdata/octollm/grafana
  [wait_seconds]=300  # int
)
#@end
#@ Restores one service from one backup made by backup.sh, after checking that backup's sha256 sums.
#@ Whatever the restore replaces on disk is moved to <data>/before-restore-<time>/, never deleted.
set -euo pipefail
#@ One block, read to its end before it runs, its stdin /dev/null: sent as `bash -s` (make backup,
#@ the restore tool), nothing in it can take the rest of the script as its input.
{
umask 077
export LC_ALL=C

stack="${P[stack]}"
target="${P[target]}"

# Backups of this stack made by backup.sh, oldest first.
ours() {
  local d b
  for d in "$target"/*; do
    b="${d##*/}"
    [[ "$b" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || continue
    if [ ! -d "$d" ] || [ -L "$d" ] || [ ! -f "$d/manifest.json" ]; then continue; fi
    grep -qxF "stack=$stack" "$d/.octollm-backup" 2>/dev/null || continue
    echo "$b"
  done
}

#@if list
printf '%-17s  %-30s  %8s  %s\n' ID SERVICES SIZE REASON
while read -r b; do
  [ -n "$b" ] || continue
  printf '%-17s  %-30s  %8s  %s\n' "$b" "$(sed -n 's/^services=//p' "$target/$b/.octollm-backup")" \
    "$(du -sh -- "$target/$b" | cut -f1)" "$(sed -n 's/^reason=//p' "$target/$b/.octollm-backup")"
done < <(ours)
#@end

#@if restore
wait_s="${P[wait_seconds]}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
die() { printf 'restore: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }
deadline() { echo $(( $(date +%s) + wait_s )); }
late() { [ "$(date +%s)" -ge "$1" ]; }

id="${P[backup_id]}"
if [ "$id" = latest ]; then
  id="$(ours | tail -n 1)"
  [ -n "$id" ] || die "there is no backup of stack $stack in $target"
fi
[[ "$id" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "$id is not a backup id (YYYYmmddTHHMMSSZ, or latest)"
dir="$target/$id"
# grep reads the whole list (no -q): quitting at the match would break the pipe of a longer one (pipefail).
ours | grep -xF "$id" >/dev/null || die "$dir is not a backup of stack $stack made by the backup job"

# The backup's files, checked against the sums the backup wrote, before anything is touched.
check() {
  local svc="$1" have
  have="$(sed -n 's/^services=//p' "$dir/.octollm-backup")"
  case " $have " in
    *" $svc "*) ;;
    *) die "backup $id holds no $svc (it holds: $have)" ;;
  esac
  (cd "$dir" && grep -F "  $svc/" SHA256SUMS | sha256sum -c --quiet --strict -) ||
    die "backup $id: $svc's files do not match their sha256 in SHA256SUMS; not restoring from a damaged copy"
  say "checked $(grep -cF "  $svc/" "$dir/SHA256SUMS") file(s) of $svc in $id against SHA256SUMS"
}

# Moves what a restore replaces into <data>/before-restore-<stamp>/.
aside() {
  local data="$1" f
  shift
  mkdir -p -- "$data/before-restore-$stamp"
  for f in "$@"; do
    if [ -e "$data/$f" ]; then mv -- "$data/$f" "$data/before-restore-$stamp/$f"; fi
  done
  say "moved the current files aside to $data/before-restore-$stamp"
}

#@if postgres
pg_c="${P[pg_container]}"
pg_user="${P[pg_user]}"
pg_db="${P[pg_database]}"
# The database name is also the dump's file name: a '/' or a leading '.' would put it elsewhere.
[[ "$pg_db" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "postgres: the database name $pg_db is not used as a file name"
# As in backup.sh: clients run with the container's own POSTGRES_PASSWORD as PGPASSWORD, expanded there.
# shellcheck disable=SC2016
pg_env='PGPASSWORD="${POSTGRES_PASSWORD:-}" exec "$@"'
check postgres
dump="$dir/postgres/$pg_db.dump"
[ -f "$dump" ] || die "backup $id has no dump of database $pg_db"
# pg_restore needs the server running: instead of stopping the container, the other sessions on the
# database are ended, and the whole restore is one transaction (all of it, or nothing).
until_t="$(deadline)"
until docker exec "$pg_c" pg_isready -q -U "$pg_user" -d "$pg_db"; do
  late "$until_t" && die "postgres: $pg_c does not accept connections"
  sleep 2
done
ended="$(docker exec "$pg_c" sh -c "$pg_env" octollm-restore psql -X -w -v ON_ERROR_STOP=1 -qAt -U "$pg_user" -d "$pg_db" -c \
  'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')"
say "postgres: ended $ended other session(s) on $pg_db"
docker exec -i "$pg_c" sh -c "$pg_env" octollm-restore pg_restore --clean --if-exists --single-transaction \
  --exit-on-error --no-password -U "$pg_user" -d "$pg_db" < "$dump"
tables="$(docker exec "$pg_c" sh -c "$pg_env" octollm-restore psql -X -w -qAt -U "$pg_user" -d "$pg_db" -c \
  "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")"
say "postgres: pg_restore --clean --if-exists --single-transaction of $id into $pg_db: done ($tables tables)"
#@end

#@if redis
svc="${P[redis_service]}"
redis_c="${P[redis_container]}"
redis_data="${P[redis_data]}"
check "$svc"
[ -f "$dir/$svc/dump.rdb" ] || die "backup $id has no $svc/dump.rdb"
say "$svc: stopping $redis_c"
docker stop "$redis_c" >/dev/null
owner="$(stat -c %u:%g -- "$redis_data")"
aside "$redis_data" dump.rdb appendonlydir
# Redis 7 with appendonly yes loads its AOF and ignores dump.rdb, so the backup becomes the AOF's base
# as well (an RDB base and an empty increment, as Redis lays them out itself).
cp -- "$dir/$svc/dump.rdb" "$redis_data/dump.rdb"
mkdir -- "$redis_data/appendonlydir"
cp -- "$dir/$svc/dump.rdb" "$redis_data/appendonlydir/appendonly.aof.1.base.rdb"
: > "$redis_data/appendonlydir/appendonly.aof.1.incr.aof"
printf 'file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n' \
  > "$redis_data/appendonlydir/appendonly.aof.manifest"
chmod 0755 "$redis_data/appendonlydir"
chmod 0644 "$redis_data/dump.rdb" "$redis_data"/appendonlydir/*
chown -R "$owner" -- "$redis_data/dump.rdb" "$redis_data/appendonlydir"
say "$svc: starting $redis_c"
docker start "$redis_c" >/dev/null
until_t="$(deadline)"
until [ "$(docker exec "$redis_c" redis-cli PING 2>/dev/null | tr -d '\r')" = PONG ]; do
  late "$until_t" && die "$svc: $redis_c did not come back within ${wait_s}s"
  sleep 1
done
say "$svc: restored dump.rdb of $id (as dump.rdb and as the AOF base): $(docker exec "$redis_c" redis-cli DBSIZE | tr -d '\r') keys in db 0"
#@end

#@if grafana
grafana_c="${P[grafana_container]}"
grafana_data="${P[grafana_data]}"
check grafana
[ -f "$dir/grafana/grafana.db" ] || die "backup $id has no grafana/grafana.db"
say "grafana: stopping $grafana_c"
docker stop "$grafana_c" >/dev/null
owner="$(stat -c %u:%g -- "$grafana_data")"
aside "$grafana_data" grafana.db grafana.db-journal grafana.db-wal grafana.db-shm
for f in grafana.db grafana.db-journal grafana.db-wal grafana.db-shm; do
  if [ -f "$dir/grafana/$f" ]; then
    cp -- "$dir/grafana/$f" "$grafana_data/$f"
    chmod 0640 "$grafana_data/$f"
    chown "$owner" -- "$grafana_data/$f"
  fi
done
say "grafana: starting $grafana_c"
docker start "$grafana_c" >/dev/null
say "grafana: restored grafana.db of $id"
#@end

#@if qdrant
qdrant_c="${P[qdrant_container]}"
qdrant_url="${P[qdrant_url]}"
command -v curl >/dev/null 2>&1 || die "curl is not installed on this host (for Qdrant's HTTP API)"
check qdrant
tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT
# shellcheck disable=SC2016
docker exec "$qdrant_c" sh -c 'printf "api-key: %s\n" "${QDRANT__SERVICE__API_KEY:-}"' > "$tmp/qdrant.headers"
# Qdrant recovers a collection from an uploaded snapshot while it runs, so it is not stopped.
restored=0
for f in "$dir"/qdrant/*.snapshot; do
  [ -f "$f" ] || continue
  n="$(basename -- "$f" .snapshot)"
  [[ "$n" =~ ^[A-Za-z0-9_.-]+$ ]] || die "unexpected snapshot file $f"
  curl -fsS --max-time 3600 -H @"$tmp/qdrant.headers" -X POST -F "snapshot=@$f" \
    "$qdrant_url/collections/$n/snapshots/upload?priority=snapshot&wait=true" > "$tmp/answer.json" ||
    die "qdrant: recovering collection $n from its snapshot failed"
  say "qdrant: collection $n recovered from $id (POST /collections/$n/snapshots/upload?priority=snapshot)"
  restored=$((restored + 1))
done
say "qdrant: $restored collection(s) restored; collections created since the backup are left as they are"
if [ -s "$dir/qdrant/aliases.json" ]; then
  say "qdrant: aliases at the time of the backup (not recreated): $(tr -d '\n' < "$dir/qdrant/aliases.json")"
fi
#@end
say "restore of $id finished"
#@end
} < /dev/null
