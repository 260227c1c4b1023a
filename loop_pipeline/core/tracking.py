"""MLflow: where runs go and how the project logs them.

Entry points decide the target (``LoopSettings().tracking()``: the LOOP_MLFLOW_* settings, else
SQLite and files under LOOP_HOME); nothing here reads the environment. mlflow is imported inside
the functions: it costs seconds, and the CLI's help and Dagster's definition loading must not pay
for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class TrackingTarget:
    """A backend store (``sqlite:///...``, ``postgresql://...``, ``http://...``) and an artifact root."""

    tracking_uri: str
    artifact_root: str

    def client(self):
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self, client, name: str) -> str:
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        return client.create_experiment(name, artifact_location=f"{self.artifact_root.rstrip('/')}/{name}")


def log_run(
    client,
    experiment_id: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts: Sequence[Path] = (),
) -> str:
    """One finished run in one batch: params, metrics (None skipped), tags, artifact files."""
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )
    for artifact in artifacts:
        client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id)
    return run_id
