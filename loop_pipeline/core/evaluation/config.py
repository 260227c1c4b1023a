"""``configs/evaluation.yaml``: the agreement target and its guarantee, the gate, generation, cost."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, StrictInt

from loop_pipeline.config import ConfigModel


class EvalConfig(ConfigModel):
    FILE = "evaluation"

    target_agreement: float = Field(default=0.95, gt=0, lt=1)
    delta: float = Field(default=0.1, gt=0, lt=1)  # the guarantee holds with probability >= 1 - delta
    min_coverage: float = Field(default=0.5, ge=0, le=1)  # gate: share of in-scope requests served at the target
    calibration_fraction: float = Field(default=0.5, gt=0, lt=1)
    batch_size: StrictInt = Field(default=32, ge=1)
    max_new_tokens: StrictInt = Field(default=24, ge=1)
    max_examples: Optional[StrictInt] = Field(default=None, ge=1)  # cap the holdout (quick runs); null = all of it
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    summary_threshold: float = Field(default=0.5, ge=0, le=1)  # ROUGE-L F1 at or above which two summaries agree
    regression_alpha: float = Field(default=0.05, gt=0, lt=1)  # paired test vs the champion: refuse when p < alpha
    local_price_per_hour: float = Field(default=0.10, ge=0)  # the machine serving the small model
    local_requests_per_s: Optional[float] = Field(default=None, gt=0)  # null: as measured by this evaluation
    model_name: str = Field(default="loop-candidate", min_length=1)  # MLflow registered model
