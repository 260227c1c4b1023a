"""Evaluation stage: holdout evaluation, the blocking promotion gate, the registry."""

import dagster as dg

from loop_pipeline.defs.evaluation import checks
from loop_pipeline.defs.evaluation.assets import holdout_eval, registered_model

defs = dg.Definitions(assets=[holdout_eval, registered_model], asset_checks=dg.load_asset_checks_from_modules([checks]))
