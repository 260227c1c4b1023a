"""The confidence threshold with a guarantee.

Selected on a calibration half of the holdout: the loosest threshold whose served requests reject
"agreement < target" in an exact binomial test (at delta / 4, a margin for the next step); the
other half certifies it with the same test, once, on independent data (so agreement >= target
holds with probability >= 1 - delta), and measures coverage there.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from loop_pipeline.core.contracts import StageResult

THRESHOLD_GRID = np.unique(np.round(np.concatenate([[0.0], 1.0 - np.logspace(-4, 0, 121)]), 8))[::-1]

# (confidence, agrees, local) for one half of the holdout; ``local``: the answer is not an
# escalation label (those go to the frontier whatever their confidence).
Half = tuple[np.ndarray, np.ndarray, np.ndarray]


class ThresholdSelection(StageResult):
    threshold: Optional[float]  # certified on the test half; None: not usable
    selected: Optional[float]  # chosen on the calibration half (None: nothing reached the target)
    calibration_p: Optional[float]
    test_p: Optional[float]
    n_min: int  # the fewest served requests that could pass the test


class CurvePoint(StageResult):
    threshold: float
    coverage: float
    agreement: Optional[float]  # among served; None when nothing is served


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p))


def min_testable(target: float, delta: float) -> int:
    """The fewest served requests that could ever reject 'agreement < target' at level delta."""
    return math.ceil(math.log(delta) / math.log(target))


def _select(calibration: Half, target: float, delta: float, n_min: int) -> tuple[float | None, float | None]:
    """The loosest threshold of THRESHOLD_GRID whose served calibration requests pass the test."""
    conf, agree, local = calibration
    for threshold in THRESHOLD_GRID[::-1]:  # loose to strict
        served = local & (conf >= threshold)
        n = int(served.sum())
        if n < n_min:
            return None, None  # stricter thresholds serve even fewer
        p_value = binomial_tail(int(agree[served].sum()), n, target)
        # Selecting at delta/4 leaves a margin for the test half: at delta itself the loosest
        # passing threshold is often just lucky and fails certification (measured on synthetic
        # draws: certified 49% of the time at delta, 64% at delta/4, for a few points of coverage).
        if p_value <= delta / 4:
            return float(threshold), p_value
    return None, None


def choose_threshold(calibration: Half, test: Half, target: float, delta: float) -> ThresholdSelection:
    """Select on the calibration half, certify on the test half. A certified threshold keeps
    agreement >= target with probability >= 1 - delta; an uncertified one is not used."""
    n_min = min_testable(target, delta)
    selected, calibration_p = _select(calibration, target, delta, n_min)
    if selected is None:
        return ThresholdSelection(threshold=None, selected=None, calibration_p=None, test_p=None, n_min=n_min)
    conf, agree, local = test
    served = local & (conf >= selected)
    n = int(served.sum())
    test_p = binomial_tail(int(agree[served].sum()), n, target) if n else 1.0
    certified = n >= n_min and test_p <= delta
    return ThresholdSelection(
        threshold=selected if certified else None, selected=selected, calibration_p=calibration_p, test_p=test_p, n_min=n_min
    )


def coverage_agreement_curve(confidence: np.ndarray, agree: np.ndarray, local: np.ndarray, points: int = 50) -> list[CurvePoint]:
    """(threshold, coverage, agreement among served) at confidence quantiles."""
    if len(confidence) == 0:
        return []
    curve = []
    for threshold in np.unique(np.quantile(confidence, np.linspace(0, 1, points))):
        served = local & (confidence >= threshold)
        n = int(served.sum())
        curve.append(
            CurvePoint(threshold=float(threshold), coverage=n / len(confidence), agreement=float(agree[served].mean()) if n else None)
        )
    return curve
