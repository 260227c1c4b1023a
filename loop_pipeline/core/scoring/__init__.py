"""Quality score: feedback signals per trace, fused into a calibrated ``p_good``; thresholds per task.

Steps, each a plain function so the CLI, the tests and the Dagster assets run the same code:

1. :func:`trace_signals` (:mod:`.signals`) joins feedback to traces by ``trace_id`` (feedback may
   arrive days later) and derives one row of signals per trace, plus the human review outcome.
2. :func:`fit_quality_model` (:mod:`.calibration`) turns the configured logit into probabilities
   calibrated against the human-reviewed traces (Platt or isotonic), with held-out Brier score and
   ECE by cross-validation.
3. :func:`score_traces` adds ``p_good_signals`` (from signals only: what thresholds are judged on)
   and ``p_good`` (the review outcome where a human reviewed the trace).
4. :func:`sweep_thresholds` (:mod:`.selection`, statistics in :mod:`.certify`) picks, per task type,
   on one part of the reviewed traces, the loosest threshold whose kept set's precision (the mean
   calibrated probability of all its traces) has a bootstrap lower bound at the target, and
   certifies it on the other part; a task type without a certified threshold keeps its outputs by
   the configured fallback (``acceptance`` by default), which every report names.

Every function takes its :class:`ScoringConfig` (``configs/scoring.yaml``) and, for the heuristics,
the :class:`~loop_pipeline.core.tasks.TasksConfig` as arguments; entry points load them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from loop_pipeline.core.scoring.calibration import (
    QualityModel,
    expected_calibration_error,
    fit_quality_model,
    score_traces,
    signal_logit,
)
from loop_pipeline.core.scoring.config import SIGNALS, ScoringConfig, SignalWeights
from loop_pipeline.core.scoring.selection import (
    KeepRule,
    candidate_thresholds,
    chosen_thresholds,
    compare_filters,
    keep_mask,
    keep_rule,
    keep_rules,
    sweep_thresholds,
    wilson_interval,
)
from loop_pipeline.core.scoring.summary import describe_threshold, score_distribution, summarize_sweep
from loop_pipeline.core.scoring.signals import heuristic_failures, orphan_feedback, trace_signals
from loop_pipeline.core.tasks import TasksConfig


@dataclass(frozen=True)
class ScoredTraffic:
    signals: pl.DataFrame
    model: QualityModel
    scored: pl.DataFrame


def score_traffic(
    traces: pl.DataFrame, feedback: pl.DataFrame, config: ScoringConfig, tasks: TasksConfig
) -> ScoredTraffic:
    """Signals, the calibrated model and the scored traces in one call (what the daily assets do
    partition by partition)."""
    signals = trace_signals(traces, feedback, config, tasks)
    model = fit_quality_model(signals, config)
    return ScoredTraffic(signals, model, score_traces(signals, model, config))


__all__ = [
    "SIGNALS",
    "KeepRule",
    "QualityModel",
    "ScoredTraffic",
    "ScoringConfig",
    "SignalWeights",
    "candidate_thresholds",
    "chosen_thresholds",
    "compare_filters",
    "describe_threshold",
    "expected_calibration_error",
    "fit_quality_model",
    "heuristic_failures",
    "keep_mask",
    "keep_rule",
    "keep_rules",
    "orphan_feedback",
    "score_distribution",
    "score_traces",
    "score_traffic",
    "signal_logit",
    "summarize_sweep",
    "sweep_thresholds",
    "trace_signals",
    "wilson_interval",
]
