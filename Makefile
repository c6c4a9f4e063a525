# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create the virtualenv and install the project (with its test extras) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The operator's image; `localhost/` keeps the name the same in every engine and in kind.
IMAGE ?= localhost/session-operator:$(VERSION)
# Empty: the Containerfile's default (a Python 3.11 slim image).
BASE_IMAGE ?=
CONTAINER_TOOL ?= $(firstword $(foreach tool,podman buildah docker,$(if $(shell command -v $(tool) 2>/dev/null),$(tool))))
KIND_CLUSTER ?= session-operator

.PHONY: demo test unit component chart contract integration lint bench image e2e kind-up kind-load clean venv

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

## test: every tier that runs without a cluster: lint, unit, component, the Helm chart, emulator contract,
## integration.
test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit tests/component tests/chart tests/contract tests/integration

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

## component: the operator's parts in one event loop against an in-process emulator (seconds).
component: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/component

## chart: the Helm chart, offline: render, lint, schemas, RBAC, alerts, Argo CD and kstatus health.
chart: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/chart

contract: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/contract

integration: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check operator emulator demo bench tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Containerfile

## bench: issue 7's scale figures (start-up, bursts, queue, isolated, requests per decision) and
## queue truth (writes and time until 1,000 waiting sessions show a new holder),
## each beside a floor measured in the same run; against the emulator, or the cluster named by
## SESSION_OPERATOR_TEST_KUBECONFIG. `make bench BENCH_ARGS=--quick` (or ARGS=...) for a smoke run;
## `python -m bench --help` lists the cases and flags.
BENCH_ARGS ?= $(ARGS)
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

## image: the operator's image from the Containerfile, with podman, buildah or docker.
image:
	@test -n "$(CONTAINER_TOOL)" || { echo "make image needs podman, buildah or docker" >&2; exit 1; }
	DOCKER_BUILDKIT=1 $(CONTAINER_TOOL) build -f Containerfile -t $(IMAGE) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) .

## e2e: install the chart on a real cluster (kind; needs Docker or podman), check the
## installed operator, then run the contract and integration tiers against that cluster.
kind-up:
	kind create cluster --name $(KIND_CLUSTER)
	kind get kubeconfig --name $(KIND_CLUSTER) > .kind-kubeconfig

kind-load: image
	rm -f .image.tar
	$(if $(filter buildah,$(CONTAINER_TOOL)),buildah push $(IMAGE) docker-archive:.image.tar:$(IMAGE),$(CONTAINER_TOOL) save -o .image.tar $(IMAGE))
	kind load image-archive .image.tar --name $(KIND_CLUSTER)
	rm -f .image.tar

e2e: $(STAMP) kind-load
	SESSION_OPERATOR_TEST_KUBECONFIG=$${SESSION_OPERATOR_TEST_KUBECONFIG:-$(CURDIR)/.kind-kubeconfig} \
	SESSION_OPERATOR_E2E_IMAGE=$(IMAGE) \
		$(PY) -m pytest $(PYTEST_ARGS) tests/e2e tests/contract tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
