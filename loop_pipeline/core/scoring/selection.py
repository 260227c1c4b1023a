"""Thresholds per task type: the loosest ``p_good`` threshold whose precision against human review
has a Wilson lower bound at or above the target, and how filters compare against simulator gold."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import polars as pl

from loop_pipeline.core.scoring.config import ScoringConfig
from loop_pipeline.core.scoring.signals import normalized


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


def _task_candidates(task: pl.DataFrame, config: ScoringConfig) -> list[dict[str, Any]]:
    """Every candidate threshold of one task type with its kept volume and precision."""
    # A vetoed trace is never kept: give it a score below every threshold.
    p = task.select(pl.when(~pl.col("vetoed")).then(pl.col("p_good_signals")).otherwise(-1.0)).to_series().to_numpy()
    is_reviewed = task.get_column("review_good").is_not_null().to_numpy()
    p_rev = p[is_reviewed]
    good_rev = task.filter(pl.col("review_good").is_not_null()).get_column("review_good").to_numpy().astype(bool)
    correct = None
    if task.get_column("sim_gold").is_not_null().all():
        correct = task.select(normalized(pl.col("output")) == normalized(pl.col("sim_gold"))).to_series().to_numpy()
    candidates = []
    for threshold in candidate_thresholds(p[p >= 0], config.max_candidate_thresholds):
        kept_mask = p >= threshold - 1e-12
        rev_mask = p_rev >= threshold - 1e-12
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
        if correct is not None:
            row["true_precision"] = float(correct[kept_mask].mean()) if kept_mask.any() else None
        candidates.append(row)
    return candidates


def sweep_thresholds(scored: pl.DataFrame, config: ScoringConfig) -> dict[str, dict[str, Any]]:
    """Per task type: every candidate threshold with its kept volume and estimated precision, and
    the chosen one (the loosest whose Wilson lower bound reaches the target), or None."""
    results: dict[str, dict[str, Any]] = {}
    for task_type in sorted(scored.get_column("task_type").drop_nulls().unique().to_list()):
        task = scored.filter(pl.col("task_type") == task_type)
        reviewed = int(task.get_column("review_good").is_not_null().sum())
        candidates = _task_candidates(task, config)
        passing = [c for c in candidates if c["reviewed_kept"] and c["precision_low"] >= config.precision_target]
        chosen = min(passing, key=lambda c: c["threshold"]) if passing else None
        results[task_type] = {
            "traces": task.height,
            "reviewed": reviewed,
            "candidates": candidates,
            "chosen": chosen,
            "reason": None
            if chosen
            else (
                f"no threshold reaches a Wilson lower bound of {config.precision_target} "
                f"with {reviewed} reviewed traces: review more, or lower the target"
            ),
        }
    return results


def chosen_thresholds(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    return {task: (entry["chosen"] or {}).get("threshold") for task, entry in sweep.items()}


def keep_mask(scored: pl.DataFrame, thresholds: Mapping[str, float | None]) -> pl.Expr:
    """Traces whose output is trusted: not vetoed, score at or above its task's threshold (a task
    without a threshold keeps nothing)."""
    expr = pl.lit(False)
    for task_type, threshold in thresholds.items():
        if threshold is not None:
            expr = expr | ((pl.col("task_type") == task_type) & (pl.col("p_good_signals") >= threshold - 1e-12))
    return expr & ~pl.col("vetoed")


def compare_filters(scored: pl.DataFrame, thresholds: Mapping[str, float | None]) -> dict[str, dict[str, Any]] | None:
    """Kept volume and true error rate (against the simulator's gold) of three filters:
    none, user acceptance only, and the fused score at the chosen thresholds."""
    if scored.height == 0 or scored.get_column("sim_gold").is_null().any():
        return None
    wrong = normalized(pl.col("output")) != normalized(pl.col("sim_gold"))
    filters = {"none": pl.lit(True), "acceptance": pl.col("accepted"), "fused": keep_mask(scored, thresholds)}
    out = {}
    for name, mask in filters.items():
        kept = scored.filter(mask)
        errors = kept.select(wrong.sum()).item() if kept.height else 0
        out[name] = {"kept": kept.height, "true_error_rate": errors / kept.height if kept.height else None}
    return out


def summarize_sweep(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task type: chosen threshold, kept count, estimated precision and its interval."""
    summary = {}
    for task_type, entry in sweep.items():
        chosen = entry["chosen"]
        summary[task_type] = {
            "threshold": chosen["threshold"] if chosen else None,
            "kept": chosen["kept"] if chosen else 0,
            "traces": entry["traces"],
            "reviewed": entry["reviewed"],
            "estimated_precision": chosen["precision"] if chosen else None,
            "precision_interval": [chosen["precision_low"], chosen["precision_high"]] if chosen else None,
            **({"true_precision": chosen.get("true_precision")} if chosen and "true_precision" in chosen else {}),
            **({} if chosen else {"reason": entry["reason"]}),
        }
    return summary


def describe_threshold(task_type: str, entry: Mapping[str, Any]) -> str:
    """One human line for a task type's entry of :func:`summarize_sweep`."""
    if entry["threshold"] is None:
        return f"{task_type}: no threshold ({entry['reason']})"
    low, high = entry["precision_interval"]
    return (
        f"{task_type}: threshold {entry['threshold']:.3f} keeps {entry['kept']} of {entry['traces']}, "
        f"estimated precision {entry['estimated_precision']:.3f} [{low:.3f}, {high:.3f}]"
    )


def score_distribution(scored: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per task type: count and quantiles of p_good (for Dagster metadata)."""
    out: dict[str, dict[str, float]] = {}
    for (task_type,), group in scored.group_by(["task_type"], maintain_order=True):
        p = group.get_column("p_good")
        out[str(task_type)] = {
            "count": group.height,
            "mean": round(float(p.mean()), 4),
            **{f"p{int(q * 100)}": round(float(p.quantile(q, "nearest")), 4) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
            "reviewed": int(group.get_column("reviewed").sum()),
        }
    return dict(sorted(out.items()))
