#!/usr/bin/env bash
# Builds the Pulumi engine (CLI), a Python language host and the resource providers that
# octollm-infra uses from Go modules, into build/engine/bin, with no download of Pulumi's
# released binaries. See tools/engine/README.md for what is built from where, and which binaries
# are our own implementations (the language host, the command provider).
#
# Usage: tools/engine/build.sh [--register] [TARGET...]
#   TARGET: cli langhost policy random docker kubernetes command (default: all of them)
#   --register  also install the built providers into $PULUMI_HOME's plugin cache
#               (`pulumi plugin install --file`), so that `pulumi plugin ls` lists them.
# Environment:
#   ENGINE_OUT            output root (default <repo>/build/engine; binaries in $ENGINE_OUT/bin)
#   PULUMI_CLI_VERSION    force the pkg/v3 version of the CLI (default: the pulumi== pin, or the
#                         nearest newer version the module proxy serves)
#   GOCACHE, GOMODCACHE, GOTOOLCHAIN, GOPROXY are honoured as usual.
# A binary whose stamp (inputs: pinned versions, module versions, our sources, Go version)
# matches is not rebuilt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/engine
OUT=${ENGINE_OUT:-$ROOT/build/engine}
BIN=$OUT/bin
WORK=$OUT/work
STAMPS=$OUT/stamps

# Upstream modules that requirements.txt cannot name (it pins the Python SDKs only).
BRIDGE_MODULE=github.com/pulumi/pulumi-terraform-bridge/v3
BRIDGE_VERSION=v3.120.0
# Terraform random provider: only this commit (release 3.9.0 plus later commits) is served.
TF_RANDOM_MODULE=github.com/hashicorp/terraform-provider-random
TF_RANDOM_VERSION=v1.3.2-0.20260824155315-e1092b0cfc07
# Terraform docker provider (kreuzwerker): only this commit (v4.6.0 plus later commits) is served.
TF_DOCKER_MODULE=github.com/kreuzwerker/terraform-provider-docker
TF_DOCKER_VERSION=v0.0.0-20260916201441-96d331c98ff4
# The bridge's fork of terraform-plugin-sdk/v2 predates the GenerateResourceConfig RPC that
# terraform-plugin-go v0.31 (required by both Terraform providers) adds, so hold these back.
TF_PLUGIN_GO_VERSION=v0.30.0
TF_PLUGIN_FRAMEWORK_VERSION=v1.18.0
# pulumi-kubernetes: the provider module is served at this commit only.
K8S_PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4
K8S_PROVIDER_VERSION=v4.0.0-20260115033456-f47bc2d6f199
K8S_SDK_VERSION=v4.24.0
# Newest served sdk/v3 that still ships the pulumi-analyzer-policy-python shim script.
POLICY_SHIM_SDK_VERSION=v3.219.0
# pulumi-resource-command is our own implementation (providers/command) of this pulumi-command
# release's interface; a different pin needs its changes reviewed and implemented first.
COMMAND_IMPLEMENTS=1.2.1

CLI_VERSION=
SDK_MODULE=github.com/pulumi/pulumi/sdk/v3
PKG_MODULE=github.com/pulumi/pulumi/pkg/v3
GO_BUILD=(nice -n 10 go build -trimpath -buildvcs=false)
GO_TIDY=(nice -n 10 go mod tidy)

log() { printf '[engine] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pin NAME FILE: the version that FILE pins with NAME==X.
pin() {
	local v
	v=$(sed -n -E "s/^$1==([^ ;#]+).*/\1/p" "$2" | head -n 1)
	[[ -n $v ]] || die "$2 does not pin $1"
	printf '%s\n' "$v"
}

PULUMI_PIN=$(pin pulumi "$ROOT/requirements.txt")
POLICY_PIN=$(pin pulumi-policy "$ROOT/policy/requirements.txt")
RANDOM_PIN=$(pin pulumi-random "$ROOT/requirements.txt")
DOCKER_PIN=$(pin pulumi-docker "$ROOT/requirements.txt")
COMMAND_PIN=$(pin pulumi-command "$ROOT/requirements.txt")
K8S_PIN=$(pin pulumi-kubernetes "$ROOT/requirements.txt")
GO_VERSION=$(go env GOVERSION)
# Any change to this script changes every stamp (and so rebuilds, from Go's warm caches).
RECIPE=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)

# moddir MODULE@VERSION: download a module (if needed) and print its directory in the module cache.
moddir() {
	go mod download -json "$1" | sed -n -E 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p'
}

