"""Thresholds per task type, chosen on one part of the human-reviewed traces and certified on the
other (:mod:`.certify`), and the rule each task type keeps its outputs by: ``score`` (a certified
threshold), or the configured fallback, ``acceptance`` (accepted and not vetoed) or ``none``."""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Union

import numpy as np
import polars as pl

from loop_pipeline.core.scoring.certify import KeptSets, SideEstimate, estimate_side, selection_side, side_seed
from loop_pipeline.core.scoring.config import ScoringConfig
from loop_pipeline.core.scoring.signals import normalized

# What keep_mask takes per task type: a score threshold, "acceptance", or None (keeps nothing).
KeepRule = Union[float, Literal["acceptance"], None]
_TOLERANCE = 1e-12


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def candidate_thresholds(p: np.ndarray, limit: int) -> list[float]:
    """Distinct score values (the only places where the kept set changes), thinned to ``limit``.

    Truncated (not rounded) to 6 decimals: a threshold rounded up above its own score would keep
    none of the traces at that score."""
    values = np.unique(np.floor(np.asarray(p, dtype=float) * 1e6) / 1e6)
    if len(values) > limit:
        values = np.unique(np.quantile(values, np.linspace(0, 1, limit)))
    return [float(v) for v in values]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _wilson_rows(task: pl.DataFrame, thresholds: list[float], config: ScoringConfig) -> list[dict[str, Any]]:
    """Per candidate: kept volume and precision against ALL the task's reviewed traces it keeps
    (the old figures, which a reader can check by hand; no longer what decides)."""
    p = task.select(pl.when(~pl.col("vetoed")).then(pl.col("p_good_signals")).otherwise(-1.0)).to_series().to_numpy()
    reviewed = task.get_column("review_good").is_not_null().to_numpy()
    p_rev = p[reviewed]
    good_rev = task.filter(pl.col("review_good").is_not_null()).get_column("review_good").to_numpy().astype(bool)
    correct = None
    if task.get_column("sim_gold").is_not_null().all():
        correct = task.select(normalized(pl.col("output")) == normalized(pl.col("sim_gold"))).to_series().to_numpy()
    rows = []
    for threshold in thresholds:
        kept_mask = p >= threshold - _TOLERANCE
        rev_mask = p_rev >= threshold - _TOLERANCE
        n_rev, n_good = int(rev_mask.sum()), int(good_rev[rev_mask].sum())
        low, high = wilson_interval(n_good, n_rev, config.interval_confidence)
        row = {
            "threshold": threshold,
            "kept": int(kept_mask.sum()),
            "kept_share": float(kept_mask.mean()) if len(p) else 0.0,
            "reviewed_kept": n_rev,
            "precision": n_good / n_rev if n_rev else None,
            "precision_low": low,
            "precision_high": high,
            "recall": n_good / int(good_rev.sum()) if good_rev.any() else None,
        }
        if correct is not None:  # measured against the simulator's gold: never decides anything
            row["true_precision"] = float(correct[kept_mask].mean()) if kept_mask.any() else None
        rows.append(row)
    return rows


def _side_counts(good: np.ndarray) -> dict[str, int]:
    return {"reviewed": int(len(good)), "bad": int(len(good) - good.sum())}


def _too_few_reviews(sides: Mapping[str, dict[str, int]], config: ScoringConfig) -> str | None:
    short = [
        f"{name} side has {counts['reviewed']} reviewed ({counts['bad']} bad)"
        for name, counts in sides.items()
        if counts["reviewed"] < config.min_reviewed_per_side or counts["bad"] < config.min_bad_per_side
    ]
    if not short:
        return None
    return (
        f"too few reviews to select and certify a threshold: {' and '.join(short)}; each side needs "
        f">= {config.min_reviewed_per_side} reviewed with >= {config.min_bad_per_side} bad"
    )


