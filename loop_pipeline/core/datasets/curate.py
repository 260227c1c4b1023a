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

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from loop_pipeline.core import dedup, redaction, routes
from loop_pipeline.core.datasets.config import DatasetConfig
from loop_pipeline.core.datasets.split import assign_groups, group_key
from loop_pipeline.core.scoring import keep_mask
from loop_pipeline.core.storage import sweep_stale_temporaries, temporary_directory_prefix

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


def _with_targets(frame: pl.DataFrame, thresholds: Mapping[str, Any], config: DatasetConfig) -> pl.DataFrame:
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
    kept_by_rule = keep_mask(frame, thresholds) & ~review_bad
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


def _trace_columns(traces: pl.LazyFrame) -> pl.LazyFrame:
    """What curation takes from the raw traces: arrival time, messages, group keys, and how the
    router served each one (``core.routes``: route, the shadow's answer and verdict). Lazy: read
    from Parquet, only these columns are read."""
    names = traces.collect_schema().names()
    missing = [c for c in ("trace_id", "timestamp", "messages", "session_id", "prompt_version", "metadata") if c not in names]
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


def _split_of(group_keys: pl.Series, assignments: pl.DataFrame) -> pl.Series:
    """Each row's ``split`` from the group assignment (one row per group key)."""
    split = group_keys.to_frame("group_key").join(assignments, on="group_key", how="left", maintain_order="left")
    if split.height != group_keys.len():
        raise ValueError("the holdout assignment lists a group key more than once: it cannot say which split a trace is in")
    return split.get_column("split")


