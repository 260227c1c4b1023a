"""The four datasets in trl's conversational formats: sft, kto, dpo, and the holdout."""

from __future__ import annotations

from typing import Mapping

import polars as pl

from loop_pipeline.schemas.traces import MESSAGES_DTYPE

DATASET_NAMES = ("sft", "kto", "dpo", "holdout")


def _assistant(text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), text.alias("content"))).cast(MESSAGES_DTYPE)


def build_datasets(examples: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """sft (messages), kto (prompt, completion, label), dpo (prompt, chosen, rejected) from the train
    rows; holdout (prompt, reference, reference_source, frontier_output, sim_gold) from every
    holdout row (reference_source: see :data:`~loop_pipeline.core.datasets.curate.REFERENCE_SOURCES`;
    frontier_output: a frontier answer only, null for a locally served trace nobody shadowed)."""
    train = examples.filter(pl.col("split") == "train")
    prompt = pl.col("messages").alias("prompt")
    sft = train.filter(pl.col("target").is_not_null()).select(
        "trace_id",
        "task_type",
        pl.concat_list(pl.col("messages"), _assistant(pl.col("target"))).alias("messages"),
        "target_source",
    )
    kto_good = train.filter(pl.col("target").is_not_null()).select(
        "trace_id", "task_type", prompt, _assistant(pl.col("target")).alias("completion"), pl.lit(True).alias("label")
    )
    kto_bad = train.filter(pl.col("output_is_bad")).select(
        "trace_id", "task_type", prompt, _assistant(pl.col("output")).alias("completion"), pl.lit(False).alias("label")
    )
    kto = pl.concat([kto_good, kto_bad]).sort("trace_id", "label")
    dpo = train.filter(
        pl.col("target_source").is_in(["edit", "review"]) & (pl.col("target") != pl.col("output"))
    ).select(
        "trace_id",
        "task_type",
        prompt,
        _assistant(pl.col("target")).alias("chosen"),
        _assistant(pl.col("output")).alias("rejected"),
    )
    # Every trace of the holdout groups, with or without a curated reference: the traffic the
    # router will see, with its arrival time (the evaluation replays it in that order). The
    # simulator's gold is kept for measuring only (never a decision input).
    holdout = examples.filter(pl.col("split") == "holdout").select(
        "trace_id",
        "timestamp",
        "task_type",
        "group_key",
        prompt,
        "reference",
        "reference_source",
        "frontier_output",
        "sim_gold",
    )
    return {
        "sft": sft.sort("trace_id"),
        "kto": kto,
        "dpo": dpo.sort("trace_id"),
        "holdout": holdout.sort("trace_id"),
    }


def counts_by_task(datasets: Mapping[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, frame in datasets.items():
        grouped = frame.group_by("task_type").len().sort("task_type")
        out[name] = {str(task): int(n) for task, n in grouped.iter_rows()}
    return out


def counts_by_route(datasets: Mapping[str, pl.DataFrame], examples: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Rows of each dataset per route of their trace (``core.routes``: direct, local, frontier,
    fallback); kto rows of both labels."""
    route = examples.select("trace_id", "route").unique("trace_id")
    out: dict[str, dict[str, int]] = {}
    for name, frame in datasets.items():
        grouped = frame.select("trace_id").join(route, on="trace_id", how="left").group_by("route").len().sort("route")
        out[name] = {str(r): int(n) for r, n in grouped.iter_rows()}
    return out
