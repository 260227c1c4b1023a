"""Landing files: one JSONL of traces per day of traffic, one JSONL of feedback per day it arrives.

    <landing>/traces/YYYY-MM-DD/traces.jsonl      rows in timestamp order
    <landing>/feedback/YYYY-MM-DD/feedback.jsonl  rows in arrival order (ties: order of generation)

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a reader
never sees half a day and a rerun replaces a day's file with the same bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from loop_pipeline.sim.clock import day_of, iso
from loop_pipeline.sim.text import json_compact

Record = dict[str, Any]


def traces_file(day: dt.date) -> str:
    return f"traces/{day.isoformat()}/traces.jsonl"


def feedback_file(day: dt.date) -> str:
    return f"feedback/{day.isoformat()}/feedback.jsonl"


class AtomicLines:
    """Write lines to ``path`` through a temporary file in the same folder, then ``os.replace``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.temp = Path(temp)
        self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write(self, record: Mapping[str, Any]) -> None:
        self.handle.write(json_compact(record))
        self.handle.write("\n")

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicLines":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # Commit only a complete file; on any error (Ctrl-C included) drop the temporary file.
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    with AtomicLines(path) as writer:
        for record in records:
            writer.write(record)


def feedback_record(
    trace_id: str,
    micros: int,
    kind: str,
    source: str,
    annotator: str,
    *,
    value: float | None = None,
    label: str | None = None,
    edited_output: str | None = None,
) -> Record:
    """A native feedback event (the ingest contract; keys in this order)."""
    return {
        "trace_id": trace_id,
        "timestamp": iso(micros),
        "kind": kind,
        "value": value,
        "label": label,
        "edited_output": edited_output,
        "source": source,
        "annotator_id": annotator,
    }


class FeedbackQueue:
    """Feedback waiting for the day it arrives; ``flush(day)`` writes that day's file."""

    def __init__(self, landing: Path):
        self.landing = landing
        self._pending: dict[dt.date, list[tuple[int, int, Record]]] = {}
        self.generated = 0  # events queued so far; also the tie-breaker of equal timestamps

    def add(self, when: int, record: Record) -> None:
        self._pending.setdefault(day_of(when), []).append((when, self.generated, record))
        self.generated += 1

    def days(self) -> list[dt.date]:
        return sorted(self._pending)

    def flush(self, day: dt.date) -> tuple[str, list[Record]] | None:
        """Write ``day``'s events in arrival order; (file, events), or None when none arrive that day."""
        events = self._pending.pop(day, [])
        if not events:
            return None
        events.sort(key=lambda item: (item[0], item[1]))
        relative = feedback_file(day)
        records = [record for _, _, record in events]
        write_lines(self.landing / relative, records)
        return relative, records