# served MODULE VERSION: whether the module proxy serves that version.
served() {
	go mod download "$1@$2" >/dev/null 2>&1
}

# cli_version: the pkg/v3 version to build; the pin, else the nearest newer one that is served.
# The answer is remembered (per pin) so that an up-to-date build needs no network.
cli_version() {
	if [[ -n ${PULUMI_CLI_VERSION:-} ]]; then
		printf '%s\n' "$PULUMI_CLI_VERSION"
		return
	fi
	local want=v$PULUMI_PIN v memo=$STAMPS/cli-version-$PULUMI_PIN
	if [[ -s $memo ]]; then
		cat "$memo"
		return
	fi
	mkdir -p "$STAMPS"
	if served "$PKG_MODULE" "$want"; then
		printf '%s\n' "$want" | tee "$memo"
		return
	fi
	for v in $(go list -m -versions "$PKG_MODULE" | tr ' ' '\n' | tail -n +2 | sort -V); do
		if [[ $(printf '%s\n%s\n' "$want" "$v" | sort -V | head -n 1) == "$want" ]] && served "$PKG_MODULE" "$v"; then
			log "$PKG_MODULE@$want is not served; using $v"
			printf '%s\n' "$v" | tee "$memo"
			return
		fi
	done
	die "no version of $PKG_MODULE at or after $want is served"
}

# srchash DIR...: a hash of our own sources that go into a binary. Paths are hashed relative to
# each DIR: CI builds from a fresh clone in a new directory each time, and an absolute path in the
# hash would make every such clone rebuild everything.
srchash() {
	local d
	for d in "$@"; do
		(cd "$d" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	done | sha256sum | cut -c1-16
}

# up_to_date NAME STAMP: whether bin/NAME exists and was built from the same inputs.
up_to_date() {
	[[ -x $BIN/$1 && -f $STAMPS/$1 && $(cat "$STAMPS/$1") == "$2 recipe=$RECIPE" ]]
}

stamp() { mkdir -p "$STAMPS" && printf '%s recipe=%s\n' "$2" "$RECIPE" >"$STAMPS/$1"; }

# new_module DIR PATH: a fresh generated main module.
new_module() {
	rm -rf "$1"
	mkdir -p "$1"
	printf 'module %s\n\ngo 1.26\n' "$2" >"$1/go.mod"
}

# restate_replaces DIR MODULE...: copy into DIR's go.mod the replace directives of MODULEs' go.mod
# files that point at published modules (relative-path replaces are the upstream's own checkout),
# unless DIR's go.mod already replaces that module. MODULE is the module whose go.mod the
# upstream build uses (replaces in other dependencies never applied to upstream builds either).
restate_replaces() {
	local dir=$1 mod gomod old new
	shift
	for mod in "$@"; do
		gomod=$(cd "$dir" && go list -m -f '{{.GoMod}}' "$mod")
		while read -r old new; do
			(cd "$dir" && go mod edit -replace "$old=$new")
		done < <(cd "$dir" && python3 -c '
import json, subprocess, sys
def replaces(gomod):
    doc = json.loads(subprocess.run(["go", "mod", "edit", "-json", gomod], check=True,
                                    capture_output=True, text=True).stdout)
    return doc.get("Replace") or []
have = {r["Old"]["Path"] for r in replaces("go.mod")}
for r in replaces(sys.argv[1]):
    old, new = r["Old"], r["New"]
    if not new.get("Version") or old["Path"] in have:
        continue
    print(old["Path"] + ("@" + old["Version"] if old.get("Version") else ""),
          new["Path"] + "@" + new["Version"])
' "$gomod")
	done
}

# writable_copy MODULE@VERSION DEST: a writable copy of a module from the module cache.
writable_copy() {
	local src
	src=$(moddir "$1")
	[[ -n $src ]] || die "could not download $1"
	cp -r "$src" "$2"
	chmod -R u+w "$2"
}

BUILT=()
SKIPPED=()
FAILED=()

# run TARGET FUNCTION: time one target. FUNCTION runs in a subshell with errexit in force; it
# returns 0 when it built TARGET and 10 when TARGET was up to date. A failure is reported and
# the other targets go on.
run() {
	local start=$SECONDS rc
	log "building $1"
	set +e
	(
		set -e
		"$2"
	)
	rc=$?
	set -e
	case $rc in
	0) BUILT+=("$1 ($((SECONDS - start))s)") ;;
	10) SKIPPED+=("$1") ;;
	*)
		FAILED+=("$1 (exit $rc after $((SECONDS - start))s)")
		log "$1 failed"
		;;
	esac
}

