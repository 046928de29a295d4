# `make demo` and `make test` work on a fresh machine with only Python 3.11+ and pip:
# they create .venv from the lock file when it is missing or stale.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PG15_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: demo test test-kafka kafka lint typecheck check up lock clean screenshots check-deploy

$(BIN)/relaybook: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

$(VENV): $(BIN)/relaybook

demo: $(BIN)/relaybook
	$(BIN)/relaybook demo

up: $(BIN)/relaybook
	$(BIN)/relaybook up

lint: $(BIN)/relaybook
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(BIN)/relaybook
	$(BIN)/mypy

# The whole suite on the embedded PostgreSQL; set RELAYBOOK_DATABASE_URL to run it on
# another server too (CI also runs it on the machine's PostgreSQL 15: `make test-pg15`).
# It mostly waits on its servers, so it runs on TEST_WORKERS processes at once (each with
# its own PostgreSQL and broker; a file's tests stay on one), then the tests judged by the
# clock (marked `timing`) alone. One test: `.venv/bin/python -m pytest tests/x.py -k name`.
TEST_WORKERS ?= 3
PYTEST_PASSES = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not timing" \
	&& $(BIN)/python -m pytest -m timing
test: $(BIN)/relaybook
	$(PYTEST_PASSES)

test-pg15: $(BIN)/relaybook
	export RELAYBOOK_DATABASE_URL=$(PG15_URL) && $(PYTEST_PASSES)

# Apache Kafka for RELAYBOOK_EMBEDDED_BROKER=kafka and test-kafka: the pinned release's
# jars, fetched once per machine by Maven into ~/.cache/relaybook (needs Java 17+).
kafka: $(BIN)/relaybook
	$(BIN)/python -c "from relaybook.tooling.kafka_release import classpath, cache_dir; classpath(); print(cache_dir())"

# The tests that use the broker, on an embedded Apache Kafka instead of Tansu
# (KAFKA_NODES=3, the default: replication 3, min.insync.replicas 2; KAFKA_NODES=1 is
# quicker; KAFKA_TESTS: which tests).
KAFKA_NODES ?= 3
KAFKA_TESTS ?= tests
test-kafka: kafka
	$(BIN)/python -m pytest --broker=kafka --kafka-nodes=$(KAFKA_NODES) $(KAFKA_TESTS)

check: lint typecheck test

# deploy/ validated without a container engine: hadolint, yamllint, docker-compose config,
# promtool, kubernetes-validate, tests/deploy (installs Debian's docker-compose and
# prometheus when missing).
check-deploy: $(BIN)/relaybook
	deploy/check

# The README's pictures of the console (docs/console-*.png): a real `relaybook up` fed the
# demo's co-ownership, photographed by Debian's Chromium (/usr/bin/chromium).
screenshots: $(BIN)/relaybook
	$(BIN)/python -m docs.screenshots

# Re-pin every dependency (needs network access to the package index).
lock: $(BIN)/relaybook
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
