"""Great Expectations suites on the dataset version training_datasets built, as blocking checks: a
failure stops everything downstream (training) from running on that version.

Each check takes the asset's value (the :class:`DatasetVersion` the results IO manager stored), so
it checks exactly the version that was materialized, and records it as ``version`` in its metadata
(the evaluation gate reads it)."""

from pathlib import Path
from typing import Callable

import dagster as dg
import polars as pl

from loop_pipeline.config import ConfigModel
from loop_pipeline.core import dedup, expectations, redaction
from loop_pipeline.core.contracts import DatasetVersion
from loop_pipeline.core.datasets import DatasetConfig, read_version
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.resources import LoopConfigs


def _result(
    built: DatasetVersion,
    run: Callable[[dict[str, pl.DataFrame]], expectations.Outcome],
    configs: LoopConfigs | None = None,
    used: tuple[ConfigModel, ...] = (),
) -> dg.AssetCheckResult:
    outcome = run(read_version(Path(built.path)))
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={
            "version": built.version,
            "details": dg.MetadataValue.json(outcome.details),
            **(configs.metadata(*used) if configs else {}),
        },
    )


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_have_min_rows_per_task(training_datasets: DatasetVersion, configs: LoopConfigs) -> dg.AssetCheckResult:
    config = configs.load(DatasetConfig)
    return _result(training_datasets, lambda d: expectations.min_rows_per_task(d, config), configs, (config,))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_have_no_sensitive_text(training_datasets: DatasetVersion, configs: LoopConfigs) -> dg.AssetCheckResult:
    config = configs.load(redaction.RedactionConfig)
    return _result(training_datasets, lambda d: expectations.no_sensitive_text(d, config), configs, (config,))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_holdout_disjoint_from_train(training_datasets: DatasetVersion, configs: LoopConfigs) -> dg.AssetCheckResult:
    config = configs.load(dedup.DedupConfig)
    return _result(training_datasets, lambda d: expectations.holdout_disjoint(d, config), configs, (config,))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_label_shares_within_bounds(training_datasets: DatasetVersion, configs: LoopConfigs) -> dg.AssetCheckResult:
    tasks, config = configs.load(TasksConfig), configs.load(DatasetConfig)
    return _result(training_datasets, lambda d: expectations.label_shares_within_bounds(d, tasks, config), configs, (tasks, config))


@dg.asset_check(asset=TRAINING_DATASETS, blocking=True)
def training_datasets_have_no_empty_targets(training_datasets: DatasetVersion) -> dg.AssetCheckResult:
    return _result(training_datasets, expectations.no_empty_targets)