def _usable(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Every holdout trace (production traffic, whatever its feedback); train traces with a
    target or a bad output (a KTO negative)."""
    train_usable = pl.col("target").is_not_null() | pl.col("output_is_bad")
    return frame.filter((pl.col("split") == "holdout") | train_usable)


class _Spilled:
    """Rows written as numbered Parquet parts, in order, read back by column or by row."""

    def __init__(self, paths: list[Path], empty: pl.DataFrame):
        self.paths = paths
        self.empty = empty

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.paths) if self.paths else self.empty.lazy()

    def rows(self, predicate: pl.Expr) -> pl.DataFrame:
        """The rows that satisfy ``predicate``, without ``_position``, read and compacted part by
        part: a filtered frame's strings are views that keep every row's text buffers alive, a
        round trip through Arrow's plain strings copies out only the rows kept."""
        if not self.paths:
            return self.empty.filter(predicate).drop("_position")
        parts = []
        for path in self.paths:
            part = pl.read_parquet(path).filter(predicate).drop("_position")
            parts.append(pl.from_arrow(part.to_arrow(compat_level=pl.CompatLevel.oldest())))
        return pl.concat(parts)


# Rows of the wide frame processed and written to the spill at a time.
_SLICE_ROWS = 100_000
_REDACTED_TEXT = ["output", "target", "reference", "user_edit", "review_label", "shadow_output"]


def _write_part(frame: pl.DataFrame, folder: Path, name: str, paths: list[Path]) -> None:
    path = folder / f"{name}-{len(paths):06d}.parquet"
    frame.write_parquet(path, compression="zstd", compression_level=1)
    paths.append(path)


def _prepared_rows(
    joined: pl.DataFrame,
    thresholds: Mapping[str, Any],
    config: DatasetConfig,
    redaction_config: redaction.RedactionConfig,
    folder: Path,
) -> tuple[_Spilled, dict[str, int]]:
    """Per slice of rows: targets, redaction, the prompt and the frontier's answer; spilled.
    Returns the rows and the replacements per placeholder type."""
    paths: list[Path] = []
    redacted = dict.fromkeys(redaction.PLACEHOLDER_TYPES, 0)
    empty = None
    for start in range(0, max(joined.height, 1), _SLICE_ROWS):
        part = _with_targets(joined.slice(start, _SLICE_ROWS), thresholds, config)
        part, counts = redaction.redact_frame(part, text_columns=_REDACTED_TEXT, message_columns=["messages"], config=redaction_config)
        for kind, n in counts.items():
            redacted[kind] += n
        part = part.with_columns(
            last_user_message(pl.col("messages")).alias("prompt_text"),
            # The frontier's answer: the output unless served locally, then the shadow's (or null).
            pl.when(pl.col("route") == routes.LOCAL).then(pl.col("shadow_output")).otherwise(pl.col("output")).alias("frontier_output"),
        )
        if part.height:
            _write_part(part, folder, "rows", paths)
        else:
            empty = part
    return _Spilled(paths, empty if empty is not None else part.clear()), redacted


def _spill_usable(rows: _Spilled, group_keys: pl.Series, split: pl.Series, folder: Path) -> _Spilled:
    """The usable rows with their group key and split, numbered (``_position``), spilled part by part."""
    paths: list[Path] = []
    offset = written = 0
    for path in rows.paths:
        part = pl.read_parquet(path)
        n = part.height
        part = part.with_columns(group_keys.slice(offset, n).alias("group_key"), split.slice(offset, n).alias("split"))
        offset += n
        part = _usable(part.lazy()).collect().with_row_index("_position", offset=written)
        written += part.height
        _write_part(part, folder, "usable", paths)
    empty = rows.empty.with_columns(group_keys.clear().alias("group_key"), split.clear().alias("split"))
    return _Spilled(paths, _usable(empty.lazy()).collect().with_row_index("_position"))


def _deduplicated_splits(
    usable: _Spilled, dedup_config: dedup.DedupConfig, stats: dict[str, Any]
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Train deduplicated (the best score of a cluster stays), then train rows that near-duplicate
    a holdout prompt dropped; returns train, holdout and how many were dropped.

    The holdout is not deduplicated within itself: a prompt asked again is real traffic, and the
    router will see it again, so each copy counts in coverage and agreement.

    ``usable``: the usable rows, spilled (:func:`_spill_usable`). Deduplication reads only the
    columns it decides on (id, prompt, score; in row order), then the rows kept are read whole."""
    is_train = pl.col("split") == "train"
    is_holdout = pl.col("split") == "holdout"
    # Best copy first: deduplicate keeps the highest score among exact and near duplicates.
    score = pl.col("p_good").fill_null(0.0).alias("_score")
    candidates = usable.scan().filter(is_train).select("_position", "trace_id", "prompt_text", score).collect()
    kept, stats["dedup_train"] = dedup.deduplicate(candidates, "trace_id", "prompt_text", "_score", dedup_config)
    del candidates
    holdout_prompts = usable.scan().filter(is_holdout).select("prompt_text").collect()
    leaks = dedup.overlapping_ids(kept, holdout_prompts, "trace_id", "prompt_text", dedup_config)
    del holdout_prompts
    positions = kept.join(leaks.select("trace_id"), on="trace_id", how="anti", maintain_order="left").get_column("_position")
    del kept
    train = usable.rows(pl.col("_position").is_in(positions.implode()))
    return train, usable.rows(is_holdout), leaks.height


def curate_examples(
    scored: pl.DataFrame | pl.LazyFrame,
    traces: pl.DataFrame | pl.LazyFrame,
    thresholds: Mapping[str, Any],
    previous_assignments: pl.DataFrame | None,
    config: DatasetConfig,
    redaction_config: redaction.RedactionConfig,
    dedup_config: dedup.DedupConfig,
    progress: Callable[[str], None] | None = None,
    work_dir: str | Path | None = None,
) -> Curation:
    """One row per usable trace: redacted prompt, target, KTO label, DPO pair, split; every trace
    of a holdout group, with its reference and reference_source. ``thresholds``: per task what
    :func:`keep_mask` takes, passed to it unchanged.

    ``scored`` and ``traces`` may be LazyFrames (Parquet scans): only the trace columns curation
    uses are read. After the join the rows are prepared a slice at a time and wait in temporary
    Parquet files under ``work_dir`` (default: the system's temporary directory) while the steps
    that need every row run on the columns they read (docs/architecture.md, "Memory")."""
    say = progress or (lambda _: None)
    # Sorted by trace_id: deduplication breaks score ties by row order, so without it the same
    # traces could give another version. The scored side is sorted before the join, which keeps
    # its order, so the wide joined rows are not sorted (copied) again.
    # The trace's own timestamp (when the request arrived) goes with it into the holdout.
    left = scored.lazy().drop("timestamp", strict=False).sort("trace_id")
    joined = left.join(_trace_columns(traces.lazy()), on="trace_id", how="inner", maintain_order="left").collect()
    del left, scored, traces
    # The wide rows wait on disk (a slice at a time in memory); the decisions that need every
    # row (group keys, the holdout assignment, the router's figures, deduplication) read only the
    # columns they need.
    work = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=temporary_directory_prefix(work / "curate"), suffix=".tmp", dir=work) as name:
        folder = Path(name)
        rows, redacted = _prepared_rows(joined, thresholds, config, redaction_config, folder)
        del joined
        say(f"redacted: {sum(redacted.values())} replacements {redacted}")
        group_column = [] if config.group_by == "prompt" else [config.group_by]
        router_columns = ["route", "shadow_agrees", "task_type", "local_unverified_kept"]
        narrow = rows.scan().select(*dict.fromkeys(["prompt_text", *group_column, *router_columns])).collect()
        group_keys = narrow.select(group_key(narrow, config)).to_series().alias("group_key")
        assignments = assign_groups(group_keys, previous_assignments, config.holdout_fraction)
        split = _split_of(group_keys, assignments)
        stats: dict[str, Any] = {"redacted": redacted, "router": _router_stats(narrow.with_columns(split))}
        del narrow
        usable = _spill_usable(rows, group_keys, split, folder)
        del group_keys, split
        train, holdout, leaked = _deduplicated_splits(usable, dedup_config, stats)
    sweep_stale_temporaries(work / "curate")  # the working folders of killed builds
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
