"""Each dataset version as one MLflow run with the four datasets as its inputs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from loop_pipeline.core.tracking import TrackingTarget


def log_version_to_mlflow(
    version: str, paths: Mapping[str, Path], tracking: TrackingTarget, info: Mapping[str, Any]
) -> str:
    """One MLflow run per dataset version with each dataset as an input; reused if already logged."""
    import mlflow

    client = tracking.client()
    experiment_id = tracking.experiment_id(client, "loop-datasets")
    existing = client.search_runs([experiment_id], filter_string=f"tags.`loop.dataset_version` = '{version}'", max_results=1)
    if existing:
        return existing[0].info.run_id
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking.tracking_uri)
    try:
        with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment_id, run_name=f"datasets-{version}") as run:
            # A local path matches two equivalent MLflow source types; it says so once per dataset.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            mlflow.set_tags({"loop.kind": "dataset_version", "loop.dataset_version": version})
            mlflow.log_params({k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))})
            for name, path in paths.items():
                frame = pl.read_parquet(path)
                # MLflow's digest and schema want flat columns: conversations go in as JSON text.
                flat = frame.select(
                    pl.col(c).list.eval(pl.element().struct.json_encode()).list.join("\n") if frame.schema[c].is_nested() else pl.col(c)
                    for c in frame.columns
                )
                dataset = mlflow.data.from_pandas(
                    flat.to_pandas(),
                    source=str(path),
                    name=f"{name}@{version}",
                )
                mlflow.log_input(dataset, context=name)
                mlflow.log_metric(f"rows_{name}", frame.height)
            mlflow.log_artifact(str(Path(next(iter(paths.values()))).parent / "README.md"))
            return run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous_uri)
