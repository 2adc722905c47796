#!/usr/bin/env bash
#@params
#@ Sample values; the renderer drops this block and writes each value, quoted, where it is used.
declare -A P=(
  [models]=llama3.1:8b  # the list of models
  [wait_seconds]=120  # int
)
#@end
set -euo pipefail

ollama serve >/tmp/ollama-serve.log 2>&1 &
server=$!
deadline=$(( $(date +%s) + "${P[wait_seconds]}" ))
until ollama list >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then cat /tmp/ollama-serve.log >&2; exit 1; fi
  sleep 1
done
models=("${P[models]}")
for model in "${models[@]}"; do
  if ollama show "$model" >/dev/null 2>&1; then echo "present: $model"; else ollama pull "$model" >/dev/null; echo "pulled: $model"; fi
done
kill "$server"
wait "$server" || true
