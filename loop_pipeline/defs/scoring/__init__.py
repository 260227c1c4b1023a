"""Scoring stage: trace_signals -> quality_model -> scored_traces -> score_thresholds."""

import dagster as dg

from loop_pipeline.defs.scoring import checks
from loop_pipeline.defs.scoring.assets import quality_model, score_thresholds, scored_traces, trace_signals

defs = dg.Definitions(
    assets=[trace_signals, quality_model, scored_traces, score_thresholds],
    asset_checks=dg.load_asset_checks_from_modules([checks]),
)
