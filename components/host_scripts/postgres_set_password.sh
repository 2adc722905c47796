#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
#@ The password itself is never a parameter: it arrives on stdin.
declare -A P=(
  [container]=octollm-postgres
  [user]=octollm
  [database]=octollm
  [wait_seconds]=120  # int
)
#@end
set -euo pipefail

IFS= read -r OCTOLLM_PG_PASSWORD
export OCTOLLM_PG_PASSWORD
container="${P[container]}"
deadline=$(( $(date +%s) + "${P[wait_seconds]}" ))
until docker exec "$container" pg_isready -U "${P[user]}" -d "${P[database]}" >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "postgres in $container is not ready" >&2; exit 1; fi
  sleep 2
done
# psql puts the password into the statement text it sends, so every setting that could log that text
# is turned off for this session first: statement logging (ALTER is ddl), duration and sampled
# logging, and the statement of an error. Setting them takes a superuser, which POSTGRES_USER is; without
# it the step stops before the password is sent (ON_ERROR_STOP).
printf '%s\n' "SET log_statement = 'none';" "SET log_min_duration_statement = -1;" \
  "SET log_min_duration_sample = -1;" "SET log_transaction_sample_rate = 0;" \
  "SET log_min_error_statement = 'panic';" \
  '\getenv pw OCTOLLM_PG_PASSWORD' "ALTER USER :\"user\" WITH PASSWORD :'pw';" |
  docker exec -i -e OCTOLLM_PG_PASSWORD "$container" psql -v ON_ERROR_STOP=1 -q -U "${P[user]}" -d "${P[database]}" -v user="${P[user]}" >/dev/null
echo "password applied"
