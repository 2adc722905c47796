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

.PHONY: setup dev test bench preview up destroy-dev pulumi-cli

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

pulumi-cli:
	@command -v pulumi >/dev/null 2>&1 || test -x $(HOME)/.pulumi/bin/pulumi || \
	  { echo "installing the Pulumi CLI into ~/.pulumi"; curl -fsSL https://get.pulumi.com | sh; }
	@mkdir -p .pulumi-state

## Set everything up and deploy the dev stack on the local Docker engine (local state, no account).
dev: setup pulumi-cli
	$(PULUMI) stack select dev --create --non-interactive
	$(PULUMI) up --stack dev

## Run every test.
test: setup
	$(PY) -m pytest -q

## Program time under the mock engine, per stack (figures only).
bench: setup
	$(PY) benchmarks/bench.py --scale 1 10 50

preview: setup pulumi-cli
	$(PULUMI) preview --stack $(STACK) --diff

up: setup pulumi-cli
	$(PULUMI) up --stack $(STACK)

destroy-dev: setup pulumi-cli
	$(PULUMI) destroy --stack dev