build_cli() {
	local v=$CLI_VERSION stampv
	stampv="pkg=$v go=$GO_VERSION"
	if up_to_date pulumi "$stampv"; then
		return 10
	fi
	local d=$WORK/cli
	new_module "$d" octollm.invalid/engine/cli
	printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/pulumi"\n' "$PKG_MODULE" >"$d/tools.go"
	(cd "$d" && go mod edit -require "$PKG_MODULE@$v" -require "$SDK_MODULE@$v")
	(cd "$d" && "${GO_TIDY[@]}")
	restate_replaces "$d" "$PKG_MODULE"
	(cd "$d" && "${GO_TIDY[@]}")
	(cd "$d" && "${GO_BUILD[@]}" -ldflags "-s -w -X $SDK_MODULE/go/common/version.Version=$v" \
		-o "$BIN/pulumi" "$PKG_MODULE/cmd/pulumi")
	stamp pulumi "$stampv"
	log "pulumi $v"
}

build_langhost() {
	local v=$CLI_VERSION stampv
	stampv="sdk=$v src=$(srchash "$HERE/langhost") go=$GO_VERSION"
	if up_to_date pulumi-language-python "$stampv" && [[ -f $BIN/pulumi-language-python-exec ]]; then
		return 10
	fi
	local d=$WORK/langhost
	new_module "$d" octollm.invalid/engine/langhost
	cp "$HERE/langhost/main.go" "$d/"
	(cd "$d" && go mod edit -require "$SDK_MODULE@$v")
	(cd "$d" && "${GO_TIDY[@]}")
	restate_replaces "$d" "$SDK_MODULE"
	(cd "$d" && "${GO_TIDY[@]}")
	(cd "$d" && "${GO_BUILD[@]}" -ldflags "-s -w -X main.Version=${v#v}" -o "$BIN/pulumi-language-python" .)
	# The host runs programs through the exec script of the same sdk release.
	install -m 0755 "$(cd "$d" && go list -m -f '{{.Dir}}' "$SDK_MODULE")/python/cmd/pulumi-language-python-exec" \
		"$BIN/pulumi-language-python-exec"
	stamp pulumi-language-python "$stampv"
	log "pulumi-language-python ${v#v} (our host, built against $SDK_MODULE@$v)"
}

build_policy() {
	# pulumi-policy (pinned $POLICY_PIN) holds no Go program: the CLI runs Python policy packs
	# through the language host (RunPlugin), which needs only the pulumi_policy package in the
	# pack's virtualenv. The legacy pulumi-analyzer-policy-python shim, used by a CLI that finds
	# no python language plugin, is a script from the sdk module; install it for completeness.
	local stampv="sdk=$POLICY_SHIM_SDK_VERSION policy=$POLICY_PIN"
	if up_to_date pulumi-analyzer-policy-python "$stampv"; then
		return 10
	fi
	local dir
	dir=$(moddir "$SDK_MODULE@$POLICY_SHIM_SDK_VERSION")
	install -m 0755 "$dir/python/dist/pulumi-analyzer-policy-python" "$BIN/pulumi-analyzer-policy-python"
	stamp pulumi-analyzer-policy-python "$stampv"
	log "pulumi-analyzer-policy-python (shim script from $SDK_MODULE@$POLICY_SHIM_SDK_VERSION)"
}

