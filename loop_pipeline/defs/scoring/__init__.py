"""Scoring stage: trace_signals -> quality_model -> scored_traces -> score_thresholds.

The feedback lookback is part of the asset graph (trace_signals of a day depends on the feedback
partitions of that day and the ``lookback_days`` after it), so the stage is built by a function
of it, called where the definitions are built::

    scoring_defs(LoopSettings().load(ScoringConfig).feedback_lookback_days)

A run whose ``configs`` resource overrides ``feedback_lookback_days`` to another value fails
(trace_signals says so) instead of reading feedback the graph does not schedule.
"""

import dagster as dg

from loop_pipeline.defs.scoring.assets import SCORED_TRACES, build_trace_signals, late_feedback_eager, quality_model, score_thresholds, scored_traces
from loop_pipeline.defs.scoring.checks import score_thresholds_reach_precision_target


def scoring_defs(lookback_days: int) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            build_trace_signals(lookback_days),
            quality_model,
            scored_traces.with_attributes(automation_condition={SCORED_TRACES: late_feedback_eager(lookback_days)}),
            score_thresholds,
        ],
        asset_checks=[score_thresholds_reach_precision_target],
    )


__all__ = ["scoring_defs"]
