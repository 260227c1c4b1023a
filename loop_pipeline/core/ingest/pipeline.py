"""Ingest: files in, canonical traces and feedback out, every other record quarantined with a reason.

The accounting invariant, per record kind and in total:
``records_in = valid + duplicates + quarantined + skipped``, where a duplicate is an identical copy
of a valid record (collapsed to one), a record whose id reappears with different content is
quarantined with every one of its copies (``conflicting_duplicate``): there is no telling which one
is right, and a skipped record is one a foreign format holds that is deliberately not a trace (a
tool or agent span, a failed call, an OpenAI Batch request line), counted by reason.

Each file is read in its own format (``source_format``: ``auto`` detects it per file): the native
JSONL / Parquet records, or one of the adapters in :mod:`loop_pipeline.core.ingest.formats`.
Feedback a foreign format attaches to a whole trace or session is given to that trace's (session's)
last LLM call once every file of the run is read.

Memory follows a batch, not the day: each batch's candidate and quarantine rows are written to
the run's spill folder (:mod:`.spill`, ``spill_dir``) as soon as they are checked, and the end of
the run (:mod:`.finalize`: repeated ids, costs, schemas) reads them back a chunk at a time; the
result's tables stay on disk until it is closed.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import polars as pl

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import native
from loop_pipeline.core.ingest.batch import BatchRequests
from loop_pipeline.core.ingest.config import IngestConfig
from loop_pipeline.core.ingest.formats import (
    FORMAT_CHOICES,
    NATIVE,
    AdapterContext,
    FormatOutput,
    detect_format,
    read_format,
)
from loop_pipeline.core.ingest.formats.detect import HEAD_BYTES
from loop_pipeline.core.ingest.finalize import finalize_kind, finalize_quarantine
from loop_pipeline.core.ingest.lines import UnreadableFileError
from loop_pipeline.core.ingest.quarantine import QUARANTINE_SCHEMA, as_quarantine, unreadable_row
from loop_pipeline.core.ingest.result import RECORD_KINDS, IngestResult, KindCounts
from loop_pipeline.core.ingest.scopes import call_scopes, resolve_scopes
from loop_pipeline.core.ingest.sources import SourceFile, detect_record_kind, is_ingestible, read_source
from loop_pipeline.core.ingest.spill import SpillFolder
from loop_pipeline.core.ingest.stream import line_batches, needs_stream, open_stream, read_all, read_head
from loop_pipeline.schemas import empty_frame
from loop_pipeline.schemas.feedback import FEEDBACK_COLUMNS, FeedbackSchema
from loop_pipeline.schemas.traces import TRACE_COLUMNS, TraceSchema

# resources/storage.py imports is_ingestible from here.
__all__ = ["ingest", "is_ingestible"]

_FAILED = pl.col("_reason").is_not_null()
# Every spilled part of a group has the same column types (what concatenating them used to give).
_CANDIDATE_SCHEMAS = {"trace": empty_frame(TraceSchema).schema, "feedback": empty_frame(FeedbackSchema).schema}


def ingest(
    sources: Iterable[SourceFile],
    config: IngestConfig,
    prices: PriceTable,
    progress: Callable[[str], None] | None = None,
    source_format: str = "auto",
    batch_inputs: Sequence[str] = (),
    spill_dir: str | Path | None = None,
) -> IngestResult:
    """Read every source in its format (``auto``: detected per file) into one result.

    ``prices`` fill the cost of calls whose source has none. ``batch_inputs`` are OpenAI Batch
    input files (local paths or fsspec URLs) whose request lines are joined to batch output lines
    by ``custom_id``; input files lying beside an output file are joined without being named.
    ``spill_dir``: where the run's temporary folder goes (default: the system's temporary
    directory); put it on the output's disk. Close the result (or use it in a ``with`` block)
    to delete its tables.
    """
    if source_format not in FORMAT_CHOICES:
        raise ValueError(f"unknown source format {source_format!r}; one of {', '.join(FORMAT_CHOICES)}")
    spill = SpillFolder(spill_dir)
    try:
        run = _IngestRun(config, prices, BatchRequests(batch_inputs), progress or (lambda _: None), spill)
        for source in sources:
            run.read(source, source.source_format or source_format)
        return run.result()
    except BaseException:
        spill.close()
        raise


def _read_parquet(data: str | bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data) if isinstance(data, bytes) else data)


def _native_label(is_parquet: bool) -> str:
    return "native_parquet" if is_parquet else "native_jsonl"


def _per_kind(counts: dict[str, int]) -> dict[str, int]:
    return {kind: counts.get(kind, 0) for kind in RECORD_KINDS}


class _IngestRun:
    """The files of one run read one by one, their rows spilled; :meth:`result` deduplicates,
    validates and counts."""

    def __init__(
        self, config: IngestConfig, prices: PriceTable, batch: BatchRequests, progress: Callable[[str], None], spill: SpillFolder
    ):
        self.config = config
        self.prices = prices
        self.batch = batch
        self.progress = progress
        self.spill = spill
        self.records_in = {kind: 0 for kind in RECORD_KINDS}
        self.skipped: Counter = Counter()
        self.unreadable: list[dict[str, Any]] = []
        self.unsupported: list[dict[str, Any]] = []
        self._file_records = 0  # records of the native file being read, batch by batch
        self.files: list[str] = []
        self.stats: list[dict[str, Any]] = []
        self.pending_feedback: list[pl.DataFrame] = []
        self.scopes: list[pl.DataFrame] = []

    # -- reading -------------------------------------------------------------------------------

    def read(self, source: SourceFile, requested: str) -> None:
        if source.unsupported:
            self.unsupported.append({"file": source.name, "reason": "unsupported_file", "bytes": source.size})
            self.progress(f"unsupported (not read): {source.name} ({source.size} bytes)")
            return
        self.files.append(source.name)
        fmt = NATIVE if source.is_parquet else requested
        kind = source.record_kind or "trace"
        try:
            if source.is_parquet:
                data = read_source(source.location)
                kind = detect_record_kind(source, data)
                self._add_native(source, self._typed(native.frame_from_table(_read_parquet(data), kind), kind), kind)
                self._native_done(source, kind)
                return
            head = read_head(source.location, HEAD_BYTES + 1)
            if fmt == "auto":
                fmt = detect_format(head)
            if fmt == NATIVE:
                self._read_native_lines(source, detect_record_kind(source, head))
                return
            kind = "trace"
            output = read_format(fmt, self._whole(source.location, head), self._context(source, fmt))
        except (UnreadableFileError, OSError, pl.exceptions.PolarsError) as exc:
            if isinstance(exc, pl.exceptions.PolarsError) and fmt not in (NATIVE, "auto"):
                raise  # the adapters read files through lines / read_units: a polars error is a bug
            label = _native_label(source.is_parquet) if fmt in (NATIVE, "auto") else fmt
            self._add_unreadable(source, label, kind, exc)
            return
        self._add_foreign(source, fmt, output)

    @staticmethod
    def _whole(location: str, head: bytes) -> str | bytes:
        """A foreign format's file: a local plain UTF-8 path as is, anything else read whole."""
        if needs_stream(location) or head[:2] in (b"\xff\xfe", b"\xfe\xff") or head[:3] == b"\xef\xbb\xbf":
            return read_all(location)
        return read_source(location)

    def _read_native_lines(self, source: SourceFile, kind: str) -> None:
        """A native JSONL file in batches of whole lines (``read_batch_bytes``), each decoded,
        typed and split into candidates and quarantine before the next is read."""
        config = self.config
        try:
            with open_stream(source.location) as stream:
                for batch in line_batches(stream, config.read_batch_bytes, config.max_record_bytes):
                    decoded = native.decode_lines(batch.lines, kind, config.max_record_bytes, config.decode_slice_rows)
                    self._add_native(source, self._typed(decoded, kind), kind)
        except (UnreadableFileError, pl.exceptions.PolarsError) as exc:
            # What was read before the file broke stays; the break itself is one unreadable record.
            self._native_done(source, kind, exc)
            return
        self._native_done(source, kind)

    def _typed(self, frame: pl.DataFrame, kind: str) -> pl.DataFrame:
        return native.type_traces(frame) if kind == "trace" else native.type_feedback(frame)

    def _context(self, source: SourceFile, fmt: str) -> AdapterContext:
        return AdapterContext(
            task_type=self.config.task_type,
            feedback=self.config.feedback,
            max_record_bytes=self.config.max_record_bytes,
            max_document_bytes=self.config.max_document_bytes,
            decode_slice_rows=self.config.decode_slice_rows,
            prices=self.prices,
            openai_batch_price_factor=self.config.openai_batch_price_factor,
            batch_requests=self.batch.for_source(source, fmt),
        )

    def _add_unreadable(self, source: SourceFile, label: str, kind: str, exc: Exception) -> None:
        self.unreadable.append(unreadable_row(kind, label, source.name, exc))
        self.stats.append({"file": source.name, "format": label, "lines": None, "records_in": _per_kind({kind: 1}), "skipped": 0})
        self.progress(f"unreadable: {source.name}: {exc}")

    def _add_native(self, source: SourceFile, frame: pl.DataFrame, kind: str) -> None:
        """One typed batch of a native file: its candidates and its quarantine rows."""
        self.records_in[kind] += frame.height
        self._file_records += frame.height
        frame = frame.with_columns(
            pl.lit(_native_label(source.is_parquet)).alias("source_format"), pl.lit(source.name).alias("source_file")
        )
        self._add_quarantine(as_quarantine(frame.filter(_FAILED), kind))
        # The raw line is only needed for quarantine: dropping it before the copy that filtering
        # makes keeps peak memory near one copy of the decoded rows.
        columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
        self._add_candidates(kind, frame.lazy().filter(~_FAILED).select(columns).collect())

    def _add_candidates(self, kind: str, frame: pl.DataFrame) -> None:
        self.spill.add(f"candidates-{kind}", frame.cast(_CANDIDATE_SCHEMAS[kind]))

    def _add_quarantine(self, frame: pl.DataFrame) -> None:
        self.spill.add("quarantine", frame.cast(QUARANTINE_SCHEMA))

    def _native_done(self, source: SourceFile, kind: str, error: Exception | None = None) -> None:
        """The native file's entry; a file that broke while being read adds one unreadable record."""
        label = _native_label(source.is_parquet)
        lines, self._file_records = self._file_records, 0
        entry = {"file": source.name, "format": label, "lines": lines, "records_in": _per_kind({kind: lines}), "skipped": 0}
        if error is not None:
            self.unreadable.append(unreadable_row(kind, label, source.name, error))
            entry["records_in"] = _per_kind({kind: lines + 1})
            entry["error"] = f"{type(error).__name__}: {error}"
            self.progress(f"unreadable after {lines} records: {source.name}: {error}")
        self.stats.append(entry)
        self.progress(f"read {source.name}: {self.records_in[kind]} {kind} records so far")

    def _add_foreign(self, source: SourceFile, fmt: str, output: FormatOutput) -> None:
        file_records = output.records_in()
        for record_kind, n in file_records.items():
            self.records_in[record_kind] += n
        self.skipped.update(output.skipped)
        skipped = sum(output.skipped.values())
        self.stats.append({"file": source.name, "format": fmt, "lines": output.lines, "records_in": file_records, "skipped": skipped})
        labels = (pl.lit(fmt).alias("source_format"), pl.lit(source.name).alias("source_file"))
        traces = output.traces.with_columns(*labels)
        self._add_quarantine(as_quarantine(traces.filter(_FAILED), "trace"))
        self.scopes.append(call_scopes(traces))
        self._add_candidates("trace", traces.lazy().filter(~_FAILED).select(TRACE_COLUMNS).collect())
        self.pending_feedback.append(output.feedback.with_columns(*labels))
        self.progress(
            f"read {source.name} ({fmt}): {file_records['trace']} trace and {file_records['feedback']} "
            f"feedback records, {skipped} skipped"
        )

    # -- the result ----------------------------------------------------------------------------

    def result(self) -> IngestResult:
        """Repeated ids resolved, costs filled and schemas checked, chunk by chunk (:mod:`.finalize`);
        the quarantine in read order, then unreadable files, then conflicting copies."""
        self._attach_foreign_feedback()
        counts = self._counts_before_validation()
        chunk_rows = self.config.finalize_batch_rows
        rows_by_format: dict[str, dict[str, int]] = {}
        for kind, table in (("trace", "traces"), ("feedback", "feedback")):
            formats, duplicates = finalize_kind(self.spill, kind, self.prices, chunk_rows)
            counts[kind].duplicates = duplicates
            counts[kind].valid = sum(formats.values())
            rows_by_format[table] = dict(formats)
        reasons, formats = finalize_quarantine(self.spill, chunk_rows)
        rows_by_format["quarantine"] = dict(formats)
        for (kind, reason), n in sorted(reasons.items()):
            counts[kind].quarantined += n
            counts[kind].quarantined_by_reason[reason] = n
        groups = {"traces": "valid-trace", "feedback": "valid-feedback", "quarantine": "valid-quarantine"}
        parts = {table: self.spill.parts(group) for table, group in groups.items()}
        return IngestResult(parts, counts, self.files, self.stats, self.unsupported, rows_by_format, self.spill)

    def _attach_foreign_feedback(self) -> None:
        """Foreign feedback, its trace resolved now that every file's calls are known."""
        if not self.pending_feedback:
            return
        pending = pl.concat(self.pending_feedback, how="diagonal_relaxed")
        feedback = native.type_feedback(resolve_scopes(pending, self.scopes))
        self._add_quarantine(as_quarantine(feedback.filter(_FAILED), "feedback"))
        self._add_candidates("feedback", feedback.filter(~_FAILED).select(FEEDBACK_COLUMNS))

    def _counts_before_validation(self) -> dict[str, KindCounts]:
        """Records in and skipped per kind; an unreadable file is one (quarantined) record."""
        counts = {kind: KindCounts(records_in=self.records_in[kind]) for kind in RECORD_KINDS}
        for (kind, reason), n in sorted(self.skipped.items()):
            counts[kind].skipped += n
            counts[kind].skipped_by_reason[reason] = counts[kind].skipped_by_reason.get(reason, 0) + n
        if self.unreadable:
            self._add_quarantine(pl.DataFrame(self.unreadable, schema=QUARANTINE_SCHEMA))
            for row in self.unreadable:
                counts[row["record_kind"]].records_in += 1
        return counts
