# octollm-infra: every command a user or CI runs.
SHELL := /bin/bash
STACK ?= unraid
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# State lives in this directory unless you point PULUMI_BACKEND_URL elsewhere (s3://, gs://, azblob://).
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state
# The local backend encrypts secrets with this passphrase; set your own before storing real secrets.
export PULUMI_CONFIG_PASSPHRASE ?=
PULUMI := $(shell command -v pulumi 2>/dev/null || echo $(HOME)/.pulumi/bin/pulumi)
# Resource operations at once (Pulumi's default is 4 x CPU threads, unbounded by the hosts). Over SSH
# each one is a session on the host's shared connection or a new connection, and a stock sshd refuses
# sessions beyond MaxSessions 10 and drops connections from MaxStartups 10 on. benchmarks/ssh_transport.py
# (default-config sshd): 8 at once lose no call, 16 already lose some. Same as PARALLEL in
# components/platforms/docker_host.py and the workflows' --parallel.
PARALLEL ?= 8
# pulumi runs under a private ssh-agent that holds exactly STACK's identity files (tooling.doctor
# --identity-files lists them), killed when pulumi exits, however it exits (left to itself, an agent
# started with a command notices the command is gone only within 10 s). The remote commands log in
# through that agent, so no key is among their inputs: a preview made with the read-only key shows no
# change, and no key reaches the state. ssh-add asks once for a key's passphrase.
# Under `make -n` nothing is started, only printed.
WITH_AGENT = $(if $(findstring n,$(firstword -$(MAKEFLAGS))),,ssh-agent $(SHELL) -ec 'trap "ssh-agent -k >/dev/null 2>&1" EXIT; keys=$$("$$1" -m tooling.doctor -s "$$0" --identity-files); shift; if [ -n "$$keys" ]; then mapfile -t files <<<"$$keys"; ssh-add -q "$${files[@]}"; fi; "$$@"' $(STACK) $(PY))

.PHONY: setup dev test bench engine-lane preview up up-in-agent drift plan plan-diff destroy-dev pulumi-cli policy-venv

$(VENV)/.ready: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

.venv-tools/.ready: requirements-tools.txt
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet --upgrade pip
	.venv-tools/bin/pip install --quiet -r requirements-tools.txt
	touch $@

setup: $(VENV)/.ready .venv-tools/.ready

