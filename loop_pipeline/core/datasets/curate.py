"""Which traces teach what: per trace an SFT target (review label, user edit or trusted output), a
KTO label, a DPO pair, and its split; redacted. Train keeps the traces that teach something,
deduplicated; the holdout keeps every trace of its groups (production traffic as the router will
see it), each with a reference and where it came from (``REFERENCE_SOURCES``); train rows that
near-duplicate a holdout prompt are dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import polars as pl

from loop_pipeline.core import dedup, redaction
from loop_pipeline.core.datasets.config import DatasetConfig
from loop_pipeline.core.datasets.split import assign_groups, group_key
from loop_pipeline.core.scoring import keep_mask

# The original output is a bad example when any of these is true (KTO's undesirable side).
NEGATIVE_SIGNALS = ("rejected", "hallucination", "edited", "thumbs_down", "heuristic_failed")


@dataclass
class Curation:
    examples: pl.DataFrame
    assignments: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def last_user_message(messages: pl.Expr) -> pl.Expr:
    return (
        messages.list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.last()
        .fill_null("")
    )


# Where a holdout row's reference comes from (strongest first); `frontier_unverified`: nothing
# vouches for the output, so the reference is the frontier's output as is.
REFERENCE_SOURCES = ("review", "edit", "accepted_scored", "frontier_unverified")


def _with_targets(frame: pl.DataFrame, scored: pl.DataFrame, thresholds: Mapping[str, Any], config: DatasetConfig) -> pl.DataFrame:
    """Per trace, nothing dropped: train's ``target_source`` / ``target`` (review label, else edit,
    else a trusted output) and ``output_is_bad``; the holdout's ``reference_source`` / ``reference``."""
    review_bad = pl.col("review_good").eq(False).fill_null(False)
    review_good = pl.col("review_good").eq(True).fill_null(False) & pl.lit(config.include_review_labels)
    use_review = review_bad & pl.col("review_label").is_not_null() & pl.lit(config.include_review_labels)
    use_edit = pl.col("edited") & pl.col("user_edit").is_not_null() & pl.lit(config.include_edits)
    # thresholds go to keep_mask as received (a float, "acceptance" or None per task).
    keep_output = keep_mask(scored, thresholds) & ~review_bad
    target_source = pl.when(use_review).then(pl.lit("review")).when(use_edit).then(pl.lit("edit")).when(keep_output).then(pl.lit("output"))
    return frame.with_columns(
        target_source.alias("target_source"),
        pl.when(use_review).then(pl.col("review_label")).when(use_edit).then(pl.col("user_edit")).when(keep_output).then(pl.col("output")).alias("target"),
        (pl.any_horizontal([pl.col(n) for n in NEGATIVE_SIGNALS]) | review_bad).alias("output_is_bad"),
        # A review that says the output was right vouches for the output itself.
        pl.when(use_review | review_good)
        .then(pl.lit("review"))
        .when(use_edit)
        .then(pl.lit("edit"))
        .when(keep_output)
        .then(pl.lit("accepted_scored"))
        .otherwise(pl.lit("frontier_unverified"))
        .alias("reference_source"),
        pl.when(use_review).then(pl.col("review_label")).when(review_good).then(pl.col("output")).when(use_edit).then(pl.col("user_edit")).otherwise(pl.col("output")).alias("reference"),
    )


def _usable(frame: pl.DataFrame) -> pl.DataFrame:
    """Every holdout trace (production traffic, whatever its feedback); train traces with a
    target or a bad output (a KTO negative)."""
    train_usable = pl.col("target").is_not_null() | pl.col("output_is_bad")
    return frame.filter((pl.col("split") == "holdout") | train_usable)


def _deduplicated_splits(
    frame: pl.DataFrame, dedup_config: dedup.DedupConfig, stats: dict[str, Any]
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Train deduplicated (the best score of a cluster stays), then train rows that near-duplicate
    a holdout prompt dropped; returns train, holdout and how many were dropped.

    The holdout is not deduplicated within itself: a prompt asked again is real traffic, and the
    router will see it again, so each copy counts in coverage and agreement."""
    # Best copy first: deduplicate keeps the highest score among exact and near duplicates.
    train = frame.filter(pl.col("split") == "train").with_columns(pl.col("p_good").fill_null(0.0).alias("_score"))
    train, stats["dedup_train"] = dedup.deduplicate(train, "trace_id", "prompt_text", "_score", dedup_config)
    train = train.drop("_score")
    holdout = frame.filter(pl.col("split") == "holdout")
    leaks = dedup.overlapping_ids(train, holdout, "trace_id", "prompt_text", dedup_config)
    train = train.join(leaks.select("trace_id"), on="trace_id", how="anti", maintain_order="left")
    return train, holdout, leaks.height


def curate_examples(
    scored: pl.DataFrame,
    traces: pl.DataFrame,
    thresholds: Mapping[str, Any],
    previous_assignments: pl.DataFrame | None,
    config: DatasetConfig,
    redaction_config: redaction.RedactionConfig,
    dedup_config: dedup.DedupConfig,
    progress: Callable[[str], None] | None = None,
) -> Curation:
    """One row per usable trace: redacted prompt, target, KTO label, DPO pair, split; every trace
    of a holdout group, with its reference and reference_source. ``thresholds``: per task what
    :func:`keep_mask` takes, passed to it unchanged."""
    say = progress or (lambda _: None)
    # Sorted: the join's row order is unspecified, and deduplication breaks score ties by row order,
    # so without it the same traces could give another version.
    # The trace's own timestamp (when the request arrived) goes with it into the holdout.
    frame = scored.drop("timestamp", strict=False).join(
        traces.select("trace_id", "timestamp", "messages", "session_id", "prompt_version"), on="trace_id", how="inner"
    ).sort("trace_id")
    frame = _with_targets(frame, scored, thresholds, config)
    frame, redacted = redaction.redact_frame(
        frame, text_columns=["output", "target", "reference", "user_edit", "review_label"], message_columns=["messages"], config=redaction_config
    )
    say(f"redacted: {sum(redacted.values())} replacements {redacted}")
    frame = frame.with_columns(last_user_message(pl.col("messages")).alias("prompt_text"))
    frame = frame.with_columns(group_key(frame, config).alias("group_key"))
    assignments = assign_groups(frame.get_column("group_key"), previous_assignments, config.holdout_fraction)
    frame = _usable(frame.join(assignments, on="group_key", how="left", maintain_order="left"))

    stats: dict[str, Any] = {"redacted": redacted}
    train, holdout, leaked = _deduplicated_splits(frame, dedup_config, stats)
    stats["train_excluded_near_holdout"] = leaked
    examples = pl.concat([train, holdout])
    stats["examples"] = examples.height
    sources = holdout.group_by("reference_source").len().sort("reference_source")
    stats["holdout_reference_sources"] = {str(source): int(n) for source, n in sources.iter_rows()}
    say(
        f"examples: {train.height} train, {holdout.height} holdout "
        f"({leaked} train rows dropped as near-duplicates of holdout prompts)"
    )
    return Curation(examples, assignments, stats)