def _reviews(task: pl.DataFrame, config: ScoringConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The task's reviewed traces: logit, review outcome, and True where the trace selects."""
    reviewed = task.filter(pl.col("review_good").is_not_null())
    selecting = selection_side(reviewed.get_column("trace_id").to_list(), config.selection_fraction)
    return reviewed.get_column("logit").to_numpy(), reviewed.get_column("review_good").to_numpy().astype(bool), selecting


def _estimate_sides(
    task_type: str, task: pl.DataFrame, thresholds: list[float], reviews: tuple[np.ndarray, np.ndarray, np.ndarray], config: ScoringConfig
) -> tuple[SideEstimate, SideEstimate]:
    """Both sides' model-based estimates for every candidate: the selection side at its stricter
    quantile, the certification side at the stated one."""
    alpha = (1.0 - config.interval_confidence) / 2
    kept = task.filter(~pl.col("vetoed"))
    kept_sets = KeptSets.build(kept.get_column("p_good_signals").to_numpy(), kept.get_column("logit").to_numpy(), thresholds)
    logit, good, selecting = reviews
    estimates = []
    for side, rows, quantile in (("selection", selecting, alpha / config.selection_strictness), ("certification", ~selecting, alpha)):
        estimates.append(
            estimate_side(
                kept_sets,
                logit[rows],
                good[rows],
                samples=config.bootstrap_samples,
                lower_quantile=quantile,
                seed=side_seed(config.bootstrap_seed, task_type, side),
                review_error=config.review_error_rate,
            )
        )
    return estimates[0], estimates[1]


def _add_estimates(candidates: list[dict[str, Any]], selection: SideEstimate, certification: SideEstimate) -> None:
    for index, row in enumerate(candidates):
        row["selection_estimate"] = _finite(selection.estimate[index])
        row["selection_low"] = _finite(selection.lower[index])
        row["estimated_precision"] = _finite(certification.estimate[index])
        row["estimated_low"] = _finite(certification.lower[index])
        row["estimated_high"] = _finite(certification.upper[index])


def _select_and_certify(
    candidates: list[dict[str, Any]], sides: Mapping[str, Mapping[str, Any]], config: ScoringConfig
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """(selected, certified, reason). The selection side proposes the candidates whose bound
    reaches the target there, ordered strict to loose; the certification side tests them in that
    order, each at the stated level, and stops at the first that fails (fixed-sequence testing:
    the order does not depend on the certification side's reviews, so the loosest certified one
    keeps the stated confidence). ``selected`` is the selection side's loosest proposal."""
    target = config.precision_target
    proposed = sorted((row for row in candidates if (row["selection_low"] or 0.0) >= target), key=lambda row: -row["threshold"])
    if not proposed:
        counts = sides["selection"]
        return None, None, f"no threshold's lower bound reaches {target} on the selection side ({counts['reviewed']} reviewed, {counts['bad']} bad)"
    certified = None
    for row in proposed:
        if (row["estimated_low"] or 0.0) < target:
            break
        certified = row
    selected = proposed[-1]
    if certified is not None:
        return selected, certified, None
    first, checked_on = proposed[0], sides["certification"]
    return selected, None, (
        f"{len(proposed)} thresholds proposed on {sides['selection']['reviewed']} reviews, none certified: the strictest, "
        f"{first['threshold']:.4f}, has a lower bound of {first['estimated_low']:.4f} < {target} on the other "
        f"{checked_on['reviewed']} ({checked_on['bad']} bad)"
    )


def _sweep_task(task_type: str, task: pl.DataFrame, config: ScoringConfig) -> dict[str, Any]:
    """One task type: candidates with both sides' estimates, the selected threshold, whether the
    certification side certifies it, and the rule the task keeps its outputs by."""
    if "logit" not in task.columns:
        raise ValueError("scored traces need the logit column that score_traces adds (the calibrator refits on it)")
    thresholds = candidate_thresholds(task.filter(~pl.col("vetoed")).get_column("p_good_signals").to_numpy(), config.max_candidate_thresholds)
    candidates = _wilson_rows(task, thresholds, config)
    reviews = _reviews(task, config)
    _, good, selecting = reviews
    sides: dict[str, dict[str, Any]] = {"selection": _side_counts(good[selecting]), "certification": _side_counts(good[~selecting])}
    reason = _too_few_reviews(sides, config) or (None if candidates else "every trace is vetoed: nothing to keep")
    selected = chosen = None
    if reason is None:
        selection, certification = _estimate_sides(task_type, task, thresholds, reviews, config)
        sides["selection"]["platt"] = list(selection.platt)
        sides["certification"]["platt"] = list(certification.platt)
        _add_estimates(candidates, selection, certification)
        selected, chosen, reason = _select_and_certify(candidates, sides, config)
    return {
        "traces": task.height,
        "reviewed": int(len(good)),
        "sides": sides,
        "candidates": candidates,
        "selected": selected,
        "chosen": chosen,
        "rule": "score" if chosen else config.fallback,
        "fallback": config.fallback,
        "fallback_acceptance_kept": task.filter(pl.col("accepted") & ~pl.col("vetoed")).height,  # what the acceptance fallback keeps
        "reason": reason,
    }


def sweep_thresholds(scored: pl.DataFrame, config: ScoringConfig) -> dict[str, dict[str, Any]]:
    """Per task type: every candidate threshold with its kept volume, both sides' model-based
    precision estimates and the Wilson figures on the reviewed traces it keeps; the threshold
    selected on one side, ``chosen`` when the other side certifies it (else None), the ``rule``
    (``score`` or the configured fallback) and, without a certified threshold, the ``reason``."""
    return {
        task_type: _sweep_task(task_type, scored.filter(pl.col("task_type") == task_type), config)
        for task_type in sorted(scored.get_column("task_type").drop_nulls().unique().to_list())
    }


def chosen_thresholds(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """The certified threshold per task type (None where there is none)."""
    return {task: (entry["chosen"] or {}).get("threshold") for task, entry in sweep.items()}


def keep_rule(entry: Mapping[str, Any]) -> KeepRule:
    """What :func:`keep_mask` takes for one task type's entry (of a sweep or its summary): the
    threshold when the rule is ``score``, ``"acceptance"``, or None. An entry written before rules
    existed has only its threshold."""
    rule = entry.get("rule", "score" if entry.get("threshold") is not None else "none")
    if rule == "score":
        threshold = entry.get("threshold", (entry.get("chosen") or {}).get("threshold"))
        return float(threshold) if threshold is not None else None
    return "acceptance" if rule == "acceptance" else None


def keep_rules(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, KeepRule]:
    return {task: keep_rule(entry) for task, entry in sweep.items()}


def keep_mask(scored: pl.DataFrame, rules: Mapping[str, KeepRule]) -> pl.Expr:
    """Traces whose output is trusted, per task type: never a vetoed one; with a threshold, a score
    at or above it; with ``"acceptance"``, an output the user accepted; with None, nothing."""
    expr = pl.lit(False)
    for task_type, rule in rules.items():
        this_task = pl.col("task_type") == task_type
        if rule == "acceptance":
            expr = expr | (this_task & pl.col("accepted"))
        elif rule is not None:
            expr = expr | (this_task & (pl.col("p_good_signals") >= float(rule) - _TOLERANCE))
    return expr & ~pl.col("vetoed")


def _top_by_score(scored: pl.DataFrame, volume: Mapping[str, int]) -> pl.DataFrame:
    """Per task type, its ``volume`` non-vetoed traces with the highest p_good_signals."""
    parts = [
        scored.filter((pl.col("task_type") == task) & ~pl.col("vetoed")).sort("p_good_signals", descending=True, maintain_order=True).head(n)
        for task, n in volume.items()
    ]
    return pl.concat(parts) if parts else scored.clear()


def compare_filters(scored: pl.DataFrame, rules: Mapping[str, KeepRule]) -> dict[str, dict[str, Any]] | None:
    """Kept volume and true error rate against the simulator's gold (only when every trace has
    one; gold decides nothing) of: ``none``; ``acceptance`` (what the user accepted: the filter a
    team has without this loop, no other signal); ``fused`` (each task type's rule); and the fused
    score at acceptance's kept volume per task type, all of it (``fused_at_acceptance_volume``) and
    ceil(95%) of it (``fused_at_95pct_acceptance_volume``)."""
    if scored.height == 0 or scored.get_column("sim_gold").is_null().any():
        return None
    wrong = normalized(pl.col("output")) != normalized(pl.col("sim_gold"))
    tasks = sorted(scored.get_column("task_type").drop_nulls().unique().to_list())
    acceptance = scored.filter(pl.col("accepted"))
    volume = {task: acceptance.filter(pl.col("task_type") == task).height for task in tasks}
    kept_sets = {
        "none": scored,
        "acceptance": acceptance,
        "fused": scored.filter(keep_mask(scored, rules)),
        "fused_at_acceptance_volume": _top_by_score(scored, volume),
        "fused_at_95pct_acceptance_volume": _top_by_score(scored, {t: math.ceil(0.95 * n) for t, n in volume.items()}),
    }
    out = {}
    for name, kept in kept_sets.items():
        errors = kept.select(wrong.sum()).item() if kept.height else 0
        out[name] = {"kept": kept.height, "true_error_rate": errors / kept.height if kept.height else None}
    return out
