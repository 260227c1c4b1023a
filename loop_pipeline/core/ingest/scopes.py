"""Feedback a foreign format attaches to a whole trace or session, given to one LLM call."""

from __future__ import annotations

import polars as pl

from loop_pipeline.core.ingest import native

_CALLS_SCHEMA = {
    "_scope": pl.String,
    "session_id": pl.String,
    "trace_id": pl.String,
    "timestamp": native.UTC_DATETIME,
    "_valid": pl.Boolean,
}


def call_scopes(traces: pl.DataFrame) -> pl.DataFrame:
    """What :func:`resolve_scopes` needs of one file's candidate traces (``_reason`` null: valid)."""
    return traces.select(
        "_scope", "session_id", "trace_id", "timestamp", pl.col("_reason").is_null().alias("_valid")
    ).filter(pl.col("trace_id").is_not_null())


def resolve_scopes(feedback: pl.DataFrame, scopes: list[pl.DataFrame]) -> pl.DataFrame:
    """Feedback about a whole trace (or session) goes to its last LLM call in this run: the last
    valid one, or the last quarantined one when none is valid.

    Feedback whose trace or session has no call in the run keeps the source's trace (session) id:
    it stays valid, like native feedback for a trace not (yet) ingested.
    """
    calls = pl.concat(scopes, how="vertical_relaxed") if scopes else pl.DataFrame(schema=_CALLS_SCHEMA)
    last = pl.col("trace_id").sort_by(["_valid", "timestamp", "trace_id"], nulls_last=False).last()
    by_trace = calls.filter(pl.col("_scope").is_not_null()).group_by("_scope").agg(last.alias("_by_trace"))
    by_session = (
        calls.filter(pl.col("session_id").is_not_null())
        .group_by("session_id")
        .agg(last.alias("_by_session"))
        .rename({"session_id": "_scope"})
    )
    resolved = feedback.join(by_trace, on="_scope", how="left", maintain_order="left").join(
        by_session, on="_scope", how="left", maintain_order="left"
    )
    scoped = pl.when(pl.col("_scope_kind") == "session").then(pl.col("_by_session")).otherwise(pl.col("_by_trace"))
    return resolved.with_columns(pl.coalesce(pl.col("trace_id"), scoped, pl.col("_scope")).alias("trace_id")).drop(
        "_by_trace", "_by_session"
    )
