#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
#@ No password is a parameter: each service's credentials stay in its own container's environment and
#@ are read there (pg_dump, redis-cli) or into a private file on the host (Qdrant's API key, for curl).
declare -A P=(
  [stack]=unraid
  [target]=/mnt/user/backups/octollm  # where backups go: one directory per backup, named by its UTC time
  [zfs_dataset]=''  # the target store's dataset; '': found at run time when the target is on ZFS
  [keep_daily]=7  # int; 0: none
  [keep_weekly]=4  # int; 0: none
  [keep_days]=0  # int; 0: keep by daily/weekly instead
  [services]='postgres redis worker-redis qdrant grafana'  # the list of services each backup copies
  [postgres]=1  # whether it copies each of them (empty: no)
  [redis]=1
  [worker_redis]=1  # worker-redis: the workers' Redis (seed 002's task queue)
  [any_redis]=1  # redis or worker_redis: one Redis backup, run for each
  [qdrant]=1
  [grafana]=1
  [pg_container]=octollm-postgres
  [pg_user]=octollm
  [pg_database]=octollm
  [redis_container]=octollm-redis
  [redis_data]=/mnt/user/appdata/octollm/redis  # the host directory mounted at /data
  [worker_redis_container]=octollm-worker-redis
  [worker_redis_data]=/mnt/user/appdata/octollm/worker-redis  # the host directory mounted at /data
  [qdrant_container]=octollm-qdrant
  [qdrant_url]=http://127.0.0.1:3012  # its HTTP API, as this host reaches it
  [grafana_container]=octollm-grafana
  [grafana_data]=/mnt/user/appdata/octollm/grafana  # the host directory mounted at /var/lib/grafana
  [wait_seconds]=600  # int
  [docker]=1  # the whole job on a Docker host: copies, manifest, rename, retention
  [k8s_begin]=''  # Kubernetes, the first container of the backup pod: the id and the .<id>.partial directory
  [k8s_finish]=''  # Kubernetes, the last one: manifest, rename, retention (the copies are the steps' between)
  [new_backup]=1  # docker or k8s_begin: picks the id and makes the directory
  [finish]=1  # docker or k8s_finish: manifest, SHA256SUMS, rename, retention
  [k8s]=''  # k8s_begin or k8s_finish
)
#@end
#@ A backup of one stack's data services, run on their host by its timer (or cron entry), by
#@ `make backup` and before a plan that replaces one of them. Every copy is consistent on its own:
#@ pg_dump's snapshot, a finished BGSAVE, Qdrant's collection snapshots, SQLite's backup API or a
#@ copy while the container is paused. The files land in <target>/.<id>.partial, get a manifest with
#@ their sha256 and size, and become <target>/<id> only when all of them are there.
#@ OCTOLLM_BACKUP_ONLY (names, space-separated) copies a subset; OCTOLLM_BACKUP_REASON is recorded.
#@ On Kubernetes the same file is rendered twice, for the first and the last container of the backup
#@ pod (k8s_begin, k8s_finish); the copies are made by the containers in between (backup_step.sh), each
#@ in its service's own image, and one run at a time is the CronJob's concurrencyPolicy: Forbid. Those
#@ containers find the target (the backup claim's mount) in OCTOLLM_BACKUP_DIR and share the id
#@ through OCTOLLM_BACKUP_RUN (an emptyDir of the pod); both are set in the pod spec.
set -euo pipefail
#@ One block, read to its end before it runs, its stdin /dev/null: sent as `bash -s` (make backup,
#@ the restore tool), nothing in it can take the rest of the script as its input.
{
umask 077
export LC_ALL=C

stack="${P[stack]}"
#@if docker
target="${P[target]}"
#@end
#@if k8s
target="${OCTOLLM_BACKUP_DIR:?the pod sets it to where the backup claim is mounted}"
scratch="${OCTOLLM_BACKUP_RUN:?the pod sets it to its shared emptyDir}"
#@end
configured=("${P[services]}")
#@if docker
wait_s="${P[wait_seconds]}"
#@end
#@if finish
keep_daily="${P[keep_daily]}"
keep_weekly="${P[keep_weekly]}"
keep_days="${P[keep_days]}"
#@end

die() { printf 'backup: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed on this host ($2)"; }
#@if docker
deadline() { echo $(( $(date +%s) + wait_s )); }
late() { [ "$(date +%s)" -ge "$1" ]; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null || true)" = true ]; }
#@end

#@if docker
need docker "the data services run in Docker"
#@end
need sha256sum "for the manifest's checksums"
#@if docker
need flock "so that two backups never run at once"
#@end

run=()
if [ -n "${OCTOLLM_BACKUP_ONLY:-}" ]; then
  read -r -a wanted <<< "$OCTOLLM_BACKUP_ONLY"
  for s in "${wanted[@]}"; do
    case " ${configured[*]} " in
      *" $s "*) run+=("$s") ;;
      *) die "$s is not one of the services this job copies (${configured[*]})" ;;
    esac
  done
