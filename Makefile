# Resellio: `make run` brings the whole system up, `make test` runs every test.
# The interpreter the image ships (deploy/Dockerfile: Python 3.12) where this machine has it, on
# PATH or under pyenv and able to make a venv, so that the tests and `make bench` run what is
# deployed; else python3.
# 3.11 is supported too: `rm -rf .venv && make install PYTHON=python3.11`.
ifndef PYTHON
PYTHON := $(shell for p in python3.12 "$$(pyenv prefix 3.12 2>/dev/null)/bin/python3.12"; do \
	"$$p" -c "import ensurepip" >/dev/null 2>&1 && { echo "$$p"; exit; }; done; echo python3)
endif
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

export ENVIRONMENT ?= development

.PHONY: install run reset test test-unit test-integration test-e2e test-faults lint format bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

run: install  ## migrate, seed demo data, start every service + gateway (127.0.0.1:8080)
	$(BIN)/resellio run

reset: install  ## development only: wipe every schema and queue, migrate, re-seed
	$(BIN)/resellio db reset --yes

test: install  ## the whole suite against the PostgreSQL and RabbitMQ of the environment
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

test-integration: install
	$(BIN)/pytest -q tests/integration

test-e2e: install
	$(BIN)/pytest -q tests/e2e

test-faults: install  ## outages, kill -9, slow downstream, secrets; each ends with the invariant check
	$(BIN)/pytest -q -s tests/faults

lint: install
	$(BIN)/ruff check contracts services gateway tests bench
	$(BIN)/ruff format --check contracts services gateway tests bench

format: install
	$(BIN)/ruff format contracts services gateway tests bench
	$(BIN)/ruff check --fix contracts services gateway tests bench

bench: install  ## benchmarks; writes bench/results/latest.json and latest.md
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .run .pytest_cache

.PHONY: deploy-check
deploy-check: install  ## static checks of compose.yaml, deploy/ and the CI workflow (deploy/check.sh)
	UV=$(abspath $(UV)) PYTHON=$(PYTHON) deploy/check.sh
