"""``configs/evaluation.yaml``: the agreement target and its guarantee, the gate, generation, cost."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, StrictInt, field_validator

from loop_pipeline.config import ConfigModel

# What the confidence threshold is certified against (docs/metrics.md):
# reference: the row's curated reference (review label, user edit, or an accepted output that cleared
#            the score threshold) where it has one, the frontier's own output otherwise;
# frontier:  the frontier's own output on every row (the router's stand-in for the frontier).
CertifyAgainst = Literal["reference", "frontier"]


class EvalConfig(ConfigModel):
    FILE = "evaluation"

    target_agreement: float = Field(default=0.95, gt=0, lt=1)
    delta: float = Field(default=0.1, gt=0, lt=1)  # the guarantee holds with probability >= 1 - delta
    certify_against: CertifyAgainst = "reference"
    min_coverage: float = Field(default=0.5, ge=0, le=1)  # gate: share of in-scope requests served at the target
    # Gate: every task type of the training set needs this many holdout rows, or the candidate is refused.
    min_holdout_rows_per_task: StrictInt = Field(default=50, ge=1)
    calibration_fraction: float = Field(default=0.5, gt=0, lt=1)
    batch_size: StrictInt = Field(default=32, ge=1)  # the router's micro-batch size: batched throughput is measured at it
    max_new_tokens: StrictInt = Field(default=24, ge=1)
    max_examples: Optional[StrictInt] = Field(default=None, ge=1)  # cap the holdout (quick runs); null = all of it
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    summary_threshold: float = Field(default=0.5, ge=0, le=1)  # ROUGE-L F1 at or above which two summaries agree
    regression_alpha: float = Field(default=0.05, gt=0, lt=1)  # paired test vs the champion: refuse when p < alpha
    # Refuse a candidate that serves less of the in-scope test requests at the target than the
    # champion does on the same holdout, by more than this (both certified the same way).
    max_coverage_drop: float = Field(default=0.02, ge=0, le=1)
    # USD per hour of the machine serving the small model, per device kind (`cpu`, or the GPU's name
    # lower-cased with spaces as dashes, e.g. `nvidia-h100-80gb-hbm3`): the longest key that is a
    # prefix of the evaluating device's kind prices it; a device with no matching key is an error.
    local_price_per_hour: dict[str, float] = Field(default_factory=lambda: {"cpu": 0.10})
    local_requests_per_s: Optional[float] = Field(default=None, gt=0)  # null: as measured by this evaluation
    model_name: str = Field(default="loop-candidate", min_length=1)  # MLflow registered model

    @field_validator("local_price_per_hour")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("needs at least one device kind (e.g. cpu: 0.10)")
        bad = [k for k, v in value.items() if not k.strip() or v < 0]
        if bad:
            raise ValueError(f"device kinds need a name and a price >= 0: {bad}")
        return {k.strip().lower(): float(v) for k, v in value.items()}

    def price_per_hour(self, device_kind: str) -> float:
        """The price of ``device_kind``: the longest configured key that is a prefix of it."""
        kind = device_kind.lower()
        matches = [k for k in self.local_price_per_hour if kind.startswith(k)]
        if not matches:
            raise ValueError(
                f"configs/evaluation.yaml: local_price_per_hour has no price for device {device_kind!r} "
                f"(known: {', '.join(sorted(self.local_price_per_hour))}); add one"
            )
        return self.local_price_per_hour[max(matches, key=len)]