# build_bridged NAME PIN TFMODULE TFVERSION SHIMFILE: a Terraform-bridged provider in two steps:
# pulumi-tfgen-NAME writes schema.json and bridge-metadata.json, which pulumi-resource-NAME embeds.
build_bridged() {
	local name=$1 pin=$2 tfmod=$3 tfver=$4 shim=$5
	local stampv
	stampv="version=$pin bridge=$BRIDGE_VERSION upstream=$tfmod@$tfver plugin-go=$TF_PLUGIN_GO_VERSION"
	stampv+=" framework=$TF_PLUGIN_FRAMEWORK_VERSION src=$(srchash "$HERE/providers/$name") go=$GO_VERSION"
	if up_to_date "pulumi-resource-$name" "$stampv"; then
		return 10
	fi
	local d=$WORK/$name
	# The upstream go.mod calls itself by the provider's old path; its main package is elsewhere.
	local tfpath=github.com/terraform-providers/terraform-provider-$name
	new_module "$d" "octollm.invalid/engine/$name"
	cp -r "$HERE/providers/$name/." "$d/"
	writable_copy "$tfmod@$tfver" "$d/upstream"
	# The file the bridge needs inside the upstream module, to reach its internal package.
	mkdir -p "$d/upstream/shim"
	printf '%s\n' "$shim" >"$d/upstream/shim/shim.go"
	(cd "$d" && go mod edit \
		-require "$BRIDGE_MODULE@$BRIDGE_VERSION" \
		-require "$tfpath@v0.0.0" \
		-replace "$tfpath=./upstream" \
		-replace "github.com/hashicorp/terraform-plugin-go=github.com/hashicorp/terraform-plugin-go@$TF_PLUGIN_GO_VERSION" \
		-replace "github.com/hashicorp/terraform-plugin-framework=github.com/hashicorp/terraform-plugin-framework@$TF_PLUGIN_FRAMEWORK_VERSION")
	local res=$d/cmd/pulumi-resource-$name
	echo '{}' >"$res/schema.json"
	echo '{}' >"$res/bridge-metadata.json"
	(cd "$d" && "${GO_TIDY[@]}")
	restate_replaces "$d" "$BRIDGE_MODULE"
	(cd "$d" && "${GO_TIDY[@]}")
	local x="-X octollm.invalid/engine/$name/info.Version=$pin"
	(cd "$d" && "${GO_BUILD[@]}" -ldflags "$x" -o "$d/pulumi-tfgen-$name" "./cmd/pulumi-tfgen-$name")
	mkdir -p "$d/gen"
	if ! (cd "$d" && "./pulumi-tfgen-$name" schema --out gen >gen/tfgen.log 2>&1); then
		cat "$d/gen/tfgen.log" >&2
		return 1
	fi
	cp "$d/gen/schema.json" "$d/gen/bridge-metadata.json" "$res/"
	(cd "$d" && "${GO_BUILD[@]}" -ldflags "-s -w $x" -o "$BIN/pulumi-resource-$name" "./cmd/pulumi-resource-$name")
	stamp "pulumi-resource-$name" "$stampv"
	log "pulumi-resource-$name $pin (bridge $BRIDGE_VERSION over $tfmod@$tfver)"
}

build_random() {
	build_bridged random "$RANDOM_PIN" "$TF_RANDOM_MODULE" "$TF_RANDOM_VERSION" '// Package shim exposes the Terraform provider to the Pulumi bridge (added at build time).
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"

	p "github.com/terraform-providers/terraform-provider-random/internal/provider"
)

func NewProvider() provider.Provider { return p.New() }'
}