# pipefail: a failed download in `curl … | sh` must stop the target, not run sh on nothing.
pulumi-cli:
	@set -o pipefail; test -x "$(PULUMI)" || \
	  { echo "installing the Pulumi CLI into ~/.pulumi"; curl -fsSL https://get.pulumi.com | sh; } || \
	  { echo "make: the Pulumi CLI is not installed and could not be downloaded from get.pulumi.com." >&2; \
	    echo "      Install it (https://www.pulumi.com/docs/install/) or put a pulumi binary on PATH, then run make again." >&2; \
	    exit 1; }
	@test -x "$(PULUMI)" || { echo "make: $(PULUMI) is missing or not executable" >&2; exit 1; }
	@mkdir -p .pulumi-state

## Set everything up and deploy the dev stack on the local Docker engine (local state, no account).
dev: setup pulumi-cli
	$(PULUMI) stack select dev --create --non-interactive
	$(PULUMI) up --stack dev --parallel $(PARALLEL)

## Run every test. The ones that drive the real Pulumi engine (tests/test_command_provider.py) use
## build/engine/bin (tools/engine/build.sh) or OCTOLLM_ENGINE_BIN and skip without it; the engine lane
## is `make engine-lane`. CI (.ci/run) runs both, with skips turned into failures.
test: setup
	$(PY) -m pytest -q

## The real engine over the real program (tools/programtest.sh, every tests/lane_*.py): dev and a loopback
## SSH host through up, a no-change preview, refresh, a one-knob change, up --plan, destroy. Builds or
## reuses the engine in build/engine/bin first (tools/engine/build.sh), unless OCTOLLM_ENGINE_BIN names one.
## About 4 minutes with the engine built; the first build takes about half an hour.
engine-lane: setup
	tools/programtest.sh

## Program time under the mock engine, per stack (figures only).
bench: setup
	$(PY) benchmarks/bench.py --scale 1 10 50

policy/venv/.ready: policy/requirements.txt
	$(PYTHON) -m venv policy/venv
	policy/venv/bin/pip install --quiet -r policy/requirements.txt
	touch $@

policy-venv: policy/venv/.ready

## Show every change to STACK, checked by the policy pack. Nothing is changed.
preview: setup pulumi-cli policy-venv
	$(WITH_AGENT) $(PULUMI) preview --stack $(STACK) --diff --policy-pack policy --parallel $(PARALLEL)

## Preview and save the plan, ask, back up the state, apply exactly that plan, then verify the estate works.
# One agent for the whole sequence: a passphrase is asked once, not for the preview and again for the update.
up: setup pulumi-cli policy-venv
	@$(WITH_AGENT) $(MAKE) --no-print-directory up-in-agent

up-in-agent:
	@# On Kubernetes: refuse a namespace that is not this stack's (the provider would take it over); 0 elsewhere.
	$(PY) -m tooling.preflight_kubernetes -s $(STACK)
	$(PULUMI) preview --stack $(STACK) --diff --policy-pack policy --save-plan .pulumi-plan-$(STACK).json --parallel $(PARALLEL)
	@read -r -p "Apply exactly this plan to $(STACK)? [y/N] " answer && [ "$$answer" = y ]
	@mkdir -p backups
	$(PULUMI) stack export --stack $(STACK) --file backups/$(STACK)-$$(date -u +%Y%m%dT%H%M%SZ).json
	$(PY) -m tooling.backup -s $(STACK) --before-plan .pulumi-plan-$(STACK).json
	$(PULUMI) up --stack $(STACK) --plan .pulumi-plan-$(STACK).json --policy-pack policy --yes --parallel $(PARALLEL)
	PULUMI=$(PULUMI) $(PY) -m tooling.verify -s $(STACK) --wait $(VERIFY_WAIT)

## Check that the live estate of STACK works: containers healthy, models, scrape targets, datasources,
## Traefik backends, data services and health endpoints (tooling/verify.py). Changes nothing.
# Right after `up`, health checks are still starting and targets not yet scraped: failing checks are
# retried every 5 s for up to VERIFY_WAIT seconds.
VERIFY_WAIT ?= 180
.PHONY: verify
verify: setup
	PULUMI=$(PULUMI) $(PY) -m tooling.verify -s $(STACK) --wait $(VERIFY_WAIT)

## Back up STACK's data services now, on their host: the script its backup timer runs (tooling/backup.py).
.PHONY: backup
backup: setup
	$(PY) -m tooling.backup -s $(STACK)

## Refresh from the hosts and fail if anything drifted from the code.
drift: setup pulumi-cli
	$(WITH_AGENT) $(PULUMI) preview --stack $(STACK) --refresh --expect-no-changes --diff --parallel $(PARALLEL)

## The offline plan of STACK (no hosts, no backend).
plan: setup
	$(PY) -m tooling.plan -s $(STACK)

## Markdown summary of what changes for STACK between BASE (default origin/main) and the working tree.
BASE ?= origin/main
plan-diff: setup
	$(PY) -m tooling.plan -s $(STACK) --diff $(BASE)

## Remove the dev stack's containers and networks; its data (models, database files) stays on disk.
# The steps that create data are protected (a plain destroy stops at them) and retained on delete:
# unprotecting them lets destroy finish, and retain_on_delete keeps what they made.
destroy-dev: setup pulumi-cli
	$(PULUMI) state unprotect --all --yes --stack dev
	$(PULUMI) destroy --stack dev --yes --parallel $(PARALLEL)
	@echo "The dev stack is gone. Its data stays on disk under $$($(PY) -c 'import yaml; print(yaml.safe_load(open("Pulumi.dev.yaml"))["config"]["octollm-infra:hosts"]["local"]["appdataRoot"])'); delete it by hand if you mean to."
