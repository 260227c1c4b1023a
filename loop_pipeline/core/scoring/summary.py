"""What a sweep says, per task type: the summary entry that score_thresholds writes, one human line
for it, and the score distribution shown in Dagster."""

from __future__ import annotations

from typing import Any, Mapping

import polars as pl


def _kept_by_rule(entry: Mapping[str, Any]) -> int:
    if entry["rule"] == "score":
        return entry["chosen"]["kept"]
    return entry["fallback_acceptance_kept"] if entry["rule"] == "acceptance" else 0


def summarize_sweep(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task type: the ``rule`` it keeps outputs by (``score`` | ``acceptance`` | ``none``), the
    certified ``threshold`` (None without one), the configured ``fallback``, ``reason`` (None when
    certified), ``kept`` under the rule, the reviews on each side (``selection`` / ``certification``:
    ``reviewed``, ``bad``), the ``selected_threshold`` and, at it, the certification side's
    ``estimated_precision`` with its bootstrap ``precision_interval`` (lower end: the certified
    bound) next to the Wilson figures on all the reviewed traces kept (``reviewed_kept``,
    ``reviewed_precision``, ``wilson_interval``), and ``true_precision`` on simulated traffic."""
    summary = {}
    for task_type, entry in sweep.items():
        selected = entry["selected"]
        chosen = entry["chosen"]
        sides = {name: {k: counts[k] for k in ("reviewed", "bad")} for name, counts in entry["sides"].items()}
        summary[task_type] = {
            "rule": entry["rule"],
            "threshold": chosen["threshold"] if chosen else None,
            "fallback": entry["fallback"],
            "reason": entry["reason"],
            "kept": _kept_by_rule(entry),
            "traces": entry["traces"],
            "reviewed": entry["reviewed"],
            **sides,
            "selected_threshold": selected["threshold"] if selected else None,
            "estimated_precision": selected["estimated_precision"] if selected else None,
            "precision_interval": [selected["estimated_low"], selected["estimated_high"]] if selected else None,
            "reviewed_kept": selected["reviewed_kept"] if selected else None,
            "reviewed_precision": selected["precision"] if selected else None,
            "wilson_interval": [selected["precision_low"], selected["precision_high"]] if selected else None,
            **({"true_precision": selected.get("true_precision")} if selected and "true_precision" in selected else {}),
        }
    return summary


def _sides_text(entry: Mapping[str, Any]) -> str:
    selection, certification = entry["selection"], entry["certification"]
    return (
        f"selected on {selection['reviewed']} reviews ({selection['bad']} bad), "
        f"certified on {certification['reviewed']} ({certification['bad']} bad)"
    )


def describe_threshold(task_type: str, entry: Mapping[str, Any]) -> str:
    """One human line for a task type's entry of :func:`summarize_sweep`; a fallback is loud."""
    if entry.get("rule", "score" if entry["threshold"] is not None else "none") == "score":
        low, high = entry["precision_interval"]
        return (
            f"{task_type}: threshold {entry['threshold']:.3f} keeps {entry['kept']} of {entry['traces']}, "
            f"estimated precision {entry['estimated_precision']:.3f} [{low:.3f}, {high:.3f}], {_sides_text(entry)}"
        )
    if entry.get("rule") == "acceptance":
        outcome = f"FALLS BACK TO ACCEPTANCE: keeps the {entry['kept']} accepted, non-vetoed outputs of {entry['traces']}"
    else:
        outcome = "KEEPS NOTHING (fallback: none)"
    return f"{task_type}: NO CERTIFIED THRESHOLD, {outcome} ({entry['reason']})"


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
