"""Datasets stage: scored traces -> versioned sft / kto / dpo / holdout, guarded by expectations."""

import dagster as dg

from loop_pipeline.defs.datasets import checks
from loop_pipeline.defs.datasets.assets import training_datasets

defs = dg.Definitions(assets=[training_datasets], asset_checks=dg.load_asset_checks_from_modules([checks]))
