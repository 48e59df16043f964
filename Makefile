# Flywheel's front door. `make demo` runs the closed loop; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= python3 -m uv
PY := .venv/bin/python
STACK := $(PY) infra/stack.py

.PHONY: help install up down status test test-unit scale-test bench profile demo schemas lint docs topic-graph compose-secrets compose-images compose-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock schemas/pyproject.toml libs/*/pyproject.toml services/*/pyproject.toml cli/pyproject.toml
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet 'uv==0.13.9'
	$(UV) sync --frozen
	@touch $@

install: .venv/.synced ## create .venv with the pinned dependencies (uv.lock)
	$(STACK) install

up: install ## start Kafka, MinIO, MLflow and the six services (BROKERS=3 a Kafka cluster, REPLICAS=2 each service twice)
	FLYWHEEL_STACK_BROKERS=$(BROKERS) FLYWHEEL_STACK_REPLICAS=$(REPLICAS) $(STACK) up

down: ## stop exactly what `make up` started
	@if [ -x $(PY) ]; then $(STACK) down; fi

status: ## health of every component
	$(STACK) status

scale-test: install ## the scale test: its own stack of a 3-broker Kafka and 2 replicas of each service (ports 2000 up)
	$(PY) -m tests.scale

test-unit: .venv/.synced ## unit tests and doctests only (in-memory broker, no stack)
	$(PY) -m pytest tests/unit

# Starts the stack when it is not running and stops it afterwards only in that case.
test: install ## unit + integration tests against the real Kafka, MinIO and MLflow
	@started=0; if ! $(STACK) status >/dev/null 2>&1; then $(STACK) up || exit 1; started=1; fi; \
	$(PY) -m pytest; rc=$$?; \
	if [ $$started = 1 ] && [ -z "$$KEEP_STACK" ]; then $(STACK) down; fi; exit $$rc

bench: up ## benchmarks, printed as ratios measured side by side
	$(PY) -m tests.bench

profile: up ## where ingestion and serving spend their time under the bench's load (py-spy; .bench/profile-*.txt)
	$(PY) -m tests.bench.profile $(SERVICES)

demo: install ## the whole stack and the closed loop, with a readable report
	@$(MAKE) --no-print-directory up
	$(STACK) run -- $(PY) -m flywheel.demo.closed_loop
	@echo "The stack keeps running for you to explore; 'make down' stops it."

schemas: .venv/.synced ## re-export the events' JSON Schema into schemas/jsonschema
	$(PY) -m flywheel.schemas.export

lint: .venv/.synced ## ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

docs: .venv/.synced ## build docs/generated (AsyncAPI, OpenAPI, topics, configuration) from the code, offline
	$(PY) -m docs.generate

topic-graph: .venv/.synced ## redraw docs/architecture.md's topic graph from the services' AsyncAPI documents
	$(PY) -m docs.topicgraph

compose-secrets: .venv/.synced ## the compose deployment's secrets, once: .secrets/credentials.json, compose.env, kafka-access.plan
	$(PY) infra/docker/credentials.py

compose-images: install ## every docker-compose image without a registry (Debian + what `make install` fetched)
	$(PY) infra/docker/images.py

# Starts a Docker engine when none runs (and stops it after), builds the images registry-less,
# runs the closed loop inside compose and removes what it made; see infra/docker/compose_test.py.
compose-test: install ## the compose deployment for real: images, up --wait, the loop inside it, down
	$(PY) infra/docker/compose_test.py
