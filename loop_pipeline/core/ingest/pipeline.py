"""Ingest: files in, canonical traces and feedback out, every other record quarantined with a reason.

The accounting invariant, per record kind and in total:
``records_in = valid + duplicates + quarantined``, where a duplicate is an identical copy of a valid
record (collapsed to one) and a record whose id reappears with different content is quarantined
with every one of its copies (``conflicting_duplicate``): there is no telling which one is right.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import fsspec
import polars as pl

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import native
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

    @classmethod
    def load(cls) -> "IngestConfig":
        raw = load_config("ingest")
        reject_unknown_keys("ingest", raw, cls.__dataclass_fields__)
        config = cls(**raw)
        for name in ("max_record_bytes", "decode_slice_rows"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ingest.yaml: {name} must be a positive integer, got {value!r}")
        return config


@dataclass(frozen=True)
class SourceFile:
    """One file to ingest: ``location`` is a local path or an fsspec URL, ``name`` what rows record."""

    location: str
    name: str
    record_kind: str | None = None


@dataclass
class KindCounts:
    records_in: int = 0
    valid: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "valid": self.valid,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
        }


@dataclass
class IngestResult:
    traces: pl.DataFrame
    feedback: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict[str, KindCounts]
    files: list[str]

    def summary(self) -> dict[str, Any]:
        total = KindCounts()
        for counts in self.counts.values():
            total.records_in += counts.records_in
            total.valid += counts.valid
            total.duplicates += counts.duplicates
            total.quarantined += counts.quarantined
            for reason, n in counts.quarantined_by_reason.items():
                total.quarantined_by_reason[reason] = total.quarantined_by_reason.get(reason, 0) + n
        return {
            **total.to_dict(),
            "traces": self.counts["trace"].to_dict(),
            "feedback": self.counts["feedback"].to_dict(),
            "files": len(self.files),
        }


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
) -> IngestResult:
    config = config or IngestConfig.load()
    prices = prices or PriceTable.load()
    candidates: dict[str, list[pl.DataFrame]] = {kind: [] for kind in RECORD_KINDS}
    quarantine_parts: list[pl.DataFrame] = []
    records_in = {kind: 0 for kind in RECORD_KINDS}
    unreadable: list[dict[str, Any]] = []
    files: list[str] = []
    for source in sources:
        files.append(source.name)
        is_parquet = source.location.lower().endswith(PARQUET_SUFFIXES)
        source_format = "native_parquet" if is_parquet else "native_jsonl"
        kind = source.record_kind or "trace"
        try:
            data = _read_source(source.location)
            kind = detect_record_kind(source, data, is_parquet)
            frame = _candidates(data, kind, is_parquet, config)
        except (UnreadableFileError, OSError, pl.exceptions.PolarsError) as exc:
            unreadable.append(
                {
                    "record_kind": kind,
                    "source_format": source_format,
                    "source_file": source.name,
                    "source_record": None,
                    "reason": "unreadable_file",
                    "detail": f"{type(exc).__name__}: {str(exc).strip()[:300]}",
                    "record_id": None,
                    "raw": None,
                }
            )
            if progress:
                progress(f"unreadable: {source.name}: {exc}")
            continue
        records_in[kind] += frame.height
        frame = frame.with_columns(pl.lit(source_format).alias("source_format"), pl.lit(source.name).alias("source_file"))
        failed = pl.col("_reason").is_not_null()
        quarantine_parts.append(_as_quarantine(frame.filter(failed), kind))
        # The raw line is only needed for quarantine: dropping it before the copy that filtering
        # makes keeps peak memory near one copy of the decoded rows.
        columns = TRACE_COLUMNS if kind == "trace" else FEEDBACK_COLUMNS
        candidates[kind].append(frame.lazy().filter(~failed).select(columns).collect())
        del frame
        if progress:
            progress(f"read {source.name}: {records_in[kind]} {kind} records so far")

    counts = {kind: KindCounts(records_in=records_in[kind]) for kind in RECORD_KINDS}
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
    return IngestResult(traces, feedback, quarantine, counts, files)


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
    summary = result.summary()

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

