# streamscore — one command surface for people, CI and pre-commit.
# Ports and folders: STREAMSCORE_KAFKA_PORT, STREAMSCORE_MONGO_PORT, STREAMSCORE_LOCAL_DIR;
# the local MongoDB-compatible server: STREAMSCORE_LOCAL_MONGO=mongo-java-server (default) or
# ferretdb (see infra/local-servers.sh). Product settings: STREAMSCORE_* (see README).

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
UV_BOOTSTRAP := .local/uv-bootstrap
VENV := .venv
BIN := $(VENV)/bin
SERVERS := infra/local-servers.sh
PYTEST_ARGS ?=
FERRETDB_PORT ?= 27018

.DEFAULT_GOAL := help
.PHONY: help install up down status lint format test test-unit test-ferretdb demo train seed run api bench clean

help: ## Show this help
	@tty=$$([ -t 1 ] && echo 1); grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -v tty="$$tty" 'BEGIN {FS = ":.*## "; on = tty ? "\033[36m" : ""; off = tty ? "\033[0m" : ""}; {printf "  %s%-18s%s %s\n", on, $$1, off, $$2}'

# uv: the one on the PATH, else Python's, else installed with pip, else (a system Python that
# refuses pip installs, PEP 668, or has no pip) into a private virtualenv under .local/.
$(BIN)/streamscore: pyproject.toml uv.lock
	@set -e; \
	if command -v uv >/dev/null 2>&1; then uv=uv; \
	elif $(PYTHON) -m uv --version >/dev/null 2>&1; then uv="$(PYTHON) -m uv"; \
	elif $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)" >/dev/null 2>&1 \
		&& $(PYTHON) -m uv --version >/dev/null 2>&1; then uv="$(PYTHON) -m uv"; \
	elif [ -x $(UV_BOOTSTRAP)/bin/uv ]; then uv=$(UV_BOOTSTRAP)/bin/uv; \
	else \
		echo "installing uv $(UV_VERSION) into $(UV_BOOTSTRAP) (this Python takes no pip installs)"; \
		$(PYTHON) -m venv $(UV_BOOTSTRAP) || { echo "cannot make a virtualenv: install python3-venv, or uv (https://docs.astral.sh/uv/)" >&2; exit 1; }; \
		$(UV_BOOTSTRAP)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"; \
		uv=$(UV_BOOTSTRAP)/bin/uv; \
	fi; \
	echo "$$uv sync --frozen"; $$uv sync --frozen
	@touch $@

install: $(BIN)/streamscore ## Install Python deps (uv, locked), fetch Kafka and mongo-java-server jars, kcat
	$(SERVERS) install
	@command -v kcat >/dev/null 2>&1 || { \
		echo "installing kcat (Debian package; a producer the interoperability tests use)"; \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq kcat >/dev/null 2>&1 \
		|| { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq kcat; } \
		|| echo "WARNING: kcat could not be installed (no apt-get or no root): the demo runs without it, make test needs it"; }

up: install ## Start Kafka (KRaft) and mongo-java-server locally; idempotent, waits until both answer
	$(SERVERS) up

down: ## Stop the local servers (and FerretDB of test-ferretdb)
	$(SERVERS) down
	STREAMSCORE_MONGO_PORT=$(FERRETDB_PORT) $(SERVERS) down mongo

status: ## Show whether the local servers run
	$(SERVERS) status

lint: $(BIN)/streamscore ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(BIN)/streamscore ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: up ## Run every test (unit, in-memory, integration on the real local servers)
	@command -v kcat >/dev/null 2>&1 || { echo "make test needs kcat (Debian/Ubuntu: apt-get install kcat)" >&2; exit 1; }
	@command -v "$${CC:-gcc}" >/dev/null 2>&1 || { echo "make test needs a C compiler (gcc, or \$$CC): the compiled-trees tests build the model" >&2; exit 1; }
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-ferretdb: up ## The MongoDB-touching integration tests again, on FerretDB (port FERRETDB_PORT)
	STREAMSCORE_LOCAL_MONGO=ferretdb STREAMSCORE_MONGO_PORT=$(FERRETDB_PORT) $(SERVERS) up mongo
	STREAMSCORE_LOCAL_MONGO=ferretdb STREAMSCORE_TEST_MONGO_URL=mongodb://127.0.0.1:$(FERRETDB_PORT) \
		$(BIN)/python -m pytest -m "integration and mongo" $(PYTEST_ARGS)

test-unit: $(BIN)/streamscore ## Only the tests that need no server
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

models/model.txt: | $(BIN)/streamscore
	$(BIN)/streamscore train

train: $(BIN)/streamscore ## Train the demo model (models/model.txt + models/model.json)
	$(BIN)/streamscore train

seed: up ## Write the demo entities into MongoDB
	$(BIN)/streamscore seed

demo: up models/model.txt ## Servers up, train if needed, seed, score 10,000 events, summarise
	$(BIN)/streamscore demo

run: up models/model.txt ## Run the scorer in the foreground (Ctrl-C stops it)
	$(BIN)/streamscore run

api: up models/model.txt ## Run the HTTP sidecar in the foreground
	$(BIN)/streamscore api

bench: up models/model.txt ## Run the benchmarks (about 45 minutes: 3 repetitions, every phase)
	$(BIN)/python -m bench.run

clean: down ## Stop servers and delete local data, jars, binaries and the venv
	rm -rf .local $(VENV) .pytest_cache .mypy_cache .ruff_cache