else
  run=("${configured[@]}")
fi
[ "${#run[@]}" -gt 0 ] || die "nothing to copy"
reason="${OCTOLLM_BACKUP_REASON:-scheduled}"
reason_chars='^[A-Za-z0-9 ._:/@=+,()-]{1,300}$'
[[ "$reason" =~ $reason_chars ]] || die "OCTOLLM_BACKUP_REASON may hold only letters, digits, spaces and ._:/@=+,()-"

if [ ! -d "$target" ] || [ -L "$target" ]; then
  die "the backup target $target is not a directory (pulumi up creates it)"
fi
#@if docker
exec 9>>"$target/.octollm-backup.lock"
flock -w "$wait_s" 9 || die "another backup into $target is still running after ${P[wait_seconds]}s"
#@end

#@if k8s_begin
# A run that failed part way (a step's container failed, so this pod's last one never ran) left its
# .<id>.partial; only one run is ever active (concurrencyPolicy: Forbid), so any partial of this stack's
# job is dead. Only directories this job marked as its own are removed.
for d in "$target"/.*.partial; do
  b="${d##*/}"
  [[ "$b" =~ ^\.[0-9]{8}T[0-9]{6}Z\.partial$ ]] || continue
  if [ -d "$d" ] && [ ! -L "$d" ] && grep -qxF "stack=$stack" "$d/.octollm-backup-partial" 2>/dev/null; then
    rm -rf -- "$d"
    echo "removed the unfinished backup $b"
  fi
done
#@end
#@if new_backup
id="$(date -u +%Y%m%dT%H%M%SZ)"
while [ -e "$target/$id" ] || [ -e "$target/.$id.partial" ]; do
  sleep 1
  id="$(date -u +%Y%m%dT%H%M%SZ)"
