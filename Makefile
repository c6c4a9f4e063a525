# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create the virtualenv and install the project (with its test extras) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test unit component contract integration lint bench e2e kind-up clean venv

# The emulator (emulator/) is a distribution of its own that the test extra names; pip
# cannot resolve a relative path inside an extra, so both are installed in one command and
# the local editable one satisfies the name.
$(STAMP): pyproject.toml emulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./emulator -e ".[test,lint]"
	touch $(STAMP)

venv: $(STAMP)

## demo: run the operator against the embedded API emulator and walk through a
## conflict, a queue promotion and a replacement, printing what kubectl would show.
demo: $(STAMP)
	$(PY) -m demo

## test: every tier that runs without a cluster: lint, unit, component, emulator contract, integration.
test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit tests/component tests/contract tests/integration

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

## component: the operator's parts in one event loop against an in-process emulator (seconds).
component: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/component

contract: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/contract

integration: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check operator emulator demo tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## bench: decision throughput and memory, as ratios against a floor measured in the same run.
bench: $(STAMP)
	$(PY) -m bench

## e2e: the integration tests against a real cluster (kind; needs Docker).
kind-up:
	kind create cluster --name session-operator
	kind get kubeconfig --name session-operator > .kind-kubeconfig

e2e: $(STAMP)
	SESSION_OPERATOR_TEST_KUBECONFIG=$${SESSION_OPERATOR_TEST_KUBECONFIG:-$(CURDIR)/.kind-kubeconfig} \
		$(PY) -m pytest $(PYTEST_ARGS) tests/contract tests/integration tests/e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
