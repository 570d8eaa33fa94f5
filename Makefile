# Vigil: streaming AIOps on Apache Flink. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.vigil-installed
ARTIFACTS ?= artifacts
export PYTHONPATH := $(CURDIR):$(PYTHONPATH)

.PHONY: help setup run test up down status retrain cluster-up submit savepoint restore cluster-down clean

help: ## list every target with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV_STAMP): setup.py
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(VENV_STAMP)

setup: $(VENV_STAMP) ## create the virtualenv, install pinned packages, fetch the Kafka and Flink jars, build operators/java
	scripts/fetch-jars.sh

run: setup ## the whole pipeline end to end on real Kafka, Redis and Flink with the demo stream
	scripts/run-demo.sh

.PHONY: bench-nab
bench-nab: setup ## NAB detection quality through Kafka + Flink into reports/nab.json, nab.md and nab/ (a benchmark)
	scripts/bench-nab.sh

.PHONY: bench-forecast
bench-forecast: setup ## forecaster backtest on NAB's real series vs seasonal naive and naive into reports/forecast.json, forecast.md
	$(PY) -m training ensure --store $(ARTIFACTS) --no-progress
	$(PY) -m bench.forecast --store $(ARTIFACTS)

.PHONY: bench
bench: setup ## throughput, latency and memory of the job vs a kafka-python + river loop into reports/bench.json, bench.md
	scripts/bench.sh $(BENCH_ARGS)

test: setup lint typecheck ## lint, typecheck, then the whole test suite (starts and stops the Kafka, Redis and Alertmanager it needs)
	scripts/run-tests.sh

.PHONY: lint typecheck test-unit
lint: setup ## ruff: pyflakes, pycodestyle, import order, bugbear, pyupgrade, private-member access
	$(PY) -m ruff check .

typecheck: setup ## mypy over every package (common, udfs, models, operators, jobs, training, registry, bench, demo)
	$(PY) -m mypy

test-unit: setup ## the fast tier: every test that needs no Kafka, Redis, Alertmanager or Flink run
	$(PY) -m pytest -q -m "not integration and not flink" tests

.PHONY: faults
faults: setup ## the fault tests alone (kill -9 of job, TaskManager, broker; Redis down; rescale) into reports/faults.md
	VIGIL_FAULT_REPORT=reports/faults.md scripts/run-tests.sh -m fault -v tests/integration/test_faults.py

up: setup ## start Kafka (KRaft), Redis and Alertmanager on loopback for a long-running job
	scripts/services.sh up

down: ## stop the Kafka, Redis and Alertmanager that `make up` started
	scripts/services.sh down

status: ## show whether Kafka, Redis and Alertmanager are running
	scripts/services.sh status

# Flags of `python -m training train` (data source, drift, feedback), e.g.
#   make retrain RETRAIN_ARGS='--data replay --drift-topic --feedback-topic'   (ARGS='...' works too)
RETRAIN_ARGS ?= $(ARGS)

retrain: setup ## train, evaluate and version all four models into $(ARTIFACTS) (flags: RETRAIN_ARGS='...')
	$(PY) -m training train --store $(ARTIFACTS) $(RETRAIN_ARGS)

cluster-up: setup ## start a standalone Flink cluster (JobManager + TaskManager from PyFlink)
	scripts/flink-cluster.sh up

submit: setup ## submit the Vigil job to the standalone cluster with `flink run`
	scripts/flink-cluster.sh submit $(ARGS)

savepoint: ## stop the job on the standalone cluster with a savepoint into runs/savepoints (prints its path)
	scripts/flink-cluster.sh savepoint $(JOBID)

restore: setup ## run the job on the standalone cluster again from SAVEPOINT=path (a savepoint or retained checkpoint)
	@test -n "$(SAVEPOINT)" || { echo "usage: make restore SAVEPOINT=path [ARGS='--config ...']"; exit 2; }
	scripts/flink-cluster.sh restore $(SAVEPOINT) $(ARGS)

.PHONY: forward-alerts
forward-alerts: setup ## forward the alert topic into Alertmanager's API v2 (python -m jobs.alertmanager; ARGS='--url ...')
	$(PY) -m jobs.alertmanager --config flink-conf/vigil.yaml $(ARGS)

cluster-down: ## stop the standalone Flink cluster
	scripts/flink-cluster.sh down

clean: ## remove runs, caches of services and trained artifacts (keeps the virtualenv and jars)
	scripts/services.sh reset
	rm -rf runs $(ARTIFACTS) .pytest_cache