done
#@end
#@if k8s_finish
id="$(cat -- "$scratch/id" 2>/dev/null || true)"
[[ "$id" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "no backup id in $scratch/id: the pod's first container did not run"
#@end
work="$target/.$id.partial"
#@if finish
tmp="$(mktemp -d)"
paused=""
finished=""
cleanup() {
  if [ -n "$paused" ]; then
    docker unpause "$paused" >/dev/null 2>&1 || echo "backup: could not unpause $paused; run: docker unpause $paused" >&2
  fi
  [ -n "$finished" ] || rm -rf -- "$work"
  rm -rf -- "$tmp"
}
trap cleanup EXIT
#@end
#@if k8s_begin
mkdir -- "$work"
printf 'stack=%s\n' "$stack" > "$work/.octollm-backup-partial"
printf '%s\n' "$id" > "$scratch/id"
echo "backup-id: $id"
echo "backup-path: $work"
#@end
#@if finish
#@if docker
mkdir -- "$work"
#@end
#@if k8s_finish
[ -d "$work" ] && [ ! -L "$work" ] || die "$work is missing: the pod's first container did not make it"
#@end
declare -A method=()

# --- PostgreSQL: pg_dump -Fc inside the container -------------------------------------------------
#@if postgres
pg_c="${P[pg_container]}"
pg_user="${P[pg_user]}"
pg_db="${P[pg_database]}"
# The database name is also the dump's file name: a '/' or a leading '.' would put it elsewhere.
[[ "$pg_db" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "postgres: the database name $pg_db is not used as a file name"
# Runs a client in the container with the container's own POSTGRES_PASSWORD as PGPASSWORD, expanded there:
# the image trusts its local socket, and this covers a pg_hba that asks for the password anyway.
# shellcheck disable=SC2016
pg_env='PGPASSWORD="${POSTGRES_PASSWORD:-}" exec "$@"'
backup_postgres() {
  running "$pg_c" || die "postgres: container $pg_c is not running"
  local out="$work/postgres" until_t
  mkdir -- "$out"
  until_t="$(deadline)"
  until docker exec "$pg_c" pg_isready -q -U "$pg_user" -d "$pg_db"; do
    late "$until_t" && die "postgres: $pg_c did not accept connections within ${wait_s}s"
    sleep 2
  done
  docker exec "$pg_c" sh -c "$pg_env" octollm-backup pg_dump --format=custom --no-password -U "$pg_user" -d "$pg_db" \
    > "$out/$pg_db.dump"
  # The archive must read back: pg_restore lists its table of contents.
  docker exec -i "$pg_c" pg_restore --list < "$out/$pg_db.dump" > "$tmp/pg.toc" || die "postgres: the dump does not read back"
  method[postgres]="pg_dump --format=custom of database $pg_db, one snapshot (pg_restore --list: $(grep -vc '^;' "$tmp/pg.toc") entries)"
}
#@end

# --- Redis: BGSAVE, wait for LASTSAVE to move, copy the RDB (and the AOF directory as found) ---------
#@ The data services' Redis (redis) and the workers' (worker-redis) are copied by this one function.
#@if redis
redis_c="${P[redis_container]}"
redis_data="${P[redis_data]}"
#@end
#@if worker_redis
worker_redis_c="${P[worker_redis_container]}"
worker_redis_data="${P[worker_redis_data]}"
#@end
#@if any_redis
# backup_redis <service> <container> <host directory mounted at /data>: into <backup>/<service>/.
backup_redis() {
  local svc="$1" c="$2" data="$3" out until_t before reply dbfile aofdir
  rcli() { docker exec "$c" redis-cli "$@"; }
  running "$c" || die "$svc: container $c is not running"
  out="$work/$svc"
  mkdir -- "$out"
  until_t="$(deadline)"
  until [ "$(rcli PING 2>/dev/null | tr -d '\r')" = PONG ]; do
    late "$until_t" && die "$svc: $c does not answer PING"
    sleep 1
  done
  # A save already running (an automatic one, or the child of an AOF rewrite) finishes first. grep reads
  # all of INFO (no -q): one that quit at the match could break the pipe while docker still writes, and
  # under pipefail the loop would then wait out its deadline.
  until rcli INFO persistence | grep '^rdb_bgsave_in_progress:0' >/dev/null; do
    late "$until_t" && die "$svc: a background save is still running after ${wait_s}s"
    sleep 1
  done
  before="$(rcli LASTSAVE | tr -d '\r')"
  [[ "$before" =~ ^[0-9]+$ ]] || die "$svc: LASTSAVE answered $before"
  # LASTSAVE counts whole seconds: a save that ended within the second of the last one would not show.
  while [ "$(date +%s)" -le "$before" ]; do sleep 0.2; done
  reply="$(rcli BGSAVE SCHEDULE | tr -d '\r')"
  case "$reply" in
    "Background saving started" | "Background saving scheduled") ;;
    *) die "$svc: BGSAVE answered: $reply" ;;
  esac
  until [ "$(rcli LASTSAVE | tr -d '\r')" != "$before" ]; do
    late "$until_t" && die "$svc: BGSAVE did not finish within ${wait_s}s (LASTSAVE still $before)"
    sleep 1
  done
  rcli INFO persistence | grep '^rdb_last_bgsave_status:ok' >/dev/null || die "$svc: the background save failed (rdb_last_bgsave_status)"
  dbfile="$(rcli CONFIG GET dbfilename | sed -n 2p | tr -d '\r')"
  aofdir="$(rcli CONFIG GET appenddirname | sed -n 2p | tr -d '\r')"
  [[ "$dbfile" =~ ^[A-Za-z0-9._-]+$ ]] || die "$svc: unexpected dbfilename $dbfile"
  # Redis writes a new RDB beside the old one and renames it into place: the copy is of one whole file.
  cp -- "$data/$dbfile" "$out/dump.rdb"
  if [[ "$aofdir" =~ ^[A-Za-z0-9._-]+$ ]] && [ -d "$data/$aofdir" ]; then
    cp -R -- "$data/$aofdir" "$out/appendonlydir"
  fi
  method[$svc]="BGSAVE (LASTSAVE $before -> $(rcli LASTSAVE | tr -d '\r')), $dbfile copied as dump.rdb; $(rcli DBSIZE | tr -d '\r') keys in db 0; appendonlydir copied as found"
}
#@end

# --- Qdrant: a snapshot of every collection through its HTTP API, downloaded, then deleted there ----
#@if qdrant
qdrant_c="${P[qdrant_container]}"
qdrant_url="${P[qdrant_url]}"
qapi() { curl -fsS --retry 2 --max-time 3600 -H @"$tmp/qdrant.headers" "$@"; }
# The "name" values of one of Qdrant's JSON answers (jq when the host has it). Names are checked by the caller.
json_names() {
  if command -v jq >/dev/null 2>&1; then
    jq -r "$1"
  else
    grep -o '"name" *: *"[^"\\]*"' | sed 's/^"name" *: *"//; s/"$//'
  fi
}
backup_qdrant() {
  need curl "for Qdrant's HTTP API"
  running "$qdrant_c" || die "qdrant: container $qdrant_c is not running"
  local out="$work/qdrant" n snap count=0 names=()
  mkdir -- "$out"
  # The API key goes from the container's environment into a private file that curl reads (-H @file).
  # shellcheck disable=SC2016
  docker exec "$qdrant_c" sh -c 'printf "api-key: %s\n" "${QDRANT__SERVICE__API_KEY:-}"' > "$tmp/qdrant.headers"
  qapi "$qdrant_url/collections" > "$out/collections.json" || die "qdrant: GET /collections failed"
  qapi "$qdrant_url/aliases" > "$out/aliases.json" || die "qdrant: GET /aliases failed"
  mapfile -t names < <(json_names '.result.collections[].name' < "$out/collections.json")
  for n in "${names[@]}"; do
    [[ "$n" =~ ^[A-Za-z0-9_.-]+$ ]] || die "qdrant: collection name $n holds characters this backup does not put in a file name"
    qapi -X POST "$qdrant_url/collections/$n/snapshots?wait=true" > "$tmp/snapshot.json" || die "qdrant: POST /collections/$n/snapshots failed"
    snap="$(json_names '.result.name' < "$tmp/snapshot.json" | head -n 1)"
    [[ "$snap" =~ ^[A-Za-z0-9_.:-]+$ ]] || die "qdrant: unexpected snapshot name $snap for $n"
    qapi -o "$out/$n.snapshot" "$qdrant_url/collections/$n/snapshots/$snap" || die "qdrant: downloading $snap failed"
    # Snapshots live in the container's /qdrant/snapshots, outside the data mount: do not let them pile up.
    qapi -X DELETE "$qdrant_url/collections/$n/snapshots/$snap?wait=true" >/dev/null || echo "backup: qdrant kept snapshot $snap of $n" >&2
    count=$((count + 1))
  done
  method[qdrant]="POST /collections/<name>/snapshots and download, $count collection(s); aliases.json as listed by GET /aliases"
}
#@end

# --- Grafana: its SQLite database, by sqlite3's online backup, or copied with the container paused --
#@if grafana
grafana_c="${P[grafana_container]}"
grafana_data="${P[grafana_data]}"
backup_grafana() {
  local out="$work/grafana" f t0
  mkdir -- "$out"
  [ -f "$grafana_data/grafana.db" ] || die "grafana: $grafana_data/grafana.db does not exist"
  if ! running "$grafana_c"; then
    cp -- "$grafana_data/grafana.db" "$out/grafana.db"
    method[grafana]="copy of grafana.db (container stopped)"
  elif docker exec "$grafana_c" sh -c 'command -v sqlite3' >/dev/null 2>&1; then
    # VACUUM INTO writes the copy in one read transaction, so it is one committed state however busy
    # Grafana is (the .backup command copies 100 pages at a time and starts over after every write in
    # between: against a busy database it never finishes). The timeout waits out a write in progress.
    rm -f -- "$grafana_data/.octollm-backup.db"
    docker exec "$grafana_c" sqlite3 -cmd '.timeout 60000' /var/lib/grafana/grafana.db \
      "VACUUM INTO '/var/lib/grafana/.octollm-backup.db'"
    mv -- "$grafana_data/.octollm-backup.db" "$out/grafana.db"
    method[grafana]="sqlite3 VACUUM INTO (an online copy) inside the running container"
  else
    # No sqlite3 in the image: freeze the container (no write can be half done) for the copy.
    t0="$(date +%s%N)"
    docker pause "$grafana_c" >/dev/null
    paused="$grafana_c"
    for f in grafana.db grafana.db-journal grafana.db-wal grafana.db-shm; do
      if [ -f "$grafana_data/$f" ]; then cp -- "$grafana_data/$f" "$out/$f"; fi
    done
    docker unpause "$grafana_c" >/dev/null
    paused=""
    method[grafana]="copy of grafana.db with the container paused for $(( ($(date +%s%N) - t0) / 1000000 )) ms (the image has no sqlite3)"
  fi
  if command -v sqlite3 >/dev/null 2>&1; then
    # Checked on a scratch copy: opening it may roll back a journal, and the backup stays as copied.
    mkdir -- "$tmp/grafana"
    cp -- "$out"/grafana.db* "$tmp/grafana/"
    [ "$(sqlite3 "$tmp/grafana/grafana.db" 'PRAGMA integrity_check;')" = ok ] || die "grafana: the copy fails PRAGMA integrity_check"
  fi
}
#@end

#@if docker
for s in "${run[@]}"; do
  case "$s" in
#@if redis
    redis) backup_redis redis "$redis_c" "$redis_data" ;;
#@end
#@if worker_redis
    worker-redis) backup_redis worker-redis "$worker_redis_c" "$worker_redis_data" ;;
