"""Typed results that Dagster assets hand to each other (through the stage-result IO manager).

Each is a pydantic model, written as JSON when its asset materializes and validated again when a
downstream asset loads it, so the dataset version a training run used, or the adapter an
evaluation scored, travels with the asset graph rather than through pointer files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict


R = TypeVar("R", bound=BaseModel)


class StageResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetVersion(StageResult):
    """What ``training_datasets`` materialized: a content-addressed version folder."""

    version: str
    path: str  # the version folder (sft.parquet, kto.parquet, dpo.parquet, holdout.parquet, card)
    new_version: bool
    rows: dict[str, int]
    rows_by_task_type: dict[str, dict[str, int]] = {}


class TrainedAdapter(StageResult):
    """What ``lora_adapter`` materialized: the adapter (and merged model) trained on one version."""

    adapter_path: str
    base_model: str  # as configured (a packaged name, a folder or an HF id)
    base_model_path: str  # what was loaded
    dataset_version: str
    dataset_path: str  # the version folder it trained on (its holdout is what evaluation scores)
    train_config: str  # the YAML the run started from
    steps: int
    sft_steps: int
    negative_stage: str
    negative_steps: int
    initial_loss: float | None = None
    final_loss: float | None = None
    negative_final_loss: float | None = None
    tokens: int
    tokens_per_s: float
    seconds_per_step: float
    train_seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None
    dtype: str
    device: str
    system_prompt: str  # keep | drop | none: what serving and evaluation must do to prompts
    max_length: int | None = None  # sft.max_length: the longest input it was trained on (None: unknown)
    sft_adapter_path: str | None = None
    merged_path: str | None = None
    mlflow_run_id: str | None = None


def stage_result_path(results_dir: Path | str, asset: str) -> Path:
    """Where the results IO manager keeps an asset's typed value."""
    return Path(results_dir) / f"{asset}.json"


def read_stage_result(results_dir: Path | str, asset: str, kind: type[R]) -> R:
    """An asset's typed value as the results IO manager stored it (FileNotFoundError, saying what
    to materialize, when it has not been)."""
    path = stage_result_path(results_dir, asset)
    if not path.is_file():
        raise FileNotFoundError(f"{asset} has not been materialized on this LOOP_HOME ({path} is missing)")
    return kind.model_validate_json(path.read_text(encoding="utf-8"))
