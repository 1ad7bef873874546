# Thin wrapper; CI calls `make test` through .ci/run.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
# uv from PATH, else the one pip installs as a module (`python3 -m uv`) on a fresh machine.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# Three workers on two cores: many tests wait on servers, sockets and subprocesses, so a third
# worker fills those waits (2026-12-06, Intel VM, same commit: 15.5 min with 2, 13.6 with 3).
PYTEST_WORKERS ?= 3

.PHONY: help ensure-uv install demo test test-deps lint fmt bench clean up down

help:
	@echo "make demo       run qcdr once on the bundled demo data (no credentials needed) -> ./policies"
	@echo "make test       install test dependencies and run the whole test suite"
	@echo "make lint       ruff, mypy and import-linter"
	@echo "make bench      benchmarks; figures go to docs/PERFORMANCE.md"
	@echo "make up         the service suite as local processes (no Docker): .run/ has pids, logs, token"
	@echo "make down       stop what make up started"

ensure-uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
	  python3 -m pip install --quiet uv

# --compile-bytecode: uv leaves compiling to the first import by default, and where the machine
# sets PYTHONDONTWRITEBYTECODE nothing is ever cached, so every Python process (each test worker,
# each service a test starts) compiled numpy, sklearn, pydantic, ... again: ~3 s a process here.
# It takes ~12 s once; later syncs find the files up to date.
install: ensure-uv
	@$(UV) sync --all-packages --locked --quiet --compile-bytecode

demo: install
	@$(UV) run qcdr demo --output ./policies

# System packages the tests need when this machine lacks them (Debian packages).
test-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	{ command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v dockerd >/dev/null 2>&1 || missing="$$missing docker.io"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	{ command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1; } || missing="$$missing containerd"; \
	{ command -v runc >/dev/null 2>&1 || test -x /usr/sbin/runc; } || missing="$$missing runc"; \
	command -v rsyslogd >/dev/null 2>&1 || ls /usr/sbin/rsyslogd >/dev/null 2>&1 || missing="$$missing rsyslog"; \
	dpkg -s rsyslog-gnutls >/dev/null 2>&1 || missing="$$missing rsyslog-gnutls"; \
	{ command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium; } || missing="$$missing chromium"; \
	{ command -v chromedriver >/dev/null 2>&1 || test -x /usr/bin/chromedriver; } || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# PYTHONDONTWRITEBYTECODE emptied: the project's and the tests' own modules (and pytest's rewritten
# test files) are compiled once and cached in __pycache__ (git- and docker-ignored), not again
# in every worker and subprocess. 2026-12-06, 2 cores: collecting took 31 s of CPU a worker,
# 22 s with the site-packages compiled, 13 s with this too.
test: test-deps install
	@PYTHONDONTWRITEBYTECODE= $(UV) run pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=30

lint: install
	@$(UV) run ruff check .
	@$(UV) run ruff format --check .
	@$(UV) run mypy libs/common/src services/*/src src
	@$(UV) run lint-imports

fmt: install
	@$(UV) run ruff format .
	@$(UV) run ruff check --fix .

bench: install
	@$(UV) run python bench/run_once.py --findings 100000 --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/intel.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/e2e.py --events 30000 --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/hubble.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/reputation_queue.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/outbox_relay.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/retention.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/anomaly.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/detection.py --held-out --write-doc docs/DETECTION.md
	@$(UV) run python bench/dga.py --write-doc docs/DETECTION.md
	@$(UV) run python bench/correlation.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/outputs.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/action_validation.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/federation.py --write-doc docs/PERFORMANCE.md
	@$(UV) run python bench/console.py --write-doc docs/PERFORMANCE.md
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; $(UV) run python bench/admission.py --write-doc docs/PERFORMANCE.md

# docker-compose.yml's set without Docker: local PostgreSQL/Redis, migrations, the five services.
up: install
	@$(UV) run python scripts/devstack.py up

down: ensure-uv
	@$(UV) run python scripts/devstack.py down

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache policies .demo bench/out
