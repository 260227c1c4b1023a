"""What an entry point fills in a train config before the trainer runs: the values that depend on
where it runs (LOOP_HOME's dataset versions and model cache, the MLflow store). Used by
``python -m loop_pipeline.core.training --config`` and ``loop train``; the ``lora_adapter`` asset
fills the same fields from its resources instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loop_pipeline.config import ConfigError
from loop_pipeline.core.contracts import DatasetVersion, read_stage_result
from loop_pipeline.core.training.config import LATEST, TrainConfig
from loop_pipeline.settings import LoopSettings


def latest_dataset_version_dir(settings: LoopSettings) -> Path:
    """The version folder ``training_datasets`` materialized last on this LOOP_HOME (what
    ``data.version_dir: latest`` means), from the asset's typed value."""
    try:
        version = read_stage_result(settings.paths.warehouse / "results", "training_datasets", DatasetVersion)
    except FileNotFoundError as exc:
        raise ConfigError(f"data.version_dir: latest, but {exc}: build a dataset version first (loop datasets build)") from None
    return Path(version.path)


def fill_run_defaults(config: TrainConfig, settings: LoopSettings, latest_version_dir: Path | None = None) -> TrainConfig:
    """``config`` with what it leaves open filled from ``settings``: ``data.version_dir: latest`` ->
    ``latest_version_dir`` (default: the version training_datasets materialized last), ``model.cache_dir`` ->
    LOOP_HOME/models, ``tracking.tracking_uri`` / ``artifact_root`` -> ``settings.tracking()``.
    Values the file sets stay as they are."""
    overrides: dict[str, Any] = {}
    if config.data.version_dir == LATEST:
        folder = latest_version_dir or latest_dataset_version_dir(settings)
        overrides["data"] = {"version_dir": str(folder)}
    if not config.model.cache_dir:
        overrides["model"] = {"cache_dir": str(settings.paths.models)}
    tracking = config.tracking
    if tracking.enabled and not (tracking.tracking_uri and tracking.artifact_root):
        target = settings.tracking()
        overrides["tracking"] = {
            "tracking_uri": tracking.tracking_uri or target.tracking_uri,
            "artifact_root": tracking.artifact_root or target.artifact_root,
        }
    return config.with_overrides(overrides, source="train config")
