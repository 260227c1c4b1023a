"""Threshold experiments: sweep, plot precision against volume, log one MLflow run per candidate."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from loop_pipeline.core import scoring
from loop_pipeline.core.storage import write_file_atomic
from loop_pipeline.core.tracking import TrackingTarget, log_run


def _plot_task(axis: Any, task_type: str, entry: Mapping[str, Any], target: float) -> list[float]:
    """One task type's panel; returns the plotted lower values (for the y range)."""
    rows = entry["candidates"]
    kept = [c["kept"] for c in rows]
    reviewed = [c for c in rows if c["reviewed_kept"]]
    axis.fill_between(
        [c["kept"] for c in reviewed], [c["precision_low"] for c in reviewed], [c["precision_high"] for c in reviewed],
        alpha=0.18, label="Wilson interval (reviewed traces kept)",
    )
    axis.plot([c["kept"] for c in reviewed], [c["precision"] for c in reviewed], marker="o", markersize=3, linewidth=0.8, label="precision vs human review")
    lows = [c["precision_low"] for c in reviewed]
    if rows and rows[0].get("estimated_precision") is not None:
        axis.plot(kept, [c["estimated_precision"] for c in rows], color="purple", label="model estimate (certification side)")
        axis.plot(kept, [c["estimated_low"] for c in rows], color="purple", linestyle="--", label="its lower bound (certifies)")
        axis.plot(kept, [c["selection_low"] for c in rows], color="orange", linestyle=":", label="selection side's lower bound")
        lows += [c["estimated_low"] for c in rows] + [c["selection_low"] for c in rows]
    if rows and "true_precision" in rows[0]:
        axis.plot(kept, [c["true_precision"] for c in rows], color="black", linestyle="-.", linewidth=0.8, label="true precision (simulator gold)")
    axis.axhline(target, color="grey", linewidth=1, linestyle=":", label=f"target {target:.2f}")
    if entry["chosen"]:
        axis.axvline(entry["chosen"]["kept"], color="green", linewidth=1, label=f"certified t={entry['chosen']['threshold']:.3f}")
    elif entry["selected"]:
        axis.axvline(entry["selected"]["kept"], color="red", linewidth=1, label=f"selected, not certified t={entry['selected']['threshold']:.3f}")
    sides = entry["sides"]
    axis.set_title(
        f"{task_type} ({entry['rule']}): reviews {sides['selection']['reviewed']} ({sides['selection']['bad']} bad) select, "
        f"{sides['certification']['reviewed']} ({sides['certification']['bad']} bad) certify; {entry['traces']} traces",
        fontsize=8,
    )
    return [v for v in lows if v is not None]


def plot_precision_volume(sweep: Mapping[str, Mapping[str, Any]], target: float, path: Path) -> Path:
    """Per task type against kept volume: the model-based precision estimate of the certification
    side and its lower bound, the selection side's lower bound, the Wilson band on the reviewed
    traces kept, the certified (or selected) threshold, and the simulator's true precision when the
    traces carry gold answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(sweep)
    figure, axes = plt.subplots(1, max(len(tasks), 1), figsize=(6.5 * max(len(tasks), 1), 4.6), squeeze=False)
    for axis, task_type in zip(axes[0], tasks):
        lows = _plot_task(axis, task_type, sweep[task_type], target)
        axis.set_xlabel("kept examples")
        axis.set_ylabel("precision")
        axis.set_ylim(max(0.0, min([target - 0.1] + lows)), 1.005)
        axis.legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    # Atomically: a reader (the asset's metadata, `--plot`) never finds half a PNG after a crash.
    write_file_atomic(path, lambda temporary: figure.savefig(temporary, dpi=110, format=path.suffix.lstrip(".") or "png"))
    plt.close(figure)
    return path


def sweep_and_log(
    scored: pl.DataFrame,
    model: scoring.QualityModel,
    config: scoring.ScoringConfig,
    tracking: TrackingTarget | None,
    plot_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sweep thresholds per task type, plot, and (unless ``tracking`` is None) log to MLflow:
    a parent run with the plot, the rules and each side's review counts, one child run per
    candidate threshold. ``thresholds`` holds :func:`scoring.summarize_sweep`'s entries."""
    say = progress or (lambda _: None)
    sweep = scoring.sweep_thresholds(scored, config)
    with tempfile.TemporaryDirectory() as scratch:
        plot = plot_precision_volume(sweep, config.precision_target, plot_path or Path(scratch) / "precision_vs_volume.png")
        result: dict[str, Any] = {
            "thresholds": scoring.summarize_sweep(sweep),
            "fallback": config.fallback,
            "calibration": {
                "method": model.method,
                "weights_version": model.weights_version,
                "n_reviewed": model.n_reviewed,
                "n_reviewed_bad": model.n_reviewed_bad,
                **model.metrics,
                "note": model.note,
            },
            "comparison": scoring.compare_filters(scored, scoring.keep_rules(sweep)),
            "candidates": sum(len(entry["candidates"]) for entry in sweep.values()),
        }
        if plot_path is not None:
            result["plot"] = str(plot)
        if tracking is not None:
            result["mlflow"] = _log_sweep(sweep, result, config, tracking, plot, say)
    return result


