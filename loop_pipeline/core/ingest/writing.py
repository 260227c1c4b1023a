"""Writing an ingest result in the warehouse's table layout (what the Dagster assets write).

::

    <out>/raw_traces/<day>.parquet           traces by the UTC day of their timestamp
    <out>/feedback_events/<day>.parquet      feedback by the UTC day of its timestamp
    <out>/quarantined_records/<day>.parquet  every quarantined record of the run, in one file
    <out>/summary.json                       the run's summary, with one entry per source file

A quarantined record may have no readable time, so the quarantine is one file under the run's
newest event day (``undated`` when no record of the run had a valid time). The folder is a
warehouse the tables' readers (``LoopStorage(warehouse_dir=<out>)``) can open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from loop_pipeline.core.ingest.result import IngestResult
from loop_pipeline.core.storage import replace_directory, write_json_atomic, write_parquet_atomic

TRACES_TABLE = "raw_traces"
FEEDBACK_TABLE = "feedback_events"
QUARANTINE_TABLE = "quarantined_records"
UNDATED = "undated"


def write_result(result: IngestResult, out_dir: Path) -> dict[str, Any]:
    """Replace ``out_dir`` with this result (see the module docstring); returns the summary."""
    summary = result.summary(include_sources=True)
    tables = ((TRACES_TABLE, result.traces), (FEEDBACK_TABLE, result.feedback))

    def build(staging: Path) -> None:
        days: set[str] = set()
        for table, frame in tables:
            for day, part in _by_day(frame):
                write_parquet_atomic(staging / table / f"{day}.parquet", part)
                days.add(day)
        quarantine_day = max(days) if days else UNDATED
        write_parquet_atomic(staging / QUARANTINE_TABLE / f"{quarantine_day}.parquet", result.quarantine)
        write_json_atomic(staging / "summary.json", summary)

    replace_directory(Path(out_dir), build)
    return summary


def _by_day(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(``YYYY-MM-DD``, rows of that UTC day) in day order."""
    if frame.height == 0:
        return []
    day = pl.col("timestamp").dt.date()
    days = frame.get_column("timestamp").dt.date().unique().sort().to_list()
    return [(value.isoformat(), frame.filter(day == value)) for value in days]
