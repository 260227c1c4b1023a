"""What an ingest run produced: canonical traces and feedback, quarantine, and the counts that
account for every record (``records_in = valid + duplicates + quarantined + skipped``).

The three tables are Parquet parts in the run's spill folder (:mod:`.spill`), not frames in
memory: :meth:`IngestResult.scan` reads one lazily (what the writers stream from), the
``traces`` / ``feedback`` / ``quarantine`` properties read one whole. :meth:`IngestResult.close`
(or leaving a ``with`` block, or the result being garbage collected) deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from loop_pipeline.core.ingest.spill import SpillFolder
from loop_pipeline.schemas import empty_frame
from loop_pipeline.schemas.feedback import FeedbackSchema
from loop_pipeline.schemas.quarantine import QuarantineSchema
from loop_pipeline.schemas.traces import TraceSchema

RECORD_KINDS = ("trace", "feedback")
TABLES = ("traces", "feedback", "quarantine")
_SCHEMAS = {"traces": TraceSchema, "feedback": FeedbackSchema, "quarantine": QuarantineSchema}


@dataclass
class KindCounts:
    records_in: int = 0
    valid: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: "KindCounts") -> None:
        self.records_in += other.records_in
        self.valid += other.valid
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.skipped += other.skipped
        for reason, n in other.quarantined_by_reason.items():
            self.quarantined_by_reason[reason] = self.quarantined_by_reason.get(reason, 0) + n
        for reason, n in other.skipped_by_reason.items():
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "valid": self.valid,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "skipped_by_reason": dict(sorted(self.skipped_by_reason.items())),
        }


@dataclass
class IngestResult:
    # Per table (``traces``, ``feedback``, ``quarantine``): its Parquet parts, in row order.
    parts: dict[str, list[Path]]
    counts: dict[str, KindCounts]
    files: list[str]
    # Per file: name, format, non-blank lines (rows for Parquet), records in per kind, skipped.
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Files found beside the ingested ones that ingest does not read: file, reason
    # (``unsupported_file``) and size in bytes.
    unsupported: list[dict[str, Any]] = field(default_factory=list)
    # Per table, rows per source format (counted as the tables were written).
    rows_by_format: dict[str, dict[str, int]] = field(default_factory=dict)
    spill: SpillFolder | None = None

    # -- the tables ------------------------------------------------------------------------------

    def scan(self, table: str) -> pl.LazyFrame:
        """``traces``, ``feedback`` or ``quarantine`` as a LazyFrame over its parts (row order kept)."""
        parts = self._parts(table)
        return pl.scan_parquet(parts) if parts else empty_frame(_SCHEMAS[table]).lazy()

    def read(self, table: str) -> pl.DataFrame:
        """The whole table in memory (for small results; the writers stream from :meth:`scan`)."""
        parts = self._parts(table)
        return pl.read_parquet(parts) if parts else empty_frame(_SCHEMAS[table])

    def height(self, table: str) -> int:
        self._parts(table)
        return sum(self.rows_by_format.get(table, {}).values())

    @property
    def traces(self) -> pl.DataFrame:
        return self.read("traces")

    @property
    def feedback(self) -> pl.DataFrame:
        return self.read("feedback")

    @property
    def quarantine(self) -> pl.DataFrame:
        return self.read("quarantine")

    def _parts(self, table: str) -> list[Path]:
        if table not in TABLES:
            raise ValueError(f"unknown ingest table {table!r}; one of {', '.join(TABLES)}")
        if self.spill is not None and self.spill.closed:
            raise RuntimeError(f"this ingest result was closed: its tables (temporary files under {self.spill.root}) are gone")
        return self.parts.get(table, [])

    def close(self) -> None:
        """Delete the tables' temporary files (the counts and summary stay usable)."""
        if self.spill is not None:
            self.spill.close()

    def __enter__(self) -> "IngestResult":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- counts ----------------------------------------------------------------------------------

    def summary(self, include_sources: bool = False) -> dict[str, Any]:
        """Counts in total, per record kind and per source format; ``sources`` adds one entry per
        file (its format, lines and records), as ``summary.json`` and the accounting check use it."""
        total = KindCounts()
        for counts in self.counts.values():
            total.add(counts)
        return {
            **total.to_dict(),
            "traces": self.counts["trace"].to_dict(),
            "feedback": self.counts["feedback"].to_dict(),
            "files": len(self.files),
            "formats": self.by_format(),
            "unsupported_files": list(self.unsupported),
            **({"sources": self.sources} if include_sources else {}),
        }

    def by_format(self) -> dict[str, dict[str, int]]:
        """Per source format: files, records in, valid traces and feedback, quarantined, skipped."""
        formats: dict[str, dict[str, int]] = {}

        def entry(name: str) -> dict[str, int]:
            return formats.setdefault(
                name, {"files": 0, "records_in": 0, "traces": 0, "feedback": 0, "quarantined": 0, "skipped": 0}
            )

        for source in self.sources:
            row = entry(source["format"])
            row["files"] += 1
            row["records_in"] += sum(source["records_in"].values())
            row["skipped"] += source["skipped"]
        for table, key in (("traces", "traces"), ("feedback", "feedback"), ("quarantine", "quarantined")):
            for name, n in self.rows_by_format.get(table, {}).items():
                entry(name)[key] += n
        return dict(sorted(formats.items()))
