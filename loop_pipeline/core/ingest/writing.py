"""Writing an ingest result in the warehouse's table layout (what the Dagster assets write).

::

    <out>/raw_traces/<day>.parquet           traces by the UTC day of their timestamp
    <out>/feedback_events/<day>.parquet      feedback by the UTC day of its timestamp
    <out>/quarantined_records/<day>.parquet  every quarantined record of the run, in one file
    <out>/summary.json                       the run's summary, with one entry per source file

A quarantined record may have no readable time, so the quarantine is one file under the run's
newest event day (``undated`` when no record of the run had a valid time). The folder is a
warehouse the tables' readers (``LoopStorage(warehouse_dir=<out>)``) can open.

The tables are streamed from the result's parts (polars' streaming engine, row order kept), so
writing takes a bounded amount of memory whatever the day's size.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from loop_pipeline.core.ingest.result import IngestResult
from loop_pipeline.core.storage import replace_directory, write_file_atomic, write_json_atomic

TRACES_TABLE = "raw_traces"
FEEDBACK_TABLE = "feedback_events"
QUARANTINE_TABLE = "quarantined_records"
UNDATED = "undated"


def write_result(result: IngestResult, out_dir: Path) -> dict[str, Any]:
    """Replace ``out_dir`` with this result (see the module docstring); returns the summary."""
    summary = result.summary(include_sources=True)
    tables = ((TRACES_TABLE, "traces"), (FEEDBACK_TABLE, "feedback"))

    def build(staging: Path) -> None:
        days: set[str] = set()
        for table, name in tables:
            for day, part in _by_day(result.scan(name)):
                sink_parquet_atomic(staging / table / f"{day}.parquet", part)
                days.add(day)
        quarantine_day = max(days) if days else UNDATED
        sink_parquet_atomic(staging / QUARANTINE_TABLE / f"{quarantine_day}.parquet", result.scan("quarantine"))
        write_json_atomic(staging / "summary.json", summary)

    replace_directory(Path(out_dir), build)
    return summary


def sink_parquet_atomic(path: Path, frame: pl.LazyFrame) -> None:
    """Stream ``frame`` into ``path``, swapped in whole: the same settings as
    :func:`~loop_pipeline.core.storage.write_parquet_atomic` (zstd 3, statistics, no write time),
    so the same rows give the same bytes. Its temporary is named and swept like the other atomic
    writes' (a killed run's is removed by the next write of the table)."""
    write_file_atomic(
        path,
        lambda temporary: frame.sink_parquet(temporary, compression="zstd", compression_level=3, statistics=True, maintain_order=True),
    )


def _by_day(frame: pl.LazyFrame) -> list[tuple[str, pl.LazyFrame]]:
    """(``YYYY-MM-DD``, rows of that UTC day) in day order. The day is a timestamp range, so the
    parts' row-group statistics let each day's pass skip the other days' rows."""
    days = (
        frame.select(pl.col("timestamp").dt.date().unique().sort())
        .collect(engine="streaming")
        .to_series()
        .to_list()
    )
    if len(days) == 1:
        return [(days[0].isoformat(), frame)]
    out = []
    for day in days:
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
        within = (pl.col("timestamp") >= start) & (pl.col("timestamp") < start + dt.timedelta(days=1))
        out.append((day.isoformat(), frame.filter(within)))
    return out
