"""``configs/scoring.yaml`` as a typed model: signal weights, calibration and threshold settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictFloat, StrictInt, field_validator

from loop_pipeline.config import ConfigModel

# Signals that can veto an output: the boolean ones ("no action" is silence, not a verdict).
VetoSignal = Literal[
    "accepted",
    "copied",
    "thumbs_up",
    "thumbs_down",
    "edited",
    "rejected",
    "regenerated",
    "hallucination",
    "heuristic_failed",
]
# The user actions whose absence is "no action".
USER_ACTIONS = ("accepted", "copied", "thumbs_up", "thumbs_down", "edited", "rejected", "regenerated")


class SignalWeights(ConfigModel):
    """One weight per signal, all required: a missing or unknown signal is a config error. The sign
    is the signal's documented direction (see configs/scoring.yaml)."""

    accepted: StrictFloat
    copied: StrictFloat
    thumbs_up: StrictFloat
    thumbs_down: StrictFloat
    edited: StrictFloat
    edit_similarity: StrictFloat  # 1 = identical edit, 0 = rewritten; null (not edited) weighs 0
    rejected: StrictFloat
    regenerated: StrictFloat
    no_action: StrictFloat
    hallucination: StrictFloat
    judge_score: StrictFloat  # mapped to [-0.5, 0.5]; no judge weighs 0
    heuristic_failed: StrictFloat


# Every signal, in the order of the weights (the order the logit sums them in).
SIGNALS: tuple[str, ...] = tuple(SignalWeights.model_fields)


class ScoringConfig(ConfigModel):
    """``configs/scoring.yaml``."""

    FILE = "scoring"

    weights_version: str = "v1"
    bias: StrictFloat = 0.5
    weights: SignalWeights
    judge_score_range: tuple[StrictFloat, StrictFloat] = (0.0, 1.0)
    refusal_patterns: tuple[str, ...] = ()
    veto_signals: tuple[VetoSignal, ...] = (
        "edited",
        "rejected",
        "regenerated",
        "hallucination",
        "thumbs_down",
        "heuristic_failed",
    )
    feedback_lookback_days: StrictInt = Field(default=3, ge=0)
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    min_reviewed: StrictInt = Field(default=20, ge=2)
    calibration_folds: StrictInt = Field(default=5, ge=2)
    precision_target: StrictFloat = Field(default=0.90, gt=0.0, lt=1.0)
    interval_confidence: StrictFloat = Field(default=0.80, gt=0.0, lt=1.0)
    max_candidate_thresholds: StrictInt = Field(default=40, ge=2)
    # Thresholds with power: the kept set's precision is the mean calibrated probability of all its
    # traces, its lower bound a bootstrap over the reviewed traces (see core/scoring/certify.py).
    bootstrap_samples: StrictInt = Field(default=200, ge=20)
    bootstrap_seed: StrictInt = 0
    # Selection apart from certification: the reviewed traces split by a stable hash of trace_id.
    selection_fraction: StrictFloat = Field(default=0.5, gt=0.0, lt=1.0)
    selection_strictness: StrictFloat = Field(default=1.0, ge=1.0)
    min_reviewed_per_side: StrictInt = Field(default=30, ge=2)
    min_bad_per_side: StrictInt = Field(default=1, ge=1)
    fallback: Literal["acceptance", "none"] = "acceptance"
    # Share of review verdicts that are wrong (either way), as measured by double review; 0: the
    # reviews are taken as the truth.
    review_error_rate: StrictFloat = Field(default=0.0, ge=0.0, lt=0.5)
    mlflow_experiment: str = "loop-thresholds"

    @field_validator("judge_score_range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not high > low:
            raise ValueError("[low, high] needs high > low")
        return value

    def weight(self, signal: str) -> float:
        return getattr(self.weights, signal)
