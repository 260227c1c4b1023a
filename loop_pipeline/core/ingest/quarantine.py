"""Quarantine rows, and collapsing repeated ids: identical copies count as duplicates, copies
with different contents are all held back (``conflicting_duplicate``): there is no telling which
one is right."""

from __future__ import annotations

import polars as pl

from loop_pipeline.schemas import empty_frame
from loop_pipeline.schemas.feedback import FEEDBACK_COLUMNS, FeedbackSchema
from loop_pipeline.schemas.traces import TRACE_COLUMNS, TraceSchema

ID_COLUMN = {"trace": "trace_id", "feedback": "feedback_id"}
_SOURCE_COLUMNS = ("source_format", "source_file", "source_record")
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "record_kind": pl.String,
    "source_format": pl.String,
    "source_file": pl.String,
    "source_record": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
    "record_id": pl.String,
    "raw": pl.String,
}


def as_quarantine(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Candidate rows (with ``_reason`` / ``_detail``) as quarantine rows of ``kind``."""
    id_column = ID_COLUMN[kind]
    record_id = pl.col(id_column).cast(pl.String) if id_column in frame.columns else pl.lit(None, dtype=pl.String)
    return frame.select(
        pl.lit(kind).alias("record_kind"),
        pl.col("source_format"),
        pl.col("source_file"),
        pl.col("source_record").cast(pl.Int64),
        pl.col("_reason").alias("reason"),
        pl.col("_detail").fill_null("").alias("detail"),
        record_id.alias("record_id"),
        pl.col("raw"),
    )


def unreadable_row(kind: str, source_format: str, source_file: str, exc: Exception) -> dict[str, object]:
    """A file that could not be opened or decoded is one quarantined record."""
    return {
        "record_kind": kind,
        "source_format": source_format,
        "source_file": source_file,
        "source_record": None,
        "reason": "unreadable_file",
        "detail": f"{type(exc).__name__}: {str(exc).strip()[:300]}",
        "record_id": None,
        "raw": None,
    }


def deduplicate(frames: list[pl.DataFrame], kind: str) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Valid rows, one per id; quarantined conflicting copies; and how many identical copies collapsed."""
    columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
    no_conflicts = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    if not frames:
        return empty_frame(TraceSchema if kind == "trace" else FeedbackSchema), no_conflicts, 0
    good = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    id_column = ID_COLUMN[kind]
    # Only ids seen more than once need their content compared; hashing every row costs seconds.
    repeated = good.filter(pl.col(id_column).is_duplicated())
    if repeated.height == 0:
        return good, no_conflicts, 0
    content = [c for c in columns if c not in _SOURCE_COLUMNS]
    versions = (
        repeated.with_columns(pl.struct(content).hash(seed=0).alias("_content_hash"))
        .group_by(id_column)
        .agg(pl.len().alias("_copies"), pl.col("_content_hash").n_unique().alias("_versions"))
    )
    conflicting = versions.filter(pl.col("_versions") > 1)
    conflicts = repeated.join(conflicting, on=id_column, how="inner", maintain_order="left").with_columns(
        pl.lit("conflicting_duplicate").alias("_reason"),
        pl.format(
            f"{id_column} appears {{}} times with {{}} different contents; every copy is held back",
            pl.col("_copies"),
            pl.col("_versions"),
        ).alias("_detail"),
        # The record as it was read, in canonical form (its original line was valid JSON).
        pl.struct(content).struct.json_encode().alias("raw"),
    )
    kept = good.join(conflicting, on=id_column, how="anti", maintain_order="left")
    unique = kept.unique(subset=[id_column], keep="first", maintain_order=True)
    return unique, as_quarantine(conflicts, kind), kept.height - unique.height
