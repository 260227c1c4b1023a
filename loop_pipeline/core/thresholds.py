"""Threshold experiments: sweep, plot precision against volume, log one MLflow run per candidate."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from loop_pipeline.core import scoring
from loop_pipeline.core.tracking import TrackingTarget, log_run


def plot_precision_volume(sweep: Mapping[str, Mapping[str, Any]], target: float, path: Path) -> Path:
    """Per task type: estimated precision (Wilson band) against kept volume, the chosen threshold
    marked, and the simulator's true precision when the traces carry gold answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(sweep)
    figure, axes = plt.subplots(1, max(len(tasks), 1), figsize=(6 * max(len(tasks), 1), 4.2), squeeze=False)
    for axis, task_type in zip(axes[0], tasks):
        rows = [c for c in sweep[task_type]["candidates"] if c["reviewed_kept"]]
        kept = [c["kept"] for c in rows]
        axis.fill_between(kept, [c["precision_low"] for c in rows], [c["precision_high"] for c in rows], alpha=0.25, label="Wilson interval")
        axis.plot(kept, [c["precision"] for c in rows], marker="o", markersize=3, label="precision vs human review")
        if rows and "true_precision" in rows[0]:
            axis.plot(kept, [c["true_precision"] for c in rows], linestyle="--", label="true precision (simulator gold)")
        axis.axhline(target, color="grey", linewidth=1, linestyle=":", label=f"target {target:.2f}")
        chosen = sweep[task_type]["chosen"]
        if chosen:
            axis.axvline(chosen["kept"], color="green", linewidth=1, label=f"chosen t={chosen['threshold']:.3f}")
        axis.set_title(f"{task_type}: {sweep[task_type]['reviewed']} reviewed of {sweep[task_type]['traces']}")
        axis.set_xlabel("kept examples")
        axis.set_ylabel("precision")
        axis.set_ylim(max(0.0, min([target - 0.1] + [c["precision_low"] for c in rows])), 1.005)
        axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
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
    a parent run with the plot and the chosen thresholds, one child run per candidate threshold."""
    say = progress or (lambda _: None)
    sweep = scoring.sweep_thresholds(scored, config)
    thresholds = scoring.chosen_thresholds(sweep)
    with tempfile.TemporaryDirectory() as scratch:
        plot = plot_precision_volume(sweep, config.precision_target, plot_path or Path(scratch) / "precision_vs_volume.png")
        result: dict[str, Any] = {
            "thresholds": scoring.summarize_sweep(sweep),
            "calibration": {
                "method": model.method,
                "weights_version": model.weights_version,
                "n_reviewed": model.n_reviewed,
                "n_reviewed_bad": model.n_reviewed_bad,
                **model.metrics,
                "note": model.note,
            },
            "comparison": scoring.compare_filters(scored, thresholds),
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
            },
            metrics={
                "n_reviewed": calibration["n_reviewed"],
                "brier_held_out": calibration.get("brier_held_out"),
                "ece_held_out": calibration.get("ece_held_out"),
                "brier_uncalibrated": calibration.get("brier_uncalibrated"),
            },
            tags={"loop.kind": "threshold_sweep"},
            artifacts=[plot, summary_file],
        )
    runs = 0
    for task_type, entry in sweep.items():
        chosen = (entry["chosen"] or {}).get("threshold")
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
                },
                tags={
                    "mlflow.parentRunId": parent,
                    "loop.kind": "threshold_candidate",
                    "loop.chosen": str(candidate["threshold"] == chosen).lower(),
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
