"""Which traces teach what: per trace an SFT target (review label, user edit or trusted output), a
KTO label, a DPO pair, and its split; redacted. Train keeps the traces that teach something,
deduplicated; the holdout keeps every trace of its groups (production traffic as the router will
see it), each with a reference and where it came from (``REFERENCE_SOURCES``); train rows that
near-duplicate a holdout prompt are dropped.

The router's own traffic (``core.routes``): a locally served output is the small model's answer,
so it is a trusted output only with an explicit positive signal (``EXPLICIT_POSITIVE``) besides the
keep rule, and it is never a frontier answer: the holdout's ``frontier_output`` of such a trace is
the shadow's frontier answer, or null. Escalated and fallen-back traces are frontier traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import polars as pl

from loop_pipeline.core import dedup, redaction, routes
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


# Where a holdout row's reference comes from (strongest first). The curated ones: `review`, `edit`,
# `accepted_scored`. `frontier_shadow`: a locally served trace that nothing vouches for, whose
# shadow call gave the frontier's answer (the reference). `frontier_unverified`: a frontier trace that
# nothing vouches for, the reference is its output as is. `local_unverified`: a locally served trace
# that nothing vouches for and no shadow answered: no reference (null), still traffic.
REFERENCE_SOURCES = ("review", "edit", "accepted_scored", "frontier_shadow", "frontier_unverified", "local_unverified")
CURATED_SOURCES = ("review", "edit", "accepted_scored")
# What a user or reviewer does that vouches for an output as it is: without one of these, a locally
# served output is never an SFT target nor a reference, whatever its score (an edit makes the edit
# the target instead). Copying, no action or a high p_good alone are not enough.
EXPLICIT_POSITIVE = ("accepted", "thumbs_up", "review_good")


def _with_targets(frame: pl.DataFrame, scored: pl.DataFrame, thresholds: Mapping[str, Any], config: DatasetConfig) -> pl.DataFrame:
    """Per trace, nothing dropped: train's ``target_source`` / ``target`` (review label, else edit,
    else a trusted output) and ``output_is_bad``; the holdout's ``reference_source`` / ``reference``;
    ``local_unverified_kept``: a locally served output the keep rule alone would have trusted."""
    review_bad = pl.col("review_good").eq(False).fill_null(False)
    review_good = pl.col("review_good").eq(True).fill_null(False) & pl.lit(config.include_review_labels)
    use_review = review_bad & pl.col("review_label").is_not_null() & pl.lit(config.include_review_labels)
    use_edit = pl.col("edited") & pl.col("user_edit").is_not_null() & pl.lit(config.include_edits)
    local = pl.col("route") == routes.LOCAL
    explicit_positive = pl.any_horizontal([pl.col(n).eq(True).fill_null(False) for n in EXPLICIT_POSITIVE])
    # thresholds go to keep_mask as received (a float, "acceptance" or None per task).
    kept_by_rule = keep_mask(scored, thresholds) & ~review_bad
    keep_output = kept_by_rule & (~local | explicit_positive)
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
        .when(~local)
        .then(pl.lit("frontier_unverified"))
        .when(pl.col("shadow_output").is_not_null())
        .then(pl.lit("frontier_shadow"))
        .otherwise(pl.lit("local_unverified"))
        .alias("reference_source"),
        # A local output is a reference only when something vouches for it; else the shadow's answer.
        pl.when(use_review)
        .then(pl.col("review_label"))
        .when(review_good)
        .then(pl.col("output"))
        .when(use_edit)
        .then(pl.col("user_edit"))
        .when(keep_output | ~local)
        .then(pl.col("output"))
        .otherwise(pl.col("shadow_output"))
        .alias("reference"),
        (kept_by_rule & local & ~explicit_positive & ~use_review & ~use_edit).alias("local_unverified_kept"),
    )


def _trace_columns(traces: pl.DataFrame) -> pl.DataFrame:
    """What curation takes from the raw traces: arrival time, messages, group keys, and how the
    router served each one (``core.routes``: route, the shadow's answer and verdict)."""
    missing = [c for c in ("trace_id", "timestamp", "messages", "session_id", "prompt_version", "metadata") if c not in traces.columns]
    if missing:
        raise ValueError(f"the raw traces lack {', '.join(missing)} (schemas/traces.py): re-ingest them")
    return traces.select(
        "trace_id",
        "timestamp",
        "messages",
        "session_id",
        "prompt_version",
        routes.route().alias("route"),
        routes.shadow_frontier_output().alias("shadow_output"),
        routes.shadow_agrees().alias("shadow_agrees"),
    )


def _router_stats(frame: pl.DataFrame) -> dict[str, Any]:
    """Per route, the traces curated; the locally served outputs the keep rule alone would have
    trusted but no explicit positive signal vouched for (train side: left out of sft); per task
    type the shadowed local answers and how many agreed with the frontier (the live agreement)."""
    by_route = frame.group_by("route").len().sort("route")
    shadowed = frame.filter(pl.col("shadow_agrees").is_not_null()).group_by("task_type").agg(
        pl.len().alias("shadowed"), pl.col("shadow_agrees").sum().alias("agrees")
    )
    train = pl.col("split") == "train"
    return {
        "traces_by_route": {str(r): int(n) for r, n in by_route.iter_rows()},
        "local_excluded_unverified": int(frame.filter(train & pl.col("local_unverified_kept")).height),
        "shadow_agreement": {
            str(row["task_type"]): {"shadowed": int(row["shadowed"]), "agrees": int(row["agrees"]), "agreement": row["agrees"] / row["shadowed"]}
            for row in shadowed.sort("task_type").iter_rows(named=True)
        },
    }


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
    frame = scored.drop("timestamp", strict=False).join(_trace_columns(traces), on="trace_id", how="inner").sort("trace_id")
    frame = _with_targets(frame, scored, thresholds, config)
    frame, redacted = redaction.redact_frame(
        frame,
        text_columns=["output", "target", "reference", "user_edit", "review_label", "shadow_output"],
        message_columns=["messages"],
        config=redaction_config,
    )
    say(f"redacted: {sum(redacted.values())} replacements {redacted}")
    frame = frame.with_columns(
        last_user_message(pl.col("messages")).alias("prompt_text"),
        # The frontier's answer: the output unless served locally, then the shadow's (or null).
        pl.when(pl.col("route") == routes.LOCAL).then(pl.col("shadow_output")).otherwise(pl.col("output")).alias("frontier_output"),
    )
    frame = frame.with_columns(group_key(frame, config).alias("group_key"))
    assignments = assign_groups(frame.get_column("group_key"), previous_assignments, config.holdout_fraction)
    frame = frame.join(assignments, on="group_key", how="left", maintain_order="left")
    stats: dict[str, Any] = {"redacted": redacted, "router": _router_stats(frame)}
    frame = _usable(frame)

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
