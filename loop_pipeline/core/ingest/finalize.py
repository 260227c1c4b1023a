"""The end of an ingest run, from its spilled parts (:mod:`.spill`), a bounded chunk at a time.

Repeated ids: a record whose id appears more than once is an identical copy (collapsed to its
first occurrence, counted as a duplicate) when every copy has the same content (the source
columns aside), else every copy is quarantined as ``conflicting_duplicate``: there is no telling
which one is right. Finding them takes one pass over the ids (64-bit hashes, 8 bytes a row) and,
only for ids whose hash repeats, one over those rows' content; then each chunk of candidates loses
its dropped rows, gets its computed costs and is checked against the schema (ids are unique
across chunks by construction), and is written as a final part of the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import polars as pl

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest.quarantine import ID_COLUMN, SOURCE_COLUMNS, as_quarantine
from loop_pipeline.core.ingest.spill import SpillFolder
from loop_pipeline.schemas.feedback import FEEDBACK_COLUMNS, FeedbackSchema
from loop_pipeline.schemas.quarantine import QUARANTINE_COLUMNS, QuarantineSchema
from loop_pipeline.schemas.traces import TRACE_COLUMNS, TraceSchema

_POSITION = "_position"
_NO_POSITIONS = pl.Series(_POSITION, [], dtype=pl.Int64)


@dataclass
class Repeats:
    """Rows (global 0-based positions in read order) that do not become valid records."""

    drop: pl.Series  # every copy of a conflicting id, and every later copy of an identical one
    conflicts: pl.DataFrame  # _position, _copies, _versions of each conflicting copy
    duplicates: int  # identical copies collapsed


def find_repeats(parts: list[Path], kind: str) -> Repeats:
    """Which candidate rows repeat an id, and whether their copies agree."""
    id_column = ID_COLUMN[kind]
    empty = Repeats(_NO_POSITIONS, pl.DataFrame(schema={_POSITION: pl.Int64, "_copies": pl.UInt32, "_versions": pl.UInt32}), 0)
    if not parts:
        return empty
    scan = pl.scan_parquet(parts)
    id_hash = pl.col(id_column).hash(seed=0)
    hashes = scan.select(id_hash.alias("_id_hash")).collect(engine="streaming").to_series()
    suspects = hashes.filter(hashes.is_duplicated()).unique()
    del hashes
    if suspects.len() == 0:
        return empty
    columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
    content = [c for c in columns if c not in SOURCE_COLUMNS]
    repeated = (
        scan.with_row_index(_POSITION)
        .filter(id_hash.is_in(suspects.implode()))
        .select(pl.col(_POSITION).cast(pl.Int64), id_column, pl.struct(content).hash(seed=0).alias("_content_hash"))
        .collect(engine="streaming")
        .sort(_POSITION)
    )
    # A shared hash is only a suspect: the ids themselves must repeat.
    repeated = repeated.filter(pl.col(id_column).is_duplicated())
    versions = repeated.group_by(id_column).agg(
        pl.len().alias("_copies"), pl.col("_content_hash").n_unique().alias("_versions")
    )
    conflicting = versions.filter(pl.col("_versions") > 1)
    conflicts = (
        repeated.join(conflicting, on=id_column, how="inner", maintain_order="left")
        .select(_POSITION, pl.col("_copies").cast(pl.UInt32), pl.col("_versions").cast(pl.UInt32))
    )
    identical = repeated.join(conflicting, on=id_column, how="anti", maintain_order="left")
    later_copies = identical.filter(pl.col(_POSITION) != pl.col(_POSITION).min().over(id_column)).get_column(_POSITION)
    drop = pl.concat([conflicts.get_column(_POSITION), later_copies]).sort()
    return Repeats(drop, conflicts, later_copies.len())


def _chunks(spill: SpillFolder, parts: list[Path], rows: int) -> Iterator[tuple[list[Path], int]]:
    """Consecutive parts of about ``rows`` rows, with the position of their first row."""
    chunk: list[Path] = []
    offset = start = 0
    for path in parts:
        chunk.append(path)
        offset += spill.height(path)
        if offset - start >= rows:
            yield chunk, start
            chunk, start = [], offset
    if chunk:
        yield chunk, start


def _count_formats(frame: pl.DataFrame, into: Counter) -> None:
    for name, n in frame.group_by("source_format").len().iter_rows():
        into[name] += n


def finalize_kind(spill: SpillFolder, kind: str, prices: PriceTable, chunk_rows: int) -> tuple[Counter, int]:
    """The candidates of ``kind`` to the final group ``valid-<kind>``; conflicting copies are
    appended to the ``quarantine`` group. Returns the valid rows per source format and how many
    identical copies were collapsed."""
    group = f"candidates-{kind}"
    parts = spill.parts(group)
    repeats = find_repeats(parts, kind)
    id_column = ID_COLUMN[kind]
    columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
    content = [c for c in columns if c not in SOURCE_COLUMNS]
    dropped = repeats.drop.implode()
    formats: Counter = Counter()
    for chunk, start in _chunks(spill, parts, chunk_rows):
        frame = pl.read_parquet(chunk)
        if repeats.drop.len():
            frame = frame.with_row_index(_POSITION, offset=start).with_columns(pl.col(_POSITION).cast(pl.Int64))
            conflicts = frame.join(repeats.conflicts, on=_POSITION, how="inner", maintain_order="left").with_columns(
                pl.lit("conflicting_duplicate").alias("_reason"),
                pl.format(
                    f"{id_column} appears {{}} times with {{}} different contents; every copy is held back",
                    pl.col("_copies"),
                    pl.col("_versions"),
                ).alias("_detail"),
                # The record as it was read, in canonical form (its original line was valid JSON).
                pl.struct(content).struct.json_encode().alias("raw"),
            )
            spill.add("quarantine", as_quarantine(conflicts, kind))
            frame = frame.filter(~pl.col(_POSITION).is_in(dropped)).drop(_POSITION)
        if kind == "trace":
            frame = TraceSchema.validate(prices.fill_costs(frame).select(TRACE_COLUMNS))
        else:
            frame = FeedbackSchema.validate(frame.select(FEEDBACK_COLUMNS))
        spill.add(f"valid-{kind}", frame)
        _count_formats(frame, formats)
    spill.discard(group)
    return formats, repeats.duplicates


def finalize_quarantine(spill: SpillFolder, chunk_rows: int) -> tuple[Counter, Counter]:
    """The quarantine rows, checked, to the final group ``valid-quarantine``. Returns the rows per
    (record kind, reason) and per source format."""
    reasons: Counter = Counter()
    formats: Counter = Counter()
    for chunk, _ in _chunks(spill, spill.parts("quarantine"), chunk_rows):
        frame = QuarantineSchema.validate(pl.read_parquet(chunk).select(QUARANTINE_COLUMNS))
        spill.add("valid-quarantine", frame)
        for kind, reason, n in frame.group_by("record_kind", "reason").len().iter_rows():
            reasons[(kind, reason)] += n
        _count_formats(frame, formats)
    spill.discard("quarantine")
    return reasons, formats
