#!/usr/bin/env bash
# The engine lane: the real Pulumi engine over the real program, from a scratch copy of the project:
# every tests/lane_*.py (tests/lane_engine.py: dev and realtest through up, a no-change preview, refresh,
# a one-knob change, up --plan and destroy). Needs dockerd, openssh-server, busybox-static, bash-static
# and docker-registry; with OCTOLLM_REQUIRE_REAL_HOST=1 (CI) anything missing fails instead of skipping,
# and so does any step, a second preview that shows a change included.
#
# The engine: OCTOLLM_ENGINE_BIN when set (used as it is); otherwise tools/engine/build.sh builds or
# reuses it in $ENGINE_OUT/bin (default build/engine/bin; up to date in under a second, a cold build
# takes about half an hour).
# Usage: tools/programtest.sh [pytest args...]   e.g. tools/programtest.sh -k realtest
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
if [[ -z ${OCTOLLM_ENGINE_BIN:-} ]]; then
	out=${ENGINE_OUT:-$PWD/build/engine}
	if command -v go >/dev/null 2>&1; then
		tools/engine/build.sh
	else
		echo "programtest: go is not installed, so the engine in $out/bin is used as it is (if there is one)" >&2
	fi
	export OCTOLLM_ENGINE_BIN=$out/bin
fi
lanes=(tests/lane_*.py)
rc=0
.venv/bin/python -m pytest -p no:cacheprovider -rfEs "${lanes[@]}" "$@" || rc=$?
echo "engine lane: $((SECONDS - start))s wall, exit $rc"
exit "$rc"
