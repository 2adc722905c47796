#!/bin/sh
#@params
#@ Sample values (bash syntax, as in every file here; the renderer drops the block). The rendered script
#@ is POSIX sh: the Redis and curl images have no bash.
declare -A P=(
  [wait_seconds]=600  # int
  [postgres]=1  # which one step this is (exactly one of them)
  [redis]=''
  [qdrant]=''
)
#@end
#@ One copy step of the Kubernetes backup pod: an init container in its service's own image (pg_dump in
#@ the postgres image, redis-cli in the redis image, curl for Qdrant), run after the pod's first
#@ container (backup.sh, k8s_begin) made <target>/.<id>.partial and before its last (k8s_finish)
#@ writes the manifest. It reaches its service over the cluster network with the connection in its
#@ environment (the pod spec: host, port, user, database; the password from the service's Secret via
#@ secretKeyRef, so it is in no argv), writes into <target>/.<id>.partial/<service>/ and leaves one line
#@ saying what it did in $OCTOLLM_BACKUP_RUN/method.<service> for the manifest.
set -eu
umask 077
target="${OCTOLLM_BACKUP_DIR:?the pod sets it to where the backup claim is mounted}"
scratch="${OCTOLLM_BACKUP_RUN:?the pod sets it to its shared emptyDir}"
wait_s="${P[wait_seconds]}"
die() { printf 'backup: %s\n' "$*" >&2; exit 1; }
id="$(cat -- "$scratch/id" 2>/dev/null || true)"
case "$id" in
  [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z) ;;
  *) die "no backup id in $scratch/id: the pod's first container did not run" ;;
esac
work="$target/.$id.partial"
[ -d "$work" ] || die "$work is missing: the pod's first container did not make it"
until_t=$(( $(date +%s) + wait_s ))
late() { [ "$(date +%s)" -ge "$until_t" ]; }

#@if postgres
# --- PostgreSQL: pg_dump --format=custom over the network, one snapshot of the database ------------------
# PGHOST, PGPORT, PGUSER, PGDATABASE and PGPASSWORD are the pod's: libpq reads them itself.
db="${PGDATABASE:?}"
case "$db" in *[!A-Za-z0-9_.-]* | .*) die "postgres: the database name $db is not used as a file name" ;; esac
out="$work/postgres"
mkdir -- "$out"
until pg_isready -q; do
  late && die "postgres: $PGHOST:${PGPORT:-5432} did not accept connections within ${P[wait_seconds]}s"
  sleep 2
done
pg_dump --format=custom --no-password --file="$out/$db.dump"
# The archive must read back: pg_restore lists its table of contents.
pg_restore --list "$out/$db.dump" > "$scratch/pg.toc" || die "postgres: the dump does not read back"
entries="$(grep -vc '^;' "$scratch/pg.toc" || true)"
rm -f -- "$scratch/pg.toc"
printf '%s\n' "pg_dump --format=custom of database $db from $PGHOST, one snapshot (pg_restore --list: $entries entries)" \
  > "$scratch/method.postgres"
#@end
#@if redis
# --- Redis: redis-cli --rdb, the RDB a replica would get (the server forks: one point in time) ----------
# REDIS_HOST and REDIS_PORT are the pod's; redis-cli reads the password from REDISCLI_AUTH itself.
rcli() { redis-cli -h "${REDIS_HOST:?}" -p "${REDIS_PORT:-6379}" "$@"; }
out="$work/redis"
mkdir -- "$out"
until pong="$(rcli PING 2>&1 | tr -d '\r')"; [ "$pong" = PONG ]; do
  # A wrong password is not a server still starting: fail now, not after the wait.
  case "$pong" in *WRONGPASS* | *NOAUTH* | *"AUTH failed"*) die "redis: $REDIS_HOST refused the password (REDISCLI_AUTH)" ;; esac
  late && die "redis: $REDIS_HOST does not answer PING within ${P[wait_seconds]}s"
  sleep 1
done
rcli --rdb "$out/dump.rdb" > "$scratch/redis.log" 2>&1 || { cat -- "$scratch/redis.log" >&2; die "redis: redis-cli --rdb failed"; }
[ -s "$out/dump.rdb" ] || die "redis: redis-cli --rdb wrote nothing"
keys="$(rcli DBSIZE | tr -d '\r')"
rm -f -- "$scratch/redis.log"
printf '%s\n' "redis-cli --rdb from $REDIS_HOST (an RDB snapshot over the replication protocol) as dump.rdb; $keys keys in db 0" \
  > "$scratch/method.redis"
#@end
#@if qdrant
# --- Qdrant: a snapshot of every collection through its HTTP API, downloaded, then deleted there ------
# QDRANT_URL and QDRANT_API_KEY are the pod's. The key goes into a private file that curl reads
# (-H @file): printf is the shell's own, so no process's argv holds it.
url="${QDRANT_URL:?}"
headers="$scratch/qdrant.headers"
trap 'rm -f -- "$headers"' EXIT
printf 'api-key: %s\n' "${QDRANT_API_KEY:?}" > "$headers"
qapi() { curl -fsS --retry 2 --max-time 3600 -H @"$headers" "$@"; }
# The "name" values of one of Qdrant's JSON answers (the curl image has no jq). Names are checked below.
json_names() { grep -o '"name" *: *"[^"\\]*"' | sed 's/^"name" *: *"//; s/"$//'; }
out="$work/qdrant"
mkdir -- "$out"
until qapi "$url/collections" > "$out/collections.json" 2>/dev/null; do
  late && die "qdrant: GET $url/collections failed for ${P[wait_seconds]}s"
  sleep 2
done
qapi "$url/aliases" > "$out/aliases.json" || die "qdrant: GET /aliases failed"
json_names < "$out/collections.json" > "$scratch/qdrant.names"
count=0
while IFS= read -r n; do
  case "$n" in "" | *[!A-Za-z0-9_.-]*) die "qdrant: collection name $n holds characters this backup does not put in a file name" ;; esac
  qapi -X POST "$url/collections/$n/snapshots?wait=true" > "$scratch/snapshot.json" || die "qdrant: POST /collections/$n/snapshots failed"
  snap="$(json_names < "$scratch/snapshot.json" | head -n 1)"
  case "$snap" in "" | *[!A-Za-z0-9_.:-]*) die "qdrant: unexpected snapshot name $snap for $n" ;; esac
  qapi -o "$out/$n.snapshot" "$url/collections/$n/snapshots/$snap" || die "qdrant: downloading $snap failed"
  # Snapshots live in the Qdrant pod's /qdrant/snapshots, outside its data claim: do not let them pile up.
  qapi -X DELETE "$url/collections/$n/snapshots/$snap?wait=true" > /dev/null || echo "backup: qdrant kept snapshot $snap of $n" >&2
  count=$((count + 1))
done < "$scratch/qdrant.names"
rm -f -- "$scratch/qdrant.names" "$scratch/snapshot.json"
printf '%s\n' "POST /collections/<name>/snapshots and download, $count collection(s); aliases.json as listed by GET /aliases" \
  > "$scratch/method.qdrant"
#@end
echo "backup step done: $work"