def _log_sweep(
    sweep: Mapping[str, Mapping[str, Any]],
    result: Mapping[str, Any],
    config: scoring.ScoringConfig,
    tracking: TrackingTarget,
    plot: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    client = tracking.client()
    experiment_id = tracking.experiment_id(client, config.mlflow_experiment)
    with tempfile.TemporaryDirectory() as scratch:
        summary_file = Path(scratch) / "threshold_summary.json"
        summary_file.write_text(json.dumps(result, indent=2, sort_keys=True, default=str), encoding="utf-8")
        calibration = result["calibration"]
        parent = log_run(
            client,
            experiment_id,
            run_name=f"sweep-{config.weights_version}",
            params={
                "weights_version": config.weights_version,
                "calibration": calibration["method"],
                "precision_target": config.precision_target,
                "interval_confidence": config.interval_confidence,
                "selection_fraction": config.selection_fraction,
                "selection_strictness": config.selection_strictness,
                "bootstrap_samples": config.bootstrap_samples,
                "fallback": config.fallback,
            },
            metrics={
                **_side_metrics(result["thresholds"]),
                "n_reviewed": calibration["n_reviewed"],
                "brier_held_out": calibration.get("brier_held_out"),
                "ece_held_out": calibration.get("ece_held_out"),
                "brier_uncalibrated": calibration.get("brier_uncalibrated"),
            },
            tags={"loop.kind": "threshold_sweep", **{f"loop.rule.{t}": e["rule"] for t, e in result["thresholds"].items()}},
            artifacts=[plot, summary_file],
        )
    runs = 0
    for task_type, entry in sweep.items():
        chosen = (entry["chosen"] or {}).get("threshold")
        selected = (entry["selected"] or {}).get("threshold")
        for candidate in entry["candidates"]:
            log_run(
                client,
                experiment_id,
                run_name=f"{task_type}@{candidate['threshold']:.4f}",
                params={
                    "threshold": round(candidate["threshold"], 6),
                    "task_type": task_type,
                    "weights_version": config.weights_version,
                },
                metrics={
                    "kept": candidate["kept"],
                    "kept_share": candidate["kept_share"],
                    "reviewed_kept": candidate["reviewed_kept"],
                    "precision": candidate["precision"],
                    "precision_low": candidate["precision_low"],
                    "precision_high": candidate["precision_high"],
                    "recall": candidate["recall"],
                    "true_precision": candidate.get("true_precision"),
                    **{k: candidate.get(k) for k in ("selection_estimate", "selection_low", "estimated_precision", "estimated_low", "estimated_high")},
                },
                tags={
                    "mlflow.parentRunId": parent,
                    "loop.kind": "threshold_candidate",
                    "loop.chosen": str(candidate["threshold"] == chosen).lower(),
                    "loop.selected": str(candidate["threshold"] == selected).lower(),
                },
            )
            runs += 1
    say(f"logged {runs} threshold runs to MLflow experiment {config.mlflow_experiment!r} ({tracking.tracking_uri})")
    return {
        "tracking_uri": tracking.tracking_uri,
        "experiment": config.mlflow_experiment,
        "experiment_id": experiment_id,
        "parent_run_id": parent,
        "candidate_runs": runs,
    }


def _side_metrics(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Reviews (and bad ones) on each side, per task type: how much each decision rests on."""
    return {
        f"{task_type}.{side}_{count}": entry[side][count]
        for task_type, entry in summary.items()
        for side in ("selection", "certification")
        for count in ("reviewed", "bad")
    }
