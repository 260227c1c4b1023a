"""Support for the browser test of the UIs: a demo-sized LOOP_HOME built by the real asset graph,
the Dagster webserver and the MLflow UI as real subprocesses on free 127.0.0.1 ports, and where
the screenshots go.

The LOOP_HOME is what ``loop demo`` leaves, at toy size: simulated traffic of the toy 3-intent task
(one day), then one plan over the whole graph, as ``run_demo`` runs it: ingest, scoring, datasets,
``lora_adapter`` (the real trainer through Dagster Pipes, on a tiny Llama), ``holdout_eval`` with its
gate checks and ``registered_model``, which registers ``loop-candidate`` and moves alias ``champion``
in the LOOP_HOME's MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
MODEL_NAME = "loop-candidate"
MAX_NEW_TOKENS = 8  # the tiny tokenizer spells "travel" / "billing" in 6 tokens, plus the end of turn
# Settings the test's LOOP_HOME must not inherit from a developer's shell.
STRAY_SETTINGS = ("LOOP_LANDING_URL", "LOOP_PG_URL", "DAGSTER_HOME", "LOOP_MLFLOW_TRACKING_URI", "LOOP_MLFLOW_ARTIFACT_ROOT",
                  "LOOP_TRAINER_DEPLOY", "LOOP_TRAIN_CONFIG")


def chromium_path() -> str | None:
    """Debian's Chromium (``make browser`` installs it), or None."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir() -> Path:
    """``$LOOP_TEST_ARTIFACTS/browser`` (default ``.test-artifacts/browser`` in the repository)."""
    root = Path(os.environ.get("LOOP_TEST_ARTIFACTS") or REPO_ROOT / ".test-artifacts")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class DemoInstance:
    home: Path  # LOOP_HOME
    configs: Path  # LOOP_CONFIG_DIR
    dagster_home: Path
    mlflow_uri: str  # the MLflow backend store the registry lives in
    champion: str  # the version alias `champion` points to
    groups: dict[str, list[str]]  # asset group -> its assets (flat key names)
    asset_checks: dict[str, list[str]]  # asset -> the names of the checks defined on it
    checks: dict[str, bool]  # check name -> passed, for every check the plan ran

    def env(self) -> dict[str, str]:
        """The environment the UIs run with: this LOOP_HOME and configs, no stray LOOP_* setting."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOP_") and k != "DAGSTER_HOME"}
        env.update(LOOP_HOME=str(self.home), LOOP_CONFIG_DIR=str(self.configs), DAGSTER_HOME=str(self.dagster_home),
                   MLFLOW_DISABLE_TELEMETRY="true", DAGSTER_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1")
        return env


def tiny_train_config(configs: Path, model: Path) -> Path:
    """A train config for the tiny model (the asset sets data.version_dir, output_dir and tracking)."""
    from loop_pipeline_tests.tiny_models import write_tiny_train_config

    return write_tiny_train_config(configs / "train" / "browser-tiny.yaml", model, configs.parent / "runs" / "tiny")


def build_demo_instance(root: Path) -> DemoInstance:
    """Toy traffic through the whole asset graph into ``root / "loop_home"``. The caller has set
    LOOP_HOME and LOOP_CONFIG_DIR (``root / "configs"``) and cleared :data:`STRAY_SETTINGS`."""
    from loop_pipeline.execution import execute
    from loop_pipeline.runs import DATASETS, EVALUATION, INGEST, REGISTRATION, SCORING, TRAINING, build_stage_defs, landing_days
    from loop_pipeline.settings import LoopSettings
    from loop_pipeline.sim import NO_MESS, SimulationConfig
    from loop_pipeline_tests.helpers import simulate_landing
    from loop_pipeline_tests.tiny_models import build_tiny_model
    from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows, write_toy_configs

    settings = LoopSettings()
    configs = Path(settings.config_dir)
    assert configs == root / "configs", f"LOOP_CONFIG_DIR is {configs}, expected {root / 'configs'}"
    write_toy_configs(configs)
    evaluation_yaml = configs / "evaluation.yaml"
    evaluation_yaml.write_text(yaml.safe_dump({**yaml.safe_load(evaluation_yaml.read_text()), "max_new_tokens": MAX_NEW_TOKENS}))
    train_yaml = tiny_train_config(configs, build_tiny_model(root / "tiny-llama", toy_corpus(), vocab_size=300))

    data = root / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(0, 3000)))
    simulation = SimulationConfig.from_mapping(
        {**NO_MESS, "dataset": "labeled", "input_path": str(data), "days": 1, "traces_per_day": 1000,
         "start_date": "2026-11-01", "frontier_error_rate": 0.0, "human_review_rate": 0.3, "seed": 0}
    )
    simulate_landing(simulation, settings.landing)

    defs = build_stage_defs(settings)
    execution = execute(
        INGEST | SCORING | DATASETS | TRAINING | EVALUATION | REGISTRATION,
        partitions=landing_days(defs),
        op_config={"lora_adapter": {"train_config": str(train_yaml)}},
        defs=defs,
    )
    assert not execution.blocked_by, f"the demo-sized plan was blocked: {execution.blocked_by}"
    checks = {name: check["passed"] for name, check in execution.checks().items()}
    tracking = settings.tracking()
    champion = tracking.client().get_model_version_by_alias(MODEL_NAME, "champion")
    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in sorted(graph.get_all_asset_keys()):
        groups.setdefault(graph.get(key).group_name, []).append(key.path[-1])
    asset_checks: dict[str, list[str]] = {}
    for check in sorted(graph.asset_check_keys, key=lambda c: (c.asset_key.path[-1], c.name)):
        asset_checks.setdefault(check.asset_key.path[-1], []).append(check.name)
    return DemoInstance(
        home=settings.paths.home,
        configs=configs,
        dagster_home=settings.paths.dagster_home,
        mlflow_uri=tracking.tracking_uri,
        champion=str(champion.version),
        groups=groups,
        asset_checks=asset_checks,
        checks=checks,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def server(name: str, command: list[str], env: dict[str, str], base_url: str, ready_path: str, log: Path,
           timeout_s: float = 180.0) -> Iterator[str]:
    """Run ``command`` in its own process group until ``base_url + ready_path`` answers 200; yield
    ``base_url``; stop the group afterwards. Its output goes to ``log``."""
    ready_url = base_url + ready_path
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(ready_url):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before {ready_url} answered; its log {log}:\n"
                                   f"{log.read_text(errors='replace')[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {ready_url} did not answer within {timeout_s:.0f} s; its log {log}:\n"
                                   f"{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this module started (the webserver's code server included), then SIGKILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def dagster_ui(instance: DemoInstance, log: Path) -> Iterator[str]:
    """The Dagster webserver (what `make dagster-ui` serves) on the instance's DAGSTER_HOME."""
    port = free_port()
    command = [str(BIN / "dagster-webserver"), "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with server("dagster-webserver", command, instance.env(), f"http://127.0.0.1:{port}", "/server_info", log) as url:
        wait_for_code_location(url, LOCATION, log)
        yield url


LOCATION = "loop_pipeline"  # workspace.yaml's location_name
WORKSPACE_QUERY = (
    "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus locationOrLoadError"
    " { __typename ... on PythonError { message } } } } } }"
)


def wait_for_code_location(url: str, location: str, log: Path, timeout_s: float = 180.0) -> None:
    """The webserver answers before its code server has loaded the definitions: wait until the
    location is LOADED (raise with the load error when it failed)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": WORKSPACE_QUERY}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            workspace = json.load(response)["data"]["workspaceOrError"]
        entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
        seen = entries.get(location)
        if seen and seen["loadStatus"] == "LOADED":
            loaded = seen["locationOrLoadError"] or {}
            if loaded.get("__typename") != "RepositoryLocation":
                raise RuntimeError(f"code location {location} (workspace.yaml) failed to load: {loaded.get('message', loaded)}\n"
                                   f"the webserver's log {log}:\n{log.read_text(errors='replace')[-4000:]}")
            return
        time.sleep(0.5)
    raise TimeoutError(f"code location {location} (workspace.yaml) not loaded within {timeout_s:.0f} s: {seen or workspace}")


@contextmanager
def mlflow_ui(instance: DemoInstance, log: Path) -> Iterator[str]:
    """The MLflow UI (what `make mlflow-ui` serves) on the instance's backend store."""
    port = free_port()
    command = [str(BIN / "mlflow"), "ui", "--backend-store-uri", instance.mlflow_uri, "--host", "127.0.0.1", "--port", str(port)]
    # No job runner (seven huey consumers, for GenAI scorers): a UI test needs none, and they double the start.
    env = {**instance.env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with server("mlflow ui", command, env, f"http://127.0.0.1:{port}", "/health", log) as url:
        yield url
