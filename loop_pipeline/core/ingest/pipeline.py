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
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import fsspec
import polars as pl

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import native
from loop_pipeline.core.ingest.formats import (
    FORMAT_CHOICES,
    NATIVE,
    AdapterContext,
    detect_format,
    is_batch_input,
    read_format,
)
from loop_pipeline.core.ingest.formats.mapping import FeedbackMapping, TaskTypeMapping
from loop_pipeline.core.ingest.formats.openai_batch import load_requests
from loop_pipeline.core.ingest.lines import UnreadableFileError, read_lines
from loop_pipeline.core.storage import replace_directory, write_json_atomic, write_parquet_atomic
from loop_pipeline.schemas import empty_frame
from loop_pipeline.schemas.feedback import FEEDBACK_COLUMNS, FeedbackSchema
from loop_pipeline.schemas.quarantine import QUARANTINE_COLUMNS, QuarantineSchema
from loop_pipeline.schemas.traces import TRACE_COLUMNS, TraceSchema
from loop_pipeline.settings import ConfigError, load_config, reject_unknown_keys

RECORD_KINDS = ("trace", "feedback")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet",)
_SOURCE_COLUMNS = ("source_format", "source_file", "source_record")
_ID_COLUMN = {"trace": "trace_id", "feedback": "feedback_id"}


class IngestInputError(Exception):
    """Nothing could be read: a path does not exist, or holds no ingestible file."""


@dataclass(frozen=True)
class IngestConfig:
    max_record_bytes: int = 1 << 20
    decode_slice_rows: int = 200_000
    # A JSON document (a Langfuse or MLflow export, not JSONL) is parsed whole: this bounds it.
    max_document_bytes: int = 256 << 20
    # OpenAI's Batch API bills half the synchronous price; computed batch costs use this factor.
    openai_batch_price_factor: float = 0.5
    task_type: TaskTypeMapping = field(default_factory=TaskTypeMapping)
    feedback: FeedbackMapping = field(default_factory=FeedbackMapping)

    @classmethod
    def load(cls) -> "IngestConfig":
        return cls.from_mapping(load_config("ingest"))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> "IngestConfig":
        reject_unknown_keys("ingest", raw, cls.__dataclass_fields__)
        values = dict(raw)
        values["task_type"] = TaskTypeMapping.from_mapping(raw.get("task_type"))
        values["feedback"] = FeedbackMapping.from_mapping(raw.get("feedback"))
        config = cls(**values)
        for name in ("max_record_bytes", "decode_slice_rows", "max_document_bytes"):
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ingest.yaml: {name} must be a positive integer, got {value!r}")
        factor = config.openai_batch_price_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
            raise ConfigError(f"ingest.yaml: openai_batch_price_factor must be in (0, 1], got {factor!r}")
        return config


@dataclass(frozen=True)
class SourceFile:
    """One file to ingest: ``location`` is a local path or an fsspec URL, ``name`` what rows record."""

    location: str
    name: str
    record_kind: str | None = None
    # None: whatever ``ingest`` is asked for (``auto`` by default, detected per file).
    source_format: str | None = None


