"""What an entry point fills in a train config before the trainer runs: the values that depend on
where it runs (LOOP_HOME's dataset versions and model cache, the MLflow store). Used by
``python -m loop_pipeline.core.training --config`` and ``loop train``; the ``lora_adapter`` asset
fills the same fields from its resources instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loop_pipeline.config import ConfigError
from loop_pipeline.core.training.config import LATEST, TrainConfig
from loop_pipeline.settings import LoopSettings


def latest_dataset_version_dir(datasets_root: Path) -> Path:
    """The version folder ``loop datasets build`` (or ``training_datasets``) made last."""
    marker = Path(datasets_root) / "LATEST"
    if not marker.is_file():
        raise ConfigError(f"data.version_dir: latest, but {marker} is missing: build a dataset version first (loop datasets build)")
    return Path(datasets_root) / marker.read_text(encoding="utf-8").strip()


def fill_run_defaults(config: TrainConfig, settings: LoopSettings, latest_version_dir: Path | None = None) -> TrainConfig:
    """``config`` with what it leaves open filled from ``settings``: ``data.version_dir: latest`` ->
    ``latest_version_dir`` (default: the LATEST version under LOOP_HOME), ``model.cache_dir`` ->
    LOOP_HOME/models, ``tracking.tracking_uri`` / ``artifact_root`` -> ``settings.tracking()``.
    Values the file sets stay as they are."""
    overrides: dict[str, Any] = {}
    if config.data.version_dir == LATEST:
        folder = latest_version_dir or latest_dataset_version_dir(settings.paths.datasets)
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
