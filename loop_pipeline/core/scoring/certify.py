"""The kept set's precision from the calibrated scores of ALL its traces, with the calibration's own
uncertainty; the reviewed traces split in two so that one side proposes thresholds and the other,
independent side certifies them (strict to loose, stopping at the first failure: selection.py).

For a task type and a threshold ``t``, the kept set ``K(t)`` is the non-vetoed traces with
``p_good_signals >= t``. Its estimated precision is the mean over ``K(t)`` of ``q(logit)``, where
``logit`` is the configured one (``signal_logit``, the column ``score_traces`` writes) and
``q(x) = sigmoid(a * x + b)`` is Platt's calibrator fitted (maximum likelihood, ``a >= 0``) on one
side's reviewed traces of that task type. Its lower bound is a percentile bootstrap: resample that
side's reviewed traces with replacement ``bootstrap_samples`` times, refit ``q``, recompute the mean
over ``K(t)``, and take the ``(1 - interval_confidence) / 2`` quantile (linear interpolation) of the
resampled means: with the default 0.90, a one-sided 95% lower bound, the same level as the lower end
of the two-sided Wilson interval the candidate rows still show. Every reviewed trace informs the
fit, not only the few that fall in ``K(t)``: that is where the power comes from. The selection side
takes its bound at a stricter quantile (``selection_strictness``), a margin for certification.

What it assumes: the probability that an output is good is a logistic function of the configured
logit, and the reviewers' verdicts are the truth unless ``review_error_rate`` says how often they
are wrong (a reviewer who calls good outputs bad makes the bound lower, not higher).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

# A whisper of ridge on (a, b): keeps a fit finite when one side's reviews are all good or separable
# (the bootstrap draws such samples); far too small to move a fit that has both outcomes.
_RIDGE = 1e-3
_NEWTON_STEPS = 50
# Resampled fits per chunk: bounds memory at (chunk x distinct kept scores) floats.
_CELLS_PER_CHUNK = 4_000_000


def selection_side(trace_ids: list[str], selection_fraction: float) -> np.ndarray:
    """True for the reviewed traces that select, False for those that certify: a hash of the
    trace_id (the same trace is on the same side in every run, whatever else was reviewed)."""
    limit = int(selection_fraction * 2**64)
    return np.array(
        [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "big") < limit for t in trace_ids],
        dtype=bool,
    )


def fit_platt(logit: np.ndarray, good: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Platt fits ``P(good) = sigmoid(a * logit + b)``, one per row of ``weights`` (resample counts):
    (samples x 2) array of (a, b). Newton steps on the weighted log-likelihood, all rows at once; a
    row whose best slope is negative gets a = 0 (the configured signals never flip direction)."""
    logit = np.asarray(logit, dtype=float)
    y = np.asarray(good, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    # Standardized by the weighted logits (all samples together), so that grouping identical
    # reviews into weighted points leaves even the ridge's pull exactly where it was.
    total = weights.sum(axis=0)
    centre = float(np.average(logit, weights=total)) if len(logit) and total.sum() > 0 else 0.0
    scale = float(np.sqrt(np.average((logit - centre) ** 2, weights=total))) if len(logit) and total.sum() > 0 else 1.0
    scale = scale or 1.0
    z = (logit - centre) / scale  # fitted on a standardized logit, reported on the raw one
    design = np.stack([z, np.ones_like(z)], axis=1)  # (n, 2)
    squares = np.stack([z * z, z, np.ones_like(z)], axis=1)  # the Hessian's entries, per trace
    theta = np.zeros((weights.shape[0], 2))
    for _ in range(_NEWTON_STEPS):
        p = _sigmoid(theta @ design.T)  # (samples, n)
        gradient = (weights * (y - p)) @ design - _RIDGE * theta
        zz, z1, ones = ((weights * p * (1.0 - p)) @ squares).T
        # Each sample's 2x2 system solved in closed form.
        h00, h01, h11 = zz + _RIDGE, z1, ones + _RIDGE
        determinant = h00 * h11 - h01 * h01
        step = np.stack(
            [(h11 * gradient[:, 0] - h01 * gradient[:, 1]) / determinant, (h00 * gradient[:, 1] - h01 * gradient[:, 0]) / determinant],
            axis=1,
        )
        theta += step
        if np.abs(step).max() < 1e-9:
            break
    flat = theta[:, 0] < 0
    if flat.any():  # the best fit with a = 0: the (ridge-smoothed) share of good reviews
        total = weights[flat].sum(axis=1)
        share = ((weights[flat] * y).sum(axis=1) + 0.5 * _RIDGE) / (total + _RIDGE)
        theta[flat] = np.stack([np.zeros(flat.sum()), np.log(share / (1.0 - share))], axis=1)
    slope = theta[:, 0] / scale
    return np.stack([slope, theta[:, 1] - slope * centre], axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for very negative x: the limit, 0, is right
        return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class KeptSets:
    """The non-vetoed traces of a task type grouped by (score, logit), best score first, and for
    each candidate threshold how many of the groups it keeps."""

    logits: np.ndarray  # distinct logit per group
    counts: np.ndarray  # traces per group
    groups_kept: np.ndarray  # per candidate: the first groups_kept groups are K(t)

    @classmethod
    def build(cls, score: np.ndarray, logit: np.ndarray, thresholds: list[float]) -> "KeptSets":
        pairs = np.stack([-np.asarray(score, dtype=float), np.asarray(logit, dtype=float)], axis=1)
        distinct, counts = np.unique(pairs, axis=0, return_counts=True) if len(pairs) else (np.empty((0, 2)), np.empty(0, int))
        group_score = -distinct[:, 0]  # sorted descending
        groups_kept = np.array([int((group_score >= t - 1e-12).sum()) for t in thresholds], dtype=int)
        return cls(distinct[:, 1], counts, groups_kept)

    def kept(self) -> np.ndarray:
        cumulative = np.concatenate([[0], np.cumsum(self.counts)])
        return cumulative[self.groups_kept]

    def mean_probability(self, fits: np.ndarray) -> np.ndarray:
        """(fits x candidates): each fit's mean probability over each candidate's kept set
        (NaN where a candidate keeps nothing)."""
        kept = self.kept()
        out = np.full((fits.shape[0], len(self.groups_kept)), np.nan)
        if not len(self.counts):
            return out
        # (groups x candidates): a group's traces count towards every candidate that keeps it.
        membership = (np.arange(len(self.counts))[:, None] < self.groups_kept[None, :]) * self.counts[:, None].astype(float)
        chunk = max(1, _CELLS_PER_CHUNK // len(self.counts))
        for start in range(0, fits.shape[0], chunk):
            part = fits[start : start + chunk]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + chunk] = (_sigmoid(part[:, :1] * self.logits[None, :] + part[:, 1:]) @ membership) / kept
        return out


@dataclass(frozen=True)
class SideEstimate:
    """One side's Platt fit and, per candidate, the estimated precision of K(t) and its bounds."""

    reviewed: int
    bad: int
    platt: tuple[float, float]
    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def estimate_side(
    kept_sets: KeptSets,
    logit: np.ndarray,
    good: np.ndarray,
    *,
    samples: int,
    lower_quantile: float,
    seed: tuple[int, ...],
    review_error: float = 0.0,
) -> SideEstimate:
    """Fit on one side's reviewed traces, bootstrap them ``samples`` times; per candidate the point
    estimate and the ``lower_quantile`` / ``1 - lower_quantile`` quantiles of the resampled means.

    ``review_error``: the share of review verdicts that are wrong either way. The calibrator learns
    P(a reviewer says good) = (1 - e) P(good) + e (1 - P(good)), so every mean is mapped back to
    P(good) = (mean - e) / (1 - 2e) (monotone: the quantiles map the same way)."""
    n = len(good)
    rng = np.random.default_rng(list(seed))
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)
    # Reviews with the same (logit, outcome) are one weighted point: the same likelihood, less work.
    pairs, inverse = np.unique(np.stack([np.asarray(logit, float), np.asarray(good, float)], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(pairs)))
    point = fit_platt(pairs[:, 0], pairs[:, 1], np.bincount(inverse, minlength=len(pairs))[None, :])
    resampled = fit_platt(pairs[:, 0], pairs[:, 1], np.add.reduceat(counts[:, order], starts, axis=1))
    means = _without_review_error(kept_sets.mean_probability(resampled), review_error)
    with np.errstate(invalid="ignore"):
        lower, upper = np.quantile(means, [lower_quantile, 1.0 - lower_quantile], axis=0)
    return SideEstimate(
        reviewed=n,
        bad=int(n - np.sum(good)),
        platt=(float(point[0, 0]), float(point[0, 1])),
        estimate=_without_review_error(kept_sets.mean_probability(point)[0], review_error),
        lower=lower,
        upper=upper,
    )


def _without_review_error(reviewed_good: np.ndarray, error: float) -> np.ndarray:
    if error == 0.0:
        return reviewed_good
    return np.clip((reviewed_good - error) / (1.0 - 2.0 * error), 0.0, 1.0)


def side_seed(base: int, task_type: str, side: str) -> tuple[int, ...]:
    """A bootstrap seed per task type and side: reruns draw the same resamples."""
    return (base, zlib.crc32(task_type.encode("utf-8")), zlib.crc32(side.encode("utf-8")))
