"""What an ingest run produced: canonical traces and feedback, quarantine, and the counts that
account for every record (``records_in = valid + duplicates + quarantined + skipped``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

RECORD_KINDS = ("trace", "feedback")


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
    traces: pl.DataFrame
    feedback: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict[str, KindCounts]
    files: list[str]
    # Per file: name, format, non-blank lines (rows for Parquet), records in per kind, skipped.
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Files found beside the ingested ones that ingest does not read: file, reason
    # (``unsupported_file``) and size in bytes.
    unsupported: list[dict[str, Any]] = field(default_factory=list)

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
        for table, key in ((self.traces, "traces"), (self.feedback, "feedback"), (self.quarantine, "quarantined")):
            for name, n in table.group_by("source_format").len().iter_rows():
                entry(name)[key] += n
        return dict(sorted(formats.items()))
