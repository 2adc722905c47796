#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
declare -A P=(
  [container]=octollm-ollama
  [models]=llama3.1:8b  # the list of models
  [wait_seconds]=300  # int
)
#@end
set -euo pipefail

container="${P[container]}"
deadline=$(( $(date +%s) + "${P[wait_seconds]}" ))
until docker exec "$container" ollama list >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "ollama in $container did not answer within ${P[wait_seconds]}s" >&2
    exit 1
  fi
  sleep 2
done
models=("${P[models]}")
for model in "${models[@]}"; do
  if docker exec "$container" ollama show "$model" >/dev/null 2>&1; then
    echo "present: $model"
  else
    docker exec "$container" ollama pull "$model" >/dev/null
    echo "pulled: $model"
  fi
done
