# The two commands of the README: `make run` (the embedded demo) and `make test` (the whole
# suite against a real Kafka broker and the ClickHouse engine). Both set up what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TEST_KAFKA_PORT ?= 19292
PYTEST_ARGS ?=
ARGS ?=

.PHONY: install run test lint bench mutate kafka-start kafka-stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/pulse up $(ARGS)

# Starts a fresh local Kafka broker for the suite and stops it afterwards, pass or fail.
test: install
	$(BIN)/python scripts/local_kafka.py start --port $(TEST_KAFKA_PORT) --fresh
	PULSE_TEST_KAFKA=127.0.0.1:$(TEST_KAFKA_PORT) $(BIN)/python -m pytest $(PYTEST_ARGS); \
	status=$$?; $(BIN)/python scripts/local_kafka.py stop --port $(TEST_KAFKA_PORT); exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --explicit-package-bases operators connectors dataflows config scripts

bench: install
	$(BIN)/python scripts/bench.py $(ARGS)

# Plants one-line bugs in the core rules one at a time (in a copy of the tree) and reports
# which the fast suite catches; ARGS="-k join" for a subset, ARGS="--list" to see them.
mutate: install
	$(BIN)/python scripts/mutate.py $(ARGS)

kafka-start: install
	$(BIN)/python scripts/local_kafka.py start

kafka-stop:
	$(BIN)/python scripts/local_kafka.py stop

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
