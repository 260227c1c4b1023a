"""Great Expectations suites on the latest dataset version, as blocking checks: a failure stops
everything downstream (training) from running on that version."""

from typing import Callable

import dagster as dg
import polars as pl

from loop_pipeline.core import dedup, expectations, redaction
from loop_pipeline.core.datasets import DATASET_NAMES, DatasetConfig
from loop_pipeline.core.scoring import load_tasks
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.resources import LoopStorage


def latest_datasets(storage: LoopStorage) -> tuple[str, dict[str, pl.DataFrame]]:
    root = storage.datasets_root
    version = storage.latest_dataset_version()
    return version, {name: pl.read_parquet(root / version / f"{name}.parquet") for name in DATASET_NAMES}


def _result(storage: LoopStorage, run: Callable[[dict[str, pl.DataFrame]], expectations.Outcome]) -> dg.AssetCheckResult:
    version, datasets = latest_datasets(storage)
    outcome = run(datasets)
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={"version": version, "details": dg.MetadataValue.json(outcome.details)},
    )


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_have_min_rows_per_task(storage: LoopStorage) -> dg.AssetCheckResult:
    return _result(storage, lambda d: expectations.min_rows_per_task(d, DatasetConfig.load()))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_have_no_sensitive_text(storage: LoopStorage) -> dg.AssetCheckResult:
    return _result(storage, lambda d: expectations.no_sensitive_text(d, redaction.RedactionConfig.load()))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_holdout_disjoint_from_train(storage: LoopStorage) -> dg.AssetCheckResult:
    return _result(storage, lambda d: expectations.holdout_disjoint(d, dedup.DedupConfig.load()))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_label_shares_within_bounds(storage: LoopStorage) -> dg.AssetCheckResult:
    return _result(storage, lambda d: expectations.label_shares_within_bounds(d, load_tasks(), DatasetConfig.load()))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_have_no_empty_targets(storage: LoopStorage) -> dg.AssetCheckResult:
    return _result(storage, expectations.no_empty_targets)
