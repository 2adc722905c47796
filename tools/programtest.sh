#!/usr/bin/env bash
# The engine lane: the real Pulumi engine (build/engine/bin, or OCTOLLM_ENGINE_BIN) over the real
# program on the dev and realtest stacks, from a scratch copy (tests/lane_engine.py). Needs
# dockerd, openssh-server, busybox-static, bash-static and docker-registry; with
# OCTOLLM_REQUIRE_REAL_HOST=1 anything missing fails instead of skipping.
# Usage: tools/programtest.sh [pytest args...]   e.g. tools/programtest.sh -k realtest
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
rc=0
.venv/bin/python -m pytest -p no:cacheprovider -rfEs tests/lane_engine.py "$@" || rc=$?
echo "engine lane: $(( SECONDS - start ))s wall, exit $rc"
exit "$rc"
