"""Helpers for the router tests: settings around a temporary LOOP_HOME, the router under uvicorn on
127.0.0.1, reading and ingesting what it wrote, and registry versions on a real MLflow store."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from loop_pipeline.bench.stand_in import RunningServer, serve_in_thread
from loop_pipeline.core.serving import SERVING_SPEC_TAG, ServingSpec, TaskServing
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.router import RouterSettings, create_app
from loop_pipeline_tests.helpers import REPO_CONFIGS

FRONTIER_MODEL = "gpt-4o-mini"
INTENT = [{"role": "system", "content": "Classify the intent."}, {"role": "user", "content": "freeze my card please"}]


def router_settings(tmp_path: Path, frontier: RunningServer, **overrides: Any) -> RouterSettings:
    values: dict[str, Any] = {
        "port": 0,
        "landing_dir": tmp_path / "landing",
        "frontier_base_url": frontier.base_url,
        "frontier_model": FRONTIER_MODEL,
        "prices_path": REPO_CONFIGS / "prices.yaml",
        "load_champion": False,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_root": (tmp_path / "mlflow-artifacts").as_uri(),
        "model_cache_dir": tmp_path / "model-cache",
        "segment_max_seconds": 0.5,
        "gc_freeze": False,  # process-wide: not in the test process (loop serve's test runs it)
        **overrides,
    }
    return RouterSettings.load(REPO_CONFIGS / "router.yaml", **values)


@contextlib.contextmanager
def running_router(settings: RouterSettings) -> Iterator[RunningServer]:
    server = serve_in_thread(create_app(settings), graceful_shutdown_s=30.0)
    try:
        yield server
    finally:
        server.stop(timeout_s=90.0)


def router_state(server: RunningServer):
    return server.server.config.app.state.router


def wait_for_champion(server: RunningServer, version: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(f"{server.url}/healthz").json()
        if health["champion"]["version"] == version:
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"champion v{version} not served within {timeout_s} s: {health}")
        time.sleep(0.05)


# -- what the router wrote -----------------------------------------------------------------------


def closed_segments(landing: Path, kind: str = "traces") -> list[Path]:
    return sorted(p for p in (landing / kind).rglob("*.jsonl") if not p.name.startswith("."))


def open_segments(landing: Path) -> list[Path]:
    return sorted(p for p in landing.rglob(".*.jsonl"))


def read_records(landing: Path, kind: str = "traces") -> list[dict[str, Any]]:
    return [json.loads(line) for path in closed_segments(landing, kind) for line in path.read_text(encoding="utf-8").splitlines()]


def traces_by_id(landing: Path) -> dict[str, dict[str, Any]]:
    records = read_records(landing)
    by_id = {r["trace_id"]: r for r in records}
    assert len(by_id) == len(records), "a trace id was written twice"
    return by_id


def ingest_landing(landing: Path):
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.core.ingest import IngestConfig
    from loop_pipeline.core.ingest.pipeline import ingest
    from loop_pipeline.core.ingest.sources import discover

    return ingest(discover([str(landing)]), IngestConfig.from_yaml(REPO_CONFIGS / "ingest.yaml"), PriceTable.from_yaml(REPO_CONFIGS / "prices.yaml"))


# -- registry versions ---------------------------------------------------------------------------


def intent_spec(model_name: str = "loop-candidate", threshold: float | None = 0.8, **changes: Any) -> ServingSpec:
    tasks = {
        "intent": TaskServing(kind="classification", threshold=threshold, escalation_labels=("out_of_scope",)),
        "summarization": TaskServing(kind="summarization"),  # no certified threshold
    }
    values = dict(
        model_name=model_name, base_model="tiny", dataset_version="ds-test", system_prompt="drop", max_new_tokens=8,
        target_agreement=0.95, tasks=tasks, requests_per_s=10.0, local_price_per_hour=0.36,
    )
    return ServingSpec(**{**values, **changes})


def register_spec_version(tracking: TrackingTarget, spec: ServingSpec, folder: Path, promote_it: bool = True) -> str:
    """A registry version carrying ``spec`` whose weights are served elsewhere (the ``openai``
    backend reads only the spec)."""
    from loop_pipeline.core.registry import promote, register_version

    client = tracking.client()
    run = client.create_run(tracking.experiment_id(client, "router-test"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("served by an OpenAI-compatible server\n", encoding="utf-8")
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    tags = {SERVING_SPEC_TAG: spec.model_dump_json(exclude={"version"})}
    version = register_version(client, spec.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id, tags)
    if promote_it:
        promote(client, spec.model_name, version, "router test")
    return version