#@end
    *) "backup_$s" ;;
  esac
done
#@end
#@if k8s_finish
# Each step wrote what it did into the pod's shared directory; a service without that line was not copied.
for s in "${run[@]}"; do
  [ -s "$scratch/method.$s" ] || die "$s: its step left no record in $scratch/method.$s, so it did not finish"
  [ -d "$work/$s" ] || die "$s: $work/$s is missing"
  method[$s]="$(head -n 1 -- "$scratch/method.$s")"
done
rm -f -- "$work/.octollm-backup-partial"
#@end

# --- the manifest: every file with its size and sha256 ----------------------------------------------
json_str() {
  local s="$1"
  case "$s" in *[[:cntrl:]]*) die "a control character in $s" ;; esac
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}
(cd "$work" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) | sed 's#  \./#  #' > "$tmp/sums"
files=""
while read -r sum path; do
  files+="${files:+,}"$'\n'"    {\"path\": $(json_str "$path"), \"size\": $(stat -c %s -- "$work/$path"), \"sha256\": \"$sum\"}"
done < "$tmp/sums"
methods=""
services_json=""
for s in "${run[@]}"; do
  methods+="${methods:+,}"$'\n'"    $(json_str "$s"): $(json_str "${method[$s]}")"
  services_json+="${services_json:+, }$(json_str "$s")"
