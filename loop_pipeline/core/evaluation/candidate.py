"""What to evaluate: a model folder (merged) or a base + adapter, with its prompt transform."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import polars as pl

from loop_pipeline.core.contracts import StageResult, TrainedAdapter
from loop_pipeline.core.models import PromptTransform


class Candidate(StageResult):
    model_path: str
    adapter_path: Optional[str] = None
    system_prompt: PromptTransform = "keep"
    label: str = ""  # shown in reports (e.g. the MLflow run or registry version)

    @classmethod
    def from_adapter(cls, trained: TrainedAdapter) -> "Candidate":
        """The ``lora_adapter`` result: its merged model when saved, else base + adapter."""
        label = f"run {trained.mlflow_run_id}"
        if trained.merged_path and Path(trained.merged_path).is_dir():
            return cls(model_path=trained.merged_path, system_prompt=trained.system_prompt, label=label)
        return cls(
            model_path=trained.base_model_path or trained.base_model,
            adapter_path=trained.adapter_path,
            system_prompt=trained.system_prompt,
            label=label,
        )


def champion_candidate(client, model_name: str, version: str) -> Candidate:
    """The champion's model folder: where training left it, else downloaded from the registry."""
    info = client.get_model_version(model_name, version)
    tags = info.tags
    path = tags.get("merged_path")
    if not path or not Path(path).is_dir():
        path = client.download_artifacts(info.run_id, "merged_model", tempfile.mkdtemp(prefix="loop-champion-"))
    return Candidate(model_path=path, system_prompt=tags.get("system_prompt", "keep"), label=f"{model_name} v{version} (champion)")


def read_holdout(version_dir: Path, max_examples: int | None = None) -> pl.DataFrame:
    """The frozen holdout of a dataset version folder (its first ``max_examples`` rows when set)."""
    path = Path(version_dir) / "holdout.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no holdout in {version_dir}: build a dataset version first (loop datasets build)")
    holdout = pl.read_parquet(path)
    if holdout.height == 0:
        raise ValueError(f"{path} has no rows: nothing to evaluate on")
    return holdout.head(max_examples) if max_examples else holdout
