"""Typed results that Dagster assets hand to each other (through the stage-result IO manager).

Each is a pydantic model, written as JSON when its asset materializes and validated again when a
downstream asset loads it, so the dataset version a training run used, or the adapter an
evaluation scored, travels with the asset graph rather than through pointer files.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StageResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetVersion(StageResult):
    """What ``training_datasets`` materialized: a content-addressed version folder."""

    version: str
    path: str  # the version folder (sft.parquet, kto.parquet, dpo.parquet, holdout.parquet, card)
    new_version: bool
    rows: dict[str, int]
    rows_by_task_type: dict[str, dict[str, int]] = {}
