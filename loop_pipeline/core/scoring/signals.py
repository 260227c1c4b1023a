"""Signals per trace: feedback joined by ``trace_id`` (also when it lands days later), the human
review outcome, and the cheap per-task heuristics of ``configs/tasks.yaml``."""

from __future__ import annotations

import difflib

import polars as pl

from loop_pipeline.core.scoring.config import USER_ACTIONS, ScoringConfig
from loop_pipeline.core.tasks import TasksConfig


def normalized(expr: pl.Expr) -> pl.Expr:
    """Text compared the way outputs, labels and gold answers are: trimmed and lowercased."""
    return expr.str.strip_chars().str.to_lowercase()


def heuristic_failures(tasks: TasksConfig, config: ScoringConfig) -> pl.Expr:
    """Why an output fails its task's cheap checks (null when it passes)."""
    output = pl.col("output")
    rules: list[tuple[pl.Expr, str]] = [(output.str.strip_chars() == "", "empty_output")]
    if config.refusal_patterns:
        pattern = "(?i)" + "|".join(f"(?:{p})" for p in config.refusal_patterns)
        rules.append((output.str.contains(pattern), "refusal"))
    for spec in tasks.tasks.values():
        this_task = pl.col("task_type") == spec.name
        if spec.kind == "classification" and spec.labels:
            allowed = [label.lower() for label in (*spec.labels, *spec.escalation_labels)]
            rules.append((this_task & ~normalized(output).is_in(allowed), "label_not_allowed"))
        if spec.kind == "extraction":
            is_object = output.str.json_path_match("$").str.starts_with("{").fill_null(False)
            rules.append((this_task & ~is_object, "invalid_json"))
        if spec.kind == "summarization":
            words = output.str.split(" ").list.len()
            if spec.min_words is not None:
                rules.append((this_task & (words < spec.min_words), "too_short"))
            if spec.max_words is not None:
                rules.append((this_task & (words > spec.max_words), "too_long"))
    chain = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
    for condition, name in rules[1:]:
        chain = chain.when(condition).then(pl.lit(name))
    return chain.otherwise(pl.lit(None, dtype=pl.String))


def _feedback_per_trace(traces: pl.DataFrame, feedback: pl.DataFrame, config: ScoringConfig) -> pl.DataFrame:
    """One row per trace with feedback inside the lookback: user actions, flags, judge, review."""
    low, high = config.judge_score_range
    lookback = pl.duration(days=config.feedback_lookback_days)
    # Calendar days, like the partitions: feedback landing up to N days after the trace's day counts.
    events = (
        feedback.join(
            traces.select("trace_id", pl.col("timestamp").alias("_trace_at"), pl.col("output").alias("_output")),
            on="trace_id",
            how="inner",
        )
        .filter(pl.col("timestamp").dt.date() <= (pl.col("_trace_at") + lookback).dt.date())
        .sort("timestamp", "feedback_id")
    )
    user = pl.col("source") != "human_reviewer"
    kind = pl.col("kind")
    return events.group_by("trace_id").agg(
        (user & (kind == "accepted")).any().alias("accepted"),
        (user & (kind == "copied")).any().alias("copied"),
        (user & (kind == "thumbs") & (pl.col("value") >= 0.5)).any().alias("thumbs_up"),
        (user & (kind == "thumbs") & (pl.col("value") < 0.5)).any().alias("thumbs_down"),
        (user & (kind == "edited")).any().alias("edited"),
        pl.col("edited_output").filter(user & (kind == "edited")).last().alias("edited_output"),
        (user & (kind == "rejected")).any().alias("rejected"),
        (user & (kind == "regenerated")).any().alias("regenerated"),
        ((kind == "hallucination") & pl.col("value").fill_null(1.0).ge(0.5)).any().alias("hallucination"),
        ((pl.col("value").filter(kind == "judge_score") - low) / (high - low)).mean().alias("judge_score"),
        (kind == "human_label").any().alias("reviewed"),
        pl.col("value").filter(kind == "human_label").last().alias("_review_value"),
        pl.col("label").filter(kind == "human_label").last().alias("review_label"),
        pl.len().alias("feedback_events"),
        pl.col("timestamp").max().alias("last_feedback_at"),
    )


def trace_signals(
    traces: pl.DataFrame, feedback: pl.DataFrame, config: ScoringConfig, tasks: TasksConfig
) -> pl.DataFrame:
    """One row per trace: its feedback signals, heuristics and human review outcome.

    Feedback later than ``feedback_lookback_days`` after its trace is not used; feedback whose
    trace is not among ``traces`` is left alone (see :func:`orphan_feedback`).
    """
    gold = pl.col("metadata").str.json_path_match("$.gold")
    frame = traces.select(
        "trace_id",
        "timestamp",
        "task_type",
        "user_id",
        "output",
        # The simulator's gold answer: for measuring only, never an input to the score.
        gold.alias("sim_gold"),
    ).join(_feedback_per_trace(traces, feedback, config), on="trace_id", how="left", maintain_order="left")
    flags = [*USER_ACTIONS, "hallucination", "reviewed"]
    frame = frame.with_columns([pl.col(name).fill_null(False) for name in flags] + [pl.col("feedback_events").fill_null(0)])
    review_good = pl.when(pl.col("_review_value").is_not_null()).then(pl.col("_review_value") >= 0.5).otherwise(
        normalized(pl.col("review_label")) == normalized(pl.col("output"))
    )
    frame = frame.with_columns(
        ~pl.any_horizontal([pl.col(name) for name in USER_ACTIONS]).alias("no_action"),
        pl.when(pl.col("reviewed")).then(review_good).alias("review_good"),
        heuristic_failures(tasks, config).alias("heuristic"),
        _edit_similarity(frame).alias("edit_similarity"),
    ).with_columns(pl.col("heuristic").is_not_null().alias("heuristic_failed"))
    # The user's last edit stays: it is the example's target (and DPO's chosen answer) downstream.
    return frame.drop("_review_value").rename({"edited_output": "user_edit"})


def _edit_similarity(frame: pl.DataFrame) -> pl.Series:
    """1.0 for an edit identical to the output, towards 0.0 for a rewrite; null when not edited."""
    values: list[float | None] = [None] * frame.height
    edited = frame.select(pl.col("edited").fill_null(False) & pl.col("edited_output").is_not_null()).to_series()
    outputs = frame.get_column("output")
    edits = frame.get_column("edited_output")
    # Edits are a small share of traffic, and difflib on them costs less than a vector library.
    for index in edited.arg_true().to_list():
        values[index] = difflib.SequenceMatcher(None, outputs[index], edits[index], autojunk=False).ratio()
    return pl.Series("edit_similarity", values, dtype=pl.Float64)


def orphan_feedback(traces: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """Feedback events whose trace_id is not among the traces: kept, and reported."""
    return feedback.join(traces.select("trace_id"), on="trace_id", how="anti", maintain_order="left")
