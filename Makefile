# computenode: the two commands a newcomer needs are `make run` and `make test`.
#
#   make test           venv + deps (test and network extras), start the real services and
#                       build Go bacalhau v0.3.23 (scripts/testbed.sh up), run every test
#                       with the test bed's environment
#   make run            venv + deps, start dockerd and kubo when they can be had
#                       (best effort), then run a node with config/computenode.yaml
#                       and --data-dir ./var/computenode
#   make services       start the test bed;  make services-down: stop it
#   make status         what of the test bed answers
#   make bench          run bench/*.py (not part of `make test`)
#   make lint           ruff check, ruff format --check, mypy (make test runs it first)
#
# PYTEST_ARGS=... passes extra arguments to pytest (e.g. PYTEST_ARGS="-k docker -x").

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
TESTBED := scripts/testbed.sh
CONFIG ?= config/computenode.yaml
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: help venv deps test run services services-down status bench lint

help:
	@sed -n '3,15p' Makefile | sed 's/^# \{0,1\}//'

$(VPY):
	@echo "make: creating the virtualenv $(VENV) ($(PYTHON) -m venv)"
	@$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed (the install is editable).
# The network extra (py-libp2p) builds fastecdsa from source: native-deps first
# installs gcc, libgmp-dev (and Python headers) when dpkg says they are missing
# (as root; otherwise it stops and names them).
$(DEPS_STAMP): pyproject.toml | $(VPY)
	@$(TESTBED) native-deps $(VPY)
	@echo "make: installing computenode (editable) with its test and network dependencies into $(VENV)"
	@$(VPY) -m pip install -q -e '.[test,network]'
	@touch $@

venv deps: $(DEPS_STAMP)

services:
	@$(TESTBED) up

services-down:
	@$(TESTBED) down

status:
	@$(TESTBED) status

test: lint
	$(TESTBED) up >/dev/null; \
	eval "$$($(TESTBED) env)"; \
	exec $(VENV)/bin/pytest tests $(PYTEST_ARGS)

# Best effort: a node without Docker still runs WASM jobs, one without kubo
# still runs jobs without IPFS inputs. The node uses the test bed's kubo unless
# COMPUTENODE_STORAGE__IPFS__API is already set. One line per step; the test bed's
# own progress goes to $(RUN_TESTBED_LOG).
RUN_DATA_DIR ?= ./var/computenode
RUN_TESTBED_LOG := var/make-run-testbed.log
run: $(DEPS_STAMP)
	@mkdir -p var; \
	echo "make run: starting dockerd and kubo from the test bed when they can be had (output: $(RUN_TESTBED_LOG))"; \
	$(TESTBED) up docker ipfs --best-effort >/dev/null 2>$(RUN_TESTBED_LOG) || true; \
	eval "$$($(TESTBED) env)"; \
	if [ -z "$${COMPUTENODE_STORAGE__IPFS__API:-}" ] && [ -n "$${COMPUTENODE_TEST_IPFS_API:-}" ] \
	   && curl -fsS --max-time 2 -X POST -o /dev/null "http://$$(echo "$$COMPUTENODE_TEST_IPFS_API" | sed -E 's#^/ip4/([^/]+)/tcp/([0-9]+)$$#\1:\2#')/api/v0/version" 2>/dev/null; then \
	    export COMPUTENODE_STORAGE__IPFS__API="$$COMPUTENODE_TEST_IPFS_API"; \
	fi; \
	$(VPY) -c 'import sys; from computenode.config import load_settings; s = load_settings(sys.argv[1], {"node.data_dir": sys.argv[2]}); \
	print(f"make run: starting computenode run --config {sys.argv[1]} --data-dir {sys.argv[2]}: Docker at {s.engines.docker.host}, IPFS API {s.storage.ipfs.api}"); \
	print(f"make run: the node listens on http://{s.api.listen} (dashboard /, API /api/v1); data in {s.node.data_dir}; its logs follow on stderr, Ctrl-C stops it")' \
	    "$(CONFIG)" "$(RUN_DATA_DIR)"; \
	exec $(VENV)/bin/computenode run --config $(CONFIG) --data-dir $(RUN_DATA_DIR)

bench: $(DEPS_STAMP)
	$(TESTBED) up >/dev/null; \
	eval "$$($(TESTBED) env)"; \
	shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no bench/*.py"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(VPY) "$$f"; done

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
