"""`loop thresholds sweep` outside Dagster: the same steps as the scoring assets, in one call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import polars as pl

from loop_pipeline.core import scoring
from loop_pipeline.core.thresholds import sweep_and_log
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.schemas import FeedbackSchema, empty_frame
from loop_pipeline.settings import paths


def load_traces_and_feedback(folder: Path | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """From a `loop ingest --out` folder (traces/, feedback/), or LOOP_HOME's ingested tables."""
    if folder is not None:
        traces_glob, feedback_glob = Path(folder) / "traces", Path(folder) / "feedback"
    else:
        warehouse = paths().warehouse
        traces_glob, feedback_glob = warehouse / "raw_traces", warehouse / "feedback_events"
    traces_files = sorted(traces_glob.rglob("*.parquet")) if traces_glob.is_dir() else []
    if not traces_files:
        hint = "run `loop ingest --out DIR` first" if folder else "run `loop demo` or `loop materialize` first"
        raise FileNotFoundError(f"no trace tables under {traces_glob}: {hint}")
    feedback_files = sorted(feedback_glob.rglob("*.parquet")) if feedback_glob.is_dir() else []
    traces = pl.concat([pl.read_parquet(p) for p in traces_files], how="vertical")
    if feedback_files:
        feedback = pl.concat([pl.read_parquet(p) for p in feedback_files], how="vertical")
    else:
        feedback = empty_frame(FeedbackSchema)
    # The same trace can land on two days; its score must not count it twice.
    return traces.unique("trace_id", keep="first", maintain_order=True), feedback


def run_sweep(
    traces: pl.DataFrame,
    feedback: pl.DataFrame,
    tracking: TrackingTarget | None,
    plot_path: Path | None = None,
    config: scoring.ScoringConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _: None)
    config = config or scoring.ScoringConfig.load()
    signals = scoring.trace_signals(traces, feedback, config=config)
    model = scoring.fit_quality_model(signals, config)
    say(model.note)
    scored = scoring.score_traces(signals, model, config)
    result = sweep_and_log(scored, model, config, tracking, plot_path=plot_path, progress=say)
    result["orphan_feedback_events"] = scoring.orphan_feedback(traces, feedback).height
    return result


def load_scored(
    folder: Path | None = None, progress: Callable[[str], None] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float | None], list[str]]:
    """Scored traces, raw traces, thresholds per task and source days.

    From a `loop ingest --out` folder: scored and swept here (no MLflow). Default: LOOP_HOME's
    scored_traces and score_thresholds (materialized by `loop demo` or the Dagster assets).
    """
    if folder is not None:
        traces, feedback = load_traces_and_feedback(folder)
        config = scoring.ScoringConfig.load()
        signals = scoring.trace_signals(traces, feedback, config=config)
        scored = scoring.score_traces(signals, scoring.fit_quality_model(signals, config), config)
        thresholds = scoring.chosen_thresholds(scoring.sweep_thresholds(scored, config))
        days = sorted(p.name.removeprefix("date=") for p in (Path(folder) / "traces").iterdir() if p.is_dir())
        return scored, traces, thresholds, days
    warehouse = paths().warehouse
    scored_files = sorted((warehouse / "scored_traces").glob("*.parquet"))
    thresholds_file = warehouse / "score_thresholds.json"
    if not scored_files or not thresholds_file.is_file():
        raise FileNotFoundError(
            f"no scored traces / thresholds under {warehouse}: run `loop demo` (or materialize the scoring assets), "
            "or pass --traces DIR"
        )
    scored = pl.concat([pl.read_parquet(p) for p in scored_files])
    raw = pl.concat([pl.read_parquet(p) for p in sorted((warehouse / "raw_traces").glob("*.parquet"))])
    thresholds = {k: v["threshold"] for k, v in json.loads(thresholds_file.read_text())["thresholds"].items()}
    return scored, raw.unique("trace_id", keep="first", maintain_order=True), thresholds, [p.stem for p in scored_files]
