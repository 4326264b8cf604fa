# litemaas-cache-operator developer loop. `make demo` runs the main job, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv services test lint typecheck pytest demo image cluster-up cluster-down bench bench-full generate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

services:
	bash scripts/services.sh up

lint: venv
	$(BIN)/ruff check operator tests bench scripts
	$(BIN)/ruff format --check operator tests bench scripts

typecheck: venv
	$(BIN)/mypy

pytest: venv services
	eval "$$(bash scripts/services.sh env)" && $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

demo: venv services
	eval "$$(bash scripts/services.sh env)" && PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

# The container image, with podman (installed if missing) FROM a Debian base made with debootstrap (cached under
# ~/.cache/litemaas-cache-operator/image-base/); LITEMAAS_PYTHON_IMAGE=python:3.11-slim builds FROM a registry's instead.
image:
	bash scripts/image.sh build

cluster-up:
	bash scripts/cluster.sh up

cluster-down:
	bash scripts/cluster.sh down

# Quick: dataset M (~2.2M rows), 30- and 90-day views, a few minutes once M is seeded. Full: more runs, plus dataset L
# (~8.8M rows, 365 days). Both print one side-by-side table and write it as JSON under bench/results/. Both then run
# the peers' comparison (bench/peers/: no cache, the seed plan's design, cashews, this project) on M (full: a 10-minute
# replay trace) and draw its plots into docs/benchmarks/; BENCH_ARGS="--part peers" runs only that part.
# Then the soak (bench/soak.py): the API and operator processes under mixed load with a Redis restart, their memory
# sampled each second and its slope fitted; 3 minutes (bench), 30 (bench-full, which also redraws
# docs/benchmarks/soak-rss.png). It starts a private control plane in LITEMAAS_CLUSTER_DIR (default /tmp/soak-cluster).
bench: venv services
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m bench.run $(BENCH_ARGS)
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m bench.soak --minutes 3 $(SOAK_ARGS)

bench-full: venv services
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m bench.run --full $(BENCH_ARGS)
	eval "$$(bash scripts/services.sh env)" && $(BIN)/python -m bench.soak --minutes 30 --plot docs/benchmarks/soak-rss.png $(SOAK_ARGS)

# Every generated file from its one source: the CRDs (crds/, manifests/crds/, the chart's files/crds/) from the
# pydantic models, manifests/ from the chart. Needs helm (HELM, or `bash tests/cluster/build.sh`). Idempotent: on a
# clean tree it leaves no diff; tests/test_generated.py fails when a file drifts.
generate: venv
	PYTHONPATH=$(CURDIR)/operator:$(CURDIR) $(BIN)/python -m scripts.generate

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