done
created="${id:0:4}-${id:4:2}-${id:6:2}T${id:9:2}:${id:11:2}:${id:13:2}Z"
cat > "$work/manifest.json" <<EOF
{
  "format": "octollm-backup/1",
  "stack": $(json_str "$stack"),
  "id": "$id",
  "created": "$created",
  "host": $(json_str "$(hostname 2>/dev/null || uname -n)"),
  "reason": $(json_str "$reason"),
  "services": [$services_json],
  "methods": {$methods
  },
  "files": [$files
  ]
}
EOF
cp -- "$tmp/sums" "$work/SHA256SUMS"
printf 'stack=%s\nservices=%s\nreason=%s\n' "$stack" "${run[*]}" "$reason" > "$work/.octollm-backup"
sync -f "$work" 2>/dev/null || sync
mv -T -- "$work" "$target/$id"
finished=1

# The ZFS dataset that holds the backups: the store's, or the target's when it is on ZFS.
ds="${P[zfs_dataset]}"
if [ -z "$ds" ] && command -v zfs >/dev/null 2>&1 && [ "$(stat -f -c %T -- "$target" 2>/dev/null)" = zfs ]; then
  ds="$(zfs list -H -o name "$target" 2>/dev/null || true)"
fi

# --- retention: only backups of this stack made by this job, never the newest -------------------------
ours=()
for d in "$target"/*; do
  b="${d##*/}"
  [[ "$b" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || continue
  if [ ! -d "$d" ] || [ -L "$d" ] || [ ! -f "$d/manifest.json" ]; then continue; fi
  grep -qxF "stack=$stack" "$d/.octollm-backup" 2>/dev/null || continue
  ours+=("$b")
done
mapfile -t ours < <(printf '%s\n' "${ours[@]}" | sort -r)
declare -A keep=([$id]=1)
keep[${ours[0]}]=1
declare -A has=()
for b in "${ours[@]}"; do
  has[$b]=" $(sed -n 's/^services=//p' "$target/$b/.octollm-backup") "
done
now="$(date -u +%s)"
# Per service: every service any of these backups holds (one no longer configured as well).
declare -A held=()
for b in "${ours[@]}"; do
  read -r -a words <<< "${has[$b]}"
  for s in "${words[@]}"; do held[$s]=1; done
done
for s in "${!held[@]}"; do
  days=0 weeks=0 last_day="" last_week=""
  for b in "${ours[@]}"; do
    case "${has[$b]}" in *" $s "*) ;; *) continue ;; esac
    day="${b:0:8}"
    week="$(date -u -d "${b:0:4}-${b:4:2}-${b:6:2}" +%G-W%V)"
    if [ "$days" -lt "$keep_daily" ] && [ "$day" != "$last_day" ]; then
      keep[$b]=1; days=$((days + 1)); last_day="$day"
    fi
    if [ "$weeks" -lt "$keep_weekly" ] && [ "$week" != "$last_week" ]; then
      keep[$b]=1; weeks=$((weeks + 1)); last_week="$week"
    fi
    if [ "$keep_days" -gt 0 ]; then
      t="$(date -u -d "${b:0:4}-${b:4:2}-${b:6:2} ${b:9:2}:${b:11:2}:${b:13:2}" +%s)"
      if [ $(( now - t )) -lt $(( keep_days * 86400 )) ]; then keep[$b]=1; fi
    fi
  done
done
for b in "${ours[@]}"; do
  [ -z "${keep[$b]:-}" ] || continue
  rm -rf -- "${target:?}/$b"
  if [ -n "$ds" ] && zfs list -H -t snapshot -o name "$ds@octollm-backup-$b" >/dev/null 2>&1; then
    zfs destroy "$ds@octollm-backup-$b"
  fi
  echo "pruned $b"
done

# --- ZFS: a snapshot of what is kept now (after pruning, so it holds no backup just removed) ----------
if [ -n "$ds" ]; then
  zfs snapshot "$ds@octollm-backup-$id"
  echo "zfs snapshot $ds@octollm-backup-$id"
fi

for s in "${run[@]}"; do
  echo "$s: ${method[$s]}"
done
echo "backup-id: $id"
echo "backup-path: $target/$id"
#@end
} < /dev/null