build_docker() {
	build_bridged docker "$DOCKER_PIN" "$TF_DOCKER_MODULE" "$TF_DOCKER_VERSION" '// Package shim exposes the Terraform provider to the Pulumi bridge (added at build time).
package shim

import (
	fwprovider "github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"

	p "github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

func NewSDKv2Provider(version string) func() *schema.Provider { return p.New(version) }

func NewFrameworkProvider(version string) func() fwprovider.Provider {
	return p.NewFrameworkProvider(version)
}'
}

build_kubernetes() {
	local stampv
	stampv="version=$K8S_PIN provider=$K8S_PROVIDER_VERSION sdk=$K8S_SDK_VERSION"
	stampv+=" src=$(srchash "$HERE/providers/kubernetes") go=$GO_VERSION"
	if up_to_date pulumi-resource-kubernetes "$stampv"; then
		return 10
	fi
	local d=$WORK/kubernetes
	new_module "$d" octollm.invalid/engine/kubernetes
	cp -r "$HERE/providers/kubernetes/." "$d/"
	# The provider's go.mod points its sdk/v4 at the checkout next to it; require a served one.
	(cd "$d" && go mod edit -require "$K8S_PROVIDER_MODULE@$K8S_PROVIDER_VERSION" \
		-require "github.com/pulumi/pulumi-kubernetes/sdk/v4@$K8S_SDK_VERSION")
	local src res=$d/cmd/pulumi-resource-kubernetes
	src=$(moddir "$K8S_PROVIDER_MODULE@$K8S_PROVIDER_VERSION")/cmd/pulumi-resource-kubernetes
	# What the upstream build's generate step does: versioned, minified copies to embed.
	python3 - "$src" "$res" "$K8S_PIN" <<'EOF'
import json, sys
src, dst, version = sys.argv[1:]
schema = json.load(open(f"{src}/schema.json"))
schema["version"] = version
json.dump(schema, open(f"{dst}/schema-embed.json", "w"), separators=(",", ":"))
mapping = json.load(open(f"{src}/terraform-mapping.json"))
json.dump(mapping, open(f"{dst}/terraform-mapping-embed.json", "w"), separators=(",", ":"))
EOF
	(cd "$d" && "${GO_TIDY[@]}")
	restate_replaces "$d" "$K8S_PROVIDER_MODULE"
	(cd "$d" && "${GO_TIDY[@]}")
	(cd "$d" && "${GO_BUILD[@]}" \
		-ldflags "-s -w -X $K8S_PROVIDER_MODULE/pkg/version.Version=$K8S_PIN" \
		-o "$BIN/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes)
	stamp pulumi-resource-kubernetes "$stampv"
	log "pulumi-resource-kubernetes $K8S_PIN (from $K8S_PROVIDER_MODULE@$K8S_PROVIDER_VERSION)"
}

build_command() {
	# Our own provider (the upstream modules, github.com/pulumi/pulumi-command/provider and
	# github.com/pulumi/pulumi-go-provider, are not served): a module of its own, with its go.sum.
	if [[ $COMMAND_PIN != "$COMMAND_IMPLEMENTS" ]]; then
		log "requirements.txt pins pulumi-command $COMMAND_PIN, but providers/command implements $COMMAND_IMPLEMENTS's interface:"
		log "review what changed upstream, implement it, then set COMMAND_IMPLEMENTS in this script"
		return 1
	fi
	local src=$HERE/providers/command stampv
	stampv="version=$COMMAND_PIN src=$(srchash "$src") go=$GO_VERSION"
	if up_to_date pulumi-resource-command "$stampv"; then
		return 10
	fi
	(cd "$src" && "${GO_BUILD[@]}" -ldflags "-s -w -X main.Version=$COMMAND_PIN" \
		-o "$BIN/pulumi-resource-command" .)
	stamp pulumi-resource-command "$stampv"
	log "pulumi-resource-command $COMMAND_PIN (our implementation of its interface, tools/engine/providers/command)"
}

register() {
	local name v
	for f in "$BIN"/pulumi-resource-*; do
		[[ -x $f ]] || continue
		name=${f##*/pulumi-resource-}
		case $name in
		random) v=$RANDOM_PIN ;;
		docker) v=$DOCKER_PIN ;;
		kubernetes) v=$K8S_PIN ;;
		command) v=$COMMAND_PIN ;;
		*) continue ;;
		esac
		"$BIN/pulumi" plugin install resource "$name" "$v" --file "$f" --reinstall
	done
}

main() {
	local do_register=0 targets=() t
	for t in "$@"; do
		case $t in
		--register) do_register=1 ;;
		-h | --help)
			sed -n '2,17p' "${BASH_SOURCE[0]}"
			return 0
			;;
		cli | langhost | policy | random | docker | kubernetes | command) targets+=("$t") ;;
		*) die "unknown target $t" ;;
		esac
	done
	[[ ${#targets[@]} -gt 0 ]] || targets=(cli langhost policy random docker kubernetes command)
	command -v go >/dev/null || die "go is not installed"
	command -v python3 >/dev/null || die "python3 is needed (schema and go.mod edits)"
	mkdir -p "$BIN" "$WORK"
	local start=$SECONDS
	if [[ " ${targets[*]} " == *" cli "* || " ${targets[*]} " == *" langhost "* ]]; then
		CLI_VERSION=$(cli_version)
	fi
	for t in "${targets[@]}"; do
		case $t in
		cli) run pulumi build_cli ;;
		langhost) run pulumi-language-python build_langhost ;;
		policy) run pulumi-analyzer-policy-python build_policy ;;
		random) run pulumi-resource-random build_random ;;
		docker) run pulumi-resource-docker build_docker ;;
		kubernetes) run pulumi-resource-kubernetes build_kubernetes ;;
		command) run pulumi-resource-command build_command ;;
		esac
	done
	if [[ $do_register == 1 ]]; then
		register
	fi
	echo "engine build: $((SECONDS - start))s in total; binaries in $BIN"
	local line
	for line in "${BUILT[@]}"; do echo "  done:        $line"; done
	for line in "${SKIPPED[@]}"; do echo "  up to date:  $line"; done
	for line in "${FAILED[@]}"; do echo "  FAILED:      $line"; done
	[[ ${#FAILED[@]} -eq 0 ]]
}

main "$@"