@dataclass
class KindCounts:
    records_in: int = 0
    valid: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

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

    def summary(self, include_sources: bool = False) -> dict[str, Any]:
        """Counts in total, per record kind and per source format; ``sources`` adds one entry per
        file (its format, lines and records), as ``summary.json`` and the accounting check use it."""
        total = KindCounts()
        for counts in self.counts.values():
            total.records_in += counts.records_in
            total.valid += counts.valid
            total.duplicates += counts.duplicates
            total.quarantined += counts.quarantined
            total.skipped += counts.skipped
            for reason, n in counts.quarantined_by_reason.items():
                total.quarantined_by_reason[reason] = total.quarantined_by_reason.get(reason, 0) + n
            for reason, n in counts.skipped_by_reason.items():
                total.skipped_by_reason[reason] = total.skipped_by_reason.get(reason, 0) + n
        return {
            **total.to_dict(),
            "traces": self.counts["trace"].to_dict(),
            "feedback": self.counts["feedback"].to_dict(),
            "files": len(self.files),
            "formats": self.by_format(),
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


# ---------------------------------------------------------------------------------------------
# Finding files


def discover(paths: Sequence[str], record_kind: str | None = None) -> list[SourceFile]:
    """Expand files and folders (recursively, sorted) into the files to ingest.

    Raises :class:`IngestInputError` naming the first path that does not exist.
    """
    found: list[SourceFile] = []
    for path in paths:
        fs, root = fsspec.core.url_to_fs(str(path))
        if not fs.exists(root):
            raise IngestInputError(f"no such file or folder: {path}")
        if fs.isdir(root):
            members = sorted(p for p in fs.find(root) if is_ingestible(p) and not _hidden(p, root))
            for member in members:
                relative = member[len(root) :].lstrip("/")
                found.append(SourceFile(_location(fs, member), f"{_display_root(path)}/{relative}", record_kind))
        else:
            found.append(SourceFile(_location(fs, root), str(path), record_kind))
    return found


def is_ingestible(path: str) -> bool:
    return path.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def _hidden(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in path[len(root) :].split("/") if part)


def _location(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _display_root(path: str) -> str:
    return str(path).rstrip("/")


def _read_source(location: str) -> str | bytes:
    """A local path as is (polars maps it), anything else fetched through fsspec."""
    fs, root = fsspec.core.url_to_fs(location)
    if _is_local(fs):
        return root
    try:
        with fs.open(root, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UnreadableFileError(str(exc)) from exc


def detect_record_kind(source: SourceFile, data: str | bytes, is_parquet: bool) -> str:
    """Traces carry messages / output; feedback carries a kind. Folder names break a tie."""
    if source.record_kind:
        return source.record_kind
    keys: set[str] = set()
    if is_parquet:
        keys = set(pl.read_parquet_schema(io.BytesIO(data) if isinstance(data, bytes) else data))
    else:
        for line in _head_lines(data, 50):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                keys |= set(record)
    if keys & {"messages", "output", "model"}:
        return "trace"
    if "kind" in keys:
        return "feedback"
    return "feedback" if "feedback" in Path(source.name).parts else "trace"


def _head_lines(data: str | bytes, n: int) -> list[str]:
    if isinstance(data, bytes):
        head = data[: 1 << 20]
    else:
        with open(data, "rb") as handle:
            head = handle.read(1 << 20)
    return [line for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()][:n]


# ---------------------------------------------------------------------------------------------
# Ingest


def ingest(
    sources: Iterable[SourceFile],
    config: IngestConfig | None = None,
    prices: PriceTable | None = None,
    progress: Callable[[str], None] | None = None,
    source_format: str = "auto",
    batch_inputs: Sequence[str] = (),
) -> IngestResult:
    """Read every source in its format (``auto``: detected per file) into one result.

    ``batch_inputs`` are OpenAI Batch input files (local paths or fsspec URLs) whose request
    lines are joined to batch output lines by ``custom_id``; input files lying beside an output
    file are joined without being named.
    """
    if source_format not in FORMAT_CHOICES:
        raise ValueError(f"unknown source format {source_format!r}; one of {', '.join(FORMAT_CHOICES)}")
    config = config or IngestConfig.load()
    prices = prices or PriceTable.load()
    candidates: dict[str, list[pl.DataFrame]] = {kind: [] for kind in RECORD_KINDS}
    quarantine_parts: list[pl.DataFrame] = []
    records_in = {kind: 0 for kind in RECORD_KINDS}
    skipped: Counter = Counter()
    unreadable: list[dict[str, Any]] = []
    files: list[str] = []
    stats: list[dict[str, Any]] = []
    pending_feedback: list[pl.DataFrame] = []
    scopes: list[pl.DataFrame] = []
    batch = _BatchRequests(batch_inputs)
    for source in sources:
        files.append(source.name)
        is_parquet = source.location.lower().endswith(PARQUET_SUFFIXES)
        requested = source.source_format or source_format
        fmt = NATIVE if is_parquet else requested
        kind = source.record_kind or "trace"
        try:
            data = _read_source(source.location)
            if fmt == "auto":
                fmt = detect_format(data)
            if fmt == NATIVE:
                kind = detect_record_kind(source, data, is_parquet)
                frame = _candidates(data, kind, is_parquet, config)
            else:
                kind = "trace"
                output = read_format(fmt, data, _context(config, prices, batch.for_source(source, fmt)))
        except (UnreadableFileError, OSError, pl.exceptions.PolarsError) as exc:
            if isinstance(exc, pl.exceptions.PolarsError) and fmt not in (NATIVE, "auto"):
                raise  # the adapters read files through lines / read_units: a polars error is a bug
            label = ("native_parquet" if is_parquet else "native_jsonl") if fmt in (NATIVE, "auto") else fmt
            unreadable.append(
                {
                    "record_kind": kind,
                    "source_format": label,
                    "source_file": source.name,
                    "source_record": None,
                    "reason": "unreadable_file",
                    "detail": f"{type(exc).__name__}: {str(exc).strip()[:300]}",
                    "record_id": None,
                    "raw": None,
                }
            )
            stats.append({"file": source.name, "format": label, "lines": None, "records_in": _per_kind({kind: 1}), "skipped": 0})
            if progress:
                progress(f"unreadable: {source.name}: {exc}")
            continue
        if fmt == NATIVE:
            source_label = "native_parquet" if is_parquet else "native_jsonl"
            records_in[kind] += frame.height
            stats.append(
                {"file": source.name, "format": source_label, "lines": frame.height, "records_in": _per_kind({kind: frame.height}), "skipped": 0}
            )
            frame = frame.with_columns(pl.lit(source_label).alias("source_format"), pl.lit(source.name).alias("source_file"))
            failed = pl.col("_reason").is_not_null()
            quarantine_parts.append(_as_quarantine(frame.filter(failed), kind))
            # The raw line is only needed for quarantine: dropping it before the copy that filtering
            # makes keeps peak memory near one copy of the decoded rows.
            columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
            candidates[kind].append(frame.lazy().filter(~failed).select(columns).collect())
            del frame
            if progress:
                progress(f"read {source.name}: {records_in[kind]} {kind} records so far")
            continue
        file_records = output.records_in()
        for record_kind, n in file_records.items():
            records_in[record_kind] += n
        skipped.update(output.skipped)
        stats.append(
            {
                "file": source.name,
                "format": fmt,
                "lines": output.lines,
                "records_in": file_records,
                "skipped": sum(output.skipped.values()),
            }
        )
        labels = (pl.lit(fmt).alias("source_format"), pl.lit(source.name).alias("source_file"))
        traces = output.traces.with_columns(*labels)
        failed = pl.col("_reason").is_not_null()
        quarantine_parts.append(_as_quarantine(traces.filter(failed), "trace"))
        scopes.append(
            traces.select("_scope", "session_id", "trace_id", "timestamp", pl.col("_reason").is_null().alias("_valid")).filter(
                pl.col("trace_id").is_not_null()
            )
        )
        candidates["trace"].append(traces.lazy().filter(~failed).select(TRACE_COLUMNS).collect())
        del traces
        pending_feedback.append(output.feedback.with_columns(*labels))
        if progress:
            progress(
                f"read {source.name} ({fmt}): {file_records['trace']} trace and {file_records['feedback']} "
                f"feedback records, {sum(output.skipped.values())} skipped"
            )

    if pending_feedback:
        feedback = native.type_feedback(_resolve_scopes(pl.concat(pending_feedback, how="diagonal_relaxed"), scopes))
        failed = pl.col("_reason").is_not_null()
        quarantine_parts.append(_as_quarantine(feedback.filter(failed), "feedback"))
        candidates["feedback"].append(feedback.filter(~failed).select(FEEDBACK_COLUMNS))

    counts = {kind: KindCounts(records_in=records_in[kind]) for kind in RECORD_KINDS}
    for (kind, reason), n in sorted(skipped.items()):
        counts[kind].skipped += n
        counts[kind].skipped_by_reason[reason] = counts[kind].skipped_by_reason.get(reason, 0) + n
    if unreadable:
        quarantine_parts.append(pl.DataFrame(unreadable, schema=_quarantine_schema()))
        for row in unreadable:
            counts[row["record_kind"]].records_in += 1
    valid: dict[str, pl.DataFrame] = {}
    for kind in RECORD_KINDS:
        good, conflicts, duplicates = _deduplicate(candidates.pop(kind), kind)
        counts[kind].duplicates = duplicates
        quarantine_parts.append(conflicts)
        valid[kind] = good

    traces = prices.fill_costs(valid["trace"]).select(TRACE_COLUMNS)
    traces = TraceSchema.validate(traces)
    feedback = FeedbackSchema.validate(valid["feedback"].select(FEEDBACK_COLUMNS))
    quarantine = QuarantineSchema.validate(
        pl.concat(quarantine_parts, how="vertical_relaxed").select(QUARANTINE_COLUMNS)
    )
    counts["trace"].valid = traces.height
    counts["feedback"].valid = feedback.height
    by_kind_reason = quarantine.group_by("record_kind", "reason").len().sort("record_kind", "reason")
    for kind, reason, n in by_kind_reason.iter_rows():
        counts[kind].quarantined += n
        counts[kind].quarantined_by_reason[reason] = n
    return IngestResult(traces, feedback, quarantine, counts, files, stats)


def _per_kind(counts: dict[str, int]) -> dict[str, int]:
    return {kind: counts.get(kind, 0) for kind in RECORD_KINDS}


def _context(config: IngestConfig, prices: PriceTable, batch_requests: dict[str, Any]) -> AdapterContext:
    return AdapterContext(
        task_type=config.task_type,
        feedback=config.feedback,
        max_record_bytes=config.max_record_bytes,
        max_document_bytes=config.max_document_bytes,
        decode_slice_rows=config.decode_slice_rows,
        prices=prices,
        openai_batch_price_factor=config.openai_batch_price_factor,
        batch_requests=batch_requests,
    )


def _resolve_scopes(feedback: pl.DataFrame, scopes: list[pl.DataFrame]) -> pl.DataFrame:
    """Feedback about a whole trace (or session) goes to its last LLM call in this run: the last
    valid one, or the last quarantined one when none is valid.

    Feedback whose trace or session has no call in the run keeps the source's trace (session) id:
    it stays valid, like native feedback for a trace not (yet) ingested.
    """
    if scopes:
        calls = pl.concat(scopes, how="vertical_relaxed")
    else:
        calls = pl.DataFrame(
            schema={"_scope": pl.String, "session_id": pl.String, "trace_id": pl.String, "timestamp": native.UTC_DATETIME, "_valid": pl.Boolean}
        )
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
    scoped = (
        pl.when(pl.col("_scope_kind") == "session").then(pl.col("_by_session")).otherwise(pl.col("_by_trace"))
    )
    return resolved.with_columns(pl.coalesce(pl.col("trace_id"), scoped, pl.col("_scope")).alias("trace_id")).drop(
        "_by_trace", "_by_session"
    )


class _BatchRequests:
    """OpenAI Batch request bodies by custom_id: named input files plus inputs beside each output."""

    def __init__(self, inputs: Sequence[str]):
        self._named: dict[str, list[Any]] = {}
        for location in inputs:
            _add_requests(self._named, location)
        self._by_folder: dict[str, dict[str, list[Any]]] = {}

    def for_source(self, source: SourceFile, fmt: str) -> dict[str, Any]:
        if fmt != "openai-batch":
            return {}
        fs, path = fsspec.core.url_to_fs(source.location)
        folder = path.rsplit("/", 1)[0] if "/" in path else "."
        if folder not in self._by_folder:
            found: dict[str, list[Any]] = {}
            for sibling in sorted(fs.ls(folder, detail=False)):
                if not is_ingestible(sibling) or sibling.lower().endswith(PARQUET_SUFFIXES) or fs.isdir(sibling):
                    continue
                location = _location(fs, sibling)
                if is_batch_input(_read_source(location)):
                    _add_requests(found, location)
            self._by_folder[folder] = found
        merged: dict[str, list[Any]] = {key: list(bodies) for key, bodies in self._by_folder[folder].items()}
        for key, bodies in self._named.items():
            merged[key] = bodies  # named inputs win over guessed neighbours
        return merged


def _add_requests(found: dict[str, list[Any]], location: str) -> None:
    data = _read_source(location)
    if not isinstance(data, bytes):
        with open(data, "rb") as handle:
            data = handle.read()
    for custom_id, bodies in load_requests(data.decode("utf-8", errors="replace")).items():
        known = found.setdefault(custom_id, [])
        known.extend(body for body in bodies if body not in known)


def _candidates(data: str | bytes, kind: str, is_parquet: bool, config: IngestConfig) -> pl.DataFrame:
    if is_parquet:
        table = pl.read_parquet(io.BytesIO(data) if isinstance(data, bytes) else data)
        frame = native.frame_from_table(table, kind)
    else:
        frame = native.decode_lines(read_lines(data), kind, config.max_record_bytes, config.decode_slice_rows)
    return native.type_traces(frame) if kind == "trace" else native.type_feedback(frame)


def _quarantine_schema() -> dict[str, pl.DataType]:
    return {
        "record_kind": pl.String,
        "source_format": pl.String,
        "source_file": pl.String,
        "source_record": pl.Int64,
        "reason": pl.String,
        "detail": pl.String,
        "record_id": pl.String,
        "raw": pl.String,
    }


def _deduplicate(frames: list[pl.DataFrame], kind: str) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Valid rows, one per id; quarantined conflicting copies; and how many identical copies collapsed."""
    columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
    if not frames:
        return empty_frame(TraceSchema if kind == "trace" else FeedbackSchema), pl.DataFrame(schema=_quarantine_schema()), 0
    good = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    id_column = _ID_COLUMN[kind]
    # Only ids seen more than once need their content compared; hashing every row costs seconds.
    repeated = good.filter(pl.col(id_column).is_duplicated())
    if repeated.height == 0:
        return good, pl.DataFrame(schema=_quarantine_schema()), 0
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
    return unique, _as_quarantine(conflicts, kind), kept.height - unique.height


def _as_quarantine(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    id_column = _ID_COLUMN[kind]
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


# ---------------------------------------------------------------------------------------------
# Writing


def write_result(result: IngestResult, out_dir: Path) -> dict[str, Any]:
    """Replace ``out_dir`` with this result: traces and feedback by UTC day, quarantine, summary."""
    summary = result.summary(include_sources=True)

    def build(staging: Path) -> None:
        for name, frame in (("traces", result.traces), ("feedback", result.feedback)):
            if frame.height == 0:
                continue
            days = frame.get_column("timestamp").dt.date().unique().sort().to_list()
            for day in days:
                part = frame.filter(pl.col("timestamp").dt.date() == day)
                write_parquet_atomic(staging / name / f"date={day.isoformat()}" / "part-0.parquet", part)
        write_parquet_atomic(staging / "quarantine" / "part-0.parquet", result.quarantine)
        write_json_atomic(staging / "summary.json", summary)

    replace_directory(out_dir, build)
    return summary

