"""LoRA fine-tuning with peft + trl: SFT on the curated ``sft`` dataset, then optionally KTO or DPO
on the negatives, continuing from the SFT adapter.

One YAML file (see ``configs/train/tiny.yaml``) -> :class:`TrainConfig` -> :func:`main` ->
:class:`TrainResult`. ``python -m loop_pipeline.core.training --config FILE`` runs it and prints the
result as one JSON line on stdout (progress bar and trainer logs go to stderr); ``--pipes`` is the
form the ``lora_adapter`` asset launches.

Modules: ``config`` (the typed YAML), ``data`` (parquet rows), ``sft`` and ``preference`` (the two
stages), ``export`` (the merged model), ``reporting`` (terminal, Dagster, MLflow), ``run`` (one
run, :func:`main`). Heavy libraries (torch, transformers, peft, trl, datasets, mlflow) are imported
inside functions only.
"""

from __future__ import annotations

from typing import Sequence

import loop_pipeline  # noqa: F401  (offline / no-telemetry environment before HF imports)
from loop_pipeline.core.training.config import TrainConfig
from loop_pipeline.core.training.result import TrainResult, materialization_metadata
from loop_pipeline.core.training.run import main

__all__ = ["TrainConfig", "TrainResult", "cli", "main", "materialization_metadata"]


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m loop_pipeline.core.training`` (``loop train`` calls it too)."""
    # Imported here: __main__ must not be in sys.modules before `python -m` runs it.
    from loop_pipeline.core.training.__main__ import cli as run_cli

    return run_cli(argv)
