"""Quarantine rows: a candidate that failed a check, or a file that could not be read.
(Repeated ids are resolved in :mod:`.finalize`.)"""

from __future__ import annotations

import polars as pl

ID_COLUMN = {"trace": "trace_id", "feedback": "feedback_id"}
SOURCE_COLUMNS = ("source_format", "source_file", "source_record")  # not part of a record's content
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
